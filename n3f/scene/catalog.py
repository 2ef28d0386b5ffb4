"""The scene catalog: ``scenes/<family>/<name>.toml`` recipes, resolved against ``$N3F_DATA``.

A recipe names a scene's format, where its data lives relative to the data root, its downscale and
split rule. Keys::

    description = "one line for `n3f scenes`"
    format      = "llff" | "colmap" | "transforms" | "epic_diff" | "epic_fields" | "n3f" | "auto" | "procedural"
    path        = "folder relative to $N3F_DATA"
    fallback    = ["folders relative to the repository root, tried when path is absent"]
    aliases     = ["short/name"]
    downscale   = 1          # load images at 1/downscale
    holdout     = 8          # every n-th frame is a test frame when the format has no split
    get         = "where to download the data (shown when it is missing)"
    generator   = "tabletop" # procedural scenes only ("tabletop", "kitchen_dynamic"); rendered into path on first use
    dynamic     = true       # egocentric video: `n3f fit` adds the transient streams by default
    [options]               # generator options (procedural) or per-scene defaults for later stages

``--scene`` takes a catalog name, an alias, or a path to a scene folder.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from n3f.errors import N3FError, SceneError
from n3f.scene.types import Scene

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """The data root: ``$N3F_DATA``, default ``~/n3f-data``."""
    return Path(os.environ.get("N3F_DATA") or Path.home() / "n3f-data").expanduser()


def catalog_dir() -> Path:
    """Folder of the recipes: ``$N3F_CATALOG`` or the repository's ``scenes/``."""
    return Path(os.environ.get("N3F_CATALOG") or REPO_ROOT / "scenes")


@dataclass
class Recipe:
    """One catalog entry (see the module docstring for the keys)."""

    name: str
    file: Path
    format: str = "auto"
    path: str = ""
    description: str = ""
    fallback: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    downscale: int = 1
    holdout: int = 8
    get: str = ""
    generator: str | None = None
    options: dict = field(default_factory=dict)
    dynamic: bool = False

    def candidates(self, seed: int | None = None) -> list[Path]:
        """Folders where the data may be, in the order they are tried."""
        path = self.path
        if self.generator:
            if seed not in (None, self.options.get("seed", 0)):
                path = f"{path}-seed{seed}"
            generator = procedural_generators().get(self.generator)
            if generator is not None:
                path = f"{path}-v{generator[2]}"
        return [data_root() / path] + [(REPO_ROOT / f).resolve() for f in self.fallback]

    def locate(self, seed: int | None = None) -> Path | None:
        """The first existing candidate folder, or None."""
        return next((p for p in self.candidates(seed) if p.is_dir()), None)


def procedural_generators() -> dict[str, tuple[type, Callable, str]]:
    """The procedural scene generators a recipe's ``generator`` may name.

    Returns:
        ``{name: (config dataclass, render(folder, config, progress=...) -> folder, version tag)}``;
        the version tag ends the rendered folder's name, so a data root never serves a scene
        rendered by older code.
    """
    from n3f.scene.dynamic import DYNAMIC_VERSION, KitchenDynamicConfig, render_kitchen_dynamic
    from n3f.scene.synthetic import GENERATOR_VERSION, TabletopConfig, render_tabletop

    return {
        "tabletop": (TabletopConfig, render_tabletop, f"{GENERATOR_VERSION}"),
        "kitchen_dynamic": (KitchenDynamicConfig, render_kitchen_dynamic, f"{GENERATOR_VERSION}.{DYNAMIC_VERSION}"),
    }


