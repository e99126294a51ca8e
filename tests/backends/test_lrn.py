"""netspec's LRN against the paper's formula, computed independently in numpy float64.

The forward and the closed-form backward are checked eagerly for both conventions, per group,
over odd and even sizes; the compiled kernels (slow: compiling takes seconds) against the same
references, in float32 and half precision.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from netspec.backends import torch_lrn
from netspec.backends.torch_layers import LocalResponseNorm

from netspec.spec.layers import LRN_WINDOWS
from tests.backends.conftest import compiling_everything
from tests.conftest import ROOT


def paper_lrn(a: np.ndarray, n: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """b_i = a_i / (k + α Σ_{j=max(0,i-⌊n/2⌋)}^{min(N-1,i+⌊n/2⌋)} a_j²)^β, channel axis 1."""
    out = np.empty_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        total = (a[:, lo : hi + 1] ** 2).sum(axis=1)
        out[:, i] = a[:, i] / (k + alpha * total) ** beta
    return out


def torch_window_lrn(a: np.ndarray, n: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """nn.LocalResponseNorm and cuda-convnet: α/n, channels i-⌊n/2⌋ … i+⌊(n-1)/2⌋."""
    out = np.empty_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + (n - 1) // 2)
        total = (a[:, lo : hi + 1] ** 2).sum(axis=1)
        out[:, i] = a[:, i] / (k + alpha / n * total) ** beta
    return out


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


REFERENCES = {"paper": paper_lrn, "torch": torch_window_lrn, "caffe": caffe_lrn}


def reference(a: np.ndarray, convention: str, groups: int, n: int, alpha, beta, k) -> np.ndarray:
    blocks = np.split(a, groups, axis=1)
    return np.concatenate([REFERENCES[convention](b, n, alpha, beta, k) for b in blocks], axis=1)


def reference_grad(a: np.ndarray, g: np.ndarray, convention, groups, n, alpha, beta, k):
    """∂(Σ g·b)/∂a by central differences of the numpy formula, one value at a time."""
    out = np.empty_like(a)
    eps = 1e-6
    for idx in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[idx] += eps
        down[idx] -= eps
        diff = reference(up, convention, groups, n, alpha, beta, k)
        diff -= reference(down, convention, groups, n, alpha, beta, k)
        out[idx] = (g * diff).sum() / (2 * eps)
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
def test_paper_convention_matches_formula(size):
    rng = np.random.default_rng(size)
    a = rng.normal(0, 3, size=(2, 11, 4, 5))
    lrn = LocalResponseNorm(size, alpha=0.01, beta=0.75, k=2.0, convention="paper")
    got = lrn(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, paper_lrn(a, size, 0.01, 0.75, 2.0), rtol=1e-12, atol=1e-12)


def test_paper_even_window_sums_channels_8_to_12():
    # The paper's formula: N = 30 maps, n = 4, channel 10 sums channels 8, 9, 10, 11, 12.
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


def check_against_reference(convention, size, groups, shape, dtype, seed=0, beta=0.75):
    """Forward and backward in `dtype` against float64 numpy, to float32's precision."""
    rng = np.random.default_rng(seed)
    a = np.abs(rng.normal(0, 40, size=shape))  # post-ReLU, large enough for LRN to bite
    g = rng.normal(0, 1, size=shape)
    constants = dict(alpha=1e-3, beta=beta, k=2.0)
    lrn = LocalResponseNorm(size, convention=convention, groups=groups, **constants)
    x = torch.tensor(a, dtype=dtype, requires_grad=True)
    y = lrn(x)
    y.backward(torch.tensor(g, dtype=dtype))
    n, alpha, beta, k = size, constants["alpha"], constants["beta"], constants["k"]
    want = reference(a, convention, groups, n, alpha, beta, k)
    # the backward's reference: autograd through the textbook formula, float64
    a64 = torch.tensor(a, requires_grad=True)
    per = shape[1] // groups
    span = LRN_WINDOWS[convention](n)
    scale = alpha if convention == "paper" else alpha / n
    outs = []
    for c in range(shape[1]):
        first = c // per * per
        lo, hi = max(first, c - span[0]), min(first + per - 1, c + span[1])
        total = (a64[:, lo : hi + 1] ** 2).sum(1)
        outs.append(a64[:, c] / (k + scale * total) ** beta)
    torch.stack(outs, 1).backward(torch.tensor(g))
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.double().detach().numpy(), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(x.grad.double().numpy(), a64.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("convention", ["paper", "torch", "caffe"])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("groups", [1, 2])
def test_forward_and_backward_match_formula(convention, size, groups):
    check_against_reference(convention, size, groups, (2, 12, 3, 4), torch.float32)


@pytest.mark.parametrize("beta", [0.5, 0.6, 1.0, 1.3])
def test_any_beta(beta):
    """β = 0.5, 0.75 and 1 have exact forms of s^-β; any other β goes through exp and log."""
    check_against_reference("paper", 5, 2, (2, 12, 3, 4), torch.float32, beta=beta)


def test_backward_reference_is_the_numerical_derivative():
    """The autograd reference above agrees with central differences of the numpy formula."""
    rng = np.random.default_rng(1)
    a, g = np.abs(rng.normal(0, 3, size=(1, 6, 2, 1))), rng.normal(0, 1, size=(1, 6, 2, 1))
    lrn = LocalResponseNorm(4, alpha=0.1, beta=0.75, k=2.0, convention="caffe", groups=2)
    x = torch.tensor(a, requires_grad=True)
    lrn(x).backward(torch.tensor(g))
    numeric = reference_grad(a, g, "caffe", 2, 4, 0.1, 0.75, 2.0)
    np.testing.assert_allclose(x.grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.slow  # full-size nets or a trained run: the slow lane
@pytest.mark.parametrize("convention", ["paper", "torch", "caffe"])
@pytest.mark.parametrize("size", [3, 4])
def test_gradcheck(convention, size):
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    lrn = LocalResponseNorm(size, alpha=0.5, beta=0.75, k=2.0, convention=convention, groups=2)
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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_gradients_are_finite(dtype):
    conv = torch.nn.Conv2d(3, 8, 3)
    lrn = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0, groups=2)
    x = torch.rand(2, 3, 6, 6) * 255
    with torch.autocast("cpu", dtype=dtype):
        a = conv(x).relu()
        y = lrn(a)
    assert a.dtype == y.dtype == dtype
    y.float().sum().backward()
    assert torch.isfinite(conv.weight.grad).all()
    with torch.no_grad():
        expected = lrn(a.float())
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=1e-2)


