"""``srpose list`` and ``srpose info``."""
from __future__ import annotations

import argparse
import json

__all__ = ["add_list_arguments", "run_list", "add_info_arguments", "run_info"]


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None, help="substring or glob to filter preset names")


def run_list(args: argparse.Namespace) -> int:
    from srpose.presets import get_preset, list_models

    names = list_models(args.pattern)
    width = max((len(n) for n in names), default=10)
    for n in names:
        cfg = get_preset(n)
        w, h = cfg.image_size
        hw, hh = cfg.heatmap_size
        dataset = f"{cfg.data.get('dataset', 'coco')} ({cfg.num_joints})"
        print(f"{n:<{width}}  {dataset:<14} {cfg.model['backbone']['type']:<10} "
              f"{cfg.model['keypoint_head']['type']:<20} input {w}x{h}  heatmap {hw}x{hh}")
    return 0


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    from ._args import wxh

    p.add_argument("model", nargs="+", metavar="NAME_OR_CONFIG",
                   help="one or more presets/configs; `all` for every preset")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--input-size", type=wxh("--input-size"), default=None, metavar="WxH",
                   help="count at another input size (default: config)")


def run_info(args: argparse.Namespace) -> int:
    from srpose.complexity import complexity_report
    from srpose.models import build_model
    from srpose.presets import list_models
    from srpose.resolve import get_config

    names = list_models() if args.model == ["all"] else args.model
    rows = []
    for name in names:
        cfg = get_config(name)
        if args.input_size:
            cfg = cfg.with_input_size(*args.input_size)
        rep = complexity_report(build_model(cfg, init=False), cfg.input_shape())
        rows.append(dict(name=cfg.name, params_backbone=rep.params_backbone, params_head=rep.params_head,
                         params_head_eval=rep.params_head_eval, gmacs=rep.gmacs, gmacs_all_ops=rep.gmacs_all_ops,
                         output_shape=list(rep.output_shape)))
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    hdr = f"{'model':<34} {'backbone':>9} {'head':>8} {'head(eval)':>10} {'GMACs':>7} {'GMACs(all)':>10}  output"
    print(hdr)
    print("-" * len(hdr))
    for d in rows:
        print(f"{d['name']:<34} {d['params_backbone'] / 1e6:>8.2f}M {d['params_head'] / 1e6:>7.2f}M "
              f"{d['params_head_eval'] / 1e6:>9.2f}M {d['gmacs']:>7.2f} {d['gmacs_all_ops']:>10.2f}  "
              f"{'x'.join(map(str, d['output_shape']))}")
    return 0
