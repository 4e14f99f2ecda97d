"""The ``chunked`` backend (dense over blocks of rows, the CUDA fallback without Triton) through the solver:
the same values and gradients as the dense backend (its operator is tested in test_no_keops.py)."""
from __future__ import annotations

import torch

import otpipe
from otpipe.geometry import backends as kernels


def test_solver_on_chunked_backend(monkeypatch):
    monkeypatch.setattr(kernels, "AUTO_DENSE_MAX_ENTRIES", 60 * 7)  # blocks of a few rows
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, 2, generator=g, dtype=torch.float64)
    y = torch.rand(70, 2, generator=g, dtype=torch.float64)
    res = []
    for backend in ("chunked", "tensorized"):
        xs = x.clone().requires_grad_()
        s = otpipe.sinkhorn_divergence(xs, y, blur=0.1, backend=backend)
        res.append((s.detach(), torch.autograd.grad(s, [xs])[0]))
    assert abs(float(res[0][0] - res[1][0])) < 1e-12
    assert float((res[0][1] - res[1][1]).abs().max() / res[1][1].abs().max()) < 1e-10
    r = otpipe.solve(x, y, blur=0.1, backend="chunked")
    assert r.backend == "chunked"
    torch.testing.assert_close(r.transport_map(), otpipe.solve(x, y, blur=0.1, backend="tensorized").transport_map())
