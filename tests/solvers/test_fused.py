"""The fused loop (otpipe.solvers.fused): the whole Sinkhorn loop of small problems in one compiled call.

It must give the numbers of the general path (the operator-based loop on the compiled ``cpu`` kernels): the fixed
schedule equal to the batched general solve to float rounding, padded batches included; the converging mode equal
to the general solve of each problem alone (the batched general loop keeps updating every element until the whole
batch meets ``tol``); symmetric problems, unbalanced ones, both cost conventions, float32 and float64, gradients.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton program runs in the interpreter on CPU tensors

import otpipe
from otpipe.geometry.backends import cpu
from otpipe.solvers import fused
from otpipe.solvers.sinkhorn import solve, solve_symmetric

pytestmark = pytest.mark.skipif(not cpu.available(), reason="the compiled CPU kernels did not build")

#: float rounding of the two paths' arithmetic (same operations, different summation order and log)
RTOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def _batch(dtype, B=6, N=23, M=31, D=3, seed=0):
    """Padded batch: trailing zero weights of different lengths, an interior zero weight."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, N, D, generator=g, dtype=torch.float64)
    y = torch.rand(B, M, D, generator=g, dtype=torch.float64) + 0.3
    a = torch.rand(B, N, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(B, M, generator=g, dtype=torch.float64) + 0.1
    a[:, 17:] = 0
    b[0, 20:] = 0
    b[B - 1, 1:] = 0  # a one-point measure
    a[1, 5] = 0
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    return x.to(dtype), y.to(dtype), a.to(dtype), b.to(dtype)


def _close(u, v, dtype, scale=1.0):
    err = float((u.double() - v.double()).abs().max())
    assert err <= RTOL[dtype] * max(scale, float(v.double().abs().max())), err


COSTS = [(2.0, None), (1.0, None), (1.5, None), (1.3, None), (2.0, "|x-y|^p")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("p,cost", COSTS)
def test_fixed_schedule_equals_the_general_path(dtype, p, cost):
    x, y, a, b = _batch(dtype)
    kw = dict(p=p, cost=cost, blur=0.05)
    r0 = solve(x, y, a, b, backend="cpu", **kw)
    r1 = solve(x, y, a, b, backend="fused", **kw)
    assert r1.backend == "fused" and r1.schedule == r0.schedule
    _close(r1.value, r0.value, dtype)
    # every potential, padding points included (their values follow from the final update)
    _close(r1.f, r0.f, dtype)
    _close(r1.g, r0.g, dtype)
    assert torch.equal(r1.n_iter, r0.n_iter)
    # the marginal error exp((f - f') / eps) - 1 magnifies the potentials' rounding by max|f| / eps
    amp = float(r0.f.abs().max()) / r0.eps
    assert float((r1.marginal_error - r0.marginal_error).abs().max()) <= RTOL[dtype] * amp
    s0 = solve_symmetric(x, a, backend="cpu", **kw)
    s1 = solve_symmetric(x, a, backend="fused", **kw)
    _close(s1.value, s0.value, dtype)
    _close(s1.f, s0.f, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("p,cost", [(2.0, None), (1.0, None), (1.3, None)])
def test_converging_mode_equals_the_general_path_problem_by_problem(dtype, p, cost):
    x, y, a, b = _batch(dtype, B=4)
    kw = dict(p=p, cost=cost, blur=0.05, tol=1e-4, diameter=2.0)  # one schedule for the batch and each problem
    r1 = solve(x, y, a, b, backend="fused", **kw)
    alone = [solve(x[i], y[i], a[i], b[i], backend="cpu", **kw) for i in range(len(x))]
    v_alone, n_alone = torch.stack([r.value for r in alone]), torch.stack([r.n_iter for r in alone])
    if dtype == torch.float64:
        assert torch.equal(r1.converged, torch.stack([r.converged for r in alone]))
        _close(r1.value, v_alone, dtype)
        assert torch.equal(r1.n_iter, n_alone)
        _close(r1.f, torch.stack([r.f for r in alone]), dtype)
    else:
        # float32: an error within rounding of tol may stop a few updates earlier or later; both are then within
        # the tolerance's reach of the optimum (marginal error tol moves the dual value by ~tol * max|f|)
        reach = 5 * kw["tol"] * float(r1.f.abs().max())
        assert float((r1.value - v_alone).abs().max()) <= reach
        assert bool(((r1.n_iter - n_alone).abs() <= 0.05 * n_alone + 2).all())
    s1 = solve_symmetric(x, a, backend="fused", **kw)
    s_alone = [solve_symmetric(x[i], a[i], backend="cpu", **kw) for i in range(len(x))]
    _close(s1.value, torch.stack([r.value for r in s_alone]), dtype)


@pytest.mark.parametrize("tol", [None, 1e-5])
def test_unbalanced_equals_the_general_path(tol):
    x, y, a, b = _batch(torch.float64, B=3)
    a, b = a * 1.5, b * 0.7  # unequal masses
    kw = dict(blur=0.1, reach=0.5, tol=tol, diameter=2.0)
    r1 = solve(x, y, a, b, backend="fused", **kw)
    if tol is None:
        r0 = solve(x, y, a, b, backend="cpu", **kw)
        _close(r1.value, r0.value, torch.float64)
    else:
        alone = torch.stack([solve(x[i], y[i], a[i], b[i], backend="cpu", **kw).value for i in range(3)])
        _close(r1.value, alone, torch.float64)
    d0 = otpipe.sinkhorn_divergence(x, y, a, b, backend="cpu", **dict(kw, tol=None))
    d1 = otpipe.sinkhorn_divergence(x, y, a, b, backend="fused", **dict(kw, tol=None))
    _close(d1, d0, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_equal_the_general_path(dtype):
    x, y, a, b = _batch(dtype, B=3)
    grads = []
    for backend in ("cpu", "fused"):
        xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        v = otpipe.sinkhorn_divergence(xg, yg, a, b, blur=0.1, backend=backend)
        v.sum().backward()
        grads.append((v.detach(), xg.grad, yg.grad))
    for u, w in zip(grads[1], grads[0]):
        _close(u, w, dtype)
    assert float(grads[1][1].abs().max()) > 0


def test_auto_picks_the_fused_loop_for_small_cpu_problems_only():
    x, y, a, b = _batch(torch.float64)
    assert solve(x, y, a, b).backend == "fused"
    assert otpipe.sinkhorn_divergence(x, y, a, b, full_output=True).backend == "fused"
    assert solve(x[0], y[0], a[0], b[0], tol=1e-3).backend == "fused"
    # above the size limit, the general path
    n = int(fused.max_entries(2) ** 0.5) + 1
    big = torch.rand(1, n, 2, dtype=torch.float64)
    assert solve(big, big + 0.1).backend != "fused"
    assert solve(big[:, :, :1].expand(1, n, 5).contiguous(), big[:, :, :1].expand(1, n, 5) + 0.1).backend == "fused"
    # with tol, problems that the general path mixes (Anderson) keep the general path; a warm start too
    from otpipe.solvers.loop import ANDERSON_MIN_POINTS

    m = torch.rand(ANDERSON_MIN_POINTS, 2, dtype=torch.float64)
    assert solve(m, m + 0.1, tol=1e-3).backend != "fused"
    assert solve(m, m + 0.1).backend == "fused"
    r = solve(x[0], y[0], a[0], b[0], tol=1e-3)
    assert solve(x[0], y[0], a[0], b[0], tol=1e-3, init=(r.f, r.g)).backend != "fused"


def test_asking_for_the_fused_loop_where_it_cannot_run_is_a_clear_error():
    from otpipe.solvers.loop import ANDERSON_MIN_POINTS

    m = torch.rand(ANDERSON_MIN_POINTS, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend 'fused' cannot solve these problems: with tol="):
        solve(m, m + 0.1, tol=1e-3, backend="fused")
    r = solve(m[:10], m[:10] + 0.1, tol=1e-3)
    with pytest.raises(ValueError, match="warm start"):
        solve(m[:10], m[:10] + 0.1, tol=1e-3, init=(r.f, r.g), backend="fused")


def test_threads_do_not_change_the_numbers():
    x, y, a, b = _batch(torch.float64, B=9)
    from otpipe.geometry.costs import make_cost
    from otpipe.problems.measures import log_weights

    la, lb = log_weights(a), log_weights(b)
    sched, damps = [4.0, 1.0, 0.25, 0.05], [1.0] * 4
    one = cpu.fused_loop(x, y, a, b, la, lb, make_cost(2.0, None), sched, damps, threads=1)
    two = cpu.fused_loop(x, y, a, b, la, lb, make_cost(2.0, None), sched, damps, threads=2)
    for u, v in zip(one, two):
        assert torch.equal(u, v)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("p", [2.0, 1.0, 1.5, 1.3])
def test_triton_program_equals_the_cpu_kernel(dtype, p):
    """One Triton program per problem (run by Triton's interpreter on CPU tensors here; on the GPU by
    benchmarks/gpu_check.sh): the same potentials as the compiled CPU loop, padding included."""
    pytest.importorskip("triton", reason="the Triton fused loop needs Triton (pip install triton)")
    from otpipe.geometry.backends import _triton_programs
    from otpipe.geometry.backends import triton as tb
    from otpipe.geometry.costs import make_cost
    from otpipe.problems.measures import log_weights

    if not _triton_programs.INTERPRETED and not torch.cuda.is_available():
        pytest.skip("Triton kernels were defined without TRITON_INTERPRET=1 and there is no CUDA device")
    x, y, a, b = _batch(dtype, B=3, N=23, M=31)
    dev = "cuda" if not _triton_programs.INTERPRETED else "cpu"
    la, lb = log_weights(a), log_weights(b)
    cost = make_cost(p, None)
    sched, damps = [4.0**p, 1.0, 0.25**p, 0.05**p], [1.0, 1.0, 1.0, 1.0]
    ref = cpu.fused_loop(x, y, a, b, la, lb, cost, sched, damps)
    got = tb.fused_loop(*(t.to(dev) for t in (x, y, a, b, la, lb)), cost, sched, damps)
    pos_a, pos_b = a > 0, b > 0
    for u, v, keep in zip(got[:4], ref[:4], (pos_a, pos_b, None, None)):
        u = u.cpu()
        if keep is not None:  # after the loop: the points with weight (padding's values are a convention)
            u, v = u[keep], v[keep]
        _close(u, v, dtype)
    assert torch.equal(got[4].cpu(), ref[4])
    sym = tb.fused_loop(x.to(dev), None, a.to(dev), None, la.to(dev), None, cost, sched, damps)
    _close(sym[2].cpu(), cpu.fused_loop(x, None, a, None, la, None, cost, sched, damps)[2], dtype)
    with pytest.raises(ValueError, match="fixed schedule only"):
        tb.fused_loop(x, y, a, b, la, lb, cost, sched, damps, converging={"tol": 1e-3})


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auto_on_cuda_runs_one_program_per_problem_with_the_cpu_numbers(dtype):
    x, y, a, b = _batch(dtype, B=64)
    r_cpu = otpipe.sinkhorn_divergence(x, y, a, b, blur=0.05, full_output=True)
    r_gpu = otpipe.sinkhorn_divergence(*(t.cuda() for t in (x, y, a, b)), blur=0.05, full_output=True)
    assert r_gpu.backend == "fused" and r_gpu.value.device.type == "cuda"
    _close(r_gpu.value.cpu(), r_cpu.value, dtype)
    xg = x.cuda().requires_grad_(True)
    otpipe.sinkhorn_divergence(xg, y.cuda(), a.cuda(), b.cuda(), blur=0.05).sum().backward()
    xc = x.clone().requires_grad_(True)
    otpipe.sinkhorn_divergence(xc, y, a, b, blur=0.05, backend="cpu").sum().backward()
    _close(xg.grad.cpu(), xc.grad, dtype)
