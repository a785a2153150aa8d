"""The one place that decides a config's task and codec (``srpose.tasks.task_for``), and that every consumer
(the evaluator, the export's card, the end-to-end bench) decodes with that codec."""
from __future__ import annotations

import numpy as np
import pytest
from _export_utils import tiny_config, tiny_model

from srpose import get_config
from srpose.codecs import AssociativeEmbedding, MSRAHeatmap, SRPoseHeatmap
from srpose.config import PoseConfig
from srpose.engines import open_backend
from srpose.eval import EvalOptions, OracleBackend, evaluate
from srpose.tasks import BottomUpTask, TopDownTask, task_for

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(task, backend, ds, **kw):
    return evaluate(task, backend, ds, EvalOptions(workers=0, progress=False, **kw))


@pytest.mark.parametrize("name, task_cls, codec", [
    ("res50_coco_256x192", TopDownTask, MSRAHeatmap),
    ("res50_srpose_coco_256x192", TopDownTask, SRPoseHeatmap),
    ("res50_sr_coco_256x192", TopDownTask, SRPoseHeatmap),
    ("hrnet_w32_coco_512x512", BottomUpTask, AssociativeEmbedding),
])
def test_task_for_decides_the_task_and_codec(name: str, task_cls: type, codec: type) -> None:
    cfg = get_config(name)
    for task in (task_for(cfg), task_for(name)):
        assert type(task) is task_cls and type(task.codec) is codec
        assert task.kind == ("bottom-up" if cfg.is_bottom_up else "top-down")
    assert task_for(cfg).make_card(decode=False, flip=False, batch=task_cls.default_batch).codec["name"] == codec.name


def test_task_for_refuses_a_codec_the_model_cannot_use() -> None:
    cfg = get_config("res50_coco_256x192")
    cfg.data["decoder"] = "associative_embedding"
    with pytest.raises(ValueError, match="no top-down codec for decoder 'associative_embedding'"):
        task_for(cfg)
    cfg = get_config("hrnet_w32_coco_512x512")
    cfg.data["decoder"] = "srpose"
    with pytest.raises(ValueError, match="decode with associative embedding, not 'srpose'"):
        task_for(cfg)


@pytest.mark.parametrize("head, codec", [("srpose", SRPoseHeatmap), ("simple", MSRAHeatmap)])
def test_a_config_without_decoder_decodes_with_its_model_types_codec_everywhere(head, codec, coco_sample, tmp_path):
    """A config whose ``data`` lacks ``decoder`` (hand-written JSON): ``TopDownHigher`` decodes with the SRPose codec,
    ``TopDown`` with the simple one, in the task, the evaluator and the end-to-end bench of its export (the old
    evaluator and exporter defaulted to "simple", the old bench to "srpose" for files naming no decoder)."""
    from srpose.eval.bench import make_end_to_end, task_of_backend
    from srpose.export.onnx_export import export_onnx

    cfg = tiny_config("hrnet", head)
    del cfg.data["decoder"]
    task = task_for(cfg)
    assert isinstance(task.codec, codec) and task.codec.name == codec.name
    explicit = task_for(PoseConfig.from_dict({**cfg.to_dict(), "data": dict(cfg.data, decoder=codec.name)}))
    ds = task.gt_dataset(coco_sample["ann"], coco_sample["images"])
    res = _run(task, OracleBackend(task), ds, flip=False)
    assert res.decoder == codec.name
    np.testing.assert_array_equal(res.keypoints, _run(explicit, OracleBackend(explicit), ds, flip=False).keypoints)

    model = tiny_model(cfg)
    with open_backend(export_onnx(model, cfg, tmp_path / "m.onnx")) as ort:
        assert ort.card.codec["name"] == codec.name and task_of_backend(ort).codec.name == codec.name
        seen = []

        class Recording:  # the backend, remembering what it returned
            decoded, card = ort.decoded, ort.card

            def infer(self, images):
                seen.append(ort.infer(images))
                return seen[-1]

        seed, n = 3, 4
        xy, score = make_end_to_end(Recording(), task_of_backend(ort), seed=seed)(np.zeros(n))
    rng = np.random.default_rng(seed)  # the centers make_end_to_end draws (after its 640x480 image)
    rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    centers = np.stack([rng.uniform(200, 440, n), rng.uniform(150, 330, n)], 1).astype(np.float32)
    w, h = cfg.image_size
    scales = np.tile(np.array([[w / 200.0 * 1.25, h / 200.0 * 1.25]], np.float32), (n, 1))
    want = codec.from_config(cfg).decode_to_image(seen[0]["heatmaps"], centers, scales)
    np.testing.assert_allclose(xy, want[0], rtol=1e-6)
    np.testing.assert_allclose(score, want[1], rtol=1e-6)
    other = (MSRAHeatmap if codec is SRPoseHeatmap else SRPoseHeatmap).from_config(cfg)
    assert not np.allclose(other.decode_to_image(seen[0]["heatmaps"], centers, scales)[0], xy)  # codecs differ here