def load_catalog() -> dict[str, Recipe]:
    """All recipes keyed by ``family/name``.

    Raises:
        SceneError: a recipe is not valid TOML or has unknown keys.
    """
    root = catalog_dir()
    recipes: dict[str, Recipe] = {}
    known = set(Recipe.__dataclass_fields__) - {"name", "file"}
    for file in sorted(root.glob("*/*.toml")):
        name = f"{file.parent.name}/{file.stem}"
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise SceneError(f"catalog recipe {file} is not valid TOML: {exc}") from exc
        unknown = set(data) - known
        if unknown:
            raise SceneError(f"catalog recipe {file} has unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        recipes[name] = Recipe(name=name, file=file, **data)
    return recipes


def find_recipe(name: str, catalog: dict[str, Recipe] | None = None) -> Recipe:
    """The recipe called ``name`` or carrying it as an alias.

    Raises:
        SceneError: no such scene; the message lists the nearest catalog names.
    """
    catalog = load_catalog() if catalog is None else catalog
    if name in catalog:
        return catalog[name]
    for recipe in catalog.values():
        if name in recipe.aliases:
            return recipe
    names = sorted(list(catalog) + [a for r in catalog.values() for a in r.aliases])
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise SceneError(f"unknown scene {name!r}: it is neither a folder nor a catalog name.{hint} `n3f scenes` lists the catalog.")


def ensure_procedural(recipe: Recipe, seed: int | None = None, progress: Callable | None = None) -> Path:
    """Render a procedural recipe's scene into the data root if it is not there yet; return its folder.

    Processes started together may render the same scene at once; the first to finish wins and
    the others return its folder.
    """
    folder = recipe.locate(seed)
    if folder is not None:
        return folder
    folder = recipe.candidates(seed)[0]
    generator = procedural_generators().get(recipe.generator)
    if generator is None:
        raise SceneError(
            f"catalog recipe {recipe.file} names unknown generator {recipe.generator!r}; known: {sorted(procedural_generators())}"
        )
    config_class, render, _ = generator
    options = dict(recipe.options)
    if seed is not None:
        options["seed"] = seed
    if "exclude" in options:
        options["exclude"] = tuple(options["exclude"])
    try:
        config = config_class(**options)
    except TypeError as exc:
        raise SceneError(f"catalog recipe {recipe.file}: bad [options] for the {recipe.generator} generator: {exc}") from exc
    try:
        return render(folder, config, progress=progress)
    except N3FError:
        # Another process (a second fit started beside this one) rendered the same scene first:
        # a scene is a pure function of its recipe, seed and generator version, so use theirs.
        done = recipe.locate(seed)
        if done is not None:
            return done
        raise


def load_scene(spec: str | Path, seed: int | None = None, downscale: int | None = None, progress: Callable | None = None) -> Scene:
    """Resolve ``--scene``: a folder path, a catalog name or an alias, to a normalised Scene.

    Args:
        spec: what the user typed.
        seed: for procedural scenes, the generator seed (default: the recipe's).
        downscale: override the recipe's downscale.
        progress: ``progress(iterable, description, total)`` for long work (procedural rendering).

    Raises:
        SceneError: an unknown name (with suggestions), or data that is missing (saying where to put it).
    """
    from n3f.scene.formats.detect import read_scene_folder

    path = Path(spec).expanduser()
    if path.is_dir():
        return read_scene_folder(path, downscale=downscale)
    recipe = find_recipe(str(spec))
    if recipe.generator:
        folder = ensure_procedural(recipe, seed, progress)
    else:
        folder = recipe.locate()
        if folder is None:
            where = "\n  ".join(str(p) for p in recipe.candidates())
            get = f"\nGet it from: {recipe.get}" if recipe.get else ""
            raise SceneError(
                f"scene {recipe.name}: data not found. Looked in:\n  {where}{get}\nPut it at the first path (set $N3F_DATA to change the data root)."
            )
    fmt = "n3f" if recipe.format == "procedural" else recipe.format
    scene = read_scene_folder(folder, format=fmt, name=recipe.name, downscale=downscale or recipe.downscale, holdout=recipe.holdout)
    if recipe.dynamic:
        scene.metadata["recipe_dynamic"] = True  # `n3f fit` then adds the transient streams by default
    return scene
