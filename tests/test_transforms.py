"""Box / affine / flip transforms, augmentations and heatmap targets (mmpose 0.x semantics)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srpose.data.targets import generate_target, pool_target
from srpose.data.transforms import (
    TopDownPipeline,
    affine_transform,
    box_to_center_scale,
    flip_back,
    fliplr_joints,
    get_affine_transform,
    half_body_transform,
    normalize_image,
    random_flip,
    random_scale_rotation,
    warp_affine_crop,
)

PAIRS = [(1, 2), (3, 4)]


def test_box_to_center_scale_fixes_aspect_and_pads():
    c, s = box_to_center_scale(10, 20, 30, 80, (192, 256))  # tall box: width grows to 0.75 * 80
    np.testing.assert_allclose(c, [25, 60])
    np.testing.assert_allclose(s, [60 / 200 * 1.25, 80 / 200 * 1.25], rtol=1e-6)
    c, s = box_to_center_scale(0, 0, 150, 40, (192, 256))  # wide box: height grows to 150 / 0.75
    np.testing.assert_allclose(s, [150 / 200 * 1.25, 200 / 200 * 1.25], rtol=1e-6)
    assert c.dtype == np.float32 and s.dtype == np.float32


def test_box_to_center_scale_jitter_only_with_rng():
    rng = np.random.default_rng(0)
    centers = np.array([box_to_center_scale(0, 0, 100, 100, (100, 100), rng=rng)[0] for _ in range(200)])
    moved = np.abs(centers - 50).max(axis=1) > 0
    assert 0.15 < moved.mean() < 0.45  # jitter with probability 0.3
    assert np.abs(centers - 50).max() <= 20  # at most 20% of the box


def test_affine_maps_box_onto_crop():
    center, scale = np.array([100.0, 80.0]), np.array([0.6, 0.8])  # 120 x 160 px, aspect 0.75
    trans = get_affine_transform(center, scale, 0, (48, 64))
    corners = np.array([[40.0, 0.0], [160.0, 160.0], [100.0, 80.0]])
    np.testing.assert_allclose(affine_transform(corners, trans), [[0, 0], [48, 64], [24, 32]], atol=1e-4)
    inv = get_affine_transform(center, scale, 0, (48, 64), inv=True)
    np.testing.assert_allclose(affine_transform(affine_transform(corners, trans), inv), corners, atol=1e-3)


def test_affine_rotation_turns_about_center():
    trans = get_affine_transform([50.0, 50.0], [1.0, 1.0], 90, (200, 200))
    # mmpose convention: the box's +x axis is turned onto the crop's up direction, its up onto the crop's left
    np.testing.assert_allclose(affine_transform(np.array([[150.0, 50.0], [50.0, 0.0]]), trans),
                               [[100.0, 0.0], [50.0, 100.0]], atol=1e-3)


def test_warp_affine_crop_moves_pixels_like_points():
    img = np.zeros((120, 160, 3), np.uint8)
    img[30, 70] = 255
    crop, trans = warp_affine_crop(img, np.array([80.0, 60.0]), np.array([0.8, 0.6]), 0, (80, 60))
    assert crop.shape == (60, 80, 3)
    y, x = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    np.testing.assert_allclose(affine_transform(np.array([70.0, 30.0]), trans), [x, y], atol=0.51)


def test_fliplr_joints_swaps_pairs_and_zeroes_invisible():
    j = np.array([[10, 5, 1], [20, 6, 1], [30, 7, 1], [40, 8, 0], [50, 9, 1]], np.float32)
    f = fliplr_joints(j, 100, PAIRS)
    np.testing.assert_allclose(f[0], [89, 5, 1])
    np.testing.assert_allclose(f[1], [69, 7, 1])  # was joint 2
    np.testing.assert_allclose(f[2], [79, 6, 1])  # was joint 1
    np.testing.assert_allclose(f[3], [49, 9, 1])  # was joint 4
    np.testing.assert_allclose(f[4], [0, 0, 0])  # was joint 3, invisible
    np.testing.assert_allclose(j[0], [10, 5, 1])  # input untouched


def test_flip_back_numpy_and_torch_agree():
    x = np.random.default_rng(0).random((2, 5, 4, 6)).astype(np.float32)
    out = flip_back(x, PAIRS)
    np.testing.assert_array_equal(out[:, 0], x[:, 0, :, ::-1])
    np.testing.assert_array_equal(out[:, 1], x[:, 2, :, ::-1])
    np.testing.assert_array_equal(out[:, 4], x[:, 3, :, ::-1])
    np.testing.assert_array_equal(flip_back(out, PAIRS), x)
    np.testing.assert_array_equal(flip_back(torch.from_numpy(x), PAIRS).numpy(), out)
    with pytest.raises(ValueError, match="N x K x H x W"):
        flip_back(x[0], PAIRS)


def test_normalize_image():
    img = np.full((2, 3, 3), 255, np.uint8)
    out = normalize_image(img, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [2.0, 1.0, 0.5])


def test_random_augmentations_follow_mmpose_ranges():
    rng = np.random.default_rng(1)
    rots, zooms = [], []
    for _ in range(300):
        s, r = random_scale_rotation(np.array([1.0, 1.0], np.float32), rng, 40, 0.5, 0.6)
        rots.append(r)
        zooms.append(s[0])
    rots, zooms = np.array(rots), np.array(zooms)
    assert np.abs(rots).max() <= 80 and 0.25 < (rots == 0).mean() < 0.55
    assert zooms.min() >= 0.5 and zooms.max() <= 1.5
    img = np.zeros((10, 20, 3), np.uint8)
    j = np.array([[2, 3, 1]] * 5, np.float32)
    flips = [random_flip(img, j, np.array([5.0, 5.0], np.float32), PAIRS, rng)[3] for _ in range(200)]
    assert 0.35 < np.mean(flips) < 0.65
    img2, j2, c2, flipped = random_flip(img, j, np.array([5.0, 5.0], np.float32), PAIRS, rng, flip_prob=1.0)
    assert flipped and c2[0] == 20 - 5 - 1 and j2[0, 0] == 20 - 1 - 2


def test_half_body_transform_selects_a_half():
    j = np.zeros((17, 3), np.float32)
    j[:11, :2] = np.stack([np.linspace(40, 60, 11), np.linspace(10, 50, 11)], 1)
    j[:11, 2] = 1  # only upper body visible
    c, s = half_body_transform(j, tuple(range(11)), (192, 256), np.random.default_rng(0))
    np.testing.assert_allclose(c, j[:11, :2].mean(0), rtol=1e-5)
    np.testing.assert_allclose(s, [40 * 0.75 / 200 * 1.5, 40 / 200 * 1.5], rtol=1e-5)
    j[:, 2] = 0
    j[0, 2] = 1
    assert half_body_transform(j, tuple(range(11)), (192, 256), np.random.default_rng(0)) == (None, None)


def test_pipeline_train_mode_is_reproducible():
    cfg = dict(image_size=[48, 64], heatmap_size=[12, 16], sigma=2, flip_pairs=PAIRS, upper_body_ids=[0, 1, 2])
    img = np.random.default_rng(0).integers(0, 255, (100, 80, 3), dtype=np.uint8)
    rec = dict(center=[40, 50], scale=[0.3, 0.4],
               joints=np.array([[40, 50, 1], [30, 40, 1], [50, 40, 1], [35, 30, 0], [45, 30, 1]], np.float32))
    pipe = TopDownPipeline(cfg, train=True)
    a = pipe(img, rec, np.random.default_rng(3))
    b = pipe(img, rec, np.random.default_rng(3))
    assert a["img"].shape == (3, 64, 48) and a["target"].shape == (5, 16, 12)
    assert a["target_weight"].shape == (5, 1) and a["target_weight"].sum() <= 4  # one joint invisible
    for key in ("img", "target", "joints", "center", "scale"):
        np.testing.assert_array_equal(a[key], b[key])
    ev = TopDownPipeline(cfg, train=False)(img, rec)
    assert "target" not in ev and ev["rotation"] == 0
    np.testing.assert_allclose(ev["joints"][0, :2], [24, 32], atol=1e-4)  # box centre -> crop centre


def test_generate_target_msra():
    joints = np.array([[16.0, 24.0, 1], [100.0, 24.0, 1], [8.0, 8.0, 0], [-13.0, 10.0, 1]], np.float32)
    target, weight = generate_target(joints, (48, 64), (12, 16), sigma=2)
    assert target.shape == (4, 16, 12) and target.dtype == np.float32
    np.testing.assert_array_equal(weight[:, 0], [1, 0, 0, 1])  # far outside -> 0, invisible -> 0
    assert target[0].max() == 1.0 and np.unravel_index(target[0].argmax(), (16, 12)) == (6, 4)
    assert target[1].max() == 0 and target[2].max() == 0
    assert 0 < target[3].max() < 1  # centre off the map, tail still inside: kept as mmpose does
    np.testing.assert_allclose(target[0, 6, 5], np.exp(-1 / 8), rtol=1e-6)


def test_generate_target_unbiased_is_subpixel():
    target, weight = generate_target(np.array([[17.0, 24.0, 1]]), (48, 64), (12, 16), sigma=2, unbiased=True)
    # mu_x = 4.25: the neighbour on the right is higher than the one on the left
    assert target[0, 6, 5] > target[0, 6, 3] and weight[0, 0] == 1
    np.testing.assert_allclose(target[0, 6, 4], np.exp(-(0.25**2) / 8), rtol=1e-6)


def test_pool_target_matches_adaptive_avg_pool():
    t = np.random.default_rng(0).random((2, 3, 64, 48)).astype(np.float32)
    ref = F.adaptive_avg_pool2d(torch.from_numpy(t), (16, 12)).numpy()
    np.testing.assert_allclose(pool_target(t, (16, 12)), ref)
    np.testing.assert_allclose(pool_target(torch.from_numpy(t), (16, 12)).numpy(), ref)
    np.testing.assert_array_equal(pool_target(t, (64, 48)), t)
    assert pool_target(t[0], (8, 6)).shape == (3, 8, 6)
