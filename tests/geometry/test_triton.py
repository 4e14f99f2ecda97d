"""The Triton reduction backend against the dense (tensorized) reference and the compiled CPU block kernels.

Without CUDA the kernels run in Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``, set here
before Triton is first imported; the interpreter's tiles are 16 x 32 so that the small problems below
cross tile edges and several column tiles). With CUDA the same tests run compiled on the GPU, and the
``gpu``-marked tests add sizes that only a GPU does in reasonable time.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read by @triton.jit when the kernels are defined

pytest.importorskip("triton", reason="the triton backend needs Triton (pip install triton)")

from otpipe.geometry.backends import _triton_programs as tk  # noqa: E402
from otpipe.geometry.backends import cpu, tensorized  # noqa: E402
from otpipe.geometry.backends import triton as tb  # noqa: E402
from otpipe.geometry.costs import Cost  # noqa: E402

if not tk.INTERPRETED and not torch.cuda.is_available():
    pytest.skip("Triton kernels were defined without TRITON_INTERPRET=1 and there is no CUDA device",
                allow_module_level=True)

DEV = "cpu" if tk.INTERPRETED else "cuda"
PAD = -1e30


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    """The interpreter evaluates masked-out lanes too (log 0, inf * 0 in numpy): silence those warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton")
        warnings.filterwarnings("ignore", message=".*encountered in.*", category=RuntimeWarning)
        yield


