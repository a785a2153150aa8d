"""The client of srpose's Triton ensembles (``tritonclient``, gRPC or HTTP): images (+ person boxes) in, people in
image pixels out.

``open_backend("grpc://HOST:PORT[/MODEL]")`` (or ``http://``) gives a :class:`TritonBackend`. Unlike the file
backends it serves whole images (``serves_images``): the evaluator hands it one request per image
(:mod:`srpose.tasks.served`) instead of crops, and gets keypoints back. The served model's card (and so its task,
codec and input size) comes from the ensemble's config; top-down requests with more boxes than the network's
batch allows are split into several.

Thread-safe: each thread gets its own ``tritonclient`` connection, so concurrent requests
(:meth:`TritonBackend.infer_many`) are merged by the server's dynamic batcher.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

import numpy as np

from srpose.card import ArtifactCard
from srpose.engines.base import Backend
from srpose.engines.triton_protocol import (BOXES, CENTER_SCALE, CENTER_SCALE_OUT, IMAGE, KEYPOINTS, PARAM_CARD,
                                            PARAM_FLIP, PARAM_MAX_PERSONS, PARAM_ROLE, SCORES)

__all__ = ["TritonBackend", "ServedRequest", "parse_url"]

INSTALL_HINT = "pip install 'srpose-trt[triton]' (tritonclient[grpc,http])"


def parse_url(url: str) -> tuple[str, str, str | None]:
    """``grpc://host:port/model`` -> ("grpc", "host:port", "model"); ``host:port`` means gRPC."""
    text = url if "://" in url else f"grpc://{url}"
    u = urlparse(text)
    if u.scheme not in ("grpc", "http", "https") or not u.netloc:
        raise ValueError(f"Triton URL {url!r}: expected grpc://HOST:PORT or http://HOST:PORT (optionally /MODEL)")
    model = u.path.strip("/") or None
    return u.scheme, u.netloc, model


class ServedRequest(dict):
    """One request: ``image`` (file bytes) and, top-down, ``boxes`` (N x 5: x, y, w, h, score) or
    ``center_scale`` (N x 5); any other keys travel along (ids, indices) untouched."""


def _config_params(config: Mapping[str, Any]) -> dict[str, str]:
    config = config.get("config", config)  # gRPC's JSON wraps the config, HTTP's does not
    return {k: (v.get("string_value", "") if isinstance(v, Mapping) else str(v))
            for k, v in (config.get("parameters") or {}).items()}


