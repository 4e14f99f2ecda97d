"""Cluster plumbing: option validation, the embedded cluster on loopback, batch job scripts."""
from __future__ import annotations

import pytest

from otpipe.engine.cluster import ClusterSpec, describe, job_script, open_client


@pytest.mark.parametrize(
    "spec, needle",
    [
        (ClusterSpec(scheduler="tcp://127.0.0.1:1", scheduler_file="x.json"), "not both"),
        (ClusterSpec(scheduler="tcp://127.0.0.1:1", cluster="slurm"), "existing cluster"),
        (ClusterSpec(cluster="kubernetes"), "unknown --cluster"),
        (ClusterSpec(n_workers=0), "--n-workers"),
    ],
)
def test_bad_specs(spec, needle):
    with pytest.raises(ValueError, match=needle):
        spec.validate()


def test_missing_scheduler_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="scheduler file"):
        ClusterSpec(scheduler_file=str(tmp_path / "nope.json")).validate()


def test_embedded_cluster_listens_on_loopback_only():
    with open_client(ClusterSpec(n_workers=1)) as c:
        info = c.scheduler_info()
        assert info["address"].startswith("tcp://127.0.0.1:")
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in info["workers"])
        assert c.dashboard_link.startswith("http://127.0.0.1:")
        assert "1 workers" in describe(c)


@pytest.mark.parametrize("kind, directive", [("slurm", "#SBATCH"), ("pbs", "#PBS")])
def test_batch_job_script_requests_gpus(kind, directive):
    pytest.importorskip("dask_jobqueue")
    script = job_script(ClusterSpec(cluster=kind, cores=4, memory="8GB", walltime="01:00:00", gpus=True))
    assert directive in script
    assert "--resources GPU=1" in script
    assert ("#SBATCH --gres=gpu:1" in script) == (kind == "slurm")
    assert "01:00:00" in script
