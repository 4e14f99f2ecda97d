"""``otpipe.distances`` from a plain script without an ``if __name__ == "__main__":`` guard: the
embedded cluster runs its workers as threads (with a warning saying to add the guard) instead of
ending in "Nanny failed to start"; guarded scripts keep worker processes."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from otpipe import store

from .conftest import make_measures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    p = tmp_path_factory.mktemp("coll") / "tiny.zarr"
    store.create(p, make_measures(4, (8, 12), 2, seed=4), dtype="float64")
    return p


def _run_script(path, body: str, cwd) -> subprocess.CompletedProcess:
    path.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, cwd=cwd)


DECIDE = """
import otpipe.engine.processes as pr
{call}
"""


@pytest.mark.parametrize("call, safe", [
    ("print(pr.processes_are_safe()[0])", False),
    ("def main():\n    print(pr.processes_are_safe()[0])\nmain()", False),
    ("if __name__ == '__main__':\n    print(pr.processes_are_safe()[0])", True),
    ("def main():\n    print(pr.processes_are_safe()[0])\nif '__main__' == __name__:\n    main()", True),
])
def test_decision_follows_the_guard(tmp_path, call, safe):
    r = _run_script(tmp_path / "decide.py", DECIDE.format(call=call), tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(safe)


def test_plain_script_without_guard_runs(tiny, tmp_path):
    script = f"""
    import warnings
    import otpipe
    from otpipe.engine.cluster import ClusterSpec
    warnings.simplefilter("ignore", otpipe.ConvergenceWarning)
    ds = otpipe.distances({str(tiny)!r}, cluster=ClusterSpec(n_workers=1), progress=False)
    print(repr(float(ds.divergence.values[0, 1])), repr(float(ds.attrs["diameter"])))
    """
    r = _run_script(tmp_path / "plain.py", script, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Nanny failed" not in r.stderr
    assert 'if __name__ == "__main__":' in r.stderr and "threads" in r.stderr  # says why and what to do
    value, diameter = (float(v) for v in r.stdout.split())
    import otpipe

    a, b = (m.normalized() for m in (store.open(tiny)[0], store.open(tiny)[1]))
    ref = float(otpipe.sinkhorn_divergence(a.points, b.points, a.weights, b.weights, diameter=diameter))
    assert value == pytest.approx(ref, rel=1e-6)
    assert np.isfinite(value)
