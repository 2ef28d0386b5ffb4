"""The LLFF reader on the real fern capture in ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np

from n3f.scene.formats.llff import read_llff
from n3f.scene.images import load_frame_image


def test_fern_images_16(fern_dir):
    scene = read_llff(fern_dir, downscale=16)
    assert len(scene) == 20
    raw = np.load(fern_dir / "poses_bounds.npy")
    h0, w0, focal = raw[0, :15].reshape(3, 5)[:, 4]
    f = scene.frames[0]
    assert (f.width, f.height) == (252, 189)
    np.testing.assert_allclose(f.K[0, 0], focal * 252 / w0)
    np.testing.assert_allclose(f.K[1, 1], focal * 189 / h0)
    for frame in scene.frames:
        R = frame.c2w[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-5)
        assert np.linalg.det(R) > 0
    assert scene.split_counts() == {"train": 17, "val": 0, "test": 3}
    assert scene.contraction == "ndc"
    assert load_frame_image(f).shape == (189, 252, 3)


def test_fern_images_8_and_resized(fern_dir):
    s8 = read_llff(fern_dir, downscale=8)
    assert (s8.frames[0].width, s8.frames[0].height) == (504, 378)
    # asking for a size with no pre-downscaled folder resizes on load with matching intrinsics
    s32 = read_llff(fern_dir, downscale=32)
    f = s32.frames[0]
    assert (f.width, f.height) == (126, 94)
    assert load_frame_image(f).shape == (94, 126, 3)
    np.testing.assert_allclose(f.K[0, 0], s8.frames[0].K[0, 0] * 126 / 504)


def test_fern_cameras_look_forward(fern_dir):
    """Forward-facing capture: all optical axes (OpenCV +z) point roughly the same way."""
    scene = read_llff(fern_dir, downscale=16)
    z = np.stack([f.c2w[:3, 2] for f in scene.frames])
    mean = z.mean(0) / np.linalg.norm(z.mean(0))
    assert (z @ mean).min() > 0.9
    # and the content (near bound) is in front of the cameras
    c = scene.frames[0]
    ahead = c.camera_centre + c.c2w[:3, 2] * c.near
    assert c.project(ahead[None])[1][0] > 0
