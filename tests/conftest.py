"""Shared pytest configuration: small thread counts (2-core machines), GPU detection."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # the marker itself: ``"gpu" in item.keywords`` also matches a checkout in a folder named gpu
        if item.get_closest_marker("gpu") is not None and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(params=["tensorized", "keops"])
def backend(request):
    """The two always-available reduction backends."""
    if request.param == "keops":
        pytest.importorskip("pykeops")
    return request.param
