"""Workflow steps are the functions of :data:`otpipe.api.STEPS`: a function registered there is a step at once
(validated against its annotations, called with its params, recorded with its equivalent command line), and a
step's params are checked before any work with messages naming the spec's line."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Annotated, Literal

import pytest

from otpipe import api
from otpipe.params import Range
from otpipe.workflows import load_spec, run_workflow


def stamp(*, out: str, text: str = "hello", times: Annotated[int, Range(1, 5)] = 1,
          case: Literal["lower", "upper"] = "lower", overwrite: bool = False) -> dict:
    """A step for the test: writes ``text`` ``times`` times into ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(out)
    out.mkdir(parents=True, exist_ok=True)
    line = text.upper() if case == "upper" else text
    (out / "stamp.txt").write_text("\n".join([line] * times) + "\n")
    return {"lines": times}


def _write(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_a_registered_function_is_a_step(tmp_path, monkeypatch):
    monkeypatch.setitem(api.STEPS, "stamp", api.Entry(stamp))
    spec = _write(tmp_path, f"""\
        version: 1
        name: new
        run_dir: {tmp_path / 'run'}
        steps:
          - step: stamp
            id: s
            params: {{text: hi, times: 3, case: upper}}
        """)
    prov = run_workflow(spec, echo=lambda *a: None)
    step = prov["steps"][0]
    assert (tmp_path / "run" / "s" / "s.zarr" / "stamp.txt").read_text() == "HI\nHI\nHI\n"
    assert step["params"] == {"text": "hi", "times": 3, "case": "upper"}
    assert step["argv"][:3] == ["stamp", "--out", str(tmp_path / "run" / "s" / "s.zarr")]
    assert step["argv"][3:] == ["--text", "hi", "--times", "3", "--case", "upper", "--overwrite"]
    log = (tmp_path / "run" / "s" / "stamp.log").read_text().splitlines()
    assert log[0].startswith("otpipe stamp --out") and json.loads(log[-1]) == {"lines": 3}
    for bad, msg in [("{times: 9}", "param 'times' of step 's': must be <= 5, got 9"),
                     ("{case: title}", "param 'case' of step 's': 'title' is not one of lower, upper"),
                     ("{colour: red}", "unknown param 'colour' of step 'stamp'")]:
        p = _write(tmp_path, f"version: 1\nname: new\nsteps:\n  - step: stamp\n    id: s\n    params: {bad}\n", "bad.yaml")
        with pytest.raises(ValueError, match="line 6: " + msg.replace("(", r"\(")):
            load_spec(p)


@pytest.mark.parametrize("params, msg", [
    ("{n_workers: 2}", "param 'n_workers' of step 'synth' is a cluster option: give it in the spec's top-level 'cluster'"),
    ("{scheduler: 'tcp://x:1'}", "param 'scheduler' of step 'synth' is a cluster option"),
    ("{quiet: true}", "param 'quiet' of step 'synth' is an option of the command line only"),
    ("{json: true}", "param 'json' of step 'synth' is an option of the command line only"),
    ("{out: x.zarr}", "unknown param 'out' of step 'synth'"),
    ("{dim: 0}", "param 'dim' of step 's': must be >= 1, got 0"),
    ("{n_points: [3, 4]}", "param 'n_points' of step 's': expected an integer, got [3, 4]"),
    ("{weights: heavy}", "param 'weights' of step 's': 'heavy' is not one of uniform, random"),
    ("{overwrite: true}", "unknown param 'overwrite' of step 'synth'"),
])
def test_step_params_are_checked_before_any_work(tmp_path, params, msg):
    spec = _write(tmp_path, f"version: 1\nname: p\nrun_dir: {tmp_path / 'run'}\nsteps:\n"
                            f"  - step: synth\n    id: s\n    params: {params}\n")
    with pytest.raises(ValueError) as exc:
        run_workflow(spec, echo=lambda *a: None)
    assert "line 7: " in str(exc.value) and msg in str(exc.value), str(exc.value)
    assert not (tmp_path / "run").exists()


def test_step_calls_are_the_checked_values(tmp_path):
    spec = _write(tmp_path, """\
        version: 1
        name: calls
        steps:
          - step: synth
            id: s
            params: {kind: circle, n_measures: "3", noise: 0}
          - step: complexity
            id: c
            params: {eps: "0.1, 10", dims: [2], n: [10, 20], only: true}
          - step: two-sample
            id: t
            inputs: [s]
            params: {statistic: mmd, sigma: [0.5, median]}
        """)
    wf = load_spec(spec)
    assert wf.steps[0].call == {"kind": ["circle"], "n_measures": 3, "noise": 0.0}
    assert wf.steps[1].call == {"eps": [0.1, 10.0], "dims": [2], "n": [10, 20], "only": True}
    assert wf.steps[2].call == {"statistic": "mmd", "sigma": ["0.5", "median"]}
    assert wf.steps[2].argv[:2] == ["two-sample", "{input:s}"]