def _problem(dt, B=2, N=23, M=45, D=3, seed=0, pad=True, dev=DEV):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    y = torch.randn(B, M, D, generator=g, dtype=torch.float64) * 0.7 + 0.3
    h = torch.randn(B, M, generator=g, dtype=torch.float64)
    if pad and B > 1:
        h[1, M // 2:] = PAD  # second measure padded to half its length
    return x.to(dt).to(dev), y.to(dt).to(dev), h.to(dt).to(dev)


def _rel(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _check(got, ref64, ref32=None, dt=torch.float64):
    """float64: agree to 1e-11; float32: within 8x the error of the dense float32 computation (+2e-6)."""
    if dt == torch.float64:
        assert _rel(got, ref64) < 1e-11, _rel(got, ref64)
    else:
        err, err_dense = _rel(got, ref64), _rel(ref32, ref64)
        assert err < 8 * err_dense + 2e-6, (err, err_dense)


# (p, halved, D): p = 2 in the sum-of-products form (D = 1, 3) and with tl.dot tiles (float32, D = 20);
# p = 1 (sqrt), p = 1.5, 0.7 and 2.5 through the general exp(p/2 log r^2)
CASES = [(2.0, True, 3), (2.0, False, 20), (2.0, True, 1), (1.0, True, 3), (1.5, False, 1), (0.7, True, 20),
         (2.5, False, 3)]


def _cid(c):
    return f"p{c[0]}-{'halved' if c[1] else 'plain'}-D{c[2]}"


@pytest.mark.parametrize("dt", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=_cid)
def test_reductions_agree_with_tensorized(dt, case):
    p, halved, D = case
    cost = Cost(p, halved)
    x, y, h = _problem(torch.float64, D=D)
    eps = 0.3 ** p
    R = tensorized.operator(x, y, cost)
    R32 = tensorized.operator(x.float(), y.float(), cost)
    A = tb.operator(x.to(dt), y.to(dt), cost)
    hd = h.to(dt)
    v = torch.randn(2, y.shape[1], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(DEV)
    for name, args, args32 in (("softmin", (eps, hd), (eps, h.float())),
                               ("softmax_mean", (eps, hd, v.to(dt)), (eps, h.float(), v.float())),
                               ("softmax_cost", (eps, hd), (eps, h.float()))):
        got = getattr(A, name)(*args)
        assert got.dtype == dt and got.device == x.device
        ref = getattr(R, name)(eps, h, *([v] if name == "softmax_mean" else []))
        _check(got, ref, getattr(R32, name)(*args32), dt)
    f = R.softmin(eps, h)
    _check(A.transpose().softmin(eps, f.to(dt)), R.transpose().softmin(eps, f),
           R32.transpose().softmin(eps, f.float()), dt)
    torch.testing.assert_close(A.dense_cost(), cost.dense(x.to(dt), y.to(dt)))


@pytest.mark.parametrize("dt", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[4], CASES[6]], ids=_cid)
def test_softmin_gradients(dt, case):
    """Gradients w.r.t. rows, columns and offsets with a random upstream gradient, against dense autograd."""
    p, halved, D = case
    cost = Cost(p, halved)
    x, y, h = _problem(torch.float64, D=D)
    eps = 0.3 ** p
    wgt = torch.randn(2, x.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(DEV)
    grads = {}
    for key, mod, t in (("tb", tb, dt), ("ref", tensorized, torch.float64), ("ref32", tensorized, torch.float32)):
        xs, ys, hs = (a.to(t).clone().requires_grad_() for a in (x, y, h))
        out = (mod.operator(xs, ys, cost).softmin(eps, hs) * wgt.to(t)).sum()
        grads[key] = torch.autograd.grad(out, [xs, ys, hs])
    for k in range(3):
        _check(grads["tb"][k], grads["ref"][k], grads["ref32"][k], dt)
    assert torch.all(grads["tb"][2][1, y.shape[1] // 2:] == 0)  # padded columns get exactly 0
    assert torch.all(grads["tb"][1][1, y.shape[1] // 2:] == 0)


def test_gradient_patterns_of_the_solver():
    """Rows only (the envelope step: fused into the forward pass), columns only, and a self operator."""
    x, y, h = _problem(torch.float64, N=37, M=70)
    cost = Cost(2.0)
    for which in ("x", "y", "self"):
        res = []
        for mod in (tb, tensorized):
            xs = x.clone().requires_grad_()
            ys = y.clone().requires_grad_()
            if which == "x":
                f, leaf = mod.operator(xs, y, cost).softmin(0.1, h), xs
            elif which == "y":
                f, leaf = mod.operator(x, ys, cost).softmin(0.1, h), ys
            else:
                f, leaf = mod.operator(xs, xs.detach(), cost).softmin(0.1, torch.zeros_like(h[:, :37])), xs
            res.append((f.detach(), torch.autograd.grad((f ** 2).sum(), [leaf])[0]))
        for a, b in zip(*res):
            assert _rel(a, b) < 1e-11


@pytest.mark.parametrize("dt", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_softmin_both_is_two_softmins(dt, monkeypatch):
    monkeypatch.setattr(tb, "_MAX_GRID_Y", 1)  # and batches launched in chunks
    x, y, h = _problem(dt, N=37, M=70, D=20 if dt == torch.float32 else 3)
    hx = torch.randn(2, 37, dtype=dt, generator=torch.Generator().manual_seed(3)).to(DEV)
    hx[0, 30:] = PAD
    for cost in (Cost(2.0), Cost(1.5)):
        A = tb.operator(x, y, cost)
        f, g = A.softmin_both(0.2, h, hx)
        assert f.shape == (2, 37) and g.shape == (2, 70)
        torch.testing.assert_close(f, A.softmin(0.2, h), rtol=0, atol=0)
        torch.testing.assert_close(g, A.transpose().softmin(0.2, hx), rtol=0, atol=0)


@pytest.mark.parametrize("dt", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_solver_fuses_the_averaged_updates(dt, monkeypatch):
    """The cross problem's init, averaged steps and (gradient-free) extrapolation go through softmin_both; the
    values, potentials and gradients equal those of the two-softmin path."""
    import otpipe

    g = torch.Generator().manual_seed(11)
    D = 20 if dt == torch.float32 else 2  # float32 D = 20: tl.dot tiles
    x = torch.rand(30, D, generator=g, dtype=torch.float64).to(dt).to(DEV)
    y = (torch.rand(41, D, generator=g, dtype=torch.float64) * 0.8 + 0.2).to(dt).to(DEV)
    calls = []
    fused = tb.TritonOperator.softmin_both

    def counted(self, *args):
        calls.append(1)
        return fused(self, *args)

    def run():
        r = otpipe.solve(x, y, blur=0.3, scaling=0.5, backend="triton")
        xs = x.clone().requires_grad_()
        s = otpipe.sinkhorn_divergence(xs, y, blur=0.3, scaling=0.5, backend="triton")
        return r.value, r.f, r.g, s.detach(), torch.autograd.grad(s, [xs])[0]

    monkeypatch.setattr(tb.TritonOperator, "softmin_both", counted)
    one = run()
    n_sched = len(otpipe.solvers.sinkhorn.epsilon_schedule(2.0, float((torch.cat([x, y]).max(0).values
                                                               - torch.cat([x, y]).min(0).values).norm()), 0.3, 0.5))
    # solve: init + one step per temperature + the extrapolation; the divergence: the same but its
    # extrapolation, whose x-operator requires grad (two softmins)
    assert len(calls) == (n_sched + 2) + (n_sched + 1)
    monkeypatch.delattr(tb.TritonOperator, "softmin_both")
    two = run()
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "energy"])
def test_kernel_apply_and_gradients(kernel):
    x, y, _ = _problem(torch.float64, D=3)
    y[0, :5] = x[0, :5]  # r = 0 pairs: the gradient of r is taken as 0 there (as in torch.cdist)
    v = torch.randn(2, y.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(4)).to(DEV)
    w = torch.randn(2, x.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(5)).to(DEV)
    res = {}
    for key, mod, dt in (("tb", tb, torch.float64), ("ref", tensorized, torch.float64), ("tb32", tb, torch.float32)):
        xs, ys, vs = (t.to(dt).clone().requires_grad_() for t in (x, y, v))
        out = mod.operator(xs, ys, Cost()).kernel_apply(kernel, 0.7, vs)
        res[key] = (out.detach(), *torch.autograd.grad((out * w.to(dt)).sum(), [xs, ys, vs]))
    for a, b, c in zip(res["tb"], res["ref"], res["tb32"]):
        assert _rel(a, b) < 1e-12
        assert _rel(c, b) < 1e-5
    # a self operator (MMD's k(x, x) terms): both gradient paths add up on one leaf
    grads = []
    for mod in (tb, tensorized):
        xs = x.clone().requires_grad_()
        out = mod.operator(xs, xs, Cost()).kernel_apply(kernel, 0.7, torch.ones_like(x[..., 0]))
        grads.append(torch.autograd.grad((out * w).sum(), [xs])[0])
    assert _rel(grads[0], grads[1]) < 1e-12
    with torch.no_grad():
        torch.testing.assert_close(tb.operator(x, y, Cost()).kernel_apply(kernel, 0.7, v), res["ref"][0])


def test_tf32_switch(monkeypatch):
    x, y, h = _problem(torch.float32, D=20)
    ref = tensorized.operator(x.double(), y.double(), Cost()).softmin(0.5, h.double())
    assert tb.operator(x, y, Cost()).tf32 is False  # off by default
    monkeypatch.setenv("OTPIPE_TF32", "1")
    assert tb.operator(x, y, Cost()).tf32 is True
    monkeypatch.delenv("OTPIPE_TF32")
    monkeypatch.setattr(tb, "ALLOW_TF32", True)
    assert tb.operator(x, y, Cost()).tf32 is True
    assert tb.operator(x, y, Cost(), tf32=False).tf32 is False
    off = tb.operator(x, y, Cost(), tf32=False).softmin(0.5, h)
    on = tb.operator(x, y, Cost(), tf32=True)
    assert on.transpose().tf32 is True
    on = on.softmin(0.5, h)
    assert _rel(off, ref) < 1e-6
    # TF32 (on a GPU; the interpreter computes the dot in full precision): absolute error ~1e-3 scale R^2
    scale_r2 = 0.5 * float(torch.cat([x, y], 1).pow(2).sum(-1).max())
    assert float((on.double() - ref).abs().max()) < 2e-3 * scale_r2


def _blocks_problem(dt, seed=0, empty_row=True):
    """Cluster-sorted points with a random block mask (some row clusters may visit nothing)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.tensor([0, 5, 23, 24, 41, 60])   # clusters of 5, 18, 1, 17, 19 rows (tiles of 16 straddle them)
    cols = torch.tensor([0, 20, 21, 40, 47, 75])
    mask = torch.rand(5, 5, generator=g) < 0.5
    mask[:, 0] = True  # some full rows, and:
    if empty_row:
        mask[2] = False  # a row cluster that sees no column
    mask[3, 1:] = True
    x = torch.rand(1, 60, 3, generator=g, dtype=torch.float64)
    y = torch.rand(1, 75, 3, generator=g, dtype=torch.float64)
    h = torch.randn(1, 75, generator=g, dtype=torch.float64)
    return x.to(dt), y.to(dt), h.to(dt), cpu.Blocks(rows, cols, mask)


@pytest.mark.parametrize("dt", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_block_sparse_matches_cpu_blocks(dt):
    if not cpu.available():
        pytest.skip(f"cpu backend unavailable: {cpu.build_error()}")
    x, y, h, bl = _blocks_problem(dt)
    tol = 2e-5 if dt == torch.float32 else 1e-12
    cost, eps = Cost(2.0), 0.05
    C = cpu.CpuOperator(x, y, cost, bl)
    A = tb.operator(x.to(DEV), y.to(DEV), cost, blocks=bl)
    hD = h.to(DEV)
    keep = torch.ones(60, dtype=torch.bool)
    keep[23] = False  # the row cluster without columns: f = +inf (both backends), sums 0 here
    f = A.softmin(eps, hD).cpu()
    assert torch.isinf(f[0, 23]) and f[0, 23] > 0
    assert _rel(f[:, keep], C.softmin(eps, h)[:, keep]) < tol
    v = torch.randn(1, 75, 2, dtype=dt)
    assert _rel(A.softmax_mean(eps, hD, v.to(DEV)).cpu()[:, keep], C.softmax_mean(eps, h, v)[:, keep]) < tol
    assert _rel(A.softmax_cost(eps, hD).cpu()[:, keep], C.softmax_cost(eps, h)[:, keep]) < tol
    # transposed pattern, softmin_both
    fx = torch.randn(1, 60, dtype=dt)
    fa, ga = A.softmin_both(eps, hD, fx.to(DEV))
    assert _rel(fa.cpu()[:, keep], C.softmin(eps, h)[:, keep]) < tol
    assert _rel(ga.cpu(), C.transpose().softmin(eps, fx)) < tol
    # gradients (rows of the empty cluster: 0 here, NaN in the cpu kernel; compared elsewhere)
    w = torch.randn(1, 60, dtype=dt)
    w[0, 23] = 0.0
    grads = []
    for op, dev in ((tb.TritonOperator, DEV), (cpu.CpuOperator, "cpu")):
        leaves = [t.to(dev).clone().requires_grad_() for t in (x, y, h)]
        out = op(leaves[0], leaves[1], Cost(1.5), bl).softmin(0.1, leaves[2])
        fin = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
        grads.append([g.cpu() for g in torch.autograd.grad((fin * w.to(dev)).sum(), leaves)])
    assert torch.all(grads[0][0][0, 23] == 0)
    for a, b in zip(*grads):
        assert _rel(a[:, keep] if a.shape[1] == 60 else a, b[:, keep] if b.shape[1] == 60 else b) < 10 * tol


def test_block_sparse_kernel_apply_and_validation():
    x, y, h, bl = _blocks_problem(torch.float64, seed=1, empty_row=False)
    A = tb.operator(x.to(DEV), y.to(DEV), Cost(), blocks=bl)
    v = torch.randn(1, 75, dtype=torch.float64)
    M = torch.zeros(60, 75, dtype=torch.bool)
    for i in range(5):
        for j in range(5):
            M[bl.rows[i]:bl.rows[i + 1], bl.cols[j]:bl.cols[j + 1]] = bl.mask[i, j]
    K = torch.exp(-Cost(2.0, True).dense(x, y)[0] / 0.5 ** 2) * M
    torch.testing.assert_close(A.kernel_apply("gaussian", 0.5, v.to(DEV)).cpu()[0], K @ v[0], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="B = 1"):
        tb.operator(x.expand(2, -1, -1).to(DEV), y.expand(2, -1, -1).to(DEV), Cost(), blocks=bl)
    with pytest.raises(ValueError, match="block pattern"):
        tb.operator(x[:, :50].to(DEV), y.to(DEV), Cost(), blocks=bl)


def test_padding_and_edge_cases():
    cost = Cost(2.0)
    x, y, h = _problem(torch.float64, B=1, N=20, M=30, pad=False)
    hp = torch.cat([h, torch.full((1, 40), PAD, dtype=h.dtype, device=DEV)], dim=1)
    yp = torch.cat([y, torch.randn(1, 40, 3, dtype=y.dtype).to(DEV) * 100], dim=1)
    full, cut = tb.operator(x, yp, cost), tb.operator(x, y, cost)
    assert _rel(full.softmin(0.05, hp), cut.softmin(0.05, h)) < 1e-13
    v = torch.randn(1, 70, 2, dtype=y.dtype).to(DEV)
    assert _rel(full.softmax_mean(0.05, hp, v), cut.softmax_mean(0.05, h, v[:, :30])) < 1e-12
    # N = 1, M = 1
    x1, y1, h1 = _problem(torch.float32, B=2, N=1, M=1, pad=False)
    torch.testing.assert_close(tb.operator(x1, y1, cost).softmin(0.1, h1),
                               tensorized.operator(x1, y1, cost).softmin(0.1, h1))
    # duplicate points (r = 0 exactly): values and finite gradients for p = 1, 0.7 (singular / zero there)
    x, _, _ = _problem(torch.float64, B=1, N=20, M=1, pad=False)
    y = torch.cat([x, x[:, :7]], dim=1)
    h = torch.zeros(1, 27, dtype=torch.float64, device=DEV)
    for c in (Cost(1.0), Cost(0.7), Cost(2.0)):
        res = []
        for mod in (tb, tensorized):
            xs = x.clone().requires_grad_()
            f = mod.operator(xs, y, c).softmin(0.05, h)
            res.append((f.detach(), torch.autograd.grad(f.sum(), [xs])[0]))
        assert torch.isfinite(res[0][1]).all()
        assert _rel(res[0][0], res[1][0]) < 1e-12 and _rel(res[0][1], res[1][1]) < 1e-10
    # the dominant column in the last tile: running sums rescaled, nothing overflows (float32)
    x, y, _ = _problem(torch.float32, B=1, N=9, M=100, pad=False)
    h = torch.linspace(-50, 400, 100, dtype=torch.float32, device=DEV)[None]
    ref = tensorized.operator(x.double(), y.double(), cost).softmin(0.5, h.double())
    assert _rel(tb.operator(x, y, cost).softmin(0.5, h), ref) < 1e-6
    # far from the origin: centring keeps the float32 dot-product form accurate
    x, y, h = _problem(torch.float64, B=1, N=20, M=40, D=20, pad=False)
    x, y = x + 1e3, y + 1e3
    ref = tensorized.operator(x, y, cost).softmin(0.5, h)
    assert _rel(tb.operator(x.float(), y.float(), cost).softmin(0.5, h.float()), ref) < 1e-5


def test_bad_inputs(monkeypatch):
    x = torch.randn(1, 5, 3, device=DEV)
    with pytest.raises(ValueError, match="float32 or float64"):
        tb.operator(x.half(), x.half(), Cost())
    with pytest.raises(ValueError, match="float32 or float64"):
        tb.operator(x, x.double(), Cost())
    with pytest.raises(ValueError, match="expected x"):
        tb.operator(x, torch.randn(1, 5, 2, device=DEV), Cost())
    with pytest.raises(ValueError, match="expected x"):
        tb.operator(x[0], x[0], Cost())
    with pytest.raises(ValueError, match="on meta"):
        tb.operator(x, torch.empty(1, 5, 3, device="meta"), Cost())
    op = tb.operator(x, torch.randn(1, 6, 3, device=DEV), Cost())
    with pytest.raises(ValueError, match="h must have shape"):
        op.softmin(0.1, torch.zeros(1, 5, device=DEV))
    with pytest.raises(ValueError, match="unknown kernel"):
        op.kernel_apply("cauchy", 1.0, torch.zeros(1, 6, device=DEV))
    with pytest.raises(ValueError, match="v must have shape"):
        op.softmax_mean(0.1, torch.zeros(1, 6, device=DEV), torch.zeros(1, 5, 2, device=DEV))
    monkeypatch.setattr(tk, "INTERPRETED", False)
    with pytest.raises(ValueError, match="backend='cpu'") as err:
        tb.operator(torch.randn(1, 5, 3), torch.randn(1, 5, 3), Cost())
    assert "\n" not in str(err.value)


def test_sinkhorn_divergence_end_to_end():
    import otpipe

    g = torch.Generator().manual_seed(7)
    x = torch.rand(20, 2, generator=g, dtype=torch.float64).to(DEV)
    y = (torch.rand(25, 2, generator=g, dtype=torch.float64) * 0.8 + 0.3).to(DEV)
    res = []
    for backend in ("triton", "tensorized"):
        xs = x.clone().requires_grad_()
        s = otpipe.sinkhorn_divergence(xs, y, blur=0.3, scaling=0.5, backend=backend)
        res.append((s.detach(), torch.autograd.grad(s, [xs])[0]))
    assert abs(float(res[0][0] - res[1][0])) < 1e-10 * abs(float(res[1][0])) + 1e-14
    assert _rel(res[0][1], res[1][1]) < 1e-10


def test_kernel_losses_end_to_end():
    """Energy distance and MMD with weights, value and gradient w.r.t. points and weights."""
    import otpipe

    g = torch.Generator().manual_seed(8)
    x = torch.rand(30, 3, generator=g, dtype=torch.float64).to(DEV)
    y = torch.rand(41, 3, generator=g, dtype=torch.float64).to(DEV)
    b = torch.rand(41, generator=g, dtype=torch.float64).to(DEV)
    for loss in (lambda *a, backend: otpipe.energy_distance(*a, backend=backend),
                 lambda *a, backend: otpipe.mmd(*a, sigma=0.3, backend=backend)):
        res = []
        for backend in ("triton", "tensorized"):
            xs, bs = x.clone().requires_grad_(), (b / b.sum()).clone().requires_grad_()
            val = loss(xs, y, None, bs, backend=backend)
            res.append((val.detach(), *torch.autograd.grad(val, [xs, bs])))
        for a_, b_ in zip(*res):
            assert _rel(a_, b_) < 1e-11


def test_pipeline_tasks_on_the_gpu_path(tmp_path):
    """The tasks of a GPU worker (measures moved to the device once, large gathered batches, auto -> triton on
    CUDA; here the interpreter on CPU tensors, backend named) equal the CPU tasks (tensorized), through a real
    Zarr store."""
    import numpy as np

    from otpipe import store
    from otpipe.pipelines import tasks

    rng = np.random.default_rng(5)
    meas = [(rng.random((int(n), 2)) + 0.2 * k, rng.random(int(n)) + 0.1) for k, n in enumerate((9, 17, 12, 5))]
    path = str(tmp_path / "c.zarr")
    store.create(path, meas, dtype="float64")
    res = {}
    for backend, gpu in (("triton", True), ("tensorized", False)):
        for loss in ("sinkhorn", "energy"):
            prm = tasks.RunParams(loss=loss, backend=backend, blur=0.2, diameter=2.0 if loss == "sinkhorn" else None,
                                  dtype="float64", gpu=gpu, device=DEV)
            s = tasks.self_task(path, range(4), prm)["value"] if loss == "sinkhorn" else None
            out = tasks.cross_task(path, range(4), path, range(4), prm, diagonal=True, self_rows=s, self_cols=s)
            res[backend, loss] = (out["divergence"], *(() if s is None else (s,)))
    for loss in ("sinkhorn", "energy"):
        for a, b in zip(res["triton", loss], res["tensorized", loss]):
            assert np.abs(a - b).max() <= 1e-10 * np.abs(b).max()


def test_multiscale_on_triton_blocks(monkeypatch):
    """The multiscale solver with the Triton block-sparse kernels and its geometry on the points' device (what
    CUDA tensors use; here the interpreter on CPU tensors) equals the one on the compiled cpu kernels with the
    host geometry: S_eps and its gradients w.r.t. both clouds (self problems included)."""
    import otpipe
    from otpipe.geometry import blocks as ms
    from otpipe.geometry import blocks_device as msd

    if not cpu.available():
        pytest.skip("the reference needs the compiled cpu kernels")
    g = torch.Generator().manual_seed(12)
    x = torch.rand(80, 2, generator=g, dtype=torch.float64).to(DEV)
    y = (0.8 * torch.rand(90, 2, generator=g, dtype=torch.float64) + 0.3).to(DEV)
    made = []
    res = {}
    for fine in ("triton", "cpu"):
        if fine == "cpu" and DEV != "cpu":
            x, y = x.cpu(), y.cpu()
        monkeypatch.setattr(ms, "FINE_BACKEND", fine)
        if fine == "triton":
            monkeypatch.setattr(msd, "DeviceBlocks", _counting(msd.DeviceBlocks, made))
            monkeypatch.setattr(cpu, "CpuOperator", None)  # nothing of the cpu path may run
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        s = otpipe.sinkhorn_divergence(xs, ys, blur=0.05, backend="multiscale", cluster_scale=0.25)
        res[fine] = (s.detach().cpu(), *(t.cpu() for t in torch.autograd.grad(s, [xs, ys])))
        monkeypatch.undo()
    assert len(made) >= 6  # three problems, two fine temperatures at least
    for a, b in zip(res["triton"], res["cpu"]):
        assert _rel(a, b) < 1e-11


def _counting(cls, made):
    def make(*args, **kw):
        made.append(1)
        return cls(*args, **kw)
    return make


def test_missing_triton_says_how_to_install(monkeypatch):
    import importlib

    monkeypatch.setitem(sys.modules, "triton", None)  # "import triton" raises ImportError
    monkeypatch.delitem(sys.modules, "otpipe.geometry.backends.triton")
    with pytest.raises(ImportError, match="pip install triton"):
        importlib.import_module("otpipe.geometry.backends.triton")


def test_no_triton_on_default_import_paths():
    code = ("import sys, otpipe, otpipe.geometry.backends, otpipe.solvers.sinkhorn, otpipe.tools.losses, otpipe.geometry.backends.cpu; "
            "from otpipe.geometry.backends import choose_backend; choose_backend('auto', 1, 10, 10); "
            "print('triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# ------------------------------------------------------------------------------------------ GPU only
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
#: device and sizes of the GPU tests (module constants, so that their code can be dry-run small on the CPU)
GPU_DEV, GPU_N, GPU_M, SMOKE_N, SMOKE_ROWS = "cuda", 2000, 1500, 20000, 300

# (dtype, p, halved, D): the benchmark's float32 paths (entry-wise D = 3, dot tiles D = 64), a p != 2 cost with a
# loop over coordinates, and float64 (each variant is compiled once, ~1-2 s: the list stays short)
GPU_CASES = [(torch.float32, 2.0, True, 3), (torch.float32, 2.0, True, 64), (torch.float32, 1.5, False, 20),
             (torch.float64, 2.0, True, 3)]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: f"{str(c[0])[6:]}-p{c[1]}-D{c[3]}")
def test_gpu_agrees_with_tensorized(case):
    """N = 2000, M = 1500, B = 2 with padding: values, gradients, means, costs and softmin_both."""
    dt, p, halved, D = case
    cost = Cost(p, halved)
    x, y, h = _problem(torch.float64, B=2, N=GPU_N, M=GPU_M, D=D, dev=GPU_DEV)
    eps = 0.3 ** p
    wgt = torch.randn(2, GPU_N, dtype=torch.float64, generator=torch.Generator().manual_seed(6)).to(GPU_DEV)
    got, ref, ref32 = {}, {}, {}
    for store, mod, t in ((got, tb, dt), (ref, tensorized, torch.float64), (ref32, tensorized, torch.float32)):
        xs, ys, hs = (a.to(t).clone().requires_grad_() for a in (x, y, h))
        op = mod.operator(xs, ys, cost)
        f = op.softmin(eps, hs)
        store["f"] = f.detach()
        store["gx"], store["gy"], store["gh"] = torch.autograd.grad((f * wgt.to(t)).sum(), [xs, ys, hs])
        with torch.no_grad():
            store["mean"] = op.softmax_mean(eps, hs, ys)
            store["cost"] = op.softmax_cost(eps, hs)
    for key in got:
        _check(got[key], ref[key], ref32[key], dt)
    for kernel in ("gaussian", "energy"):
        res = []
        for mod, t in ((tb, dt), (tensorized, torch.float64), (tensorized, torch.float32)):
            xs, ys = x.to(t).clone().requires_grad_(), y.to(t).clone().requires_grad_()
            out = mod.operator(xs, ys, cost).kernel_apply(kernel, 2.0, torch.exp(h.to(t).clamp(min=-50)))
            res.append((out.detach(), *torch.autograd.grad((out * wgt.to(t)).sum(), [xs, ys])))
        for a, b, c in zip(*res):
            _check(a, b, c, dt)
    hx = torch.zeros(2, GPU_N, dtype=dt, device=GPU_DEV)
    f, g = tb.operator(x.to(dt), y.to(dt), cost).softmin_both(eps, h.to(dt), hx)
    _check(f, ref["f"], ref32["f"], dt)
    R = tensorized.operator(x, y, cost).transpose()
    _check(g, R.softmin(eps, hx.double()), R.softmin(eps, hx.double()).float(), dt)


@pytest.mark.gpu
@gpu
def test_gpu_block_sparse_and_tf32():
    """The block-sparse checks with the GPU's tile sizes (several tiles per cluster), then TF32 on and off."""
    for dt in (torch.float32, torch.float64):
        test_block_sparse_matches_cpu_blocks(dt)
    test_block_sparse_kernel_apply_and_validation()
    x, y, h = _problem(torch.float32, B=1, N=GPU_N, M=GPU_N, D=64, dev=GPU_DEV)
    x, y = torch.rand_like(x), torch.rand_like(y)
    ref = tensorized.operator(x.double(), y.double(), Cost()).softmin(0.25, h.double())
    on = tb.operator(x, y, Cost(), tf32=True).softmin(0.25, h)
    off = tb.operator(x, y, Cost(), tf32=False).softmin(0.25, h)
    assert _rel(off, ref) < 1e-5
    assert float((on.double() - ref).abs().max()) < 1e-3 * 0.5 * 64 / 4  # ~1e-3 scale R^2, R^2 ~ D / 4


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("D", [3, 64])
def test_gpu_smoke_20k(D):
    """20k x 20k, float32: value and gradient finite, the first rows checked against a dense float64 slice."""
    g = torch.Generator(device=GPU_DEV).manual_seed(0)
    x = torch.rand(1, SMOKE_N, D, device=GPU_DEV, generator=g)
    y = torch.rand(1, SMOKE_N, D, device=GPU_DEV, generator=g)
    h = torch.full((1, SMOKE_N), -math.log(SMOKE_N), device=GPU_DEV)
    eps = 0.05 ** 2 if D == 3 else 0.25
    xs = x.clone().requires_grad_()
    f = tb.operator(xs, y, Cost()).softmin(eps, h)
    (gx,) = torch.autograd.grad(f.sum(), [xs])
    assert torch.isfinite(f).all() and torch.isfinite(gx).all()
    xr = x[:, :SMOKE_ROWS].double().clone().requires_grad_()
    fr = tensorized.operator(xr, y.double(), Cost()).softmin(eps, h.double())
    (gr,) = torch.autograd.grad(fr.sum(), [xr])
    assert _rel(f[:, :SMOKE_ROWS], fr) < 1e-5
    assert _rel(gx[:, :SMOKE_ROWS], gr) < 1e-4
