"""A real single-node SLURM on localhost for the tests: munged, slurmctld and slurmd from Debian's
packages (``slurmctld slurmd slurm-client munge``, 22.05 on Debian 12), all private to one
temporary folder (own munge key and socket, own ports, own state), so the machine's own SLURM, if
any, is never touched. ``proctrack/linuxproc`` and ``task/none``: no cgroups needed.

The daemons run as children of the test process (root: slurmd starts jobs as their user) and are
stopped at teardown, after cancelling every job and ending the job processes they left. Daemons
left by an earlier, killed test run are listed in ``/tmp/otpipe-slurm-test.pids`` and ended (by
PID, only if their command line still names that run's folder) before a new cluster starts.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PIDS_FILE = Path(tempfile.gettempdir()) / "otpipe-slurm-test.pids"
NODE = "otpipenode"


def why_not() -> str | None:
    """Why this machine cannot run the SLURM tests (``None``: it can)."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (f"SLURM/munge not installed (missing {', '.join(missing)}): "
                "apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        return "the single-node SLURM fixture starts slurmd, which runs jobs, as root: run as root"
    for mod in ("dask_jobqueue", "cryptography"):
        try:
            __import__(mod)
        except ImportError:
            return f"{mod} is not installed (pip install -e '.[test]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _end(pid: int, needle: str | None = None, grace: float = 5.0) -> None:
    """SIGTERM then SIGKILL process ``pid`` (only if its command line contains ``needle``)."""
    import psutil

    try:
        p = psutil.Process(pid)
        if needle is not None and needle not in " ".join(p.cmdline()):
            return
        p.terminate()
        try:
            p.wait(grace)
        except psutil.TimeoutExpired:
            p.kill()
            p.wait(grace)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        pass


def end_leftovers() -> None:
    """End the daemons of an earlier test run that was killed before its teardown."""
    if not PIDS_FILE.exists():
        return
    for line in PIDS_FILE.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0].isdigit():
            _end(int(parts[0]), needle=parts[1])
            if parts[1].startswith(str(Path(tempfile.gettempdir()) / "otpipe-slurm-")):
                shutil.rmtree(parts[1], ignore_errors=True)
    PIDS_FILE.unlink(missing_ok=True)


class SingleNodeSlurm:
    """munged + slurmctld + slurmd in ``self.dir``; ``self.env`` points the clients (sbatch...) at them."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="otpipe-slurm-"))
        os.chmod(self.dir, 0o711)  # munged wants its socket's folder traversable
        self.conf = self.dir / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.procs: dict[str, subprocess.Popen] = {}

    def _write_conf(self) -> None:
        d, host = self.dir, socket.gethostname()
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        self.conf.write_text("\n".join([
            "ClusterName=otpipetest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            f"AuthInfo=socket={d}/munge.sock",
            "CredType=cred/munge",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/slurmctld.log",
            f"SlurmdLogFile={d}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "MpiDefault=none",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SlurmdParameters=config_overrides",
            "InactiveLimit=0",
            "KillWait=2",
            "MinJobAge=5",
            f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory={mem} State=UNKNOWN",
            f"PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
            "",
        ]))

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True, cwd=self.dir)
        with PIDS_FILE.open("a") as fh:
            fh.write(f"{self.procs[name].pid} {self.dir}\n")

    def start(self, timeout: float = 60.0) -> None:
        d = self.dir
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self._write_conf()
        self._spawn("munged", ["munged", "-F", "--force", f"--socket={d}/munge.sock", f"--key-file={key}",
                               f"--pid-file={d}/munged.pid", f"--seed-file={d}/munged.seed", f"--log-file={d}/munged.log"])
        self._wait(lambda: (d / "munge.sock").exists(), 10, "munged")
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%t", check=False).strip() in ("idle", "mix", "alloc"),
                   timeout, "slurmctld/slurmd")

    def _wait(self, ok, timeout: float, what: str) -> None:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if ok():
                return
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                break
            time.sleep(0.3)
        tail = "; ".join(f"{n}: {(self.dir / f'{n}.out').read_text().strip().splitlines()[-1:]}" for n in self.procs)
        raise RuntimeError(f"{what} did not start ({tail})")

    def run(self, *argv: str, check: bool = True) -> str:
        r = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
        return r.stdout

    def jobs(self) -> list[str]:
        """Ids of the jobs queued or running."""
        return self.run("squeue", "-h", "-o", "%i", check=False).split()

    def _job_processes(self) -> list[int]:
        """PIDs of processes this cluster started (slurmstepd, the jobs): their environment names our slurm.conf."""
        import psutil

        out = []
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, OSError):
                if p.pid != os.getpid() and p.environ().get("SLURM_CONF") == str(self.conf):
                    out.append(p.pid)
        return out

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            for j in self.jobs():
                self.run("scancel", j, check=False)
            t_end = time.monotonic() + 15
            while self.jobs() and time.monotonic() < t_end:
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait(10)
        for pid in self._job_processes():
            _end(pid)
        PIDS_FILE.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm():
    """A running single-node SLURM (skips with the reason where it cannot run)."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    end_leftovers()
    cluster = SingleNodeSlurm()
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        pytest.skip(f"could not start a single-node SLURM here: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
