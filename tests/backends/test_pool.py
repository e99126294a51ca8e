"""netspec's max pool against aten's `F.max_pool2d`, the reference it replaces.

Values and input gradients must be aten's to the bit (`torch.equal`): the backward adds each
input element's windows in aten's order (row-major), so no rounding can differ. The formulation
is checked eagerly in float64 over many windows; the compiled kernels (compiling takes seconds)
on small inputs with the size threshold lowered to 0.
"""

import pytest
import torch
import torch.nn.functional as F
from netspec.backends import torch_kernels, torch_pool
from netspec.backends.torch_layers import MaxPool2d

from tests.backends.conftest import compiling_everything

# (kernel, stride, padding, ceil, input height, width): overlapping and not, padded, Caffe's
# ceil mode with a ragged last window, non-square windows, a stride wider than the kernel
WINDOWS = [
    (2, 2, 0, False, 8, 8),
    (3, 2, 0, False, 11, 13),
    (3, 1, 1, False, 7, 9),
    (3, 2, 0, True, 10, 12),
    (3, 2, 1, True, 10, 11),
    ((2, 3), (3, 2), (1, 0), True, 9, 8),
    (2, 3, 0, False, 9, 10),
]


def aten_pool_and_grad(x: torch.Tensor, g_seed: int, k, s, p, ceil):
    xr = x.detach().clone().requires_grad_()
    y = F.max_pool2d(xr, k, s, p, ceil_mode=ceil)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(g_seed), dtype=x.dtype)
    y.backward(g)
    return y.detach(), g, xr.grad


def check_equal_to_aten(pool: MaxPool2d, x: torch.Tensor, seed: int = 0) -> None:
    k, s, p, ceil = pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode
    expected, g, expected_grad = aten_pool_and_grad(x, seed, k, s, p, ceil)
    x = x.detach().clone().requires_grad_()
    y = pool(x)
    assert torch.equal(y, expected)
    y.backward(g)
    assert torch.equal(x.grad, expected_grad)


@pytest.mark.parametrize(("k", "s", "p", "ceil", "h", "w"), WINDOWS)
@pytest.mark.parametrize("relu", [False, True])
def test_formulation_is_atens_eagerly(k, s, p, ceil, h, w, relu):
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    x = x.relu() if relu else x  # ReLU'd: ties at 0 in most windows
    pool = torch_pool.Pool.of(k, s, p, ceil)
    y, offset = torch_pool.forward_saving(x, pool)
    expected, g, expected_grad = aten_pool_and_grad(x, 1, k, s, p, ceil)
    assert torch.equal(y, expected)
    assert torch.equal(torch_pool.forward(x, pool), expected)
    packed = torch_pool.backward(g, offset, pool, (h, w))
    assert torch.equal(torch_pool.unpack(packed, g.dtype, pool, w), expected_grad)


def test_float32_stride_2_interleaves_by_packing_pairs_eagerly():
    x = torch.randn(2, 3, 9, 11).relu()
    pool = torch_pool.Pool((3, 3), (2, 2), (0, 0), True)
    _, offset = torch_pool.forward_saving(x, pool)
    _, g, expected_grad = aten_pool_and_grad(x, 2, 3, 2, 0, True)
    packed = torch_pool.backward(g, offset, pool, (9, 11))
    assert packed.dtype == torch.int64
    assert torch.equal(torch_pool.unpack(packed, g.dtype, pool, 11), expected_grad)


def test_gradcheck_of_the_formulation():
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    pool = torch_pool.Pool((3, 3), (2, 2), (1, 1), True)
    assert torch.autograd.gradcheck(lambda t: torch_pool._MaxPool.apply(t, pool), (x,))


def test_module_prints_and_keeps_no_state():
    pool = MaxPool2d(3, 2)
    assert repr(pool) == (
        "MaxPool2d(kernel_size=3, stride=2, padding=0, dilation=1, ceil_mode=False)"
    )
    assert pool.state_dict() == {}
    assert pool.pool == torch_pool.Pool((3, 3), (2, 2), (0, 0), False)


def test_below_threshold_and_switched_off_are_atens_own(monkeypatch):
    kernels = torch_pool._Kernels()
    monkeypatch.setattr(torch_pool, "KERNELS", kernels)
    x = torch.randn(2, 4, 9, 9).relu().requires_grad_()
    check_equal_to_aten(MaxPool2d(3, 2), x)  # far below MIN_COMPILED
    monkeypatch.setattr(torch_pool, "MIN_COMPILED", 0)
    monkeypatch.setenv(torch_kernels.COMPILE_ENV, "0")
    check_equal_to_aten(MaxPool2d(3, 2), x)
    assert kernels.compiled == {}


@pytest.fixture
def compiled(monkeypatch):
    yield from compiling_everything(monkeypatch, torch_pool)


@pytest.mark.slow
def test_compiled_stride_2_with_ties_and_batch_sizes(compiled, monkeypatch):
    builds, inductor = [], torch_kernels._inductor_one_thread

    def counting(gm, example_inputs, **options):
        builds.append(gm)
        return inductor(gm, example_inputs, **options)

    monkeypatch.setattr(torch_kernels, "_inductor_one_thread", counting)
    pool = MaxPool2d(3, 2)
    check_equal_to_aten(pool, torch.randn(3, 4, 11, 13).relu())
    check_equal_to_aten(pool, torch.zeros(5, 4, 11, 13))  # every window a 9-way tie
    check_equal_to_aten(pool, torch.randn(2, 4, 11, 13))
    with torch.no_grad():
        x = torch.randn(4, 4, 11, 13)
        assert torch.equal(pool(x), F.max_pool2d(x, 3, 2))
    assert set(compiled.compiled) == {
        torch_pool.forward_saving,
        torch_pool.backward,
        torch_pool.forward,
    }
    assert len(builds) == 3  # one kernel each, whatever the batch size


@pytest.mark.slow
def test_backward_compiles_when_its_forward_did(compiled, monkeypatch):
    x = torch.randn(2, 4, 11, 13).relu()  # 1,144 values in, 240 out
    monkeypatch.setattr(torch_pool, "MIN_COMPILED", 1000)
    check_equal_to_aten(MaxPool2d(3, 2), x)
    assert set(compiled.compiled) == {torch_pool.forward_saving, torch_pool.backward}


@pytest.mark.slow
@pytest.mark.parametrize(("k", "s", "p", "ceil", "h", "w"), WINDOWS)
def test_compiled_windows(compiled, k, s, p, ceil, h, w):
    check_equal_to_aten(MaxPool2d(k, s, p, ceil), torch.randn(2, 3, h, w).relu())


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compiled_under_autocast(compiled, dtype):
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(2, 3, 13, 15) * 10
    with torch.autocast("cpu", dtype=dtype):
        a = conv(x).relu()
        y = MaxPool2d(3, 2)(a)
    assert a.dtype == y.dtype == dtype
    check_equal_to_aten(MaxPool2d(3, 2), a.detach())


def test_channels_last_stays_channels_last(compiled):
    x = torch.randn(2, 8, 9, 9).relu().contiguous(memory_format=torch.channels_last)
    y = MaxPool2d(3, 2)(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    check_equal_to_aten(MaxPool2d(3, 2), x)


def test_whole_network_compile_uses_atens_pool(compiled):
    pool = MaxPool2d(3, 2)
    x = torch.randn(2, 4, 11, 11)
    exported = torch.export.export(pool, (x,))
    targets = {n.target for n in exported.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.max_pool2d.default in targets
    assert torch.equal(exported.module()(x), F.max_pool2d(x, 3, 2))
