"""What `srpose predict` writes, on a thread of its own: annotated images (``NAME.jpg``) and videos (``NAME.mp4``,
OpenCV's mp4v at the source's frame rate, written under a temporary name and renamed when complete), and at the end
``results.json`` (COCO keypoint results: one image id per frame, ``track_id`` on videos) and ``images.json`` (each
image id's source, frame and size)."""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from srpose._io import atomic_write_bytes, atomic_write_json

from ._draw import Drawer

__all__ = ["Outputs", "write_gif"]


class Outputs:
    """The writer: :meth:`add` a frame's people (drawn and written on the writer thread), :meth:`close` to finish
    every file (also after an error: what was complete is kept, partial videos are removed)."""

    def __init__(self, out: Path, dataset: str, *, save: bool = True) -> None:
        self.out, self.save = out, save
        out.mkdir(parents=True, exist_ok=True)
        self.drawer = Drawer(dataset)
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.names: dict[Any, str] = {}
        self.videos: dict[Any, tuple[Any, Path, Path]] = {}
        self.written: list[str] = []
        self.seconds = 0.0
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _name(self, source: Any) -> str:
        """A file stem per source, unique in the folder."""
        key = id(source)
        if key not in self.names:
            base, n = source.name, 1
            taken = set(self.names.values())
            name = base
            while name in taken:
                name, n = f"{base}_{n}", n + 1
            self.names[key] = name
        return self.names[key]

    def add(self, frame: Any, people: Any, *, tracked: bool) -> None:
        if self.error is not None:
            raise RuntimeError(f"writing the outputs failed: {self.error}") from self.error
        image_id = len(self.images) + 1
        src = frame.source
        h, w = frame.image.shape[:2]
        self.images.append(dict(id=image_id, file_name=src.label + (f"#{frame.number:06d}" if src.is_video else ""),
                                source=src.label, frame=int(frame.number), width=int(w), height=int(h)))
        self.results += people.to_results(image_id, tracked=tracked)
        if self.save:
            self.queue.put((frame, people))

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                t = time.perf_counter()
                self._write(*item)
                self.seconds += time.perf_counter() - t
            except BaseException as e:  # noqa: BLE001 - reported by add() / close() on the main thread
                self.error = e

    def _write(self, frame: Any, people: Any) -> None:
        src = frame.source
        img = self.drawer.draw(frame.image, people.boxes, people.keypoints, people.scores, people.track_ids)
        name = self._name(src)
        if src.is_video:
            key = id(src)
            if key not in self.videos:
                final = self.out / f"{name}.mp4"
                tmp = self.out / f".{name}.partial.mp4"
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(frame.fps or 25.0),
                                         (img.shape[1], img.shape[0]))
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write the video {final} (mp4v)")
                self.videos[key] = (writer, tmp, final)
            self.videos[key][0].write(img)
            return
        path = self.out / f"{name}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:  # pragma: no cover
            raise RuntimeError(f"OpenCV could not encode {path}")
        atomic_write_bytes(path, buf.tobytes())
        self.written.append(str(path))

    def close(self, report: Any) -> None:
        """Finish the writer thread, the videos and the JSON files; put the stage time and files in ``report``."""
        self.queue.put(None)
        self.thread.join()
        failed = self.error is not None
        for writer, tmp, final in self.videos.values():
            writer.release()
            if failed:
                tmp.unlink(missing_ok=True)
            else:
                tmp.replace(final)
                self.written.append(str(final))
        report.seconds["draw + write"] += self.seconds
        report.results_file = str(atomic_write_json(self.out / "results.json", self.results))
        atomic_write_json(self.out / "images.json", self.images)
        report.outputs = self.written
        if failed:
            raise RuntimeError(f"writing the outputs failed: {self.error}") from self.error


def write_gif(frames: list[np.ndarray], path: str | Path, fps: float = 10.0, width: int = 320) -> Path:
    """An animated GIF of BGR frames (scaled to ``width``), written atomically (Pillow, which matplotlib brings)."""
    from PIL import Image

    from srpose._io import atomic_path

    if not frames:
        raise ValueError("no frames to write")
    pics = []
    for f in frames:
        scale = width / f.shape[1]
        small = cv2.resize(f, (width, int(round(f.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        pics.append(Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB)))
    path = Path(path)
    with atomic_path(path) as tmp:
        pics[0].save(tmp, format="GIF", save_all=True, append_images=pics[1:], duration=int(1000 / fps), loop=0)
    return path
