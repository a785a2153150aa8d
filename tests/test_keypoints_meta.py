"""Dataset metadata (srpose.keypoints) against mmpose 0.x's dataset definitions, and the skeletons' consistency
(valid limbs, mapped onto each other by the flip pairs) that the drawing code relies on."""
from __future__ import annotations

import pytest

from srpose.config import make_data_cfg
from srpose.keypoints import DATASETS, dataset_meta

# Written from open-mmlab/mmpose, branch 0.x, configs/_base_/datasets/{coco,crowdpose,mpii}.py: `keypoint_info`
# (name and `swap` of each joint, in id order), `skeleton_info` (`link` names, in id order), `joint_weights` and
# `sigmas`, as listed there.
MMPOSE = {
    "coco": dict(
        joints=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                "right_knee", "left_ankle", "right_ankle"),
        swaps=(("left_eye", "right_eye"), ("left_ear", "right_ear"), ("left_shoulder", "right_shoulder"),
               ("left_elbow", "right_elbow"), ("left_wrist", "right_wrist"), ("left_hip", "right_hip"),
               ("left_knee", "right_knee"), ("left_ankle", "right_ankle")),
        links=(("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
               ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
               ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"),
               ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
               ("left_eye", "right_eye"), ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
               ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder")),
        joint_weights=(1., 1., 1., 1., 1., 1., 1., 1.2, 1.2, 1.5, 1.5, 1., 1., 1.2, 1.2, 1.5, 1.5),
        sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087,
                0.087, 0.089, 0.089)),
    "crowdpose": dict(
        joints=("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "top_head", "neck"),
        swaps=(("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"), ("left_wrist", "right_wrist"),
               ("left_hip", "right_hip"), ("left_knee", "right_knee"), ("left_ankle", "right_ankle")),
        links=(("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
               ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
               ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"),
               ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
               ("top_head", "neck"), ("right_shoulder", "neck"), ("left_shoulder", "neck")),
        joint_weights=(0.2, 0.2, 0.2, 1.3, 1.5, 0.2, 1.3, 1.5, 0.2, 0.2, 0.5, 0.2, 0.2, 0.5),
        sigmas=(0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079)),
    "mpii": dict(
        joints=("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
                "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder",
                "left_elbow", "left_wrist"),
        swaps=(("right_ankle", "left_ankle"), ("right_knee", "left_knee"), ("right_hip", "left_hip"),
               ("right_wrist", "left_wrist"), ("right_elbow", "left_elbow"), ("right_shoulder", "left_shoulder")),
        links=(("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "pelvis"),
               ("pelvis", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("pelvis", "thorax"),
               ("thorax", "upper_neck"), ("upper_neck", "head_top"), ("upper_neck", "right_shoulder"),
               ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"), ("upper_neck", "left_shoulder"),
               ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist")),
        joint_weights=(1.5, 1.2, 1., 1., 1.2, 1.5, 1., 1., 1., 1., 1.5, 1.2, 1., 1., 1.2, 1.5),
        sigmas=(0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062, 0.072, 0.179, 0.179,
                0.072, 0.062)),
}
#: mmpose's `type` of each joint (the half-body augmentation's halves): the upper ones; every other joint is lower
UPPER = {
    "coco": ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist"),
    "crowdpose": ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "top_head", "neck"),
    "mpii": ("thorax", "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder",
             "left_elbow", "left_wrist"),
}
NAMES = sorted(MMPOSE)


def test_every_dataset_is_covered() -> None:
    assert set(DATASETS) == set(MMPOSE)
    with pytest.raises(ValueError, match="unknown dataset 'lsp'.*coco"):
        dataset_meta("lsp")


@pytest.mark.parametrize("name", NAMES)
def test_metadata_matches_mmpose(name: str) -> None:
    ref, meta = MMPOSE[name], dataset_meta(name)
    idx = {j: i for i, j in enumerate(ref["joints"])}
    assert tuple(meta["joints"]) == ref["joints"]
    assert sorted(tuple(sorted(p)) for p in meta["flip_pairs"]) == sorted(
        tuple(sorted((idx[a], idx[b]))) for a, b in ref["swaps"])
    assert [tuple(limb) for limb in meta["skeleton"]] == [(idx[a], idx[b]) for a, b in ref["links"]]
    assert tuple(meta["joint_weights"]) == pytest.approx(ref["joint_weights"], abs=0)
    assert tuple(meta["sigmas"]) == pytest.approx(ref["sigmas"], abs=0)
    assert sorted(meta["upper_body"]) == sorted(idx[j] for j in UPPER[name])
    assert sorted(meta["lower_body"]) == sorted(set(range(len(idx))) - {idx[j] for j in UPPER[name]})


@pytest.mark.parametrize("name", NAMES)
def test_skeleton_is_valid_and_mirror_symmetric(name: str) -> None:
    """What a drawer needs: every limb joins two different, existing joints, once; every joint is on a limb and the
    limbs form one figure; the flip pairs map the left limbs onto the right ones (and centre limbs onto themselves)."""
    meta = dataset_meta(name)
    k = len(meta["joints"])
    limbs = [tuple(int(i) for i in limb) for limb in meta["skeleton"]]
    assert all(len(limb) == 2 and 0 <= limb[0] < k and 0 <= limb[1] < k and limb[0] != limb[1] for limb in limbs)
    undirected = {frozenset(limb) for limb in limbs}
    assert len(undirected) == len(limbs), "a limb is listed twice"
    assert set().union(*undirected) == set(range(k)), "a joint is on no limb"
    reached, todo = {0}, [0]
    while todo:
        j = todo.pop()
        for limb in undirected:
            if j in limb and not limb <= reached:
                todo += list(limb - reached)
                reached |= limb
    assert reached == set(range(k)), "the skeleton falls apart"
    mirror = list(range(k))
    for a, b in meta["flip_pairs"]:
        mirror[a], mirror[b] = b, a
    assert {frozenset(mirror[i] for i in limb) for limb in undirected} == undirected
    names = meta["joints"]
    for a, b in meta["flip_pairs"]:  # a pair is the same joint of the two sides
        assert names[a].replace("left", "right") == names[b] or names[a].replace("right", "left") == names[b]
    halves = (set(meta["upper_body"]), set(meta["lower_body"]))
    assert halves[0] | halves[1] == set(range(k)) and not halves[0] & halves[1]
    assert all((a in halves[0]) == (b in halves[0]) for a, b in meta["flip_pairs"])


@pytest.mark.parametrize("name", NAMES)
def test_data_config_carries_the_dataset(name: str) -> None:
    """A model's data section names its dataset, so the drawer picks the skeleton from the config alone."""
    data = make_data_cfg(name)
    meta = dataset_meta(data["dataset"])
    assert data["num_joints"] == len(meta["joints"]) and [tuple(p) for p in data["flip_pairs"]] == list(
        meta["flip_pairs"])
    assert max(max(limb) for limb in meta["skeleton"]) < data["num_joints"]
