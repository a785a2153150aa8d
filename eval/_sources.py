"""What `srpose predict` reads: image files, folders, globs, video files, webcam indices (and, from the Python API,
arrays and encoded bytes), as a stream of frames. Unreadable inputs are named and skipped, never fatal on their
own; decoding uses OpenCV (images: ``imread`` / ``imdecode``; video and webcams: ``VideoCapture``)."""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "Source", "Frame", "expand_sources", "iter_frames", "video_frames",
           "Skipped"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class Source:
    """One input: ``kind`` image | video | webcam | array; ``name`` for outputs; ``path`` / ``index`` / ``data``."""

    kind: str
    name: str
    path: Path | None = None
    index: int | None = None
    data: Any = None

    @property
    def is_video(self) -> bool:
        """A stream of frames (a video file or a webcam), as opposed to one image."""
        return self.kind in ("video", "webcam")

    @property
    def label(self) -> str:
        """What the source is called in results and box lookups: its path, else its name."""
        return str(self.path or self.name)


@dataclass
class Frame:
    """One decoded frame: BGR uint8 ``image``, its ``source``, its number within it (0 for images), and ``fps`` of
    a video (None for images)."""

    image: np.ndarray
    source: Source
    number: int
    fps: float | None = None


@dataclass
class Skipped:
    """The inputs that could not be read, each with why."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, why: str) -> None:
        self.items.append((what, why))

    def __len__(self) -> int:
        return len(self.items)


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def expand_sources(sources: Sequence[Any], skipped: Skipped) -> list[Source]:
    """Files, folders (their images and videos, sorted), globs, webcam indices (an int, or a string of digits) and
    arrays / bytes, in the order given; what is missing or of an unknown type goes to ``skipped``."""
    out: list[Source] = []
    for s in sources:
        if isinstance(s, np.ndarray):
            out.append(Source("array", f"array{len(out)}", data=s))
        elif isinstance(s, (bytes, bytearray, memoryview)):
            out.append(Source("array", f"bytes{len(out)}", data=bytes(s)))
        elif isinstance(s, int) or (isinstance(s, str) and s.isdigit() and not Path(s).exists()):
            out.append(Source("webcam", f"webcam{int(s)}", index=int(s)))
        elif isinstance(s, (str, Path)) and _is_glob(str(s)):
            matches = sorted(Path(p) for p in glob.glob(str(s), recursive=True))
            found = [p for p in matches if p.is_file() and _kind(p)]
            if not found:
                skipped.add(str(s), "the pattern matches no image or video file")
            out += [Source(_kind(p), p.stem, path=p) for p in found]  # type: ignore[arg-type]
        else:
            path = Path(s)
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.is_file() and _kind(p))
                if not found:
                    skipped.add(str(path), f"the folder holds no image ({', '.join(IMAGE_SUFFIXES)}) or video "
                                           f"({', '.join(VIDEO_SUFFIXES)})")
                out += [Source(_kind(p), p.stem, path=p) for p in found]  # type: ignore[arg-type]
            elif not path.exists():
                skipped.add(str(path), "does not exist")
            elif _kind(path) is None:
                skipped.add(str(path), f"is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                                       f"({', '.join(VIDEO_SUFFIXES)})")
            else:
                out.append(Source(_kind(path), path.stem, path=path))  # type: ignore[arg-type]
    return out


def _decode_array(data: Any, name: str) -> np.ndarray:
    from srpose.data.transforms import decode_image

    if isinstance(data, bytes):
        return decode_image(data, source=name)
    a = np.asarray(data)
    if a.ndim == 2:
        a = cv2.cvtColor(a.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"an image array must be H x W x 3 uint8 (BGR, as OpenCV reads it), got {a.shape} {a.dtype}")
    return np.ascontiguousarray(a)


def iter_frames(source: Source, skipped: Skipped, max_frames: int | None = None) -> Iterator[Frame]:
    """The frames of ``source``; a source that cannot be read goes to ``skipped`` with the reason."""
    if not source.is_video:
        from srpose.data.transforms import read_image

        try:  # as the evaluator reads images: a truncated JPEG is refused, not filled with grey
            img = read_image(source.path) if source.kind == "image" else _decode_array(source.data, source.name)
        except (ValueError, FileNotFoundError) as e:
            skipped.add(source.label, str(e))
            return
        yield Frame(img, source, 0)
        return
    what = str(source.path) if source.kind == "video" else f"webcam {source.index}"
    cap = cv2.VideoCapture(str(source.path) if source.kind == "video" else int(source.index))  # type: ignore[arg-type]
    try:
        if not cap.isOpened():
            expected = (f"a video file OpenCV decodes ({', '.join(VIDEO_SUFFIXES)})" if source.kind == "video"
                        else "a camera at that index")
            skipped.add(what, f"cannot be opened: expected {expected}")
            return
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        n = 0
        while max_frames is None or n < max_frames:
            ok, img = cap.read()
            if not ok:
                break
            yield Frame(img, source, n, fps)
            n += 1
        if n == 0:
            skipped.add(what, "holds no frame OpenCV can decode (an empty or unreadable video)")
    finally:
        cap.release()



def video_frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video file (BGR), as ``srpose predict`` reads it; ValueError when it cannot be read."""
    skipped = Skipped()
    frames = [f.image for f in iter_frames(Source("video", Path(path).stem, path=Path(path)), skipped)]
    if skipped:
        raise ValueError("; ".join(f"{what}: {why}" for what, why in skipped.items))
    return frames
