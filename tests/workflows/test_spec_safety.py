"""Hostile workflow specs (issue 21, items 9, 10 and 20): a key given twice, an alias bomb, a recursive
alias, huge values in error messages and over-long step ids are refused by ``--dry-run`` with one short
line naming the line of the spec, before any work."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from otpipe.workflows import MAX_ALIAS_NODES, MAX_ID, MAX_SHOWN, load_spec, run_workflow


def _write(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "otpipe.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)


def _bomb(levels: int) -> str:
    """Nested aliases: ``levels`` lists of 10 references to the previous one (10**levels values)."""
    expr = "&a1 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"
    for i in range(2, levels + 1):
        expr = f"&a{i} [{expr}" + f", *a{i - 1}" * 9 + "]"
    return f"version: 1\nname: bomb\nsteps:\n  - step: complexity\n    id: c\n    params:\n      eps: {expr}\n"


@pytest.mark.parametrize("where, text, line, first", [
    ("param", "version: 1\nname: d\nsteps:\n  - step: synth\n    id: s\n    params:\n      n_measures: 3\n"
              "      seed: 1\n      n_measures: 4\n", 9, 7),
    ("step key", "version: 1\nname: d\nsteps:\n  - step: synth\n    id: s\n    id: t\n", 6, 5),
    ("top level", "version: 1\nname: d\nsteps:\n  - step: synth\nname: e\n", 5, 2),
    ("flow mapping", "version: 1\nname: d\nsteps:\n  - {step: synth, id: s, params: {seed: 1, seed: 2}}\n", 4, 4),
])
def test_duplicate_keys_are_refused(tmp_path, where, text, line, first):
    spec = _write(tmp_path, text)
    with pytest.raises(ValueError) as exc:
        load_spec(spec)
    msg = str(exc.value)
    assert f"line {line}:" in msg and "given twice" in msg and f"first on line {first}" in msg, msg
    r = _cli(tmp_path, "run", str(spec), "--dry-run")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "given twice" in r.stderr, r.stderr


def test_merge_keys_and_small_aliases_keep_safe_load_semantics(tmp_path):
    import yaml

    text = """\
        version: 1
        name: shared
        steps:
          - &base {step: synth, id: a, params: &p {n_measures: 3, n_points: 10, seed: 1}}
          - <<: *base
            id: b
          - {step: synth, id: c, params: *p}
        """
    spec = _write(tmp_path, text)
    wf = load_spec(spec)
    assert wf.raw == yaml.safe_load(textwrap.dedent(text))  # same values as yaml.safe_load
    assert [s.id for s in wf.steps] == ["a", "b", "c"]
    assert all(s.params == {"n_measures": 3, "n_points": 10, "seed": 1} for s in wf.steps)


def _peak_kib(tmp_path, spec):
    """Run ``otpipe run SPEC --dry-run`` in a fresh interpreter; return (stderr lines, stdout, peak RSS in KiB)."""
    # VmHWM is this process's own high-water mark; ru_maxrss would carry the forking pytest's over exec
    code = ("import sys\nfrom otpipe.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
            "if hwm:\n    peak = int(hwm[0].split()[1])\nelse:\n    import resource\n"
            "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\nprint('peak', peak, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, "run", str(spec), "--dry-run"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)  # a hang guard, not a timing threshold
    lines = r.stderr.strip().splitlines()
    return lines[:-1], r.stdout, int(lines[-1].split()[1])


def test_alias_bomb_is_refused_at_once(tmp_path):
    spec = _write(tmp_path, _bomb(8))  # 10**8 values once expanded (before: 63 s, 10 GB, a 358 MB error line)
    assert spec.stat().st_size < 1000
    errors, out, peak = _peak_kib(tmp_path, spec)
    assert len(errors) == 1, errors
    assert f"line 7: aliases expand the spec to more than {MAX_ALIAS_NODES:,} values" in errors[0], errors
    assert len(errors[0]) < 300 and out == ""
    # the same interpreter refusing a small spec for another reason: its peak is the interpreter and its imports
    # (about 1 GB with torch here, machine-dependent); 10**8 expanded values would add gigabytes on top
    small = _write(tmp_path, _bomb(2).replace("step: complexity", "step: no-such-step"), name="small.yaml")
    small_errors, _, baseline = _peak_kib(tmp_path, small)
    assert len(small_errors) == 1 and "no-such-step" in small_errors[0], small_errors
    assert peak < baseline + 200_000, (peak, baseline)  # KiB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.yaml", "spec.yaml"]


@pytest.mark.parametrize("copies, ok", [(10, True), (11, False)])
def test_alias_limit_counts_the_expanded_values(tmp_path, copies, ok):
    # an anchored list of 999 values is 1,000 nodes: 10 aliases of it add exactly the limit
    block = "[" + ", ".join(["1"] * (MAX_ALIAS_NODES // 10 - 1)) + "]"
    text = (f"version: 1\nname: a\ndescription: [&big {block}" + ", *big" * copies + "]\n"
            "steps:\n  - step: synth\n")
    spec = _write(tmp_path, text)
    if ok:
        assert len(load_spec(spec).raw["description"]) == copies + 1
    else:
        with pytest.raises(ValueError, match="line 3: aliases expand the spec"):
            load_spec(spec)


def test_recursive_alias_is_refused(tmp_path):
    spec = _write(tmp_path, "version: 1\nname: r\nsteps:\n  - &s {step: synth, id: s, params: {kind: *s}}\n")
    with pytest.raises(ValueError, match=r"line 4: alias \*s is inside the value it names"):
        load_spec(spec)


@pytest.mark.parametrize("field", ["unknown key", "value", "option message", "input"])
def test_errors_never_quote_more_than_a_short_value(tmp_path, field):
    big = "x" * 100_000
    step = {
        "unknown key": f"  - step: synth\n    id: s\n    ? {big}\n    : 1\n",  # an explicit (long) key
        "value": f"  - step: synth\n    id: s\n    params: {{n_measures: [{', '.join(['1'] * 30_000)}]}}\n",
        "option message": f"  - step: complexity\n    id: c\n    params: {{eps: '{big}'}}\n",
        "input": f"  - step: report\n    id: r\n    inputs: [{big}]\n",
    }[field]
    spec = _write(tmp_path, "version: 1\nname: big\nsteps:\n" + step)
    with pytest.raises(ValueError) as exc:
        run_workflow(spec, dry_run=True, echo=lambda *a: None)
    msg = str(exc.value)
    assert msg.startswith(f"{spec} line ") and len(msg) < len(str(spec)) + 3 * MAX_SHOWN + 200, len(msg)
    assert "characters)" in msg  # says how long the value was


def test_long_step_id_is_refused_by_the_dry_run(tmp_path):
    long_id = "a" * 300  # before: passed --dry-run, then the run failed with [Errno 36] File name too long
    spec = _write(tmp_path, f"version: 1\nname: ids\nrun_dir: run\nsteps:\n  - step: synth\n    id: {long_id}\n")
    r = _cli(tmp_path, "run", str(spec), "--dry-run")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"line 6: step id must be an identifier of at most {MAX_ID} characters" in r.stderr
    assert "(300 characters)" in r.stderr and "Errno" not in r.stderr
    r = _cli(tmp_path, "run", str(spec))  # the run validates the same way, before writing anything
    assert r.returncode == 1 and "at most 64 characters" in r.stderr and not (tmp_path / "run").exists()
    for bad in ("a/b", "../x", "a b", "1a"):
        p = _write(tmp_path, f"version: 1\nname: ids\nsteps:\n  - step: synth\n    id: '{bad}'\n", "bad.yaml")
        with pytest.raises(ValueError, match="line 5: step id must be an identifier"):
            load_spec(p)
    p = _write(tmp_path, f"version: 1\nname: {'n' * (MAX_ID + 1)}\nsteps:\n  - step: synth\n", "name.yaml")
    with pytest.raises(ValueError, match="line 2: 'name' must be an identifier of at most"):
        load_spec(p)


def test_longest_allowed_step_id_runs(tmp_path):
    sid = "s" * MAX_ID
    spec = _write(tmp_path, f"version: 1\nname: ids\nrun_dir: {tmp_path / 'run'}\nsteps:\n  - step: synth\n    id: {sid}\n"
                            "    params: {n_measures: 2, n_points: 5, dim: 2, seed: 0}\n")
    prov = run_workflow(spec, echo=lambda *a: None)
    assert prov["complete"] and (tmp_path / "run" / sid / f"{sid}.zarr").is_dir()


@pytest.mark.parametrize("cluster, msg", [("{n_workers: 100000}", "more than this machine runs"),
                                          ("{n_workers: two}", "cluster n_workers must be a whole number"),
                                          ("{n_workers: 2, threads_per_worker: 0}", "threads_per_worker must be")])
def test_cluster_beyond_the_machine_is_refused_by_the_dry_run(tmp_path, cluster, msg):
    spec = _write(tmp_path, f"version: 1\nname: w\ncluster: {cluster}\nsteps:\n  - step: synth\n")
    r = _cli(tmp_path, "run", str(spec), "--dry-run")
    assert r.returncode == 1 and "line 3:" in r.stderr and msg in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
