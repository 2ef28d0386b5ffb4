"""n3f: feature-field distillation on real scenes.

Layers (imports point downward): ``n3f.cli`` -> pipeline stages -> ``n3f.correspond`` ->
``n3f.student`` -> ``n3f.render`` -> ``n3f.scene``; ``teachers`` is a separate 2D-only package.
Heavy libraries (torch, open3d, pycolmap, timm) are imported inside the functions that need them
so that ``n3f --help`` answers quickly.
"""

from n3f.errors import N3FError

__version__ = "0.1.0"
__all__ = ["N3FError", "__version__"]
