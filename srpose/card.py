"""The artifact card: what an exported ONNX graph or a TensorRT engine is, in one stdlib-only dataclass.

Every file ``srpose export`` writes carries a card in its ONNX ``metadata_props`` (one JSON-encoded value per key);
``srpose build`` copies it into the engine's sidecar ``X.engine.json`` and adds the ``engine`` section (TensorRT
version, GPU, optimisation profile, I/O tensors, hashes). Runtimes, the evaluator, parity, bench and serving read
the card instead of guessing from file names or output shapes. One schema version (:data:`SCHEMA`) covers both
places; files of schema 1 (earlier releases) are read too.

This module imports nothing outside the standard library (``onnx`` only inside :func:`read_card` for ``.onnx``
files), so the torch-free runtime layer can use it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["SCHEMA", "TASKS", "ENGINE_SUFFIXES", "ArtifactCard", "CardError", "read_card", "sidecar_path",
           "check_engine_file", "write_sidecar", "card_to_onnx", "card_from_onnx", "IMAGES", "BOXES", "BOX_IMAGE",
           "KEYPOINTS", "SCORES", "PIXEL_FORMATS", "INPUT_DTYPES"]

#: Schema of the card in ONNX metadata (key ``srpose_format``) and in engine sidecars (key ``schema``).
SCHEMA = 2
TASKS = ("top-down", "bottom-up")
PRECISIONS = ("fp32", "fp16", "int8", "mixed")
ENGINE_SUFFIXES = (".engine", ".plan")
#: tensor names of image-to-keypoints graphs (``srpose export --image-input``): inputs ``images`` (uint8
#: B x H x W x 3, zero-padded to a common size), ``boxes`` (float32 P x 5: x, y, w, h in image pixels and the box
#: score) and ``box_image`` (int32 P: the image of each box); outputs ``keypoints`` (P x K x 3: x, y in image pixels,
#: score) and ``scores`` (P: the evaluator's person rescoring). Bottom-up image graphs take ``images`` only.
IMAGES, BOXES, BOX_IMAGE, KEYPOINTS, SCORES = "images", "boxes", "box_image", "keypoints", "scores"
#: numpy dtype names of those inputs (every other graph input is float32)
INPUT_DTYPES = {IMAGES: "uint8", BOXES: "float32", BOX_IMAGE: "int32"}
#: channel orders of uint8 image inputs: ``bgr`` is what OpenCV decodes (the host does no colour conversion)
PIXEL_FORMATS = ("bgr", "rgb")
#: Card fields stored under another metadata key for compatibility with schema-1 readers (trtexec users' scripts).
_META_NAMES = {"schema": "srpose_format"}


class CardError(ValueError):
    """A file's card is missing or inconsistent; the message names the file and the remedy."""


