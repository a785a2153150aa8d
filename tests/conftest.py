"""Shared fixtures: the ../shared sample data (skipped when absent), small deterministic settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _fake_trt import fake  # noqa: F401  (fixture: a fake TensorRT for the engines layer)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for the module (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test when the folder is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (the shared sample data lives beside the repo as ../shared)")
    return p


@pytest.fixture
def coco_sample() -> dict[str, Path]:
    d = shared_path("data", "coco")
    return {"ann": d / "test_coco.json", "images": d, "det": d / "test_coco_det_AP_H_56.json"}


@pytest.fixture
def crowdpose_sample() -> dict[str, Path]:
    d = shared_path("data", "crowdpose")
    return {"ann": d / "test_crowdpose.json", "images": d, "det": d / "test_crowdpose_det_AP_40.json"}


@pytest.fixture
def mpii_sample() -> dict[str, Path]:
    d = shared_path("data", "mpii")
    return {"ann": d / "test_mpii.json", "images": d}
