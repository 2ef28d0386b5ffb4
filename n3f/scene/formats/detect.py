"""Detect a scene folder's format and read it with the matching reader."""

from __future__ import annotations

from pathlib import Path

from n3f.errors import SceneError
from n3f.scene.types import Scene

FORMATS = ("n3f", "colmap", "llff", "transforms", "epic_diff", "epic_fields")


def detect_format(folder: Path) -> str:
    """Name the format of a scene folder: ``n3f``, ``epic_diff``, ``transforms``, ``llff``, ``colmap``
    or ``epic_fields`` (checked in that order; EPIC Fields last, as its JSON has no fixed name).

    Raises:
        SceneError: nothing recognisable is in the folder (the message lists what was looked for).
    """
    from n3f.scene.formats.colmap import find_model_dir
    from n3f.scene.formats.epic_fields import find_epic_fields_json

    folder = Path(folder)
    if not folder.is_dir():
        raise SceneError(f"scene folder {folder} does not exist")
    if (folder / "scene.json").is_file():
        return "n3f"
    if (folder / "meta.json").is_file():
        return "epic_diff"
    if (folder / "transforms.json").is_file() or (folder / "transforms_train.json").is_file():
        return "transforms"
    if (folder / "poses_bounds.npy").is_file():
        return "llff"
    if find_model_dir(folder) is not None:
        return "colmap"
    if find_epic_fields_json(folder) is not None:
        return "epic_fields"
    raise SceneError(
        f"cannot tell the format of {folder}: expected scene.json (n3f), meta.json (EPIC-Diff), "
        "transforms.json (nerfstudio/Blender), poses_bounds.npy (LLFF), a COLMAP sparse/ model "
        f"or an EPIC Fields {folder.name}.json beside frames/. "
        "For raw photos or a video, run `n3f preprocess` first."
    )


def read_scene_folder(folder: Path, format: str = "auto", name: str | None = None, downscale: int | None = None, holdout: int = 8) -> Scene:
    """Read any supported scene folder into a normalised :class:`Scene`.

    Args:
        folder: the scene folder.
        format: one of :data:`FORMATS`, or ``auto`` to detect it.
        name: the scene's name (default: the folder name).
        downscale: load images at 1/downscale of their stored size (intrinsics follow).
        holdout: every n-th frame is a test frame where the format has no explicit split.
    """
    from n3f.scene.normalise import downscale_scene

    folder = Path(folder)
    fmt = detect_format(folder) if format == "auto" else format
    if fmt == "n3f":
        from n3f.scene.formats.native import read_native

        scene = read_native(folder, name=name)
    elif fmt == "colmap":
        from n3f.scene.formats.colmap import read_colmap

        scene = read_colmap(folder, name=name, holdout=holdout)
    elif fmt == "llff":
        from n3f.scene.formats.llff import read_llff

        return read_llff(folder, downscale=downscale, name=name, holdout=holdout)
    elif fmt == "transforms":
        from n3f.scene.formats.transforms import read_transforms

        scene = read_transforms(folder, name=name, holdout=holdout)
    elif fmt == "epic_diff":
        from n3f.scene.formats.epic_diff import read_epic_diff

        scene = read_epic_diff(folder, name=name)
    elif fmt == "epic_fields":
        from n3f.scene.formats.epic_fields import read_epic_fields

        scene = read_epic_fields(folder, name=name, holdout=holdout)
    else:
        raise SceneError(f"unknown scene format {fmt!r}; use one of {', '.join(FORMATS)} or auto")
    return downscale_scene(scene, downscale) if downscale and downscale != 1 else scene
