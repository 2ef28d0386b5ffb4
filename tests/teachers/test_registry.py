"""One contract over the whole teacher registry (randomly initialised networks, no downloads)."""

from __future__ import annotations

import pytest
import torch

import teachers


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, teachers; teachers.available(); print('torch' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"]


def test_available_lists_every_teacher():
    names = teachers.available()
    assert {"dino_vits8", "dino_vits16", "dino_vitb8", "dino_vitb16", "dinov2_vits14", "dinov2_vitb14", "effnet_lite0"} <= set(names)


@pytest.mark.parametrize("name", teachers.available())
def test_contract(name):
    teacher = teachers.create(name, pretrained=False)
    images = torch.rand(2, 3, 60, 84)
    out = teacher(images)
    geo = teacher.geometry(60, 84)
    assert out.shape == (2, teacher.dim, geo.height, geo.width)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert teacher.describe().startswith(name)
    assert teacher.stride >= 1 and geo.step_x > 0
    # a batch gives the same features as one image at a time
    torch.testing.assert_close(teacher.extract(images), torch.cat([teacher(images[:1]), teacher(images[1:])]), rtol=1e-4, atol=1e-4)


def test_unknown_teacher_suggests_names():
    with pytest.raises(teachers.TeacherError, match="dino_vits8"):
        teachers.create("dino_vit_s8")


def test_register_a_custom_teacher():
    from teachers.base import Teacher

    class Mean(Teacher):
        name, dim, stride, cell = "mean_colour", 3, 4, 4

        def features(self, x):
            return torch.nn.functional.avg_pool2d(x, 4)

    teachers.register("mean_colour")(lambda **kw: Mean(**kw))
    try:
        t = teachers.create("mean_colour")
        assert t(torch.rand(1, 3, 16, 16)).shape == (1, 3, 4, 4)
        assert "mean_colour" in teachers.available()
    finally:
        teachers._REGISTRY.pop("mean_colour")
