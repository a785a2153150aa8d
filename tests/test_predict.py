"""`srpose predict` and `srpose.Pose` (issue #21): sources, boxes, tracking, drawn output and results, on tiny
graphs and a generated video of moving people."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from _export_utils import cached_export, cached_image_graph

from srpose.cli import main
from srpose.data.synthetic_video import generate_video
from srpose.eval._sources import video_frames
from srpose.eval._track import TrackOptions
from srpose.eval.predict import Pose, PredictOptions, predict_sources


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """24 frames of two people walking in lanes of their own (320 x 240)."""
    return generate_video(tmp_path_factory.mktemp("clip"), frames=24, people=2, seed=3)


def test_pose_takes_paths_bytes_arrays_and_lists(coco_sample: dict) -> None:
    path = cached_image_graph()[0]
    pose = Pose(path)  # no detector or boxes: the whole image is one person
    image = Path(coco_sample["images"]) / "000000000785.jpg"
    a = pose(str(image))
    b = pose(image.read_bytes())
    c = pose(cv2.imread(str(image)))
    assert len(a) == 1 and a.keypoints.shape == (1, 17, 3) and a.track_ids.tolist() == [-1]
    for other in (b, c):
        np.testing.assert_array_equal(other.keypoints, a.keypoints)
    h, w = cv2.imread(str(image)).shape[:2]
    assert a.boxes.tolist() == [[0, 0, w, h]]
    both = pose([str(image), cv2.imread(str(image))[:200]])
    assert isinstance(both, list) and len(both) == 2
    np.testing.assert_allclose(both[0].keypoints, a.keypoints, atol=1e-4)
    with pytest.raises(ValueError, match="does not exist"):
        pose("/no/such.jpg")
    pose.close()


def test_predict_on_images_takes_each_images_boxes_from_the_file(coco_sample: dict, tmp_path: Path) -> None:
    """A COCO detections file: each image's boxes by its file name (not a video's frame numbers)."""
    det = json.loads(Path(coco_sample["det"]).read_text())
    pose = Pose(cached_image_graph()[0], boxes=coco_sample["det"])
    image = Path(coco_sample["images"]) / "000000000785.jpg"
    report = predict_sources(pose, [str(image)], PredictOptions(out=tmp_path / "o", save=False, progress=False))
    pose.close()
    assert report.persons == sum(d["image_id"] == 785 for d in det) > 0


def test_predict_cli_reads_every_kind_of_source(clip: dict, coco_sample: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """An image, a folder, a quoted glob, a video, a missing file and an unreadable video: the readable ones are
    predicted, drawn and written; the others named and counted."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg"):
        shutil.copy(Path(coco_sample["images"]) / name, images / name)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 10)
    out = tmp_path / "out"
    model = str(cached_image_graph()[0])
    rc = main(["predict", str(images / "000000000785.jpg"), str(images), str(images / "*40083.jpg"),
               str(clip["video"]), str(tmp_path / "missing.png"), str(tmp_path / "broken.mp4"), "--model", model,
               "--out", str(out), "--quiet", "--json", str(tmp_path / "report.json")])
    assert rc == 0
    text = capsys.readouterr()
    assert "skipped" in text.err and "missing.png: does not exist" in text.err
    assert "broken.mp4: cannot be opened: expected a video file" in text.err
    assert "2 inputs skipped" in text.out and "draw + write" in text.out and "frames/s" in text.out
    frames = 1 + 2 + 1 + 24
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frames"] == frames and report["persons"] == frames  # whole-image boxes: one person each
    assert set(report["frames_per_s"]) == {"read", "detect", "crop + pose", "draw + write"}
    results = json.loads((out / "results.json").read_text())
    listed = json.loads((out / "images.json").read_text())
    assert len(listed) == frames and [im["id"] for im in listed] == list(range(1, frames + 1))
    assert {r["image_id"] for r in results} == set(range(1, frames + 1))
    video = [r for r in results if "track_id" in r]
    assert len(video) == 24 and len({r["track_id"] for r in video}) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["000000000785.jpg", "000000000785_1.jpg", "000000040083.jpg", "000000040083_1.jpg", "video.mp4",
         "results.json", "images.json"])
    assert len(video_frames(out / "video.mp4")) == 24
    assert main(["predict", str(tmp_path / "missing.png"), "--model", model, "--out", str(tmp_path / "o2")]) == 2
    assert "nothing to read" in capsys.readouterr().err


