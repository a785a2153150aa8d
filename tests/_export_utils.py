"""Helpers of the export / ONNX Runtime / parity tests: tiny models with the presets' architectures."""
from __future__ import annotations

import numpy as np
import torch

from srpose import build_model, get_config
from srpose.config import PoseConfig

_BASE = {"hrnet": "hrnet_w32", "hrt": "hrt_small"}


def tiny_config(kind: str = "hrnet", head: str = "sr", size: tuple[int, int] = (64, 64)) -> PoseConfig:
    """A preset (``kind`` hrnet|hrt, ``head`` simple|sr|srpose) shrunk to one block per stage and 4-32 channels,
    at input ``size`` (w, h): the same graph structure in a fraction of the export time."""
    name = f"{_BASE[kind]}_{head}_coco_256x192".replace("_simple", "")
    cfg = get_config(name)
    extra = cfg.model["backbone"]["extra"]
    extra["stage1"].update(num_blocks=(1,), num_channels=(8,))
    chans = (4, 8, 16, 32)
    for i, stage in enumerate(("stage2", "stage3", "stage4")):
        nb = i + 2
        extra[stage].update(num_modules=1, num_blocks=(1,) * nb, num_channels=chans[:nb])
        if kind == "hrt":
            extra[stage].update(num_heads=[1] * nb, num_mlp_ratios=[2] * nb, num_window_sizes=[4] * nb)
    h = cfg.model["keypoint_head"]
    if head == "srpose":
        h.update(in_channels=list(chans[::-1]), out_channels=[16, 8, 8, 8], per_emb_nums=[2, 2, 2, 2])
    else:
        h.update(in_channels=chans[0])
    cfg.name = f"tiny_{kind}_{head}"
    return cfg.with_input_size(*size)


def tiny_bottom_up_config(head: str = "sr", name: str | None = None) -> PoseConfig:
    """hrnet_w32{_sr}_coco_512x512 with one block per stage and 4..32 channels, at 64x64."""
    cfg = get_config("hrnet_w32_sr_coco_512x512" if head == "sr" else "hrnet_w32_coco_512x512")
    extra = cfg.model["backbone"]["extra"]
    extra["stage1"].update(num_blocks=(1,), num_channels=(8,))
    for i, stage in enumerate(("stage2", "stage3", "stage4")):
        nb = i + 2
        extra[stage].update(num_modules=1, num_blocks=(1,) * nb, num_channels=(4, 8, 16, 32)[:nb])
    cfg.model["keypoint_head"]["in_channels"] = 4
    cfg.name = name or f"tiny_bottom_up_{head}"
    return cfg.with_input_size(64, 64)


_FAMILY_PRESETS = {"res": "res50{}_coco_256x192", "transpose": "transpose_r_a4{}_coco_256x192"}


def family_config(family: str, head: str) -> PoseConfig:
    """A preset of ``family`` (res, hrnet, hrt, transpose, bottom-up) with ``head``, shrunk to a few channels at
    32x32 (ResNet: 64x64)."""
    if family in ("hrnet", "hrt"):
        return tiny_config(family, head, size=(32, 32))
    if family == "bottom-up":
        return tiny_bottom_up_config(head)
    cfg = get_config(_FAMILY_PRESETS[family].format("" if head == "simple" else f"_{head}"))
    h = cfg.model["keypoint_head"]
    if family == "res":
        cfg.model["backbone"].update(depth=18, base_channels=8, stem_channels=8)
        deep = [64, 32, 16, 8]
    else:
        cfg.model["backbone"].update(layers=(1, 1), d_model=16, dim_feedforward=32, nhead=2, num_encoder_layers=1)
        deep = [16, 256]
    if head == "srpose":
        h.update(in_channels=deep, out_channels=[16, 8, 8, 8][:len(deep)], per_emb_nums=[2] * len(deep))
    else:
        h.update(in_channels=deep[0], num_deconv_filters=(8,) * h["num_deconv_layers"])
    cfg.name = f"tiny_{family}_{head}"
    return cfg.with_input_size(*((64, 64) if family == "res" else (32, 32)))


