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


@pytest.mark.parametrize("size", [3, 4, 5])
def test_caffe_convention_matches_torch(size):
    x = torch.randn(2, 9, 6, 6, dtype=torch.float64) * 4
    ours = LocalResponseNorm(size, alpha=1e-3, beta=0.75, k=1.0, convention="caffe")
    torch.testing.assert_close(ours(x), torch.nn.LocalResponseNorm(size, 1e-3, 0.75, 1.0)(x))


def test_groups_normalise_within_their_own_channels():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 5, size=(2, 8, 3, 3))
    got = LocalResponseNorm(5, 0.1, 0.75, 2.0, "paper", groups=2)(torch.from_numpy(a)).numpy()
    halves = [paper_lrn(a[:, :4], 5, 0.1, 0.75, 2.0), paper_lrn(a[:, 4:], 5, 0.1, 0.75, 2.0)]
    np.testing.assert_allclose(got, np.concatenate(halves, axis=1), rtol=1e-12)
    whole = paper_lrn(a, 5, 0.1, 0.75, 2.0)
    assert not np.allclose(got, whole)


@pytest.mark.parametrize("convention", ["paper", "caffe"])
def test_gradcheck(convention):
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    lrn = LocalResponseNorm(4, alpha=0.5, beta=0.75, k=2.0, convention=convention, groups=2)
    assert torch.autograd.gradcheck(lrn, (x,))


def test_half_precision_input_does_not_overflow():
    # fp16 squares overflow past 256; the paper's 0–255 pixel scale makes such activations common
    x = torch.full((1, 4, 2, 2), 200.0)
    lrn = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    expected = lrn(x)
    got = lrn(x.half())
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), expected, rtol=1e-3, atol=1e-3)
    assert expected.min() > 20
