"""The one error family a user can cause.

Every mistake a user can make (a missing file, an unreadable image, an unknown scene name, a
COLMAP model with no registered images) raises :class:`N3FError` with a message that says what
went wrong and what to do. The CLI prints the message without a traceback and exits with code 2.
"""

from __future__ import annotations


class N3FError(Exception):
    """A problem the user can fix; the message says how."""

    exit_code = 2


class SceneError(N3FError):
    """A scene could not be found, read or understood."""


class ImageReadError(SceneError):
    """An image file is missing or cannot be decoded; the message names the file."""


class PreprocessError(N3FError):
    """Frames could not be prepared or structure from motion failed; the message says what to try."""


class VideoReadError(PreprocessError):
    """A video file is missing or cannot be decoded; the message names the file."""


class RegistrationError(PreprocessError):
    """Structure from motion registered too few images; the message suggests what to change."""
