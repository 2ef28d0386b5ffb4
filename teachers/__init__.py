"""2D dense feature teachers. Knows nothing of 3D or of n3f's pipeline.

A teacher maps ``B x 3 x H x W`` images in [0, 1] to ``B x C x h x w`` features and states ``dim``
(C) and ``stride`` (pixels per feature cell). Teachers register themselves by name::

    @teachers.register("my_teacher")
    def build(**options) -> Teacher: ...

    teachers.available()          # sorted names
    teachers.create("my_teacher", device="cpu")
"""

from __future__ import annotations

from collections.abc import Callable

_REGISTRY: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``factory(**options) -> teacher`` under ``name``."""

    def wrap(factory: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"teacher {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available() -> list[str]:
    """Names of the registered teachers, sorted."""
    return sorted(_REGISTRY)


def create(name: str, **options):
    """Build the teacher called ``name`` with ``options``.

    Raises:
        KeyError: no teacher of that name (the message lists the available ones).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown teacher {name!r}; available: {', '.join(available()) or 'none yet'}")
    return _REGISTRY[name](**options)
