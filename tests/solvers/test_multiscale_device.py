"""The multiscale geometry on the points' device (clusters, truncation masks, block patterns) against the CPU
code it replaces on CUDA. Run here on CPU tensors (the same torch code as on a GPU); the ``gpu`` tests run it
on CUDA tensors against the CPU results."""
from __future__ import annotations

import pytest
import torch

import otpipe
from otpipe.geometry import blocks as ms
from otpipe.geometry import blocks_device as msd
from otpipe.geometry.backends import choose_backend, cpu
from otpipe.geometry.costs import Cost

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _clouds(N, M, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, D, generator=g, dtype=torch.float64)
    y = 0.8 * torch.rand(M, D, generator=g, dtype=torch.float64) + 0.3
    a = torch.rand(N, generator=g, dtype=torch.float64) + 0.5
    return x, y, a / a.sum()


def _valid(c: ms.Clustering, x: torch.Tensor, a: torch.Tensor) -> None:
    """A clustering: a permutation, contiguous clusters covering every point, correct centroids, radii, boxes."""
    N = x.shape[0]
    assert torch.equal(torch.sort(c.perm).values.cpu(), torch.arange(N))
    assert torch.equal(c.perm[c.inv].cpu(), torch.arange(N))
    b = c.bounds.cpu()
    assert int(b[0]) == 0 and int(b[-1]) == N and bool((b[1:] > b[:-1]).all())
    lab = c.labels.cpu()
    assert torch.equal(lab, torch.repeat_interleave(torch.arange(c.n), b[1:] - b[:-1]))
    xs, ws = x[c.perm.cpu()], a[c.perm.cpu()]
    wsum = torch.zeros(c.n, dtype=torch.float64).index_add_(0, lab, ws)
    cen = torch.zeros(c.n, x.shape[1], dtype=torch.float64).index_add_(0, lab, xs * ws[:, None]) / wsum[:, None]
    assert float((c.centers.cpu() - cen).abs().max()) < 1e-12
    assert float((c.weights.cpu() - wsum).abs().max()) < 1e-15
    assert bool(((xs - cen[lab]).norm(dim=1) <= c.radius.cpu()[lab] + 1e-12).all())
    assert bool((xs >= c.lo.cpu()[lab]).all() and (xs <= c.hi.cpu()[lab]).all())
    assert torch.equal(c.points.cpu(), xs)


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("D", [1, 2, 3])
def test_voxel_clustering_equals_the_cpu_one(dev, D):
    x, _, a = _clouds(2500, 10, D, seed=D)
    ref = ms.cluster(x, a, 0.13)
    got = msd.cluster(x.to(dev), a.to(dev), 0.13)
    assert got.perm.device.type == dev and got.centers.device.type == dev
    for k in ("perm", "inv", "bounds", "labels"):
        assert torch.equal(getattr(got, k).cpu(), getattr(ref, k)), k
    for k in ("centers", "weights", "radius", "lo", "hi", "points"):
        assert float((getattr(got, k).cpu() - getattr(ref, k)).abs().max()) < 1e-12, k
    _valid(got, x, a)


@pytest.mark.parametrize("dev", DEVICES)
def test_kmeans_clustering_is_valid_and_seeded(dev, monkeypatch):
    monkeypatch.setattr(ms, "KMEANS_SAMPLE", 500)
    x, _, a = _clouds(3000, 10, 5, seed=3)
    got = msd.cluster(x.to(dev), a.to(dev), 0.0)
    _valid(got, x, a)
    assert got.n > 10
    again = msd.cluster(x.to(dev), a.to(dev), 0.0)
    assert torch.equal(again.perm, got.perm)  # seeded: the same clusters every time
    ref = ms.cluster(x, a, 0.0)  # the seeds of the CPU code: the same clusters (on a GPU: up to near-ties)
    same = float((got.labels.cpu()[got.inv.cpu()] == ref.labels[ref.inv]).double().mean())
    assert same == 1.0 if dev == "cpu" else (got.n == ref.n and same > 0.99)


