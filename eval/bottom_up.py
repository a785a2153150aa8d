"""Bottom-up evaluation (mmpose 0.x protocol): whole images resized with aspect kept -> backend (+ mirrored pass) ->
flip merge, projection, NMS, top-k -> tag grouping, adjust, refine -> COCO AP with pycocotools. No person boxes.

Backends return the raw head output (1 x (K + L) x h x w) like the top-down ``heatmaps`` kind, so the PyTorch,
ONNX Runtime and oracle backends plug in; :class:`BottomUpOnnxBackend` also runs graphs exported with ``--decode``
(flip, NMS and top-k in the graph) and returns their three outputs.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from srpose.engines.base import Backend

from .evaluator import EvalResult
from .metrics import COCO_METRIC_NAMES, coco_keypoint_eval

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from srpose.config import PoseConfig
    from srpose.data.bottom_up import BottomUpCocoDataset

__all__ = ["BottomUpOracleBackend", "BottomUpOnnxBackend", "evaluate_bottom_up", "run_bottom_up_eval",
           "run_bottom_up_parity", "run_bottom_up_parity_command", "bottom_up_parity_markdown", "bench_bottom_up",
           "DECODED_KIND"]

DECODED_KIND = "bottomup_candidates"


# ----------------------------------------------------------------------------------------------- backends
class BottomUpOracleBackend(Backend):
    """The head output a perfect model would give: heatmaps rendered from the ground-truth joints at the heatmap
    resolution (sigma of the config) and tag maps holding one distinct value per person.

    Needs the image's ground truth as ``meta["joints"]`` (a one-element list of P x K x 3 in input pixels).
    """

    name = "oracle"
    needs_meta = True

    def __init__(self, data_cfg: Mapping[str, Any], tag_per_joint: bool = True) -> None:
        super().__init__()
        iw, hw = int(data_cfg["image_size"][0]), int(data_cfg["heatmap_size"][0])
        if iw % hw:
            raise ValueError(f"input size {iw} is not a multiple of heatmap size {hw}")
        self.stride = iw // hw
        self.sigma = float(data_cfg.get("sigma", 2.0))
        self.tag_per_joint = bool(tag_per_joint)

    def infer(self, images: np.ndarray, meta: Mapping[str, Any] | None = None) -> np.ndarray:
        from srpose.data.bottom_up import render_heatmaps, render_tag_maps

        if meta is None or meta.get("joints") is None:
            raise ValueError("the bottom-up oracle needs the image's ground-truth joints (meta['joints'])")
        t0 = time.perf_counter()
        n, _, h, w = images.shape
        if h % self.stride or w % self.stride:
            raise ValueError(f"input {w}x{h} is not a multiple of the output stride {self.stride}")
        size = (w // self.stride, h // self.stride)
        outs = []
        for joints in list(meta["joints"])[:n]:
            joints = np.asarray(joints, dtype=np.float32).copy()
            joints[..., :2] /= self.stride
            tags = [2.0 * (p + 1) for p in range(len(joints))]
            hm = render_heatmaps(joints, size, self.sigma)
            tm = render_tag_maps(joints, size, self.sigma, tags)
            if not self.tag_per_joint:
                tm = tm.max(axis=0, keepdims=True)
            outs.append(np.concatenate([hm, tm], 0))
        if len(outs) != n:
            raise ValueError(f"oracle got {n} images but {len(outs)} joint sets")
        self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        return np.stack(outs)


class BottomUpOnnxBackend(Backend):
    """ONNX Runtime on a bottom-up export: raw graphs return N x (K + L) x h x w, ``--decode`` graphs a dict with
    ``heatmaps``, ``tags`` and ``candidates`` (``output_kind`` :data:`DECODED_KIND`, flip per the metadata)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, providers: Sequence[str] | str | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        from srpose.engines.onnxruntime import _decode_meta, resolve_providers

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=resolve_providers(providers))
        except Exception as e:  # onnxruntime raises its own exception types
            if isinstance(e, RuntimeError) and "not available" in str(e):
                raise
            raise ValueError(f"ONNX Runtime cannot load {self.path}: {str(e).splitlines()[0] if str(e) else e}") \
                from None
        self.meta = _decode_meta(self.session.get_modelmeta().custom_metadata_map)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input, got {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.decoded = self.meta.get("output_kind") == DECODED_KIND
        if self.decoded and sorted(self.output_names) != ["candidates", "heatmaps", "tags"]:
            raise ValueError(f"{self.path}: a decoded bottom-up graph needs outputs heatmaps, tags and candidates, "
                             f"got {self.output_names}")
        if not self.decoded and len(self.output_names) != 1:
            raise ValueError(f"{self.path}: expected one output (the raw head output), got {self.output_names}")
        self.output_kind = DECODED_KIND if self.decoded else "heatmaps"
        self.flip_in_graph = bool(self.meta.get("flip", False))
        self.precision = str(self.meta.get("precision", "fp32"))
        self.name = f"onnxruntime-{self.precision}"

    def infer(self, images: np.ndarray, meta: Mapping[str, Any] | None = None) -> Any:
        if self.session is None:
            raise RuntimeError(f"the ONNX Runtime backend of {self.path.name} is closed")
        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be N x 3 x H x W, got shape {x.shape}")
        t0 = time.perf_counter()
        outs = self.session.run(self.output_names, {self.input_name: x})
        self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        if self.decoded:
            return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outs)}
        return np.asarray(outs[0], dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


# ----------------------------------------------------------------------------------------------- evaluation
def _identity(x: Any) -> Any:
    return x


def _infer(backend: Backend, images: np.ndarray, meta: Mapping[str, Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = backend.infer(images, meta) if backend.needs_meta else backend.infer(images)
    return out, time.perf_counter() - t0


def _check_raw(out: Any, name: str, num_joints: int, hw: tuple[int, int]) -> np.ndarray:
    out = np.asarray(out, dtype=np.float32)
    if out.ndim != 4 or out.shape[0] != 1 or out.shape[1] not in (2 * num_joints, num_joints + 1):
        raise ValueError(f"backend {name!r} returned shape {out.shape}; a bottom-up backend returns "
                         f"1 x (K + L) x h x w with K = {num_joints} heatmaps and L = {num_joints} (or 1) tag maps")
    h, w = hw
    if h % out.shape[2] or w % out.shape[3] or h // out.shape[2] != w // out.shape[3]:
        raise ValueError(f"backend {name!r} returned {out.shape[3]}x{out.shape[2]} maps for a {w}x{h} input: not an "
                         "integer downscale")
    if not np.isfinite(out).all():
        raise ValueError(f"backend {name!r} produced non-finite outputs")
    return out


def evaluate_bottom_up(backend: Backend, dataset: "BottomUpCocoDataset", cfg: "PoseConfig", *,
                       flip: bool | None = None, adjust: bool | None = None, refine: bool | None = None,
                       workers: int = 0, progress: bool = True, results_file: str | Path | None = None,
                       on_output: Callable[[np.ndarray, Any], None] | None = None) -> EvalResult:
    """Run ``backend`` on every image of ``dataset`` and score the grouped people with COCO AP.

    ``flip=None`` follows ``test_cfg.flip_test`` (backends with ``flip_in_graph`` are not flipped here); ``adjust``
    and ``refine`` default to the config's. ``on_output(images, output)`` sees every backend result (parity).
    ``EvalResult.num_persons`` counts the people found; throughput fields are per image.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from srpose.bottom_up import GroupParams, decode_maps, decode_outputs, flip_index_from_pairs
    from srpose.data.bottom_up import mirror_joints

    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    test_cfg = cfg.test_cfg
    k = cfg.num_joints
    params = GroupParams.from_test_cfg(test_cfg, k)
    scales = list(test_cfg.get("scale_factor", [1]))
    if len(scales) != 1 or float(scales[0]) != 1.0:
        raise ValueError(f"test_cfg.scale_factor {scales}: only single-scale testing ([1]) is supported")
    flip_index = flip_index_from_pairs(k, cfg.flip_pairs)
    decoded = backend.output_kind == DECODED_KIND
    want_flip = bool(test_cfg.get("flip_test", True) if flip is None else flip)
    host_flip = want_flip and not backend.flip_in_graph and not decoded
    project = bool(test_cfg.get("project2image", True))
    if decoded and not project:
        raise ValueError("decoded bottom-up graphs project the maps to the input size: set project2image=True")
    results: list[dict[str, Any]] = []
    n_people = 0
    backend_secs = 0.0
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity)
    t_start = time.perf_counter()
    with torch.inference_mode(), tqdm(total=len(dataset), unit="img", desc=f"eval {backend.name}",
                                      disable=not progress, leave=False) as bar:
        for item in loader:
            images = np.asarray(item["img"], dtype=np.float32)[None]
            h, w = images.shape[2:]
            meta = dict(joints=[item["joints"]], image_id=[item["image_id"]])
            out, secs = _infer(backend, images, meta)
            backend_secs += secs
            if on_output is not None:
                on_output(images, out)
            if decoded:
                poses = decode_maps(out["heatmaps"][0], out["tags"][0], out["candidates"][0], item["center"],
                                    item["scale"], params, adjust=adjust, refine=refine)
            else:
                out = _check_raw(out, backend.name, k, (h, w))
                out_f = None
                if host_flip:
                    meta_f = dict(meta, joints=[mirror_joints(item["joints"], w, flip_index)])
                    out_f, secs_f = _infer(backend, np.ascontiguousarray(images[..., ::-1]), meta_f)
                    backend_secs += secs_f
                    if on_output is not None:
                        on_output(np.ascontiguousarray(images[..., ::-1]), out_f)
                    out_f = _check_raw(out_f, backend.name, k, (h, w))
                poses = decode_outputs(out, out_f, item["center"], item["scale"], params, flip_index,
                                       input_size=(w, h), project2image=project, adjust=adjust, refine=refine)
            n_people += len(poses)
            for p in range(len(poses)):
                kpt = poses.keypoints[p]
                results.append(dict(image_id=item["image_id"], category_id=1,
                                    keypoints=[float(v) for v in kpt.reshape(-1)], score=float(poses.scores[p])))
            bar.update(1)
    elapsed = time.perf_counter() - t_start
    n_img = len(dataset)
    if results:
        metrics = coco_keypoint_eval(dataset.ann_file, results, sigmas=dataset.sigmas)
    else:  # as mmpose: no detection at all scores zero rather than failing
        warnings.warn(f"backend {backend.name!r} found no person in {n_img} images; every metric is 0", stacklevel=2)
        metrics = {name: 0.0 for name in COCO_METRIC_NAMES}
    if results_file is not None:
        from srpose._io import atomic_write_json

        atomic_write_json(results_file, results)
    use_adjust = params.adjust if adjust is None else adjust
    use_refine = params.refine if refine is None else refine
    post = "+".join(s for s, on in (("adjust", use_adjust), ("refine", use_refine)) if on) or None
    return EvalResult(metrics=metrics, dataset=dataset.dataset_name, backend=backend.name, num_persons=n_people,
                      num_images=n_img, images_per_s=n_img / elapsed if elapsed > 0 else float("inf"),
                      backend_ms_per_person=backend_secs * 1e3 / n_img, flip=host_flip or backend.flip_in_graph,
                      post_process=post, decoder="associative_embedding",
                      results_file=None if results_file is None else str(results_file))


# ----------------------------------------------------------------------------------------------- CLI
def _make_backend(args: argparse.Namespace, cfg: "PoseConfig") -> Backend:
    from .commands import BACKENDS

    if args.backend == "oracle":
        return BottomUpOracleBackend(cfg.data, bool(cfg.test_cfg.get("tag_per_joint", True)))
    if args.backend == "onnxruntime":
        return BottomUpOnnxBackend(args.model_file, providers="cuda" if str(args.device).startswith("cuda") else None)
    return BACKENDS[args.backend](args, cfg)


def run_bottom_up_eval(args: argparse.Namespace, cfg: "PoseConfig") -> int:
    """``srpose eval`` for a bottom-up model (``--bottom-up``, or any bottom-up config)."""
    from srpose._io import atomic_write_json
    from srpose.data.bottom_up import BottomUpCocoDataset
    from srpose.models.bottom_up import is_bottom_up

    from .commands import format_table

    if not is_bottom_up(cfg):
        raise ValueError(f"--bottom-up: {cfg.name} is a top-down model (type {cfg.model.get('type')!r}); "
                         "drop --bottom-up")
    if getattr(args, "det", None) or getattr(args, "gt_bbox", False):
        raise ValueError("bottom-up evaluation uses whole images, no person boxes: drop --det / --gt-bbox")
    dataset_name = args.dataset or cfg.data.get("dataset", "coco")
    if dataset_name != "coco":
        raise ValueError(f"bottom-up evaluation supports the COCO protocol only, not {dataset_name!r}")
    dataset = BottomUpCocoDataset(args.ann, args.images, cfg.data)
    backend = _make_backend(args, cfg)
    post = getattr(args, "post", True)
    try:
        res = evaluate_bottom_up(backend, dataset, cfg, flip=args.flip, adjust=None if post else False,
                                 refine=None if post else False, workers=args.workers, progress=not args.quiet,
                                 results_file=args.results)
    finally:
        backend.close()
    print(f"{cfg.name} | backend {res.backend} | {res.dataset} bottom-up | {res.num_persons} people in "
          f"{res.num_images} images | flip {'on' if res.flip else 'off'} | post {res.post_process or 'off'}")
    print(format_table(res.metrics))
    print(f"{res.images_per_s:.2f} images/s end to end, {res.backend_ms_per_person:.1f} ms/image in the backend")
    if args.results:
        print(f"keypoint results written to {args.results}")
    if args.json_out:
        atomic_write_json(args.json_out, dict(model=cfg.name, config_source=cfg.source, checkpoint=args.checkpoint,
                                              model_file=args.model_file, ann=str(args.ann), images=str(args.images),
                                              protocol="bottom-up", **res.to_dict()))
        print(f"metrics written to {args.json_out}")
    return 0


# ----------------------------------------------------------------------------------------------- parity + bench
def _file_backend(path: str | Path, *, threads: int | None = None, device: int = 0) -> Backend:
    """A bottom-up model file as a backend: TensorRT for ``.engine`` / ``.plan``, else ONNX Runtime."""
    if Path(path).suffix in (".engine", ".plan"):
        from srpose.engines.tensorrt import TensorRTBackend

        return TensorRTBackend(path, device=device)
    return BottomUpOnnxBackend(path, threads=threads)


def run_bottom_up_parity(model: "nn.Module", cfg: "PoseConfig", model_files: Sequence[str | Path],
                         dataset: "BottomUpCocoDataset", *, flip: bool | None = None, threads: int | None = None,
                         progress: bool = False) -> dict[str, Any]:
    """PyTorch and each bottom-up ONNX file on ``dataset``: AP and its delta, output error against PyTorch on every
    image the backend sees (heatmaps and tags), backend time per image."""
    import torch

    from srpose.export.bottom_up import reference_outputs
    from srpose.export.compare import ErrorAccumulator

    from .backends import TorchBackend

    ref = evaluate_bottom_up(TorchBackend(model), dataset, cfg, flip=flip, progress=progress)
    report: dict[str, Any] = dict(
        model=cfg.name, dataset=ref.dataset, protocol="bottom-up", images=ref.num_images, flip=ref.flip,
        primary_metric="AP", reference=dict(name="pytorch", precision="fp32", metrics=ref.metrics,
                                            people=ref.num_persons, backend_ms_per_image=ref.backend_ms_per_person),
        models=[], warnings=[])
    for path in model_files:
        backend = _file_backend(path, threads=threads)
        acc = ErrorAccumulator()
        decoded, in_graph_flip = backend.output_kind == DECODED_KIND, backend.flip_in_graph

        def compare(images: np.ndarray, out: Any, _acc: ErrorAccumulator = acc, _dec: bool = decoded,
                    _flip: bool = in_graph_flip) -> None:
            with torch.no_grad():
                r = reference_outputs(model, cfg, images, decode=_dec, flip=_flip)
            if _dec:
                for name, val in zip(("heatmaps", "tags"), r[:2]):
                    _acc.add(val, out[name])
            else:
                _acc.add(r[0], out)

        try:
            res = evaluate_bottom_up(backend, dataset, cfg, flip=flip, progress=progress, on_output=compare)
        finally:
            backend.close()
        notes = []
        if in_graph_flip != ref.flip and decoded:
            notes.append(f"{Path(path).name}: flip in graph is {in_graph_flip}, the reference's flip is {ref.flip}")
        err = acc.result()
        report["models"].append(dict(
            file=str(path), name=Path(path).name, precision=backend.precision, output_kind=backend.output_kind,
            flip=res.flip, metrics=res.metrics, delta={k: res.metrics[k] - ref.metrics[k] for k in res.metrics},
            people=res.num_persons, output_error={k: err[k] for k in ("max_abs", "rel_l2", "cosine", "ref_max_abs")},
            backend_ms_per_image=res.backend_ms_per_person, notes=notes))
        report["warnings"].extend(notes)
    return report


def bottom_up_parity_markdown(report: Mapping[str, Any]) -> str:
    """The bottom-up parity report as a Markdown table."""
    lines = [f"### Parity (bottom-up): {report['model']} ({report['dataset']}, {report['images']} images, "
             f"flip {'on' if report['flip'] else 'off'})", "",
             "| model | precision | AP | ΔAP | AR | ΔAR | people | max abs | rel L2 | cosine | ms/image |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    r = report["reference"]
    lines.append(f"| PyTorch | fp32 | {r['metrics']['AP']:.4f} | - | {r['metrics']['AR']:.4f} | - | {r['people']} | "
                 f"- | - | - | {r['backend_ms_per_image']:.1f} |")
    for m in report["models"]:
        e = m["output_error"]
        lines.append(f"| {m['name']} | {m['precision']} | {m['metrics']['AP']:.4f} | {m['delta']['AP']:+.4f} | "
                     f"{m['metrics']['AR']:.4f} | {m['delta']['AR']:+.4f} | {m['people']} | {e['max_abs']:.3g} | "
                     f"{e['rel_l2']:.3g} | {e['cosine']:.6f} | {m['backend_ms_per_image']:.1f} |")
    for w in report.get("warnings", []):
        lines.append(f"\n> note: {w}")
    return "\n".join(lines) + "\n"


def bench_bottom_up(backend: Backend, sizes: Sequence[tuple[int, int]], *, warmup: int = 2, iters: int = 10,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Latency of ``backend`` at batch 1 for each input size (w, h): mean / p50 / p90 ms (the backend's own timing
    when it reports one, else wall time) and images/s."""
    if warmup < 0 or iters < 1:
        raise ValueError(f"warmup must be >= 0 and iters >= 1, got {warmup} and {iters}")
    rng = np.random.default_rng(seed)
    rows = []
    for w, h in sizes:
        x = rng.standard_normal((1, 3, int(h), int(w))).astype(np.float32)
        for _ in range(warmup):
            backend.infer(x)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            backend.infer(x)
            wall = (time.perf_counter() - t0) * 1e3
            times.append(float(backend.last_timing_ms) if backend.last_timing_ms is not None else wall)
        t = np.asarray(times)
        rows.append(dict(width=int(w), height=int(h), mean_ms=float(t.mean()), p50_ms=float(np.percentile(t, 50)),
                         p90_ms=float(np.percentile(t, 90)), images_per_s=1e3 / float(t.mean()),
                         timing_source=getattr(backend, "timing_source", "wall")))
    return rows


def run_bottom_up_parity_command(args: argparse.Namespace) -> int:
    """``srpose parity`` for a bottom-up model: 0 when every model is within ``--max-ap-drop``, 1 otherwise."""
    import sys

    from srpose import build_model, get_config, load_checkpoint
    from srpose.data.bottom_up import BottomUpCocoDataset

    from .parity import models_over_drop, publish_parity

    cfg = get_config(args.model)
    if getattr(args, "det", None) or getattr(args, "gt_bbox", False):
        raise ValueError("bottom-up parity uses whole images, no person boxes: drop --det / --gt-bbox")
    if (args.dataset or "coco") != "coco":
        raise ValueError(f"bottom-up parity supports the COCO protocol only, not {args.dataset!r}")
    if args.max_ap_drop is not None and args.max_ap_drop < 0:
        raise ValueError(f"--max-ap-drop must be >= 0, got {args.max_ap_drop}")
    for f in args.models:
        if not Path(f).is_file():
            raise FileNotFoundError(f"model file {f} does not exist")
    dataset = BottomUpCocoDataset(args.ann, args.images, cfg.data)
    model = build_model(cfg)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    else:
        print("srpose parity: warning: no --checkpoint given, comparing randomly initialised weights",
              file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = run_bottom_up_parity(model, cfg, args.models, dataset, flip=args.flip, threads=args.threads,
                                      progress=not args.quiet)
    failed = models_over_drop(report, args.max_ap_drop)
    report.update(max_ap_drop=args.max_ap_drop, failed=failed)
    return publish_parity(report, bottom_up_parity_markdown(report), args)