class TritonBackend(Backend):
    """A model served by Triton through srpose's ensemble (see the module docstring). ``model_name``: the
    ensemble to use when the URL names none and the server serves it (else the only srpose ensemble on the server;
    not ``model``, which ``open_backend(model, **options)`` takes itself); ``timeout_s`` per request."""

    serves_images = True

    def __init__(self, url: str, *, model_name: str | None = None, timeout_s: float = 120.0,
                 concurrency: int = 8) -> None:
        super().__init__()
        try:
            import tritonclient  # noqa: F401
        except ImportError:
            raise RuntimeError(f"the triton backend needs tritonclient: {INSTALL_HINT}") from None
        self.url = url
        self.protocol, self.address, url_model = parse_url(url)
        self.timeout_s = float(timeout_s)
        self.concurrency = int(concurrency)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        client = self.client()
        try:
            live = client.is_server_ready()
        except Exception as e:  # tritonclient raises its own exception types per protocol
            raise RuntimeError(f"no Triton server answers at {url}: {_message(e)}") from None
        if not live:
            raise RuntimeError(f"the Triton server at {url} is not ready (models still loading?)")
        self.model = self._pick_model(url_model, model_name)
        params = _config_params(client.get_model_config(self.model, **self._json()))
        if params.get(PARAM_ROLE) != "ensemble" or not params.get(PARAM_CARD):
            raise ValueError(f"model {self.model!r} at {url} is not an srpose ensemble (no {PARAM_CARD!r}): serve a "
                             "repository written by `srpose triton`")
        self.card = ArtifactCard.from_dict(json.loads(params[PARAM_CARD]), source=f"{url} model {self.model}")
        self.server_flip = params.get(PARAM_FLIP) == "1"
        self.max_persons = int(params.get(PARAM_MAX_PERSONS) or 0) or None
        self.precision = self.card.precision
        self.name = f"triton-{self.protocol}"
        self.output_names = [KEYPOINTS, SCORES]

    # ------------------------------------------------------------------------------------------ connection
    def _json(self) -> dict[str, Any]:
        return {"as_json": True} if self.protocol == "grpc" else {}

    def _module(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod
        return mod

    def client(self) -> Any:
        """This thread's ``tritonclient`` InferenceServerClient."""
        c = getattr(self._local, "client", None)
        if c is None:
            kw = {"ssl": True} if self.protocol == "https" else {}
            c = self._module().InferenceServerClient(self.address, **kw)
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def _pick_model(self, wanted: str | None, preferred: str | None = None) -> str:
        """The ensemble: ``wanted`` (named in the URL; must be served), else ``preferred`` when served, else the
        only srpose ensemble on the server."""
        client = self.client()
        index = client.get_model_repository_index(**self._json())
        entries = index.get("models", []) if isinstance(index, Mapping) else index
        names = sorted({e["name"] for e in entries})
        if wanted:
            if wanted not in names:
                raise ValueError(f"the Triton server at {self.url} serves no model {wanted!r} (it serves "
                                 f"{names}); name one in the URL: {self.protocol}://{self.address}/MODEL")
            return wanted
        if preferred in names:
            return preferred
        ensembles = [n for n in names
                     if _config_params(client.get_model_config(n, **self._json())).get(PARAM_ROLE) == "ensemble"]
        if len(ensembles) != 1:
            raise ValueError(f"the Triton server at {self.url} serves {len(ensembles)} srpose ensembles {ensembles}: "
                             f"name one in the URL: {self.protocol}://{self.address}/MODEL")
        return ensembles[0]

    @property
    def flip_in_graph(self) -> bool:
        """The server runs the flip test (in the graph, or the ensemble's mirrored pass): the caller must not."""
        return bool(self.card.flip or self.server_flip)

    # ------------------------------------------------------------------------------------------ inference
    def infer(self, images: np.ndarray, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        raise TypeError(f"{self.name} serves whole images, not crops: evaluate it through srpose.eval (the task "
                        "sends one request per image) or call infer_image(image_bytes, boxes)")

    def _inputs(self, image: bytes, rows: np.ndarray | None, kind: str) -> list[Any]:
        mod = self._module()
        data = np.frombuffer(image, dtype=np.uint8)
        inputs = [mod.InferInput(IMAGE, [int(data.size)], "UINT8")]
        inputs[0].set_data_from_numpy(data)
        if rows is not None:
            t = mod.InferInput(kind, list(rows.shape), "FP64")
            t.set_data_from_numpy(np.ascontiguousarray(rows, dtype=np.float64))
            inputs.append(t)
        return inputs

    def _call(self, image: bytes, rows: np.ndarray | None, kind: str) -> dict[str, np.ndarray]:
        mod = self._module()
        names = [KEYPOINTS, SCORES] + ([CENTER_SCALE_OUT] if self.card.task == "bottom-up" else [])
        outputs = [mod.InferRequestedOutput(n) for n in names]
        t0 = time.perf_counter()
        try:
            result = self.client().infer(self.model, self._inputs(image, rows, kind), outputs=outputs,
                                         **({"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}))
        except Exception as e:  # InferenceServerException and transport errors
            raise RuntimeError(f"{self.url} model {self.model}: {_message(e)}") from None
        self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        return {n: result.as_numpy(n) for n in names}

    def infer_image(self, image: bytes, boxes: np.ndarray | None = None, *,
                    center_scale: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """People of one image: top-down, of its ``boxes`` (N x 5) or ``center_scale`` (N x 5) rows, in
        requests of at most ``max_persons`` each; bottom-up, all the model finds. Returns ``keypoints``
        (N x K x 3, image pixels), ``scores`` (N) and, bottom-up, ``center_scale`` (4)."""
        if self.card.task == "bottom-up":
            out = self._call(bytes(image), None, "")
            return {"keypoints": out[KEYPOINTS], "scores": out[SCORES], "center_scale": out[CENTER_SCALE_OUT]}
        if (boxes is None) == (center_scale is None):
            raise ValueError("a top-down request needs boxes or center_scale (N x 5 rows), one of the two")
        kind, rows = (BOXES, boxes) if boxes is not None else (CENTER_SCALE, center_scale)
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        if len(rows) == 0:
            k = self.card.num_joints
            return {"keypoints": np.zeros((0, k, 3), np.float32), "scores": np.zeros(0, np.float32)}
        step = self.max_persons or len(rows)
        parts = [self._call(bytes(image), rows[i:i + step], kind) for i in range(0, len(rows), step)]
        return {"keypoints": np.concatenate([p[KEYPOINTS] for p in parts]),
                "scores": np.concatenate([p[SCORES] for p in parts])}

    def infer_request(self, request: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """:meth:`infer_image` of a :class:`ServedRequest`-like mapping."""
        return self.infer_image(request["image"], request.get("boxes"), center_scale=request.get("center_scale"))

    def infer_many(self, requests: Sequence[Mapping[str, Any]], concurrency: int | None = None
                   ) -> list[dict[str, np.ndarray]]:
        """:meth:`infer_request` of every request, ``concurrency`` in flight at once (results in order)."""
        n = max(1, int(concurrency or self.concurrency))
        if n == 1 or len(requests) <= 1:
            return [self.infer_request(r) for r in requests]
        with self._lock:  # one pool of n threads (and so n connections) for the backend's life
            if self._pool is None or self._pool_size != n:
                if self._pool is not None:
                    self._pool.shutdown(wait=True)
                self._pool, self._pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="triton"), n
            pool = self._pool
        return list(pool.map(self.infer_request, requests))

    # ------------------------------------------------------------------------------------------ server facts
    def statistics(self, model: str | None = None) -> dict[str, Any]:
        """Triton's inference statistics of ``model`` (default: every model), as JSON."""
        client = self.client()
        stats = client.get_inference_statistics(model or "", **self._json())
        return dict(stats)

    def model_names(self) -> dict[str, str]:
        """{role: model name} of the ensemble's models (a top-down image-to-keypoints network has no
        post-processing model)."""
        from srpose.engines.triton_protocol import ROLES

        people = self.card.image_input and self.card.task == "top-down"
        return {r: self.model if r == "ensemble" else f"{self.model}_{r}" for r in ROLES
                if not (people and r == "postprocess")}

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        for c in clients:
            try:
                c.close()
            except Exception:  # closing a broken connection is not an error worth raising
                pass
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"TritonBackend({self.url!r}, model={self.model!r}, task={self.card.task!r})"


def _message(e: BaseException) -> str:
    msg = getattr(e, "message", None)
    text = msg() if callable(msg) else str(e)
    return text or type(e).__name__