def _to_cpu(c: ms.Clustering) -> ms.Clustering:
    return ms.Clustering(*[t.cpu() for t in (c.perm, c.inv, c.bounds, c.labels, c.centers, c.weights, c.radius, c.lo,
                                              c.hi, c.points)])


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("D,p", [(3, 2.0), (2, 1.5), (5, 2.0)])
def test_device_mask_equals_the_torch_reference(dev, D, p, monkeypatch):
    """The mask computed on the device: the pure-torch reference's arithmetic on the same clusters, so the same
    mask (up to bounds within rounding of the threshold), and rigorous (no dropped pair reaches -truncate eps)."""
    monkeypatch.setattr(ms, "KMEANS_SAMPLE", 500)
    x, y, _ = _clouds(700, 600, D, seed=D)
    x[:350, 0] += 2.0  # two far-apart halves: some blocks can be dropped in any dimension
    y[:300, 0] += 2.0
    cost = Cost(p=p)
    dx = msd.cluster(x.to(dev), torch.ones(700, dtype=torch.float64, device=dev), 0.2)
    dy = msd.cluster(y.to(dev), torch.ones(600, dtype=torch.float64, device=dev), 0.2)
    cx, cy = _to_cpu(dx), _to_cpu(dy)
    xs, ys = x[cx.perm], y[cy.perm]
    g = torch.Generator().manual_seed(4)
    f = -(xs @ torch.full((D,), 0.3, dtype=xs.dtype)) + 0.01 * torch.randn(700, generator=g, dtype=xs.dtype)
    gg = ys @ torch.full((D,), 0.3, dtype=xs.dtype) + 0.01 * torch.randn(600, generator=g, dtype=xs.dtype)
    S = f[:, None] + gg[None, :] - cost.dense(xs[None], ys[None])[0]
    f, S = f - S.max(), S - S.max()  # as at an optimum: f_i + g_j <= C_ij, with equality somewhere
    eps, tr = 0.01, 5.0
    ref = ms.block_mask(cx, cy, f, gg, eps, cost, tr, compiled=False)
    got = msd.block_mask(dx, dy, f.to(dev), gg.to(dev), eps, cost, tr, chunk=64)
    assert got.device.type == dev and got.shape == ref.shape
    fit_f, fit_g = ms.affine_fit(f, cx), ms.affine_fit(gg, cy)
    U = ms._upper_bound(cx, cy, slice(0, cx.n), fit_f, fit_g, ms.segment_max(f, cx), ms.segment_max(gg, cy), cost)
    near = (U + tr * eps).abs() < 1e-9
    assert bool(((got.cpu() == ref) | near).all())
    assert 0 < float(got.float().mean()) < 1  # the test must drop something to mean anything
    full = got.cpu()[cx.labels][:, cy.labels]
    assert float(S[~full].max()) < -tr * eps
    # a self problem (one cloud, one potential: fitted once)
    m_self = msd.block_mask(dx, dx, f.to(dev), f.to(dev), eps, cost, tr)
    r_self = ms.block_mask(cx, cx, f, f, eps, cost, tr, compiled=False)
    assert float((m_self.cpu() != r_self).float().mean()) < 1e-3


@pytest.mark.parametrize("dev", DEVICES)
def test_device_blocks_equal_cpu_blocks(dev):
    """Runs of kept column clusters, their offsets, the pair count and the Triton work list."""
    g = torch.Generator().manual_seed(9)
    rows = torch.tensor([0, 5, 6, 40, 41, 77])
    cols = torch.tensor([0, 3, 20, 21, 50, 64, 90])
    for density in (0.0, 0.3, 0.7, 1.0):
        mask = torch.rand(5, 6, generator=g) < density
        mask[0, 0] = True
        ref = cpu.Blocks(rows, cols, mask)
        got = msd.DeviceBlocks(rows.to(dev), cols.to(dev), mask.to(dev))
        for k in ("rows", "cols", "rng", "cptr"):
            assert torch.equal(getattr(got, k).cpu(), getattr(ref, k)), k
        assert got.pairs == ref.pairs and got.nclus == ref.nclus
        T, RT = got.transpose(), ref.transpose()
        assert T.transpose() is got
        for k in ("rng", "cptr"):
            assert torch.equal(getattr(T, k).cpu(), getattr(RT, k)), k
        for bn in (1, 16, 64):
            work = got.triton_arrays(bn, dev)[0].cpu().reshape(-1, 2)
            # every row exactly once, in tiles of at most bn rows inside one cluster
            covered = torch.zeros(77, dtype=torch.int64)
            for r0, c in work.tolist():
                r1 = min(r0 + bn, int(rows[c + 1]))
                assert int(rows[c]) <= r0 < r1
                covered[r0:r1] += 1
            assert bool((covered == 1).all())


# ------------------------------------------------------------------------------------------ GPU only
def _clouds4(N, M, D, seed=0):
    x, y, a = _clouds(N, M, D, seed)
    b = torch.rand(M, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) + 0.5
    return x, y, a, b / b.sum()


def _rel(u, v):
    return float((u - v).abs().max() / v.abs().max().clamp(min=1e-300))


def _rel_pot(u, v):
    return _rel(u - u.mean(), v - v.mean())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_multiscale_matches_full_triton(dtype):
    """CUDA tensors: multiscale (Triton block-sparse kernels, geometry on the device) vs the full Triton solve,
    value, potentials and x-gradient, everything on the device."""
    x, y, a, b = (t.to("cuda", dtype) for t in _clouds4(20000, 20000, 3, seed=6))
    r0 = otpipe.solve(x, y, a, b, blur=0.02, tol=1e-5, backend="triton")
    xg = x.clone().requires_grad_()
    r1 = otpipe.solve(xg, y, a, b, blur=0.02, tol=1e-5, backend="multiscale")
    (gx,) = torch.autograd.grad(r1.value, [xg])
    assert r1.backend == "multiscale" and choose_backend("auto", 1, 20000, 20000, device="cuda") == "triton"
    assert r1.value.device.type == "cuda" and gx.device.type == "cuda"
    assert abs(float(r1.value) - float(r0.value)) <= 1e-4 * abs(float(r0.value))
    assert _rel_pot(r1.f.detach().double().cpu(), r0.f.double().cpu()) < 1e-2
    xg0 = x.clone().requires_grad_()
    (gx0,) = torch.autograd.grad(otpipe.solve(xg0, y, a, b, blur=0.02, tol=1e-5, backend="triton").value, [xg0])
    assert _rel(gx.double().cpu(), gx0.double().cpu()) < 1e-2
