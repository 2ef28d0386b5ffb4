"""The demo scene's full-length CPU fit and what users do with it (slow: about 40-60 minutes on
2 cores): the student beats its teacher at retrieval, a click segments the object in 3D, and
removing it shows what lies behind (against the demo rendered without it).

Run with ``python -m pytest -m slow tests/pipeline/test_long_fit.py -s``.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_run(demo_dir, tmp_path_factory):
    from n3f.pipeline.fit import FitConfig, fit, load_run
    from n3f.pipeline.maps import student_maps

    run = fit(FitConfig(scene="demo/tabletop", steps=3000, eval_every=0), output=tmp_path_factory.mktemp("long"), quiet=True)
    trainer = load_run(run)
    return trainer, student_maps(trainer, 4)


def test_student_beats_teacher_and_segments_objects_in_3d(long_run):
    from n3f.pipeline.evaluate import evaluate_run

    result = evaluate_run(*long_run)
    print("evaluation:", {s: round(v["mAP"], 3) for s, v in result["retrieval"].items()}, result["segmentation_3d"])
    assert result["psnr"] > 25.0
    assert result["retrieval"]["student"]["mAP"] > result["retrieval"]["teacher"]["mAP"] + 0.1
    assert result["segmentation_3d"]["mean_iou"] >= 0.5


def test_removal_shows_what_lies_behind(long_run):
    from n3f.pipeline.edit_check import removal_check

    check = removal_check(*long_run, "mug_red")
    print("removal:", check)
    assert check["frames"] >= 3
    # the mug's pixels look like the scene without the mug, far more than the unedited render does
    assert check["psnr_object_pixels_removed_vs_truth"] > check["psnr_object_pixels_unedited_vs_truth"] + 6.0
    # and the rest of the picture survives (the other objects are not removed with it)
    assert check["psnr_other_pixels_removed_vs_images"] > 22.0
