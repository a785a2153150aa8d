"""scripts/bench_host.py (host persons/s per path with the zero-cost stand-in backend) and the stand-in itself."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from _scripts import load_script

from srpose.engines.standin import StandInBackend
from srpose.export.image_graph import image_card
from srpose.tasks import task_for



def _script():
    return load_script("bench_host")


def test_stand_in_returns_each_graphs_outputs_and_reuses_its_buffers() -> None:
    task = task_for("res18w16_srpose_coco_96x64")
    raw = task.make_card(decode=False, flip=False, batch=task.default_batch)
    crops = np.zeros((3, 3, 96, 64), np.float32)
    assert StandInBackend(raw).infer(crops)["heatmaps"].shape == (3, 17, 96, 64)
    decoded = StandInBackend(task.make_card(decode=True, flip=True, batch=task.default_batch))
    assert decoded.infer(crops)["keypoints"].shape == (3, 17, 3) and decoded.flip_in_graph
    image = StandInBackend(image_card(raw, task))
    a = image.input_arrays({"images": (2, 64, 96, 3), "boxes": (5, 5), "box_image": (5,)})
    b = image.input_arrays({"images": (1, 32, 32, 3), "boxes": (2, 5), "box_image": (2,)})
    c = image.input_arrays({"images": (1, 32, 32, 3), "boxes": (2, 5), "box_image": (2,)})
    assert a["images"].dtype == np.uint8 and a["box_image"].dtype == np.int32
    assert np.shares_memory(a["images"], c["images"]) and not np.shares_memory(a["images"], b["images"])  # 2 slots
    a["boxes"][:] = [[10 * i, 5, 20, 40, 0.1 * i] for i in range(5)]
    out = image.submit(a).result()
    assert out["keypoints"].shape == (5, 17, 3) and out["scores"].shape == (5,)
    # people where their boxes are (tracking and drawing downstream see them), confident, scored as the box
    kp, box = out["keypoints"], a["boxes"][:, None, :]
    assert np.all((kp[..., 0] >= box[..., 0]) & (kp[..., 0] <= box[..., 0] + box[..., 2]))
    assert np.all((kp[..., 1] >= box[..., 1]) & (kp[..., 1] <= box[..., 1] + box[..., 3]))
    assert np.all(kp[..., 2] == 1) and np.allclose(out["scores"], a["boxes"][:, 4])


def test_bench_host_measures_every_path(coco_sample: dict, tmp_path: Path) -> None:
    out = tmp_path / "host.json"
    assert _script().main(["--copies", "2", "--workers", "0", "--default-persons", "16", "--no-ort", "--no-write",
                           "--model", "res18w16_srpose_coco_96x64", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    rates = res["persons_per_s"]
    assert set(rates) == {"default", "decode", "image", "floor"} and all(v > 0 for v in rates.values())
    assert res["persons"] == 236 and res["images"] == 8 and res["default_persons"] == 16
    assert rates["image"] > rates["default"]  # no host flip, crops or decoding: even on a busy machine
    assert set(res["targets"]) == {"image_vs_default", "floor_vs_image"}
