"""Moving pixels from multi-view colour consistency, against demo/kitchen_dynamic's exact masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from n3f.pipeline.motion import camera_fixed_cells, motion_scores, points_from_depth


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory):
    """A small demo/kitchen_dynamic and the same scene without the sponge and the hand (its exact
    depth is what a perfect static field would render)."""
    from n3f.scene.dynamic import KitchenDynamicConfig, render_kitchen_dynamic
    from n3f.scene.formats.native import read_native

    root = tmp_path_factory.mktemp("motion")
    options = dict(n_frames=48, width=64, height=48, supersample=1)
    scene = read_native(render_kitchen_dynamic(Path(root) / "scene", KitchenDynamicConfig(**options)))
    static = read_native(render_kitchen_dynamic(Path(root) / "static", KitchenDynamicConfig(**options, exclude=("sponge", "hand"))))
    return scene, static


def _inputs(scene, static, images_from):
    from n3f.scene.images import load_frame_depth, load_frame_image, load_frame_mask

    frames = scene.frames
    images = [load_frame_image(f) for f in images_from.frames]
    points = [points_from_depth(f, load_frame_depth(f)) for f in static.frames]
    masks = [load_frame_mask(f) for f in frames]
    return frames, images, points, masks


def test_points_from_depth_project_back_to_their_pixels(kitchen):
    from n3f.scene.images import load_frame_depth

    frame = kitchen[0].frames[5]
    depth = load_frame_depth(frame)
    points = points_from_depth(frame, depth)
    uv, z = frame.project(points.reshape(-1, 3))
    jj, ii = np.mgrid[0 : frame.height, 0 : frame.width]
    np.testing.assert_allclose(uv, np.stack([ii.ravel() + 0.5, jj.ravel() + 0.5], 1), atol=1e-6)
    np.testing.assert_allclose(z, depth.ravel(), rtol=1e-5)


def test_the_moving_sponge_scores_above_the_static_scene(kitchen):
    from sklearn.metrics import roc_auc_score

    scene, static = kitchen
    frames, images, points, masks = _inputs(scene, static, scene)
    scores = motion_scores(frames, images, points, offsets=(-12, -8, -4, 4, 8, 12))
    s, m = np.concatenate([x.ravel() for x in scores]), np.concatenate([x.ravel() for x in masks])
    scored, hand, sponge = ~np.isnan(s), m == 9, m == 8
    assert scored[sponge].mean() > 0.5  # the table under the sponge is seen from the neighbours
    assert roc_auc_score(sponge[scored & ~hand], s[scored & ~hand]) > 0.9
    assert (s[scored & sponge] > 0.05).mean() > 0.5 and (s[scored & (m != 8) & ~hand] > 0.05).mean() < 0.05


def test_a_static_video_scores_low_everywhere(kitchen):
    """Without the sponge and the hand every point shows the same colour in its neighbours: the
    best-agreeing neighbour differs by little more than shading and resampling, except at a few
    edges (where a pixel straddles two surfaces at this 64x48 size)."""
    scene, static = kitchen
    frames, images, points, _ = _inputs(scene, static, static)
    s = np.concatenate([x.ravel() for x in motion_scores(frames, images, points, offsets=(-12, -8, -4, 4, 8, 12))])
    s = s[~np.isnan(s)]
    assert len(s) > 0.4 * sum(f.width * f.height for f in frames)
    assert np.median(s) < 0.01 and (s > 0.05).mean() < 0.05, np.quantile(s, [0.5, 0.9, 0.99])


def test_moving_pixels_draw_only_flagged_cells_and_gate_by_cell():
    import torch

    from n3f.pipeline.motion import MovingPixels

    m = MovingPixels(3, height=10, width=13, stride=4)  # 3 x 4 cells; the last row and column are cut to 2 and 1 pixels
    assert m.sample.shape == (3, 3, 4) and int(m.detected_at) == -1
    assert m.draw(10, torch.Generator().manual_seed(0)) is None  # nothing flagged yet
    sample = torch.zeros(3, 3, 4, dtype=torch.bool)
    sample[1, 0, 1] = sample[2, 2, 3] = True
    gate = sample.clone()
    gate[0, 1, 1] = True
    m.set(sample, gate, step=7)
    frame, px, py = m.draw(4000, torch.Generator().manual_seed(0))
    assert set(frame.tolist()) == {1, 2}
    first, last = frame == 1, frame == 2
    assert px[first].min() == 4 and px[first].max() == 7 and py[first].min() == 0 and py[first].max() == 3
    assert (px[last] == 12).all() and py[last].min() == 8 and py[last].max() == 9  # the cut corner cell
    assert 0.45 < float(first.float().mean()) < 0.55  # cells are drawn uniformly, whatever their size
    gated = m.gated(torch.tensor([0, 0, 1, 2]), torch.tensor([5, 0, 6, 12]), torch.tensor([6, 6, 2, 9]))
    assert gated.tolist() == [True, False, True, True]
    copy = MovingPixels(3, height=10, width=13, stride=4)
    copy.load_state_dict(m.state_dict())
    assert torch.equal(copy.sample, sample) and torch.equal(copy.gate, gate) and int(copy.detected_at) == 7


def test_keep_blobs_drops_lines_and_specks_and_keeps_blobs_with_their_edges():
    from n3f.pipeline.motion import keep_blobs

    flags = np.zeros((2, 12, 14), dtype=bool)
    flags[0, 1, :] = True  # an outline one cell wide
    flags[0, 3:5, :] = True  # and two cells wide
    flags[0, 7:11, 2:6] = True  # a blob
    flags[0, 6, 5] = flags[0, 11, 6] = True  # its ragged edge, touching it by a side and by a corner
    flags[0, 8, 10] = True  # a speck
    flags[1, 2:5, 9:12] = True  # the smallest blob a 3 x 3 opening keeps
    kept = keep_blobs(flags, 1)
    expected = np.zeros_like(flags)
    expected[0, 7:11, 2:6] = expected[0, 6, 5] = expected[0, 11, 6] = True
    expected[1, 2:5, 9:12] = True
    np.testing.assert_array_equal(kept, expected)
    assert keep_blobs(flags, 0) is flags
    assert not keep_blobs(flags, 2).any()  # nothing above is 5 x 5


def test_grow_flags_follows_weak_cells_connected_to_sure_ones_only():
    from n3f.pipeline.motion import grow_flags

    kept = np.zeros((2, 6, 8), dtype=bool)
    weak = np.zeros_like(kept)
    kept[0, 1, 1] = True
    weak[0, 1, 2:5] = weak[0, 2, 5] = True  # a chain leaving the sure cell, the last link by a corner
    weak[0, 4, 1:3] = True  # weak cells touching nothing sure
    weak[1, 2, 2] = True  # a frame without sure cells keeps none
    expected = kept.copy()
    expected[0, 1, 2:5] = expected[0, 2, 5] = True
    np.testing.assert_array_equal(grow_flags(kept, weak), expected)
    np.testing.assert_array_equal(grow_flags(kept, np.zeros_like(weak)), kept)


def test_a_search_radius_forgives_a_depth_a_pixel_off_but_not_a_moved_object(kitchen):
    """Points pushed one pixel sideways in every frame (as a depth error at an outline does) land
    on the wrong side of edges and score high; a search radius of one pixel finds the right colour
    again. The sponge, many pixels away in the neighbours' frames, keeps part of its flags, so the
    flags hold it more purely."""
    scene, static = kitchen
    frames, images, points, masks = _inputs(scene, static, scene)
    shifted = []
    for f, p in zip(frames, points):
        z = (p - f.c2w[:3, 3]) @ f.c2w[:3, 2]
        shifted.append(p + z[..., None] * f.c2w[:3, 0] / f.K[0, 0])  # one pixel to the right
    offsets = (-12, -8, -4, 4, 8, 12)
    m = np.concatenate([x.ravel() for x in masks])
    static_px, sponge = ~np.isin(m, (8, 9)), m == 8

    def flagged(radius, pts):
        s = np.concatenate([x.ravel() for x in motion_scores(frames, images, pts, offsets=offsets, search_radius=radius)])
        return np.nan_to_num(s, nan=0.0) > 0.05

    exact, off, forgiven = flagged(0, points), flagged(0, shifted), flagged(1, shifted)
    assert off[static_px].mean() > 2 * exact[static_px].mean()
    assert forgiven[static_px].mean() < 0.5 * off[static_px].mean()
    assert forgiven[sponge].mean() > 0.3 * exact[sponge].mean()

    def purity(f):
        return f[sponge].sum() / (f & (sponge | static_px)).sum()

    assert purity(forgiven) > 1.5 * purity(off)


def test_keeping_blobs_flags_the_sponge_more_purely_than_a_depth_off_at_outlines(kitchen):
    """Points pushed one pixel sideways (a depth error at outlines) flag static pixels along
    edges in lines; the sponge is flagged as a blob. Keeping blobs drops most static flags and
    keeps part of the sponge's, so the flags hold it several times more purely (at this 64x48
    size the sponge is a few pixels across, so the 3 x 3 opening keeps only its largest views)."""
    from n3f.pipeline.motion import keep_blobs

    scene, static = kitchen
    frames, images, points, masks = _inputs(scene, static, scene)
    shifted = [p + ((p - f.c2w[:3, 3]) @ f.c2w[:3, 2])[..., None] * f.c2w[:3, 0] / f.K[0, 0] for f, p in zip(frames, points)]
    m = np.stack(masks)
    sponge, static_px = m == 8, ~np.isin(m, (8, 9))
    scores = np.stack(motion_scores(frames, images, shifted, offsets=(-12, -8, -4, 4, 8, 12)))
    flags = (np.nan_to_num(scores, nan=0.0) > 0.05) & (m != 9)  # the actor stream holds the hand
    blobs = keep_blobs(flags, 1)
    assert (flags | ~blobs).all()
    assert blobs[static_px].mean() < 0.1 * flags[static_px].mean()
    assert blobs[sponge].mean() > 0.1

    def purity(f):
        return f[sponge].sum() / f.sum()

    assert purity(blobs) > 3 * purity(flags)


def test_a_hand_hides_what_lies_behind_it_and_a_second_neighbour_must_agree(kitchen):
    """A neighbour whose projection lands on the hand (``hidden``) does not see the point: hidden
    everywhere, nothing is scored; hiding the hand clears static flags where a neighbour's hand
    covered the point, and keeps the sponge's. Scoring by the second-best neighbour
    (``quantile=0.34`` of six) instead of the best flags more of the sponge: a neighbour where the
    sponge has barely moved agrees with it, a second one seldom does."""
    scene, static = kitchen
    frames, images, points, masks = _inputs(scene, static, scene)
    offsets = (-12, -8, -4, 4, 8, 12)
    m = np.stack(masks)
    sponge, static_px, hand = m == 8, ~np.isin(m, (8, 9)), list(m == 9)

    nothing = motion_scores(frames, images, points, offsets=offsets, hidden=[np.ones_like(h) for h in hand])
    assert all(np.isnan(s).all() for s in nothing)

    def flagged(**options):
        return np.nan_to_num(np.stack(motion_scores(frames, images, points, offsets=offsets, **options)), nan=0.0) > 0.05

    seen_through, hidden, second = flagged(), flagged(hidden=hand), flagged(hidden=hand, quantile=0.34)
    assert hidden[static_px].sum() < 0.93 * seen_through[static_px].sum()  # 0.88 at this size, 0.5 at 128x96
    assert hidden[sponge].sum() > 0.9 * seen_through[sponge].sum()
    assert second[sponge].mean() > 1.08 * hidden[sponge].mean()  # 0.83 against 0.73
    print(
        f"\nstatic flagged {seen_through[static_px].mean():.4f} -> {hidden[static_px].mean():.4f} (hand hidden) -> "
        f"{second[static_px].mean():.4f} (second neighbour); sponge {seen_through[sponge].mean():.3f} -> "
        f"{hidden[sponge].mean():.3f} -> {second[sponge].mean():.3f}"
    )


def test_neighbours_across_the_whole_video_flag_more_of_the_sponge_and_less_of_the_static_scene(kitchen):
    """The sponge eases into motion and out of it, so near neighbours still show it where it was
    and the best of six near ones agrees with it. Compared with every second frame across the whole
    video (``neighbour_offsets(40, 2)``) and scored by the 15% quantile (a static point must agree
    with a sixth of the frames that see it; the sponge stays in one place for fewer), more of the
    sponge is flagged and fewer static pixels than by the best of six near neighbours."""
    from n3f.pipeline.motion import neighbour_offsets

    assert neighbour_offsets(24, 8) == (-24, -16, -8, 8, 16, 24) and neighbour_offsets(20, 8) == (-16, -8, 8, 16)
    with pytest.raises(ValueError, match="step <= span"):
        neighbour_offsets(4, 8)
    scene, static = kitchen
    frames, images, points, masks = _inputs(scene, static, scene)
    m = np.stack(masks)
    sponge, static_px, hand = m == 8, ~np.isin(m, (8, 9)), list(m == 9)

    def flagged(offsets, quantile):
        scores = np.stack(motion_scores(frames, images, points, offsets=offsets, quantile=quantile, hidden=hand))
        return (np.nan_to_num(scores, nan=0.0) > 0.05) & (m != 9)

    near, wide = flagged(neighbour_offsets(12, 4), 0.0), flagged(neighbour_offsets(40, 2), 0.15)
    assert wide[sponge].mean() > 1.15 * near[sponge].mean()  # 0.90 against 0.73
    assert wide[static_px].mean() < 0.95 * near[static_px].mean()  # 0.014 against 0.017
    print(
        f"\nsponge flagged {near[sponge].mean():.3f} -> {wide[sponge].mean():.3f}; static {near[static_px].mean():.4f} -> {wide[static_px].mean():.4f}"
    )


def test_camera_fixed_cells_need_every_neighbour_to_agree_within_the_threshold():
    """Exact on a small video: a cell is fixed when its largest difference with the same cell of
    the frames up to two before and after it is at most the threshold; frames at the ends compare
    with the neighbours they have, a lone frame is fixed everywhere; the result follows the
    images' order, not the video's."""
    images = np.zeros((5, 1, 3, 3), dtype=np.float32)
    images[:, 0, 1] = 0.5  # cell 1: the same in every frame
    images[:, 0, 2] = np.array([0.0, 0.0, 0.0, 0.0, 0.3])[:, None]  # cell 2: changes in the last frame
    images[2, 0, 0] = 0.09  # cell 0: the middle frame differs by 0.09 from every other
    fixed = camera_fixed_cells(images, [0, 1, 2, 3, 4], threshold=0.1)
    assert fixed[:, 0, :2].all()
    # The last frame is within two of frames 2 and 3, which see cell 2 change; 0 and 1 do not.
    assert fixed[:, 0, 2].tolist() == [True, True, False, False, False]
    assert camera_fixed_cells(images, [0, 1, 2, 3, 4], threshold=0.08)[:, 0, 0].tolist() == [False] * 5
    assert camera_fixed_cells(images[4:], [0], threshold=0.0).all()
    shuffled = [3, 0, 4, 1, 2]  # images[shuffled[k]] is video frame k
    inverse = np.argsort(shuffled)
    again = camera_fixed_cells(images[shuffled], list(inverse), threshold=0.1)
    assert np.array_equal(again, fixed[shuffled])


def test_the_hand_looks_fixed_to_the_camera_and_the_sponge_does_not(kitchen):
    """On demo/kitchen_dynamic, every pixel a cell: nearly all of the hand's pixels stay within 0.1
    of the two frames before and after, nearly none of the sponge's do, and fewer than half of
    the static scene's (it slides across the image as the camera moves)."""
    from n3f.scene.images import load_frame_image, load_frame_mask

    scene, _ = kitchen
    images = np.stack([load_frame_image(f) for f in scene.frames]).astype(np.float32)
    masks = np.stack([load_frame_mask(f) for f in scene.frames])
    order = sorted(range(len(scene.frames)), key=lambda i: scene.frames[i].time)
    fixed = camera_fixed_cells(images, order, threshold=0.1)
    hand, sponge, static = fixed[masks == 9].mean(), fixed[masks == 8].mean(), fixed[~np.isin(masks, (8, 9))].mean()
    assert hand > 0.95 and sponge < 0.05 and static < 0.5, (hand, sponge, static)  # 0.971, 0.026, 0.406


def test_a_neighbour_whose_surface_lies_behind_the_point_does_not_see_it():
    """``seen_in`` with ``far_tolerance``: a point floating in front of what a frame sees there is
    not seen by it (the two depth maps disagree about the point); without it, only a nearer surface
    hides a point."""
    from n3f.pipeline.motion import seen_in
    from n3f.scene.types import Frame

    K = np.array([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    frame = Frame(image_path=Path("a.png"), K=K, c2w=np.eye(4), width=10, height=10)
    depth = np.full((10, 10), 2.0, dtype=np.float32)  # a wall at z = 2
    world = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.5], [0.0, 0.0, 2.5], [0.0, 0.0, 1.95]])  # on, in front, behind, near
    assert seen_in(frame, depth, world, None, 0.05)[0].tolist() == [0, 1, 3]
    assert seen_in(frame, depth, world, None, 0.05, far_tolerance=0.05)[0].tolist() == [0, 3]