class OracleRunner:
    """A stand-in pose runner for the generated clip: each box gets the keypoints of the ground-truth person it
    overlaps most in the current frame (frames in order)."""

    def __init__(self, ann: Path) -> None:
        data = json.loads(ann.read_text())
        self.by_frame: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            self.by_frame.setdefault(a["image_id"] - 1, []).append(a)
        self.frame = 0

    def run(self, images: list, boxes: list) -> list:
        out = []
        for b in boxes:
            gt = self.by_frame.get(self.frame, [])
            kps = []
            for box in np.asarray(b).reshape(-1, 5):
                best = max(gt, key=lambda a: _iou(box[:4], a["bbox"]))
                kps.append(np.asarray(best["keypoints"], np.float32).reshape(-1, 3) * [1, 1, 0.5])
            out.append((np.asarray(kps, np.float32).reshape(-1, 17, 3), np.ones(len(kps), np.float32), b))
            self.frame += 1
        return out

    def close(self) -> None:
        pass


def _iou(a: Any, b: Any) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


@pytest.mark.parametrize("every", [1, 4])
def test_tracking_keeps_ids_where_tracks_do_not_cross(clip: dict, every: int) -> None:
    """Detector boxes (the clip's detections) every ``every`` frames, boxes from the previous keypoints in between:
    each ground-truth person keeps one id for the whole clip, and two people never share one."""
    from srpose.eval._demo_clip import pck

    pose = Pose(cached_image_graph()[0], boxes=clip["det"], track_options=TrackOptions(detect_every=every))
    pose.runner = OracleRunner(clip["ann"])
    people = list(pose.track(video_frames(clip["video"]), fps=15))
    assert len(people) == 24 and all(len(p) == 2 for p in people)
    gt = json.loads(clip["ann"].read_text())["annotations"]
    ids: dict[int, set] = {}
    for t, p in enumerate(people):
        for a in (a for a in gt if a["image_id"] == t + 1):
            k = int(np.argmax([_iou(b, a["bbox"]) for b in p.boxes]))
            ids.setdefault(a["track_id"], set()).add(int(p.track_ids[k]))
    assert all(len(v) == 1 for v in ids.values()), ids  # no id switch
    assert len({next(iter(v)) for v in ids.values()}) == 2
    assert pck(people, clip["ann"]) == pytest.approx(1.0)
    # the demo's scoring of a clip counts the same: no switch here, one per person when the ids swap halfway
    from srpose.eval._demo_clip import id_switches

    ann = json.loads(clip["ann"].read_text())
    assert id_switches(people, ann) == 0
    for p in people[12:]:
        p.track_ids = p.track_ids[::-1].copy()
    assert id_switches(people, ann) == 2


def test_demo_clip_reads_predict_results_back() -> None:
    from srpose.eval._demo_clip import results_people

    rs = [dict(image_id=2, bbox=[1, 2, 3, 4], keypoints=[0.0] * 51, score=0.5, track_id=7)]
    people = results_people(rs + [dict(rs[0], image_id=9)], frames=3, joints=17)  # frame 9 is past the clip
    assert [len(p) for p in people] == [0, 1, 0] and people[0].keypoints.shape == (0, 17, 3)
    assert people[1].track_ids.tolist() == [7] and people[1].boxes.tolist() == [[1, 2, 3, 4]]


def test_bottom_up_models_find_people_without_boxes(coco_sample: dict) -> None:
    path = cached_export("bottom-up", "sr", decode=True, flip=True)[0]
    pose = Pose(path)
    people = pose(str(Path(coco_sample["images"]) / "000000000785.jpg"))
    assert people.keypoints.shape[1:] == (17, 3) and people.boxes.shape == (len(people), 4)
    with pytest.raises(ValueError, match="bottom-up"):
        Pose(path, boxes=coco_sample["det"])


