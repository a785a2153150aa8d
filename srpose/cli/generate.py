"""``srpose generate``: a deterministic COCO-format data set of synthetic people."""
from __future__ import annotations

import argparse

from ._args import wxh

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (images/, annotations.json, detections.json)")
    p.add_argument("--num-images", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    p.add_argument("--image-size", type=wxh("image size", minimum=32), default=(320, 240), metavar="WxH",
                   help="image size (default 320x240)")
    p.add_argument("--people", type=int, nargs=2, default=(1, 3), metavar=("MIN", "MAX"),
                   help="people per image (default 1 3)")


def run(args: argparse.Namespace) -> int:
    from srpose.data.synthetic import generate_dataset

    paths = generate_dataset(args.out, num_images=args.num_images, image_size=args.image_size, people=args.people,
                             seed=args.seed, progress=True)
    print(f"wrote {args.num_images} images to {paths['images']}\n  annotations: {paths['ann']}\n"
          f"  detections:  {paths['det']}")
    return 0
