"""OKS-NMS, rescoring, COCO / CrowdPose AP (checked against pycocotools and xtcocotools numbers) and MPII PCKh."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from srpose.eval.metrics import (
    COCO_METRIC_NAMES,
    coco_keypoint_eval,
    coco_results,
    crowdpose_keypoint_eval,
    mpii_pckh,
    oks_iou,
    oks_nms,
    rescore,
    rescore_all,
)
from srpose.keypoints import COCO_SIGMAS

# xtcocotools 1.14 (what mmpose 0.x calls) on the noisy results of `_noisy_results` below:
# COCOeval(gt, dt, 'keypoints', sigmas) and COCOeval(gt, dt, 'keypoints_crowd', sigmas, use_area=False).
XT_COCO = [0.42035897504968406, 0.6290526111434671, 0.4479068352179347, 0.40320603488920315, 0.6057143196543312,
           0.7166666666666667, 1.0, 0.75, 0.52, 0.8571428571428573]
XT_CROWD = [0.5064356435643564, 0.6881188118811881, 0.6089108910891088, 0.9, 1.0, 1.0, -1.0, 0.5064, -1.0]
XT_CROWD_SPLIT = XT_CROWD[:6] + [0.4303, -1.0, 0.701]  # crowdIndex set to 0.1 / 0.9


def _noisy_results(crowd_ann: dict, coco_ann: dict) -> tuple[list, list]:
    rng = np.random.default_rng(0)
    out = []
    for ann, k, base, step in ((crowd_ann, 14, 6, 10), (coco_ann, 17, 4, 8)):
        res = []
        for a in ann["annotations"]:
            kp = np.array(a["keypoints"], float).reshape(-1, 3)
            for rep in range(2):
                kk = kp.copy()
                kk[:, :2] += rng.normal(0, base + rep * step, (k, 2))
                kk[:, 2] = rng.random(k)
                res.append(dict(image_id=a["image_id"], category_id=1, keypoints=kk.reshape(-1).tolist(),
                                score=float(rng.random())))
        out.append(res)
    return out[0], out[1]


@pytest.fixture
def noisy(coco_sample, crowdpose_sample):
    crowd = json.loads(crowdpose_sample["ann"].read_text())
    coco = json.loads(coco_sample["ann"].read_text())
    crowd_res, coco_res = _noisy_results(crowd, coco)
    return dict(crowd=crowd, coco=coco, crowd_res=crowd_res, coco_res=coco_res)


# ------------------------------------------------------------------------------------------ OKS-NMS


def _pose(x0: float, y0: float, k: int = 17, score: float = 1.0) -> np.ndarray:
    p = np.zeros((k, 3))
    p[:, 0] = x0 + np.arange(k) * 3
    p[:, 1] = y0 + np.arange(k) * 5
    p[:, 2] = score
    return p


def test_oks_iou_hand_values():
    g = _pose(10, 10).reshape(-1)
    d = np.stack([_pose(10, 10).reshape(-1), _pose(13, 14).reshape(-1)])
    ious = oks_iou(g, d, 100.0, np.array([100.0, 300.0]))
    sig = np.array(COCO_SIGMAS)
    e = 25 / (2 * sig) ** 2 / ((100 + 300) / 2 + np.spacing(1)) / 2
    np.testing.assert_allclose(ious, [1.0, np.exp(-e).mean()], rtol=1e-6)
    # mmpose's vis_thr keeps the joints the *detection* scores above it
    d2 = _pose(13, 14)
    d2[:8, 2] = 0.1
    ious = oks_iou(g, d2.reshape(1, -1), 100.0, np.array([300.0]), vis_thr=0.2)
    np.testing.assert_allclose(ious, [np.exp(-e[8:]).mean()], rtol=1e-6)


def test_oks_nms_hand_cases():
    a = dict(keypoints=_pose(10, 10), score=0.9, area=5000.0)
    a_dup = dict(keypoints=_pose(10.5, 10), score=0.95, area=5000.0)
    b = dict(keypoints=_pose(300, 10), score=0.5, area=5000.0)
    c = dict(keypoints=_pose(600, 10), score=0.7, area=5000.0)
    assert oks_nms([a, a_dup, b, c], 0.9).tolist() == [1, 3, 2]  # the duplicate of a loses, best first
    assert oks_nms([a, b], 0.9).tolist() == [0, 1]
    assert oks_nms([a, a_dup], 1.0).tolist() == [1, 0]  # threshold 1: nothing is suppressed
    assert oks_nms([], 0.9).tolist() == []


def test_rescore():
    k = np.array([[0, 0, 0.9], [0, 0, 0.5], [0, 0, 0.1]])
    assert rescore(k, 0.8, 0.2) == pytest.approx(0.8 * 0.7)
    assert rescore(k, 0.8, 0.95) == 0.0
    many = np.random.default_rng(0).random((20, 17, 3)).astype(np.float32)
    boxes = np.random.default_rng(1).random(20).astype(np.float32)
    for thr in (0.2, 0.95, 1.0):  # the vectorised form (served and predicted people) equals it person by person
        want = [rescore(p, b, thr) for p, b in zip(many, boxes)]
        np.testing.assert_allclose(rescore_all(many, boxes, thr), want, rtol=1e-6)


def test_coco_results_nms_per_image():
    preds = np.stack([_pose(10, 10), _pose(10.5, 10), _pose(10, 10)]).astype(np.float32)
    preds[1, :, 2] = 0.9
    out = coco_results(preds, np.zeros((3, 2)), np.full((3, 2), 0.5), np.array([1.0, 1.0, 0.5]),
                       np.array([7, 7, 8]), sigmas=np.array(COCO_SIGMAS), vis_thr=0.2, oks_thr=0.9)
    assert [(r["image_id"], r["score"]) for r in out] == [(7, 1.0), (8, 0.5)]
    assert len(out[0]["keypoints"]) == 51 and out[0]["category_id"] == 1 and out[0]["scale"] == [0.5, 0.5]


# ------------------------------------------------------------------------------------------ COCO / CrowdPose


def test_coco_eval_matches_pycocotools_and_xtcocotools(noisy, coco_sample, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    res_file = tmp_path / "res.json"
    res_file.write_text(json.dumps(noisy["coco_res"]))
    ours = coco_keypoint_eval(coco_sample["ann"], res_file)
    assert list(ours) == list(COCO_METRIC_NAMES)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_sample["ann"]))
        ev = COCOeval(gt, gt.loadRes(str(res_file)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    np.testing.assert_allclose(list(ours.values()), ev.stats, rtol=0, atol=1e-12)
    np.testing.assert_allclose(list(ours.values()), XT_COCO, rtol=0, atol=1e-9)


def test_crowdpose_eval_matches_xtcocotools(noisy, crowdpose_sample, tmp_path):
    ours = crowdpose_keypoint_eval(crowdpose_sample["ann"], noisy["crowd_res"])
    np.testing.assert_allclose(list(ours.values()), XT_CROWD, rtol=0, atol=6e-5)  # xtcocotools rounds AP_E/M/H
    split = noisy["crowd"]
    split["images"][0]["crowdIndex"], split["images"][1]["crowdIndex"] = 0.1, 0.9
    ours = crowdpose_keypoint_eval(split, noisy["crowd_res"])
    np.testing.assert_allclose(list(ours.values()), XT_CROWD_SPLIT, rtol=0, atol=6e-5)


def test_eval_errors(noisy, coco_sample, crowdpose_sample):
    with pytest.raises(ValueError, match="result list is empty"):
        coco_keypoint_eval(coco_sample["ann"], [])
    bad = [dict(noisy["coco_res"][0], image_id=123)]
    with pytest.raises(ValueError, match="1 result image_ids are not in the annotations"):
        coco_keypoint_eval(coco_sample["ann"], bad)
    no_ci = noisy["crowd"]
    del no_ci["images"][0]["crowdIndex"]
    with pytest.raises(ValueError, match="crowdIndex"):
        crowdpose_keypoint_eval(no_ci, noisy["crowd_res"])


# ------------------------------------------------------------------------------------------ MPII


def test_mpii_pckh_hand_case():
    n = 4
    gt = np.zeros((n, 16, 2))
    heads = np.full(n, 10.0)
    preds = gt.copy()
    preds[0, :, 0] = 6.0  # person 0 misses every joint at 0.5 (error 0.6 head), hits none at 0.1
    preds[1, :, 0] = 3.0  # person 1 hits at 0.5, misses at 0.1
    vis = np.ones((n, 16))
    vis[3, 0] = 0  # not annotated: never counted
    preds[3, 0, 0] = 100.0
    table, per_joint = mpii_pckh(preds, gt, vis, heads)
    assert per_joint[0] == pytest.approx(2 / 3) and per_joint[1] == pytest.approx(3 / 4)
    assert table["Head"] == pytest.approx(3 / 4) and table["Ankle"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    counts = vis.sum(0)
    counts[6:8] = 0  # pelvis and thorax are not in the mean
    assert table["Mean"] == pytest.approx(float((per_joint * counts).sum() / counts.sum()))
    hits01 = np.array([1 / 3] + [2 / 4] * 15)  # only persons 2 and 3 are within 0.1 head
    assert table["Mean@0.1"] == pytest.approx(float((hits01 * counts).sum() / counts.sum()))
    with pytest.raises(ValueError, match="no usable head size"):
        mpii_pckh(preds, gt, vis, np.array([10.0, np.nan, 10.0, 10.0]))
