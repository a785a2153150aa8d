"""The associative-embedding codec (``srpose.codecs``) on hand-made heatmaps and tags: target rendering, assignment,
grouping (two people, crossing limbs, a missing joint), the torch steps and ``decode`` / ``decode_candidates``."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from srpose.codecs import AssociativeEmbedding, codec_from_dict, flip_index_from_pairs
from srpose.codecs._ae_group import (
    GroupParams,
    adjust_joints,
    group_candidates,
    linear_assignment,
    match_by_tag,
    transform_preds,
)
from srpose.codecs._ae_render import render_heatmaps, render_tag_maps
from srpose.codecs._ae_torch import heatmap_nms, merge_outputs, pack_candidates, top_k
from srpose.data.bottom_up import mirror_joints
from srpose.keypoints import COCO_FLIP_PAIRS

K = 17
H, W = 48, 64


pytestmark = pytest.mark.usefixtures("one_thread")


def _blob(hm: np.ndarray, x: float, y: float, peak: float = 1.0, sigma: float = 1.5) -> np.ndarray:
    yy, xx = np.mgrid[0:hm.shape[0], 0:hm.shape[1]]
    g = peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    np.maximum(hm, g, out=hm)
    return g > 0.01


def _scene(people: list[dict[int, tuple[float, float]]], tags: list[float], faint: dict | None = None):
    """K x H x W heatmaps and K x H x W x 1 tag maps: person p's joint j as a blob at its (x, y), tag ``tags[p]``
    painted where the blob is; ``faint`` = {(p, j): (x, y)} adds sub-threshold blobs (for refine)."""
    hm = np.zeros((K, H, W), np.float32)
    tg = np.zeros((K, H, W, 1), np.float32)
    for p, joints in enumerate(people):
        for j, (x, y) in joints.items():
            tg[j][_blob(hm[j], x, y)] = tags[p]
    for (p, j), (x, y) in (faint or {}).items():
        tg[j][_blob(hm[j], x, y, peak=0.06)] = tags[p]
    return hm, tg


def _group(hm: np.ndarray, tg: np.ndarray, **kw):
    params = GroupParams(num_joints=K, max_num_people=5, **kw)
    tag_k, loc_k, val_k = top_k(torch.from_numpy(hm)[None], torch.from_numpy(tg)[None], params.max_num_people,
                                params.nms_kernel, params.nms_padding)
    cand = dict(tag_k=tag_k[0].numpy(), loc_k=loc_k[0].numpy(), val_k=val_k[0].numpy())
    return group_candidates(cand, hm, tg, params)


def _by_nose(people: np.ndarray) -> np.ndarray:
    return people[np.argsort(people[:, 0, 0])]


# ----------------------------------------------------------------------------------------------- targets
def test_rendering_and_mirroring() -> None:
    joints = np.zeros((2, 17, 3), np.float32)
    joints[0, 5] = (4, 6, 2)
    joints[1, 5] = (12, 3, 2)
    joints[1, 6] = (30, 3, 0)  # not labelled
    hm = render_heatmaps(joints, (16, 8), 2.0)
    assert hm.shape == (17, 8, 16) and hm[5, 6, 4] == 1.0 and hm[5, 3, 12] == 1.0 and hm[6].max() == 0
    tm = render_tag_maps(joints, (16, 8), 2.0, [2.0, 4.0])
    assert tm[5, 6, 4] == 2.0 and tm[5, 3, 12] == 4.0 and tm[6].max() == -100.0
    m = mirror_joints(joints, 16, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
    assert m[0, 6, :2].tolist() == [11, 6] and m[0, 5, 2] == 0
    # the codec's encoding (what the oracle returns): the same maps at 1/stride, person p tagged 2 (p + 1)
    codec = AssociativeEmbedding(num_joints=17, stride=2, sigma=2.0)
    enc = codec.encode(joints * [2, 2, 1], (32, 16))
    np.testing.assert_array_equal(enc[:17], hm)
    np.testing.assert_array_equal(enc[17:], tm)
    assert AssociativeEmbedding(stride=2, tag_per_joint=False).encode(joints * [2, 2, 1], (32, 16)).shape == (18, 8, 16)
    with pytest.raises(ValueError, match="not a multiple of the output stride 2"):
        codec.encode(joints, (31, 16))


# ----------------------------------------------------------------------------------------------- assignment
def test_linear_assignment_is_optimal_on_small_matrices() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        n, m = (int(v) for v in rng.integers(1, 6, size=2))
        cost = rng.normal(size=(n, m)) * 10
        if rng.random() < 0.5:
            cost = np.round(cost)  # ties
        pairs = linear_assignment(cost)
        assert len(pairs) == min(n, m)
        assert len(set(pairs[:, 0])) == len(pairs) == len(set(pairs[:, 1]))
        assert (np.diff(pairs[:, 0]) > 0).all()
        total = cost[pairs[:, 0], pairs[:, 1]].sum()
        if n <= m:
            best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
        else:
            best = min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))
        assert total == pytest.approx(best, abs=1e-9)


def test_linear_assignment_breaks_ties_as_munkres() -> None:
    # rows 1 and 2 can swap columns 0 and 2 at equal cost; the munkres package (and mmpose) picks this one
    cost = np.array([[199.06407297, -0.93592703, 299.06407297],
                     [199.1825754, 99.1825754, 199.1825754],
                     [-0.50897223, 199.49102777, -0.50897223]])
    assert linear_assignment(cost).tolist() == [[0, 1], [1, 2], [2, 0]]


def test_linear_assignment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        linear_assignment(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="2-D"):
        linear_assignment(np.zeros(3))
    assert linear_assignment(np.zeros((0, 3))).shape == (0, 2)


# ----------------------------------------------------------------------------------------------- grouping
def test_two_people_are_separated_by_their_tags() -> None:
    a = {j: (10 + (j % 3), 5 + 2 * j) for j in range(K)}
    b = {j: (45 + (j % 3), 6 + 2 * j) for j in range(K)}
    hm, tg = _scene([a, b], [-2.0, 3.0])
    people, scores = _group(hm, tg)
    assert people.shape == (2, K, 4)
    people = _by_nose(people)
    for p, src, tag in ((0, a, -2.0), (1, b, 3.0)):
        np.testing.assert_allclose(people[p, :, 3], tag)
        got = np.floor(people[p, :, :2])  # adjust moves +0.25 / +0.75 within the pixel
        np.testing.assert_array_equal(got, np.array([src[j] for j in range(K)], np.float32))
    np.testing.assert_allclose(scores, 1.0, atol=1e-6)


def test_crossing_limbs_follow_tags_not_distance() -> None:
    # the wrists cross: A's left wrist sits right next to B's left elbow and far from A's own elbow
    a = {0: (12, 5), 5: (14, 15), 7: (16, 25), 9: (41, 26), 11: (14, 35)}
    b = {0: (44, 5), 5: (42, 15), 7: (40, 25), 9: (17, 26), 11: (42, 35)}
    hm, tg = _scene([a, b], [1.0, 4.0])
    people, _ = _group(hm, tg)
    people = _by_nose(people)
    assert people.shape[0] == 2
    assert int(people[0, 9, 0]) == 41 and int(people[1, 9, 0]) == 17
    np.testing.assert_allclose(people[0, [0, 5, 7, 9, 11], 3], 1.0)
    np.testing.assert_allclose(people[1, [0, 5, 7, 9, 11], 3], 4.0)


def test_a_missing_joint_stays_empty_or_is_refined() -> None:
    a = {j: (10 + j, 10) for j in range(K) if j != 9}
    b = {j: (10 + j, 35) for j in range(K)}
    faint = {(0, 9): (30, 14)}  # below the detection threshold, with A's tag
    hm, tg = _scene([a, b], [0.0, 5.0], faint)
    people, scores = _group(hm, tg, refine=False)
    people = people[np.argsort(people[:, 0, 1])]
    assert people.shape[0] == 2
    np.testing.assert_array_equal(people[0, 9], 0.0)  # not found, not guessed
    assert scores[np.argmin(people[:, 0, 1])] == pytest.approx(16 / 17, abs=1e-5)

    refined, scores_r = _group(hm, tg, refine=True)
    refined = refined[np.argsort(refined[:, 0, 1])]
    assert refined[0, 9, 2] == pytest.approx(0.06, abs=1e-3)
    assert np.floor(refined[0, 9, :2]).tolist() == [30.0, 14.0]
    np.testing.assert_allclose(np.sort(scores_r), np.sort(scores))  # the person score is taken before refine


def test_tag_threshold_opens_a_new_person() -> None:
    hm, tg = _scene([{0: (10, 10)}, {1: (12, 12)}], [0.0, 0.6])
    assert len(_group(hm, tg)[0]) == 1  # tags 0.6 apart: same person
    hm, tg = _scene([{0: (10, 10)}, {1: (12, 12)}], [0.0, 1.2])
    assert len(_group(hm, tg)[0]) == 2


def test_match_by_tag_without_candidates_and_bad_shapes() -> None:
    params = GroupParams()
    empty = match_by_tag(np.zeros((K, 5, 2)), np.zeros((K, 5, 2), np.int64), np.zeros((K, 5)), params)
    assert empty.shape == (0, K, 5)
    with pytest.raises(ValueError, match="K x M"):
        match_by_tag(np.zeros((3, 5, 1)), np.zeros((3, 5, 2)), np.zeros((3, 5)), params)


def test_adjust_moves_a_quarter_pixel_towards_the_higher_neighbour() -> None:
    hm = np.zeros((1, 5, 5), np.float32)
    hm[0, 2, 2], hm[0, 2, 3], hm[0, 1, 2] = 1.0, 0.5, 0.4
    people = np.zeros((1, 1, 4), np.float32)
    people[0, 0, :3] = (2, 2, 1.0)
    adjust_joints(people, hm)
    assert people[0, 0, :2].tolist() == [2.75, 2.25]


def test_group_params_from_test_cfg() -> None:
    p = GroupParams.from_test_cfg(dict(nms_kernel=11, max_num_people=30, detection_threshold=0.2), 17)
    assert (p.nms_kernel, p.nms_padding, p.detection_threshold) == (11, 5, 0.2)
    assert p.joint_order[:9] == (0, 1, 2, 3, 4, 5, 6, 11, 12)
    with pytest.raises(ValueError, match="odd"):
        GroupParams(nms_kernel=4)


# ----------------------------------------------------------------------------------------------- tensor steps
def test_heatmap_nms_matches_a_square_max_pool() -> None:
    x = torch.rand(1, 3, 20, 30)
    x[0, 0, 5:8, 5:8] = 2.0  # plateau
    for k in (3, 5, 11):
        ref = x * torch.eq(torch.nn.functional.max_pool2d(x, k, 1, (k - 1) // 2), x).float()
        assert torch.equal(heatmap_nms(x, k), ref)


def test_merge_outputs_flips_back_and_projects() -> None:
    fi = flip_index_from_pairs(K, COCO_FLIP_PAIRS)
    out = torch.randn(1, 2 * K, 8, 12)
    mirrored = torch.flip(out, [3])[:, list(fi) + [K + i for i in fi]]  # what a perfect model sees in the mirror
    hm, tags = merge_outputs(out, mirrored, K, fi, size=(32, 48))
    assert hm.shape == (1, K, 32, 48) and tags.shape == (1, K, 32, 48, 2)
    torch.testing.assert_close(tags[..., 0], tags[..., 1])
    ref = torch.nn.functional.interpolate(out[:, :K], size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(hm, ref)


def test_decode_maps_people_to_the_image() -> None:
    a = {j: (10 + j, 10) for j in range(K)}
    hm, tg = _scene([a], [1.0])
    raw = np.concatenate([hm, tg[..., 0]], 0)[None]
    codec = AssociativeEmbedding(num_joints=K, max_num_people=5)
    center, scale = np.array([100.0, 80.0]), np.array([W * 2 / 200.0, H * 2 / 200.0])  # image = 2x the input
    poses = codec.decode(raw, None, center, scale, input_size=(W, H))
    assert len(poses) == 1 and poses.keypoints.shape == (1, K, 3)
    # a symmetric peak: both neighbours equal, so adjust moves -0.25, then +0.5 to the pixel centre
    np.testing.assert_allclose(poses.keypoints[0, 0, :2], transform_preds(np.array([10.25, 10.25]), center, scale,
                                                                          (W, H)))
    np.testing.assert_allclose(poses.keypoints[0, 0, :2], [100 - W + 20.5, 80 - H + 20.5])
    # the host half of a decoded graph: candidates (a dict, or packed as the graph outputs them) over the maps
    tag_k, loc_k, val_k = top_k(torch.from_numpy(hm)[None], torch.from_numpy(tg)[None], 5, 5, 2)
    cand = dict(tag_k=tag_k[0].numpy(), loc_k=loc_k[0].numpy(), val_k=val_k[0].numpy())
    packed = pack_candidates(tag_k, loc_k, val_k)[0].numpy()
    for c in (cand, packed):
        got = codec.decode_candidates(hm, tg, c, center, scale)
        np.testing.assert_array_equal(got.keypoints, poses.keypoints)
        np.testing.assert_array_equal(got.scores, poses.scores)
    # the settings travel in the card: the decoder rebuilt from its dict decodes alike
    again = codec_from_dict(codec.to_dict()).decode(raw, None, center, scale, input_size=(W, H))
    np.testing.assert_array_equal(again.keypoints, poses.keypoints)
    with pytest.raises(ValueError, match="one image's output"):
        codec.decode(raw[0], None, center, scale, input_size=(W, H))
