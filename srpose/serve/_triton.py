"""What the python-backend models share: the backend's utils module, tensors in and out, per-request errors.

Tensors cross the python backend by DLPack (``np.from_dlpack`` / ``Tensor.from_dlpack``) rather than
``as_numpy()`` / ``Tensor(name, array)``: the python backend stub of Triton 2.51 (the ``nvidia-pytriton`` 0.7.0
wheel) reads numpy's array structs with the numpy 1.x layout, so with numpy 2 ``Tensor(name, array)`` reports
"output tensor shape does not match size of output"; DLPack works with numpy 1.22+ and 2.x alike. Output capsules
are renamed as DLPack asks once the stub consumed them (it names them otherwise, and numpy's destructor would log
an exception per tensor). Empty arrays, which DLPack cannot carry, go the plain way (their size is 0 whatever the
layout).
"""
from __future__ import annotations

import json
import sys
import traceback
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from srpose.card import ArtifactCard
from srpose.engines.triton_protocol import PARAM_CARD

__all__ = ["RequestError", "pb_utils", "input_array", "output_tensor", "respond", "respond_all", "model_params",
           "model_card"]


class RequestError(ValueError):
    """A bad request: its message goes back to the client; the model keeps serving."""


def pb_utils() -> Any:
    """``triton_python_backend_utils`` (importable only inside the server's python backend stub)."""
    import triton_python_backend_utils

    return triton_python_backend_utils


def input_array(request: Any, name: str, dtype: Any, *, required: bool = True) -> np.ndarray | None:
    """Input ``name`` of ``request`` as a numpy array of ``dtype`` (a copy, independent of the request's memory);
    None when it is absent and not ``required`` (RequestError when it is)."""
    tensor = pb_utils().get_input_tensor_by_name(request, name)
    if tensor is None:
        if required:
            raise RequestError(f"input {name!r} is missing from the request")
        return None
    shape = [int(d) for d in tensor.shape()]
    if 0 in shape:
        return np.zeros(shape, dtype=dtype)
    return np.array(np.from_dlpack(tensor), dtype=dtype, copy=True)


def output_tensor(name: str, array: np.ndarray) -> Any:
    """A python-backend output tensor of ``array`` (contiguous, its own dtype), passed by a DLPack capsule that is
    marked consumed afterwards (see :func:`_mark_consumed`)."""
    pb = pb_utils()
    array = np.ascontiguousarray(array)
    if array.size == 0:
        return pb.Tensor(name, array)
    capsule = array.__dlpack__()
    tensor = pb.Tensor.from_dlpack(name, capsule)
    _mark_consumed(capsule)
    return tensor


_CAPI: list[Any] = []
_TRITON_USED = b"used_dlpack"  # the name the stub gives a capsule it consumed (kept alive: the capsule points to it)
_DLPACK_USED = b"used_dltensor"  # the name the DLPack protocol asks for, which numpy's capsule destructor checks


def _mark_consumed(capsule: Any) -> None:
    """Give a capsule the python backend consumed the protocol's ``used_dltensor`` name. The stub renames consumed
    capsules ``used_dlpack``, so numpy's capsule destructor, not recognising them as consumed, fails to read them
    and prints "ValueError: PyCapsule_GetPointer called with incorrect name" to the server log for every output
    tensor (the tensor itself is fine: the stub owns it). A capsule the stub did not consume is left alone."""
    if not _CAPI:
        import ctypes

        api = ctypes.pythonapi
        for fn in (api.PyCapsule_IsValid, api.PyCapsule_SetName):
            fn.argtypes, fn.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_int
        _CAPI.append(api)
    api = _CAPI[0]
    if api.PyCapsule_IsValid(capsule, _TRITON_USED):
        api.PyCapsule_SetName(capsule, _DLPACK_USED)


def _error(request_name: str, e: BaseException) -> Any:
    pb = pb_utils()
    if isinstance(e, (RequestError, ValueError)):
        return pb.InferenceResponse(error=pb.TritonError(f"{request_name}: {e}"))
    traceback.print_exc(file=sys.stderr)  # an internal failure: its traceback goes to the server log
    return pb.InferenceResponse(error=pb.TritonError(f"{request_name}: internal error {type(e).__name__}: {e}"))


def respond(requests: Sequence[Any], handle: Callable[[Any], Mapping[str, np.ndarray]], model: str) -> list[Any]:
    """One response per request: ``handle(request)``'s named outputs, or an error response naming the problem
    (bad requests get their message; other failures also log a traceback)."""
    pb = pb_utils()
    responses = []
    for request in requests:
        try:
            outputs = handle(request)
            responses.append(pb.InferenceResponse([output_tensor(k, v) for k, v in outputs.items()]))
        except Exception as e:  # every failure becomes that request's error response
            responses.append(_error(model, e))
    return responses


def respond_all(requests: Sequence[Any], outputs: Sequence[Mapping[str, np.ndarray]] | BaseException,
                model: str) -> list[Any]:
    """Responses of a batch computed together: each request's outputs, or the same error for all."""
    pb = pb_utils()
    if isinstance(outputs, BaseException):
        return [_error(model, outputs) for _ in requests]
    return [pb.InferenceResponse([output_tensor(k, v) for k, v in out.items()]) for out in outputs]


def model_params(args: Mapping[str, str]) -> dict[str, str]:
    """The string parameters of a model's config (``args["model_config"]`` as Triton passes it)."""
    config = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


def model_card(args: Mapping[str, str]) -> tuple[ArtifactCard, dict[str, str]]:
    """(card, parameters) of a model srpose wrote; ValueError naming the model when it has no card."""
    params = model_params(args)
    text = params.get(PARAM_CARD)
    if not text:
        raise ValueError(f"model {args.get('model_name')!r} has no {PARAM_CARD!r} parameter: write the repository "
                         "with `srpose triton`")
    return ArtifactCard.from_dict(json.loads(text), source=f"model {args.get('model_name')!r}"), params