def test_torch_and_onnxruntime_give_the_same_keypoints(clip: dict, tmp_path: Path) -> None:
    """A preset config with its checkpoint (run as its image graph in torch) and its exported image graph in ONNX
    Runtime: the same keypoints on the clip (random weights give flat maps, where an arg-max may move with float
    rounding: 99% of the joints agree to 2e-3 px)."""
    path, model, cfg = cached_image_graph(shape_profile="16x16,320x240,640x640")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pth")
    frames = video_frames(clip["video"])[:6]
    got = [list(Pose(m, checkpoint=c, boxes=clip["det"]).track(frames, fps=15))
           for m, c in ((str(tmp_path / "cfg.json"), str(tmp_path / "w.pth")), (str(path), None))]
    a = np.concatenate([p.keypoints for p in got[0]])
    b = np.concatenate([p.keypoints for p in got[1]])
    assert a.shape == b.shape == (12, 17, 3)
    close = np.isclose(a[..., :2], b[..., :2], atol=2e-3).all(-1)
    assert close.mean() >= 0.99, close.mean()
    for p, q in zip(*got):
        np.testing.assert_array_equal(p.track_ids, q.track_ids)


def test_predict_sources_api_and_options(clip: dict, tmp_path: Path) -> None:
    pose = Pose(cached_image_graph()[0], boxes=clip["det"])
    report = predict_sources(pose, [str(clip["video"])], PredictOptions(out=tmp_path / "o", save=False,
                                                                        max_frames=5, progress=False))
    assert report.frames == 5 and report.persons == 10 and report.outputs == []
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["images.json", "results.json"]
    with pytest.raises(ValueError, match="--max-frames must be >= 1"):
        predict_sources(pose, [str(clip["video"])], PredictOptions(out=tmp_path / "o", max_frames=0))
    with pytest.raises(ValueError, match="a detector or a boxes file, not both"):
        Pose(cached_image_graph()[0], boxes=clip["det"], detector=clip["det"])


def test_the_next_frames_detection_starts_before_this_frames_pose(clip: dict) -> None:
    """Detector (asynchronous on TensorRT) and pose graph overlap: with frames queued, frame n + 1's detection is
    submitted before frame n's pose runs and waited for after it; between detector frames none is submitted."""
    import queue

    from srpose.eval._sources import Frame, Source
    from srpose.eval.predict import _END, PredictReport, _loop

    events: list[tuple[str, int]] = []

    class Detector:  # the PersonDetector interface the loop uses
        def submit(self, image: np.ndarray) -> Any:
            n = int(image[0, 0, 0])
            events.append(("submit", n))
            return lambda: (events.append(("wait", n)), np.array([[0, 0, 8, 8, 1]], np.float32))[1]

        def detect(self, image: np.ndarray) -> np.ndarray:
            return self.submit(image)()

    class Runner:
        def run(self, images: list, boxes: list) -> list:
            events.append(("pose", int(images[0][0, 0, 0])))
            kp = np.tile(np.asarray([[2, 2, 1], [6, 6, 1]], np.float32), (9, 1))[:17]  # confident, in the box
            return [(np.tile(kp, (len(b), 1, 1)), np.ones(len(b), np.float32), b) for b in boxes]

    class Sink:
        def add(self, *a: Any, **k: Any) -> None:
            pass

    pose = Pose(cached_image_graph()[0], track_options=TrackOptions(detect_every=2))
    pose.runner, pose.detector = Runner(), Detector()
    src = Source(kind="video", path=clip["video"], name="v")
    frames: queue.Queue = queue.Queue()
    for n in range(4):
        frames.put(Frame(image=np.full((16, 16, 3), n, np.uint8), source=src, number=n, fps=15.0))
    frames.put(_END)
    _loop(pose, frames, Sink(), PredictOptions(out="unused", progress=False), PredictReport())
    assert events == [("submit", 0), ("wait", 0), ("pose", 0),  # frame 1: boxes from frame 0's keypoints
                      ("submit", 2), ("pose", 1), ("wait", 2), ("pose", 2), ("pose", 3)]


def test_predict_command_waits_passively_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
