"""GPU workers without a GPU: the scheduling by the ``GPU`` resource and the device code path of the tasks.

A real cluster (scheduler and two workers on 127.0.0.1, the workers in this process to start fast), one worker
advertising ``GPU=1`` (as dask-cuda's workers and
``--cluster slurm --gpus`` jobs do) and one not: every task of a run must land on the first, and the
result must equal a plain run's. The tasks compute on ``device="cpu"`` here, through the same code as on a
GPU (measures moved to the device once, large padded batches gathered there); the Triton variant of that
path runs under Triton's interpreter in ``tests/geometry/test_triton.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from otpipe.pipelines import tasks
from otpipe.pipelines.pairwise import pairwise

from .conftest import reference_matrix


@pytest.fixture(scope="module")
def mixed_client():
    """Scheduler on 127.0.0.1, worker 'gpu' with resources GPU=1, worker 'cpu' without."""
    from distributed import Client, Scheduler, SpecCluster, Worker

    opts = dict(nthreads=1, host="127.0.0.1", memory_limit="2GiB")
    workers = {"gpu": {"cls": Worker, "options": dict(opts, resources={"GPU": 1})},
               "cpu": {"cls": Worker, "options": dict(opts)}}
    scheduler = {"cls": Scheduler, "options": dict(host="127.0.0.1", dashboard_address=None)}
    with SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40) as cluster, Client(cluster) as c:
        c.wait_for_workers(2)
        yield c


def _gpu_worker(c) -> str:
    return next(a for a, w in c.scheduler_info()["workers"].items() if w.get("resources", {}).get("GPU"))


def test_tasks_run_only_on_gpu_workers_and_match_a_plain_run(mixed_client, client, small, tmp_path):
    ds = pairwise(small, client=mixed_client, out=tmp_path / "g.zarr", tile=3, device="cpu", progress=False)
    assert ds.attrs["gpu"] is True
    assert set(ds.attrs["workers"]) == {_gpu_worker(mixed_client)}  # 10 tiles + 4 self-term tasks, all there
    assert sum(ds.attrs["workers"].values()) == ds.attrs["n_tiles"] + 4
    assert ds.attrs["parameters"]["device"] == "cpu" and ds.attrs["parameters"]["gpu"] is True
    plain = pairwise(small, client=client, tile=3, progress=False)
    assert not plain.attrs["gpu"]
    S, P = ds.divergence.values, plain.divergence.values
    assert np.abs(S - P).max() <= 1e-12 * np.abs(P).max()
    ref = reference_matrix(small, None, ds.attrs["diameter"], True)
    assert np.abs(S - ref).max() <= 1e-6 * np.abs(ref).max()
    assert ds.attrs["fingerprint"] == plain.attrs["fingerprint"]  # where it ran is not part of the run's identity


def test_gpu_workers_without_cuda_say_so(mixed_client, small):
    """``device="auto"`` on GPU workers means CUDA: a worker whose torch sees none fails with the reason."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="sees no CUDA device on this worker.*--gres=gpu:1") as err:
        pairwise(small, client=mixed_client, tile=6, progress=False)
    assert "\n" not in str(err.value)


def test_explicit_backend_must_serve_the_workers_device(mixed_client, small, tmp_path):
    with pytest.raises(ValueError, match="backend 'cpu' runs on CPU tensors, but the points are on a cuda"):
        pairwise(small, client=mixed_client, out=tmp_path / "no.zarr", backend="cpu", device="cuda", progress=False)
    assert not (tmp_path / "no.zarr").exists()
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda'"):
        pairwise(small, client=mixed_client, device="tpu", progress=False)


def test_gathered_batches_equal_pad_batch():
    from otpipe.problems.measures import pad_batch

    rng = np.random.default_rng(0)
    meas = [(rng.normal(size=(int(n), 3)).astype(np.float32), rng.random(int(n)) + 0.1) for n in (5, 1, 9, 4)]
    for dtype in ("float32", "float64"):
        prm = tasks.RunParams(dtype=dtype, gpu=True, device="cpu")
        on = tasks._stack(meas, prm, tasks._device(prm))
        for idx in ([0, 1, 2, 3], [2], [3, 1, 1]):
            X, A = on.batch(idx)
            Xr, Ar = pad_batch([torch.from_numpy(meas[k][0]) for k in idx],
                               [torch.from_numpy(meas[k][1]) for k in idx], dtype=getattr(torch, dtype))
            assert X.dtype == getattr(torch, dtype) and torch.equal(X, Xr) and torch.equal(A, Ar)


def test_gpu_batches_are_larger():
    sizes = [64] * 20000
    assert [len(g) for g in tasks._groups(sizes, sizes)][:2] == [tasks.BATCH_MAX, tasks.BATCH_MAX]
    assert [len(g) for g in tasks._groups(sizes, sizes, gpu=True)] == [tasks.BATCH_MAX_GPU] * 2 + [20000 - 16384]


@pytest.mark.gpu
def test_tasks_on_cuda_match_cpu(small):
    """On a GPU: the self and cross tasks on the worker's CUDA device (Triton) equal the CPU tasks'."""
    from otpipe import store

    c = store.open(small)
    allp = np.concatenate([m.points for m in c])
    D = float(np.linalg.norm(allp.max(0) - allp.min(0)))
    res = {}
    for dev in ("cpu", "cuda"):
        prm = tasks.RunParams(dtype="float64", diameter=D, gpu=dev == "cuda", device=dev)
        s = tasks.self_task(str(small), range(len(c)), prm)["value"]
        res[dev] = (s, tasks.cross_task(str(small), range(len(c)), str(small), range(len(c)), prm, diagonal=True,
                                        self_rows=s, self_cols=s)["divergence"])
    for a, b in zip(res["cuda"], res["cpu"]):
        assert np.abs(a - b).max() <= 1e-10 * np.abs(b).max()