def test_channels_last_stays_channels_last():
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    lrn = LocalResponseNorm(5, alpha=0.1, beta=0.75, k=2.0, groups=2)
    y = lrn(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.backward(torch.ones_like(y))
    x2 = x.detach().contiguous().requires_grad_()
    lrn(x2).backward(torch.ones_like(x2))
    torch.testing.assert_close(y, lrn(x.detach().contiguous()))
    torch.testing.assert_close(x.grad, x2.grad)


def test_compile_switched_off_by_environment(monkeypatch):
    kernels = torch_lrn._Kernels()
    monkeypatch.setattr(torch_lrn, "KERNELS", kernels)
    monkeypatch.setattr(torch_lrn, "MIN_COMPILED", 0)
    monkeypatch.setenv(torch_lrn.COMPILE_ENV, "0")
    LocalResponseNorm(5, 1e-4, 0.75, 2.0)(torch.rand(2, 8, 3, 3))
    assert kernels.compiled == {}


@pytest.fixture
def compiled(monkeypatch):
    yield from compiling_everything(monkeypatch, torch_lrn)


@pytest.mark.slow
def test_compiled_matches_formula(compiled):
    check_against_reference("paper", 5, 2, (3, 16, 7, 9), torch.float32)
    check_against_reference("caffe", 4, 1, (3, 16, 7, 9), torch.float32, seed=1)
    assert set(compiled.compiled) == {torch_lrn.forward_saving, torch_lrn.backward}
    # another batch size reuses the kernels: the batch dimension is dynamic
    check_against_reference("paper", 5, 2, (5, 16, 7, 9), torch.float32, seed=2)
    check_against_reference("paper", 5, 2, (3, 16, 7, 9), torch.float16, seed=3)


@pytest.mark.slow
def test_compiled_gradcheck(compiled):
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    lrn = LocalResponseNorm(4, alpha=0.5, beta=0.75, k=2.0, convention="paper", groups=2)
    assert torch.autograd.gradcheck(lrn, (x,))
    assert torch_lrn.backward in compiled.compiled


@pytest.mark.slow
def test_no_compiler_falls_back_with_one_warning(tmp_path):
    script = """
import warnings, torch
from netspec.backends import torch_lrn
from netspec.backends.torch_layers import LocalResponseNorm
from netspec.spec.layers import LRN_WINDOWS
torch_lrn.MIN_COMPILED = 0
lrn = LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2)
x = torch.rand(2, 8, 3, 3) * 100
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    for _ in range(3):
        y = lrn(x.requires_grad_())
        y.sum().backward()
print(len(seen))
print(seen[0].message)
torch.testing.assert_close(y, LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2)(x.double()).float())
"""
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-compiler"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }
    env.pop(torch_lrn.COMPILE_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    count, message = done.stdout.splitlines()[:2]
    assert count == "1"
    assert message.startswith("LRN runs uncompiled, and so more slowly: torch.compile failed")
    assert "NETSPEC_COMPILE=0" in message


@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize(("before", "after"), [(0, 0), (1, 0), (2, 2), (2, 1), (1, 2), (3, 3)])
def test_both_window_sums_agree(groups, before, after):
    """The eager sum (per-group view) and the one Inductor fuses (masked shifts) are equal."""
    w = torch_lrn.Window(before, after, groups, 2.0, 1e-4, 0.75)
    t = torch.randn(2, 12, 3, 5, dtype=torch.float64)
    blocks = t.unflatten(1, (groups, 12 // groups))
    expected = torch.zeros_like(blocks)
    for i in range(12 // groups):
        lo, hi = max(0, i - before), min(12 // groups - 1, i + after)
        expected[:, :, i] = blocks[:, :, lo : hi + 1].sum(2)
    expected = expected.flatten(1, 2)
    torch.testing.assert_close(torch_lrn._grouped_window_sum(t, w), expected)
    torch.testing.assert_close(torch_lrn._masked_window_sum(t, w), expected)


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
