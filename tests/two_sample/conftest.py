"""One torch thread for these tests: the problems are small, and on a loaded 2-core machine a
2-thread pool makes each tiny batched call ~30x slower (measured)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
