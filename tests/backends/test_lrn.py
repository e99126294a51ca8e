"""netspec's LRN against the paper's formula, computed independently in numpy float64."""

import numpy as np
import pytest
import torch
from netspec.backends.torch_layers import LocalResponseNorm


def paper_lrn(a: np.ndarray, n: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """b_i = a_i / (k + α Σ_{j=max(0,i-⌊n/2⌋)}^{min(N-1,i+⌊n/2⌋)} a_j²)^β, channel axis 1."""
    out = np.empty_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        total = (a[:, lo : hi + 1] ** 2).sum(axis=1)
        out[:, i] = a[:, i] / (k + alpha * total) ** beta
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
def test_paper_convention_matches_formula(size):
    rng = np.random.default_rng(size)
    a = rng.normal(0, 3, size=(2, 11, 4, 5))
    lrn = LocalResponseNorm(size, alpha=0.01, beta=0.75, k=2.0, convention="paper")
    got = lrn(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, paper_lrn(a, size, 0.01, 0.75, 2.0), rtol=1e-12, atol=1e-12)


def test_brief_example_even_window_sums_channels_8_to_12():
    # The brief: N = 30 maps, n = 4, channel 10 is normalised by channels 8, 9, 10, 11, 12.
    a = np.zeros((1, 30, 1, 1))
    a[0, :, 0, 0] = np.arange(1, 31)
    lrn = LocalResponseNorm(4, alpha=1e-4, beta=0.75, k=2.0, convention="paper")
    b = lrn(torch.from_numpy(a)).numpy()[0, 10, 0, 0]
    window = np.arange(1, 31)[8:13]
    assert list(window) == [9, 10, 11, 12, 13]
    assert b == pytest.approx(11 / (2 + 1e-4 * (window**2).sum()) ** 0.75, rel=1e-12)
    # channel 7 and channel 13 lie outside the window: changing them leaves channel 10 alone
    a2 = a.copy()
    a2[0, 7] = a2[0, 13] = 1000.0
    assert lrn(torch.from_numpy(a2)).numpy()[0, 10, 0, 0] == pytest.approx(b, rel=1e-12)


def caffe_lrn(a: np.ndarray, n: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Caffe's LRNLayer (ACROSS_CHANNELS), as its CPU code reads: pre_pad = (n - 1) / 2, and
    channel c sums the squares of channels c - pre_pad … c - pre_pad + n - 1, zero-padded;
    scale = k + α/n · sum; out = a · scale^-β. (ONNX's LRN defines the same window.)"""
    channels = a.shape[1]
    pre_pad = (n - 1) // 2
    padded = np.zeros((a.shape[0], channels + n - 1, *a.shape[2:]))
    padded[:, pre_pad : pre_pad + channels] = a**2
    out = np.empty_like(a)
    for c in range(channels):
        total = padded[:, c : c + n].sum(axis=1)
        out[:, c] = a[:, c] * (k + alpha / n * total) ** -beta
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
def test_torch_convention_matches_torch(size):
    x = torch.randn(2, 9, 6, 6, dtype=torch.float64) * 4
    ours = LocalResponseNorm(size, alpha=1e-3, beta=0.75, k=1.0, convention="torch")
    torch.testing.assert_close(ours(x), torch.nn.LocalResponseNorm(size, 1e-3, 0.75, 1.0)(x))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
def test_caffe_convention_matches_caffes_window(size):
    rng = np.random.default_rng(size)
    a = rng.normal(0, 3, size=(2, 9, 3, 4))
    got = LocalResponseNorm(size, 1e-2, 0.75, 1.0, convention="caffe")(torch.from_numpy(a))
    np.testing.assert_allclose(got.numpy(), caffe_lrn(a, size, 1e-2, 0.75, 1.0), rtol=1e-12)


def test_torch_and_caffe_windows_differ_only_for_even_sizes():
    # with n = 4, channel 4 of 9: torch sums channels 2…5, Caffe 3…6
    x = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(1, 9, 1, 1)
    for size in range(1, 8):
        a, b = (
            LocalResponseNorm(size, 1.0, 0.75, 1.0, convention=c)(x) for c in ("torch", "caffe")
        )
        assert torch.equal(a, b) == (size % 2 == 1), size
    window = x[0, 2:6, 0, 0]
    torch_4 = LocalResponseNorm(4, 1.0, 0.75, 1.0, convention="torch")(x)[0, 4, 0, 0]
    assert float(torch_4) == pytest.approx(
        5 / (1 + float((window**2).sum()) / 4) ** 0.75, rel=1e-12
    )
