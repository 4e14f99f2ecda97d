"""Problems: measures (points + weights, validated and padded into batches, :mod:`~otpipe.problems.measures`)."""
from __future__ import annotations

__all__: list[str] = []
