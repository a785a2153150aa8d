"""``srpose generate``: a deterministic COCO-format data set of synthetic people."""
from __future__ import annotations

import argparse

from ._args import wxh

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (images/ or video.mp4, annotations.json, "
                                                "detections.json)")
    p.add_argument("--num-images", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    p.add_argument("--image-size", type=wxh("image size", minimum=32), default=(320, 240), metavar="WxH",
                   help="image size (default 320x240)")
    p.add_argument("--people", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="people per image (default 1 3; --video: MAX people walking, default 2)")
    v = p.add_argument_group("video (moving people with ground truth and track ids)")
    v.add_argument("--video", action="store_true", help="a clip (video.mp4) instead of images")
    v.add_argument("--frames", type=int, default=48, help="frames of the clip (default 48)")
    v.add_argument("--fps", type=float, default=15.0, help="frame rate of the clip (default 15)")
    v.add_argument("--cross", action="store_true", help="two of the people walk towards each other and cross")


def run(args: argparse.Namespace) -> int:
    from srpose._io import check_out_dir
    from srpose.data.synthetic import generate_dataset

    check_out_dir(args.out, option="--out")  # before any work
    if args.video:
        from srpose.data.synthetic_video import generate_video

        people = args.people[1] if args.people else 2
        paths = generate_video(args.out, frames=args.frames, image_size=args.image_size, people=people, fps=args.fps,
                               seed=args.seed, cross=args.cross)
        print(f"wrote a {args.frames}-frame clip of {people} people to {paths['video']}\n  annotations: "
              f"{paths['ann']}\n  detections:  {paths['det']}")
        return 0
    args.people = args.people or (1, 3)
    paths = generate_dataset(args.out, num_images=args.num_images, image_size=args.image_size, people=args.people,
                             seed=args.seed, progress=True)
    print(f"wrote {args.num_images} images to {paths['images']}\n  annotations: {paths['ann']}\n"
          f"  detections:  {paths['det']}")
    return 0
