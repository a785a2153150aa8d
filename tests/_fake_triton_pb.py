"""A stand-in for Triton's ``triton_python_backend_utils`` (the python backend's module, importable only inside a
server): enough of ``Tensor``, ``InferenceRequest``/``InferenceResponse``, ``TritonError`` and
``get_input_tensor_by_name`` to run srpose's python-backend models in a plain process. The serving tests copy this
file as ``triton_python_backend_utils.py`` onto ``sys.path``; the real server is tested in test_triton_server.py.
"""
from __future__ import annotations

import numpy as np


class TritonError(Exception):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self._msg = msg

    def message(self) -> str:
        return self._msg


_NAMES: list[bytes] = [b"used_dlpack"]  # capsule names must outlive the capsules


def _set_capsule_name(capsule: object, name: bytes) -> None:
    import ctypes

    api = ctypes.pythonapi
    api.PyCapsule_SetName.argtypes, api.PyCapsule_SetName.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_int
    api.PyCapsule_SetName(capsule, next(n for n in _NAMES if n == name))


class _Capsule:
    """A capsule as a DLPack producer (``np.from_dlpack`` takes producers, not capsules)."""

    def __init__(self, capsule: object) -> None:
        self.capsule = capsule

    def __dlpack__(self, **_: object) -> object:
        return self.capsule

    def __dlpack_device__(self) -> tuple:
        return (1, 0)  # kDLCPU


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name = name
        self._array = np.array(array)  # writable: numpy cannot DLPack-export read-only arrays

    @classmethod
    def from_dlpack(cls, name: str, obj: object) -> "Tensor":
        """As the stub does: a DLPack capsule (or the one ``obj.__dlpack__()`` gives) is consumed and renamed
        ``used_dlpack`` (not the protocol's ``used_dltensor``)."""
        capsule = obj if type(obj).__name__ == "PyCapsule" else obj.__dlpack__()
        array = np.from_dlpack(_Capsule(capsule))
        if not array.flags.c_contiguous:
            raise TritonError("DLPack tensor is not contiguous")
        _set_capsule_name(capsule, b"used_dlpack")
        return cls(name, array.copy())

    def __dlpack__(self, stream: object = None) -> object:
        return self._array.__dlpack__()

    def __dlpack_device__(self) -> tuple:
        return self._array.__dlpack_device__()

    def name(self) -> str:
        return self._name

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceRequest:
    def __init__(self, inputs: list[Tensor]) -> None:
        self._inputs = {t.name(): t for t in inputs}

    def inputs(self) -> list[Tensor]:
        return list(self._inputs.values())


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self._outputs = {t.name(): t for t in output_tensors or []}
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def output(self, name: str) -> np.ndarray:
        return self._outputs[name].as_numpy()

    def output_names(self) -> list[str]:
        return list(self._outputs)


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return request._inputs.get(name)