@dataclass
class ArtifactCard:
    """What an exported graph computes and how to feed it.

    ``input_size`` / ``heatmap_size`` are (W, H) of the config (bottom-up: the square base size); ``hw_profile``
    holds ((H, W) min, opt, max) for graphs with dynamic height and width (bottom-up), None for static ones.
    ``codec`` is the heatmap codec's ``to_dict()`` (name and parameters); ``flip`` says the flip test is folded into
    the graph, ``decode`` that the codec's decoder is (keypoints or bottom-up candidates come out).
    ``precision_details`` keeps what the FP16 / INT8 conversion did (islands, excluded layers, calibration);
    ``engine`` is set in engine sidecars only.

    Image-to-keypoints graphs (``image_input``) take uint8 images of channel order ``pixel_format`` instead of
    normalised crops: top-down ones also take person boxes (:data:`IMAGES`, :data:`BOXES`, :data:`BOX_IMAGE`), crop,
    normalise, flip (``flip``), decode and map back to image pixels inside; ``batch`` then bounds the persons of one
    call, ``image_batch`` the images and ``hw_profile`` their (H, W). Bottom-up ones take the resized image and
    normalise inside.
    """

    model_name: str
    task: str
    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    num_joints: int
    mean: list[float]
    std: list[float]
    flip_pairs: list[list[int]]
    codec: dict[str, Any]
    output_names: list[str]
    input_name: str = "input"
    decode: bool = False
    flip: bool = False
    precision: str = "fp32"
    batch: tuple[int, int, int] = (1, 1, 1)
    hw_profile: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None
    opset: int | None = None
    config: dict[str, Any] | None = None
    config_source: str | None = None
    checkpoint_sha256: str | None = None
    tool_version: str | None = None
    torch_version: str | None = None
    precision_details: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] | None = None
    image_input: bool = False
    image_batch: tuple[int, int, int] | None = None
    pixel_format: str | None = None
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CardError(f"card of {self.model_name!r}: task {self.task!r} is not one of {TASKS}")
        self.input_size = _pair(self.input_size, "input_size")
        self.heatmap_size = _pair(self.heatmap_size, "heatmap_size")
        self.batch = tuple(int(v) for v in self.batch)  # type: ignore[assignment]
        if len(self.batch) != 3 or not 1 <= self.batch[0] <= self.batch[1] <= self.batch[2]:
            raise CardError(f"card of {self.model_name!r}: batch {self.batch} must be 1 <= min <= opt <= max")
        if self.hw_profile is not None:
            self.hw_profile = tuple(_pair(s, "hw_profile") for s in self.hw_profile)  # type: ignore[assignment]
        if not self.output_names:
            raise CardError(f"card of {self.model_name!r} names no outputs")
        self.output_names = [str(n) for n in self.output_names]
        if self.image_batch is not None:
            self.image_batch = tuple(int(v) for v in self.image_batch)  # type: ignore[assignment]
            if len(self.image_batch) != 3 or not 1 <= self.image_batch[0] <= self.image_batch[1] <= \
                    self.image_batch[2]:
                raise CardError(f"card of {self.model_name!r}: image_batch {self.image_batch} must be 1 <= min <= "
                                "opt <= max")
        if self.image_input:
            if self.pixel_format not in PIXEL_FORMATS:
                raise CardError(f"card of {self.model_name!r}: pixel_format {self.pixel_format!r} must be one of "
                                f"{PIXEL_FORMATS}")
            if self.hw_profile is None or (self.task == "top-down" and self.image_batch is None):
                raise CardError(f"card of {self.model_name!r}: an image-input graph needs hw_profile" +
                                (" and image_batch" if self.task == "top-down" else ""))

    # -------------------------------------------------------------------------------------------- derived facts
    @property
    def output_kind(self) -> str:
        """``heatmaps`` (raw maps; bottom-up: heatmaps then tags), ``keypoints`` (top-down decoded, N x K x 3 in
        heatmap pixels), ``people`` (top-down image-to-keypoints: keypoints in image pixels and person scores) or
        ``bottomup_candidates`` (bottom-up decoded: merged maps and top-k candidates)."""
        if not self.decode:
            return "heatmaps"
        if self.task == "top-down":
            return "people" if self.image_input else "keypoints"
        return "bottomup_candidates"

    @property
    def dynamic_hw(self) -> bool:
        return self.hw_profile is not None

    @property
    def input_names(self) -> list[str]:
        """Every input of the graph, in order."""
        if self.image_input and self.task == "top-down":
            return [IMAGES, BOXES, BOX_IMAGE]
        return [self.input_name]

    def input_profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """``{input name: (min, opt, max) shape}`` of the optimisation profile of every input (TensorRT, Triton)."""
        if not self.image_input:
            return {self.input_name: self.input_shapes()}
        hws = self.hw_profile or ()
        if self.task != "top-down":
            return {IMAGES: tuple((n, h, w, 3) for n, (h, w) in zip(self.batch, hws))}  # type: ignore[dict-item]
        images = tuple((n, h, w, 3) for n, (h, w) in zip(self.image_batch or (), hws))
        return {IMAGES: images, BOXES: tuple((p, 5) for p in self.batch),  # type: ignore[dict-item]
                BOX_IMAGE: tuple((p,) for p in self.batch)}

    def input_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        """(min, opt, max) N x 3 x H x W of the optimisation profile of a crop / image input (TensorRT, Triton)."""
        if self.image_input:
            return self.input_profile()[IMAGES]  # type: ignore[return-value]
        if self.hw_profile is None:
            w, h = self.input_size
            hws = ((h, w),) * 3
        else:
            hws = self.hw_profile
        return tuple((n, 3, h, w) for n, (h, w) in zip(self.batch, hws))  # type: ignore[return-value]

    def replace(self, **changes: Any) -> "ArtifactCard":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(copy.deepcopy(self), **changes)

    # -------------------------------------------------------------------------------------------- dict / JSON
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"], d["heatmap_size"], d["batch"] = list(self.input_size), list(self.heatmap_size), \
            list(self.batch)
        d["hw_profile"] = None if self.hw_profile is None else [list(s) for s in self.hw_profile]
        d["image_batch"] = None if self.image_batch is None else list(self.image_batch)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "card") -> "ArtifactCard":
        """A card from :meth:`to_dict` output; CardError naming ``source`` and the missing keys otherwise."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise CardError(f"{source}: the srpose card lacks {missing}; re-export the model with `srpose export`")
        try:
            schema = int(d.get("schema", SCHEMA))
            if schema > SCHEMA:
                raise CardError(f"{source}: card schema {schema} is newer than this srpose ({SCHEMA}): upgrade srpose")
            return cls(**{k: v for k, v in d.items() if k in names})
        except CardError:
            raise
        except (TypeError, ValueError, KeyError, IndexError) as e:  # a value of the wrong kind: the card is damaged
            raise CardError(f"{source}: the srpose card is damaged ({type(e).__name__}: {e}); re-export the model "
                            "with `srpose export` (engines: rebuild with `srpose build`)") from None

    # -------------------------------------------------------------------------------------------- ONNX metadata
    def to_metadata(self) -> dict[str, str]:
        """``metadata_props`` entries: each field JSON-encoded under its name (``schema`` as ``srpose_format``), plus
        the flat profile keys TensorRT tools read (``batch_min`` ... ``width_max``)."""
        d = self.to_dict()
        d.pop("engine")
        if not self.image_input:  # crop graphs keep the metadata (and bytes) of earlier releases
            for k in ("image_input", "image_batch", "pixel_format"):
                d.pop(k)
        out = {_META_NAMES.get(k, k): _json(v) for k, v in d.items()}
        for i, k in enumerate(("min", "opt", "max")):
            out[f"batch_{k}"] = _json(self.batch[i])
            if self.hw_profile is not None:
                out[f"height_{k}"], out[f"width_{k}"] = _json(self.hw_profile[i][0]), _json(self.hw_profile[i][1])
        return out

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], *, source: str = "metadata") -> "ArtifactCard":
        """The card in ONNX ``metadata_props`` (schema 2, or schema 1 of earlier releases)."""
        meta = {k: _unjson(v) for k, v in props.items()}
        if "srpose_format" not in meta:
            raise CardError(f"{source} has no srpose card in its metadata: export it with `srpose export`")
        d = {k: v for k, v in meta.items()}
        d["schema"] = d.pop("srpose_format")
        if d["schema"] == 1:
            return cls.from_dict(_from_schema1(meta), source=source)
        return cls.from_dict(d, source=source)


# ------------------------------------------------------------------------------------------------ files
def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``X.engine`` -> ``X.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_sidecar(engine_path: str | os.PathLike, card: ArtifactCard) -> Path:
    """Write ``card`` (with its ``engine`` section) beside ``engine_path``, atomically."""
    from srpose._io import atomic_write_json

    if card.engine is None:
        raise CardError(f"the card of {engine_path} has no engine section: build the engine with `srpose build`")
    return atomic_write_json(sidecar_path(engine_path), card.to_dict())


def check_engine_file(engine_path: str | os.PathLike, card: ArtifactCard) -> None:
    """CardError unless the engine file is the one its sidecar describes (the size and sha256 ``srpose build``
    recorded): a file replaced or damaged after the build would otherwise be deployed as the sidecar's engine."""
    from srpose._io import sha256_file

    facts = (card.engine or {}).get("engine") or {}
    path = Path(engine_path)
    size, want_size = path.stat().st_size, facts.get("bytes")
    fix = f"rebuild it with `srpose build` (or use the engine {sidecar_path(path).name} was written for)"
    if want_size is not None and int(want_size) != size:
        raise CardError(f"engine {path} has {size} bytes but its sidecar {sidecar_path(path).name} describes an engine "
                        f"of {int(want_size)} bytes: {fix}")
    want = facts.get("sha256")
    if want:
        got = sha256_file(path)
        if got != want:
            raise CardError(f"engine {path} is not the engine its sidecar {sidecar_path(path).name} describes (sha256 "
                            f"{got[:12]}..., the sidecar says {want[:12]}...): {fix}")