def tiny_model(cfg: PoseConfig, seed: int = 0) -> torch.nn.Module:
    """The model of ``cfg`` with PyTorch's default initialisation (clear heatmap peaks, unlike mmpose's N(0, 1e-3)
    head init), seeded."""
    torch.manual_seed(seed)
    return build_model(cfg, init=False).eval()


def crops(n: int, cfg: PoseConfig, seed: int = 0) -> np.ndarray:
    """``n`` random normalised crops of the config's input size."""
    w, h = cfg.image_size
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def torch_out(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def identity_center_scale(n: int, heatmap_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """center / scale for which ``decode_heatmaps`` returns heatmap-pixel coordinates."""
    w, h = heatmap_size
    return (np.tile(np.array([[w / 2, h / 2]], np.float32), (n, 1)),
            np.tile(np.array([[w / 200, h / 200]], np.float32), (n, 1)))


TASKS = ("top-down", "bottom-up")
#: the bottom-up shape profile of the tests (W x H min, opt, max): small, and non-square at opt
BU_PROFILE = "64x64,128x64,128x128"


_CACHE: dict[tuple, tuple] = {}
_CACHE_DIR: list = []


def cached_export(kind: str, head: str, **kw) -> tuple:
    """(path, model, cfg) of a tiny model exported with ``export_onnx(model, cfg, path, **kw)``, exported once per
    test session and shared by the export, backend and parity tests.

    ``kind``: ``hrnet`` / ``hrt`` (top-down, :func:`tiny_config`; batch profile (1, 2, 4) unless ``batch`` is given)
    or ``bottom-up`` (:func:`tiny_bottom_up_config`; the task's batch profile (1, 1, 4) and the shape profile
    :data:`BU_PROFILE` unless given)."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from srpose.export.onnx_export import export_onnx

    key = (kind, head, tuple(sorted(kw.items())))
    if key not in _CACHE:
        if not _CACHE_DIR:
            _CACHE_DIR.append(Path(tempfile.mkdtemp(prefix="srpose-test-exports-")))
            atexit.register(shutil.rmtree, _CACHE_DIR[0], True)
        if kind == "bottom-up":
            cfg = tiny_bottom_up_config(head)
            opts = {"shape_profile": BU_PROFILE, **kw}
        else:
            cfg = tiny_config(kind, head)
            opts = {"batch": (1, 2, 4), **kw}
        model = tiny_model(cfg)
        # flags name the file (m_decode_flip.onnx); other values get their place in the cache, so no two collide
        tag = "".join(f"_{k}" if v is True else f"_{k}{len(_CACHE)}" for k, v in sorted(kw.items()) if v)
        path = export_onnx(model, cfg, _CACHE_DIR[0] / f"{cfg.name}{tag}.onnx", **opts)
        _CACHE[key] = (path, model, cfg)
    return _CACHE[key]


def cached_image_graph(head: str = "srpose", flip: bool = True, **image_kw) -> tuple:
    """(path, model, cfg) of the image-to-keypoints graph of a tiny hrnet model (its crop graph wrapped by
    :func:`srpose.export.image_graph.write_image_graph`), made once per test session."""
    from srpose.export.image_graph import ImageGraphOptions, write_image_graph

    key = ("image", head, flip, tuple(sorted(image_kw.items())))
    if key not in _CACHE:
        core, model, cfg = cached_export("hrnet", head)
        path = core.with_name(f"{core.stem}_image{len(_CACHE)}.onnx")
        opts = dict(flip=flip, persons=(1, 4, 8), image_batch=(1, 2, 4), shape_profile="16x16,96x64,256x256")
        opts.update(image_kw)
        write_image_graph(core, path, ImageGraphOptions(**opts))
        _CACHE[key] = (path, model, cfg)
    return _CACHE[key]


def tiny_image_graph(tmp_path) -> "object":
    """A copy of :func:`cached_image_graph`'s file in ``tmp_path``."""
    import shutil

    path = cached_image_graph()[0]
    return shutil.copyfile(path, tmp_path / path.name)
