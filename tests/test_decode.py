"""Heatmap decoding: exact agreement with the official decoders (tests/_decode_ref.py), numpy/torch parity,
hand-computed shifts, hard cases (borders, ties, cell boundaries, non-positive maps, partial cells), ONNX export."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import _decode_ref as ref
from srpose.decode import decode_heatmaps, decode_srpose_torch, gaussian_kernel_1d, heatmap_to_image

REPO = Path(__file__).resolve().parents[1]
SHAPES = [(2, 3, 64, 48), (2, 2, 70, 50), (1, 3, 33, 17), (2, 2, 16, 16), (1, 2, 40, 64)]


def _boxes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    center = (rng.random((n, 2)) * 400).astype(np.float32)
    scale = (rng.random((n, 2)) * 2 + 0.3).astype(np.float32)
    return center, scale


def _official(h: np.ndarray, center, scale, kind: str, post_process="default", kernel=11):
    if kind == "srpose":
        return ref.srpose_decode(h, center, scale, post=post_process is not None)
    return ref.keypoints_from_heatmaps(h, center, scale, post_process=post_process, kernel=kernel)


def _assert_matches_official(h: np.ndarray, kind: str, post_process="default") -> None:
    center, scale = _boxes(h.shape[0])
    want_kp, want_sc = _official(h, center, scale, kind, post_process)
    post = post_process is not None
    pp = post_process if post else "default"
    kp, sc = decode_heatmaps(h, center, scale, kind=kind, post=post, post_process=pp)
    assert kp.dtype == np.float32 and sc.dtype == np.float32
    assert kp.shape == h.shape[:2] + (2,) and sc.shape == h.shape[:2] + (1,)
    np.testing.assert_array_equal(sc, want_sc)
    np.testing.assert_allclose(kp, want_kp, rtol=0, atol=1e-5)
    kt, st = decode_heatmaps(torch.from_numpy(h), center, scale, kind=kind, post=post, post_process=pp)
    assert isinstance(kt, torch.Tensor) and isinstance(st, torch.Tensor)
    np.testing.assert_array_equal(st.numpy(), want_sc)
    np.testing.assert_allclose(kt.numpy(), want_kp, rtol=0, atol=1e-5)


def _hard_maps(shape, seed: int) -> np.ndarray:
    """Random maps with ties (quantised), non-positive maps, constant maps and maxima on borders."""
    rng = np.random.default_rng(seed)
    n, k, h, w = shape
    maps = rng.random(shape, dtype=np.float32)
    maps[0, 0] = np.floor(maps[0, 0] * 3) / 3  # many ties, across and inside cells
    maps[0, 1] = -rng.random((h, w), dtype=np.float32)  # negative
    if k > 2:
        maps[0, 2] = 0.0  # zero: every pixel ties
    if n > 1:
        maps[1, 0, :, -1] = 2.0  # last column (may lie in the partial cell the cell decoder ignores)
        maps[1, 1, -1, :] = 2.0  # last row
        if k > 2:
            maps[1, 2] = 0.5  # constant positive map
    return maps


# ------------------------------------------------------------------------------------------------ official parity
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["srpose", "simple"])
@pytest.mark.parametrize("post_process", ["default", None])
def test_matches_official_random(shape, kind, post_process):
    h = np.random.default_rng(1).random(shape, dtype=np.float32)
    _assert_matches_official(h, kind, post_process)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["srpose", "simple"])
def test_matches_official_hard_cases(shape, kind):
    for seed in range(3):
        _assert_matches_official(_hard_maps(shape, seed), kind)


@pytest.mark.parametrize("kind", ["srpose", "simple"])
def test_matches_official_heavy_ties(kind):
    rng = np.random.default_rng(5)
    h = (rng.integers(0, 2, size=(4, 8, 48, 40)) - 1).astype(np.float32)  # values -1, 0 ...
    h[rng.random(h.shape) < 0.004] = 1.0  # ... and a few scattered, tied maxima per map
    h[0, 0] = -1.0
    _assert_matches_official(h, kind)


# ------------------------------------------------------------------------------------------------ hand-computed
def _identity_box(n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """center/scale whose image transform is exactly the identity for W = 50, H = 100 (powers of two / 200)."""
    assert (w, h) == (50, 100)
    return np.tile([[25.0, 50.0]], (n, 1)), np.tile([[0.25, 0.5]], (n, 1))


def _decode_px(h: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray]:
    center, scale = _identity_box(h.shape[0], h.shape[2], h.shape[3])
    kp, sc = decode_heatmaps(h, center, scale, **kw)
    kt, st = decode_heatmaps(torch.from_numpy(h), center, scale, **kw)
    np.testing.assert_array_equal(kp, kt.numpy())
    np.testing.assert_array_equal(sc, st.numpy())
    return kp, sc


def _peak(x: int, y: int, value: float = 1.0) -> np.ndarray:
    h = np.zeros((1, 1, 100, 50), np.float32)
    h[0, 0, y, x] = value
    return h


@pytest.mark.parametrize("kind", ["srpose", "simple"])
def test_quarter_shift_towards_higher_neighbour(kind):
    h = _peak(20, 30)
    h[0, 0, 30, 21] = 0.5  # right higher than left -> +x
    h[0, 0, 29, 20] = 0.4  # up higher than down -> -y
    kp, sc = _decode_px(h, kind=kind)
    np.testing.assert_array_equal(kp[0, 0], [20.25, 29.75])
    assert sc[0, 0, 0] == 1.0
    h = _peak(20, 30)
    h[0, 0, 30, 19] = 0.5
    h[0, 0, 31, 20] = 0.4
    kp, _ = _decode_px(h, kind=kind)
    np.testing.assert_array_equal(kp[0, 0], [19.75, 30.25])
    kp, _ = _decode_px(_peak(20, 30), kind=kind)  # equal neighbours: no shift
    np.testing.assert_array_equal(kp[0, 0], [20, 30])
    kp, _ = _decode_px(h, kind=kind, post=False)
    np.testing.assert_array_equal(kp[0, 0], [20, 30])


@pytest.mark.parametrize("kind", ["srpose", "simple"])
@pytest.mark.parametrize("x, y, shifted", [
    (0, 30, False), (1, 30, False), (2, 30, True),  # official: shift only when 1 < x < W - 1
    (46, 30, True), (47, 30, True),  # 47 < W - 1 = 49 (and within the srpose cells, which end at column 48)
    (20, 0, False), (20, 1, False), (20, 2, True), (20, 94, True), (20, 95, True),
])
def test_no_shift_at_the_border(kind, x, y, shifted):
    h = _peak(x, y)
    h[0, 0] += np.linspace(0, 0.1, 50, dtype=np.float32)[None, :]  # strictly increasing to the right
    h[0, 0, y, x] = 2.0
    kp, _ = _decode_px(h, kind=kind)
    expect_dx = 0.25 if shifted else 0.0
    np.testing.assert_array_equal(kp[0, 0], [x + expect_dx, y])


def test_simple_shift_at_last_columns_and_rows():
    for x, y, want in [(48, 50, [48.25, 50]), (49, 50, [49, 50]), (20, 98, [20.25, 98]), (20, 99, [20, 99])]:
        h = _peak(x, y)
        h[0, 0] += np.linspace(0, 0.1, 50, dtype=np.float32)[None, :]
        h[0, 0, y, x] = 2.0
        kp, _ = _decode_px(h, kind="simple")
        np.testing.assert_array_equal(kp[0, 0], want)


def test_srpose_ignores_partial_cells_but_simple_does_not():
    h = _peak(10, 10, 0.5)
    h[0, 0, 40, 49] = 1.0  # column 49 lies beyond the last whole 16-pixel cell (48 columns)
    h[0, 0, 97, 5] = 1.0  # row 97 lies beyond the last whole cell row (96 rows)
    kp, sc = _decode_px(h, kind="srpose")
    np.testing.assert_array_equal(kp[0, 0], [10, 10])
    assert sc[0, 0, 0] == np.float32(0.5)
    kp, sc = _decode_px(h, kind="simple")
    np.testing.assert_array_equal(kp[0, 0], [49, 40])
    assert sc[0, 0, 0] == 1.0


def test_srpose_tie_goes_to_first_cell_then_first_pixel_in_cell():
    # coarse tie: (x=20, y=2) is first in raster order, but its cell (0, 1) comes after cell (0, 0) holding (3, 10)
    h = np.zeros((1, 1, 100, 50), np.float32)
    h[0, 0, 2, 20] = h[0, 0, 10, 3] = 1.0
    kp, _ = _decode_px(h, kind="srpose", post=False)
    np.testing.assert_array_equal(kp[0, 0], [3, 10])
    kp, _ = _decode_px(h, kind="simple", post=False)  # plain arg-max: first in raster order
    np.testing.assert_array_equal(kp[0, 0], [20, 2])
    # cell rows come first: (40, 5) in cell (0, 2) beats (0, 20) in cell (1, 0)
    h = np.zeros((1, 1, 100, 50), np.float32)
    h[0, 0, 20, 0] = h[0, 0, 5, 40] = 1.0
    kp, _ = _decode_px(h, kind="srpose", post=False)
    np.testing.assert_array_equal(kp[0, 0], [40, 5])
    # in-cell tie: first in raster order inside the cell
    h = np.zeros((1, 1, 100, 50), np.float32)
    h[0, 0, 3, 7] = h[0, 0, 2, 9] = 1.0
    kp, _ = _decode_px(h, kind="srpose", post=False)
    np.testing.assert_array_equal(kp[0, 0], [9, 2])
    _assert_matches_official(np.ascontiguousarray(np.tile(h, (2, 2, 1, 1))), "srpose")


@pytest.mark.parametrize("x, y", [(15, 15), (16, 16), (15, 16), (16, 15), (31, 47), (32, 48), (47, 95)])
def test_maxima_at_cell_boundaries(x, y):
    h = np.random.default_rng(x * 100 + y).random((1, 1, 100, 50), dtype=np.float32) * 0.5
    h[0, 0, y, x] = 1.0
    for kind in ("srpose", "simple"):
        kp, sc = _decode_px(h, kind=kind, post=False)
        np.testing.assert_array_equal(kp[0, 0], [x, y])
        assert sc[0, 0, 0] == 1.0
        _assert_matches_official(h, kind)


def test_non_positive_maps():
    rng = np.random.default_rng(3)
    h = -rng.random((1, 2, 100, 50), dtype=np.float32)
    h[0, 1] = 0.0
    # srpose: the official code indexes cell (-1, -1): the arg-max of the bottom-right whole cell (rows 80-95,
    # columns 32-47) is returned, the score is the map's maximum
    kp, sc = _decode_px(h, kind="srpose", post=False)
    cell = h[0, 0, 80:96, 32:48]
    iy, ix = np.unravel_index(np.argmax(cell), cell.shape)
    np.testing.assert_array_equal(kp[0, 0], [32 + ix, 80 + iy])
    assert sc[0, 0, 0] == h[0, 0, :96, :48].max()
    np.testing.assert_array_equal(kp[0, 1], [32, 80])  # all-zero map: first pixel of that cell
    assert sc[0, 1, 0] == 0.0
    # simple: location (-1, -1), no shift, mapped to the image
    kp, sc = _decode_px(h, kind="simple")
    np.testing.assert_array_equal(kp[0], [[-1, -1], [-1, -1]])
    assert sc[0, 0, 0] == h[0, 0].max()
    for kind in ("srpose", "simple"):
        _assert_matches_official(h, kind)


def test_heatmap_to_image_hand_computed():
    coords = np.array([[[0.0, 0.0], [48.0, 64.0], [12.0, 16.0]]], np.float32)
    center = np.array([[100.0, 200.0]], np.float32)
    scale = np.array([[0.96, 1.28]], np.float32)  # 192 x 256 px box on a 48 x 64 heatmap: 4 px per pixel
    out = heatmap_to_image(coords, center, scale, (48, 64))
    np.testing.assert_allclose(out[0], [[4.0, 72.0], [196.0, 328.0], [52.0, 136.0]], atol=1e-4)
    want = ref.transform_preds(coords[0], center[0], scale[0], [48, 64])
    np.testing.assert_array_equal(out[0], want)
    out_t = heatmap_to_image(torch.from_numpy(coords), torch.from_numpy(center), scale, (48, 64))
    np.testing.assert_array_equal(out_t.numpy(), out)


def test_heatmap_to_image_matches_official_per_person():
    rng = np.random.default_rng(7)
    coords = (rng.random((5, 17, 2)) * 60).astype(np.float32)
    center, scale = _boxes(5, seed=4)
    out = heatmap_to_image(coords, center, scale, (48, 64))
    for i in range(5):
        np.testing.assert_array_equal(out[i], ref.transform_preds(coords[i], center[i], scale[i], [48, 64]))


# ------------------------------------------------------------------------------------------------ DARK
def _gaussian_maps(n: int, k: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    cx = rng.uniform(-3, w + 3, (n, k, 1, 1))
    cy = rng.uniform(-3, h + 3, (n, k, 1, 1))
    maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8.0) * rng.uniform(0.2, 1, (n, k, 1, 1))
    maps = (maps + rng.normal(0, 0.01, maps.shape)).astype(np.float32)
    maps[0, 0] = -np.abs(maps[0, 0])
    return maps


@pytest.mark.parametrize("kernel", [11, 17, 3])
def test_dark_matches_official(kernel):
    h = _gaussian_maps(3, 6, 64, 48, seed=kernel)
    before = h.copy()
    center, scale = _boxes(3)
    want_kp, want_sc = ref.keypoints_from_heatmaps(h, center, scale, post_process="unbiased", kernel=kernel)
    want_px, _ = ref.keypoints_from_heatmaps(h, center, scale, post_process="unbiased", kernel=kernel,
                                             transform=False)
    kw = dict(kind="simple", post_process="unbiased", modulate_kernel=kernel)
    kp, sc = decode_heatmaps(h, center, scale, **kw)
    np.testing.assert_array_equal(h, before)  # input untouched
    np.testing.assert_array_equal(sc, want_sc)
    sx = (scale[:, None, :] * 200.0 / np.array([48, 64])).max()  # image px per heatmap px
    np.testing.assert_allclose(kp, want_kp, rtol=0, atol=1e-4 * sx)
    kt, st = decode_heatmaps(torch.from_numpy(h), center, scale, **kw)
    np.testing.assert_allclose(kt.numpy(), want_kp, rtol=0, atol=1e-4 * sx)
    assert not np.array_equal(want_px, np.round(want_px))  # DARK moved the points off the grid


def test_gaussian_kernel_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    for size in (1, 3, 5, 7, 9, 11, 13, 17, 25):
        np.testing.assert_array_equal(gaussian_kernel_1d(size), cv2.getGaussianKernel(size, 0, cv2.CV_32F).ravel())


# ------------------------------------------------------------------------------------------------ torch specifics
def test_torch_layouts_and_dtypes():
    h = np.random.default_rng(2).random((2, 3, 64, 48), dtype=np.float32)
    center, scale = _boxes(2)
    want, want_s = decode_heatmaps(h, center, scale, kind="srpose")
    # non-contiguous inputs (numpy and torch) give the same answer
    hn = np.ascontiguousarray(h.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(decode_heatmaps(hn, center, scale, kind="srpose")[0], want)
    ht = torch.from_numpy(np.ascontiguousarray(h.transpose(1, 0, 2, 3))).transpose(0, 1)
    kt, st = decode_heatmaps(ht, torch.from_numpy(center), torch.from_numpy(scale), kind="srpose")
    np.testing.assert_array_equal(kt.numpy(), want)
    assert kt.dtype == torch.float32 and st.dtype == torch.float32 and kt.device == ht.device
    out = decode_srpose_torch(torch.from_numpy(h))
    assert out.shape == (2, 3, 3)
    px, _ = ref.srpose_decode(h, center, scale, transform=False)
    np.testing.assert_array_equal(out[..., :2].numpy(), px)
    kd, _ = decode_heatmaps(torch.from_numpy(h).double(), center, scale, kind="srpose")
    np.testing.assert_array_equal(kd.numpy(), want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind, post_process", [("srpose", "default"), ("simple", "default"),
                                                ("simple", "unbiased")])
def test_cuda_matches_numpy(kind, post_process):
    h = _gaussian_maps(2, 5, 64, 48, seed=9)
    h[1] = _hard_maps((1, 5, 64, 48), 1)[0]
    center, scale = _boxes(2)
    want, want_s = decode_heatmaps(h, center, scale, kind=kind, post_process=post_process)
    hc = torch.from_numpy(h).cuda()
    kp, sc = decode_heatmaps(hc, torch.from_numpy(center).cuda(), scale, kind=kind, post_process=post_process)
    assert kp.is_cuda and sc.is_cuda
    atol = 1e-3 if post_process == "unbiased" else 1e-5
    np.testing.assert_allclose(kp.cpu().numpy(), want, rtol=0, atol=atol)
    np.testing.assert_array_equal(sc.cpu().numpy(), want_s)


@pytest.mark.parametrize("hw", [(64, 48), (70, 50)])
def test_onnx_export_of_srpose_decoder(hw):
    ort = pytest.importorskip("onnxruntime")

    class Decoder(torch.nn.Module):
        def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
            return decode_srpose_torch(heatmaps)

    rng = np.random.default_rng(11)
    example = torch.from_numpy(rng.random((2, 17) + hw, dtype=np.float32))
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(Decoder(), (example,), buf, opset_version=17, dynamo=False, input_names=["heatmaps"],
                          output_names=["keypoints"], dynamic_axes={"heatmaps": {0: "n"}, "keypoints": {0: "n"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n in (2, 3):
        h = _hard_maps((n, 17) + hw, seed=n)
        got = sess.run(None, {"heatmaps": h})[0]
        np.testing.assert_array_equal(got, decode_srpose_torch(torch.from_numpy(h)).numpy())
        px, sc = ref.srpose_decode(h, *_boxes(n), transform=False)
        np.testing.assert_array_equal(got[..., :2], px)
        np.testing.assert_array_equal(got[..., 2:], sc)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, err, match", [
    (dict(kind="dark"), ValueError, "kind="),
    (dict(kind="simple", post_process="megvii"), ValueError, "post_process="),
    (dict(kind="srpose", post_process="unbiased"), ValueError, "kind='simple'"),
    (dict(kind="simple", post_process="unbiased", modulate_kernel=4), ValueError, "odd"),
    (dict(kind="srpose", cell=0), ValueError, "cell="),
    (dict(kind="srpose", cell=128), ValueError, "whole 128 x 128 cell"),
    (dict(), TypeError, "kind"),
])
def test_errors(kwargs, err, match):
    h = np.zeros((1, 2, 64, 48), np.float32)
    with pytest.raises(err, match=match):
        decode_heatmaps(h, np.zeros((1, 2)), np.ones((1, 2)), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="N x K x H x W"):
        decode_heatmaps(np.zeros((2, 64, 48), np.float32), np.zeros((2, 2)), np.ones((2, 2)), kind="simple")
    with pytest.raises(ValueError, match="center must be N x 2"):
        decode_heatmaps(np.zeros((2, 1, 64, 48), np.float32), np.zeros((1, 2)), np.ones((2, 2)), kind="simple")
    with pytest.raises(ValueError, match="scale must be N x 2"):
        decode_heatmaps(torch.zeros(2, 1, 64, 48), np.zeros((2, 2)), np.ones(2), kind="simple")
    with pytest.raises(TypeError, match="floating point"):
        decode_heatmaps(np.zeros((1, 1, 64, 48), np.int64), np.zeros((1, 2)), np.ones((1, 2)), kind="simple")


# ------------------------------------------------------------------------------------------------ benchmark script
def _load_bench():
    from _scripts import load_script

    return load_script("bench_decode")


def test_bench_script_quick(tmp_path, capsys):
    bench = _load_bench()
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n## Other section\n\nkeep me\n", encoding="utf-8")
    assert bench.main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "official srpose" in printed and "identical to the official decoders: yes" in printed
    text = out.read_text(encoding="utf-8")
    assert "## Other section\n\nkeep me" in text and "## Heatmap decoding" in text
    # a second write replaces the section, whichever place it holds, and keeps the others
    bench.write_section(out, "## Heatmap decoding\n\nnew\n")
    out.write_text(out.read_text(encoding="utf-8") + "\n## Later section\n\nme too\n", encoding="utf-8")
    bench.write_section(out, "## Heatmap decoding\n\nnewer\n")
    text = out.read_text(encoding="utf-8")
    assert text.count("## Heatmap decoding") == 1 and "newer" in text and "official srpose" not in text
    assert "keep me" in text and "## Later section\n\nme too" in text
    bench.write_section(tmp_path / "fresh.md", "## Heatmap decoding\n\nx\n")
    assert (tmp_path / "fresh.md").read_text(encoding="utf-8").startswith("# Benchmarks\n\n## Heatmap decoding")
