"""Readers and writers of every scene format; each converts to OpenCV camera-to-world once.

| format      | on disk                                   | module        |
|-------------|-------------------------------------------|---------------|
| ``n3f``     | ``scene.json`` + images/masks/depth       | ``native``    |
| ``colmap``  | ``sparse/[0/]`` text or binary + images/  | ``colmap``    |
| ``llff``    | ``poses_bounds.npy`` + ``images[_N]/``    | ``llff``      |
| ``transforms`` | nerfstudio/Blender ``transforms*.json`` | ``transforms`` |
| ``epic_diff`` | NeuralDiff's ``meta.json`` + ``frames/`` (+ ``annotations/``) | ``epic_diff`` |
| ``epic_fields`` | EPIC Fields ``<video>.json`` + ``frames/`` | ``epic_fields`` |
"""