def card_to_onnx(proto: Any, card: ArtifactCard) -> None:
    """Replace the srpose entries of an ``onnx.ModelProto``'s ``metadata_props`` by ``card`` (keys sorted, so equal
    cards give equal bytes); entries of other tools are kept."""
    current = {p.key: p.value for p in proto.metadata_props}
    for key in list(current):
        if key in _ALL_META_KEYS:
            del current[key]
    current.update(card.to_metadata())
    del proto.metadata_props[:]
    for key in sorted(current):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, current[key]


def card_from_onnx(proto: Any, *, source: str = "ONNX model") -> ArtifactCard:
    """The card of an in-memory ``onnx.ModelProto``."""
    return ArtifactCard.from_metadata({p.key: p.value for p in proto.metadata_props}, source=source)


def read_card(path: str | os.PathLike) -> ArtifactCard:
    """The card of an exported ``.onnx`` file or of an engine (from its sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.suffix in ENGINE_SUFFIXES:
        side = sidecar_path(path)
        if not side.is_file():
            raise CardError(f"engine {path} has no sidecar {side.name}: rebuild it with `srpose build MODEL.onnx "
                            f"--out {path}`")
        try:
            data = json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise CardError(f"engine sidecar {side} is not valid JSON ({e}): rebuild the engine with "
                            "`srpose build`") from None
        if "onnx_metadata" in data and "schema" not in data:  # schema 1 sidecar: card in onnx_metadata
            card = ArtifactCard.from_metadata(data["onnx_metadata"], source=str(side))
            return card.replace(engine={k: v for k, v in data.items() if k != "onnx_metadata"})
        return ArtifactCard.from_dict(data, source=str(side))
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises protobuf DecodeError and others
        raise CardError(f"{path} is not a readable ONNX file ({type(e).__name__}: {e})") from None
    return card_from_onnx(proto, source=str(path))


# ------------------------------------------------------------------------------------------------ helpers
_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(ArtifactCard))
_ALL_META_KEYS = frozenset({_META_NAMES.get(n, n) for n in _FIELD_NAMES} |
                           {f"{d}_{k}" for d in ("batch", "height", "width") for k in ("min", "opt", "max")} |
                           # schema-1 keys, dropped when a card of schema 2 replaces them
                           {"output_name", "output_kind", "output_channels", "bottom_up", "dynamic_hw", "decoder",
                            "test_cfg", "shift_heatmap", "decode_post", "stride", "flip_index", "max_num_people",
                            "nms_kernel", "nms_padding", "shape_min", "shape_opt", "shape_max", "fp16", "int8"})


def _pair(v: Any, name: str) -> tuple[int, int]:
    vals = tuple(int(x) for x in v)
    if len(vals) != 2:
        raise CardError(f"{name} {v!r} must be two integers")
    return vals  # type: ignore[return-value]


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _unjson(v: Any) -> Any:
    if not isinstance(v, str):
        return v
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _from_schema1(meta: dict[str, Any]) -> dict[str, Any]:
    """Card fields of a schema-1 export (srpose 0.1: flat keys, the decoder as a string)."""
    bottom_up = bool(meta.get("bottom_up"))
    cfg = meta.get("config") or {}
    test_cfg = meta.get("test_cfg") or {}
    decoder = str(meta.get("decoder", "associative_embedding" if bottom_up else "simple"))
    codec: dict[str, Any] = {"name": {"simple": "msra"}.get(decoder, decoder)}
    if not bottom_up:
        codec.update(heatmap_size=list(meta["heatmap_size"]), post_process=test_cfg.get("post_process", "default"),
                     shift_heatmap=bool(meta.get("shift_heatmap", test_cfg.get("shift_heatmap", True))),
                     modulate_kernel=int(test_cfg.get("modulate_kernel", 11)),
                     sigma=float((cfg.get("data") or {}).get("sigma", 2.0)))
    else:
        codec.update({k: v for k, v in test_cfg.items()
                      if k in ("max_num_people", "detection_threshold", "tag_threshold", "use_detection_val",
                               "ignore_too_much", "nms_kernel", "nms_padding", "tag_per_joint", "adjust", "refine",
                               "project2image")})
        codec["num_joints"] = int(meta["num_joints"])
    hw = None
    if meta.get("dynamic_hw"):
        hw = [[int(meta[f"height_{k}"]), int(meta[f"width_{k}"])] for k in ("min", "opt", "max")]
    names = meta.get("output_names") or [meta.get("output_name", "heatmaps")]
    details = {k: meta[k] for k in ("fp16", "int8") if k in meta}
    return dict(
        schema=1, model_name=meta.get("model_name", "model"), task="bottom-up" if bottom_up else "top-down",
        input_size=meta["input_size"], heatmap_size=meta["heatmap_size"], num_joints=meta["num_joints"],
        mean=meta["mean"], std=meta["std"], flip_pairs=meta["flip_pairs"], codec=codec, output_names=names,
        input_name=meta.get("input_name", "input"), decode=bool(meta.get("decode")), flip=bool(meta.get("flip")),
        precision=meta.get("precision", "fp32"),
        batch=[int(meta.get(f"batch_{k}", 1)) for k in ("min", "opt", "max")], hw_profile=hw,
        opset=meta.get("opset"), config=cfg or None, config_source=meta.get("config_source"),
        checkpoint_sha256=meta.get("checkpoint_sha256"), tool_version=meta.get("tool_version"),
        torch_version=meta.get("torch_version"), precision_details=details)
