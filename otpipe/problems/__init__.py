"""Problems: measures (points + weights, validated and padded into batches, :mod:`~otpipe.problems.measures`)
and the entropic OT problems the solvers iterate (cross and symmetric, balanced or unbalanced,
:mod:`~otpipe.problems.problems`)."""
from __future__ import annotations

__all__: list[str] = []
