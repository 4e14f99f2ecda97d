"""Solvers: the eps-scaling schedule and parameters, the Sinkhorn loops (fixed schedule, converging mode,
over-relaxation, Anderson mixing; :mod:`~otpipe.solvers.loop`), the multiscale strategy
(:mod:`~otpipe.solvers.multiscale`), the typed output of a run (:mod:`~otpipe.solvers.output`) and the public
solve functions with their result (:mod:`~otpipe.solvers.sinkhorn`)."""
from __future__ import annotations

__all__: list[str] = []
