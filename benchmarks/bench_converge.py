"""Benchmark the converging mode (``tol`` set): updates and time to reach tol = 1e-6, before and after.

"before" is the solver of a git revision (default ``0e6c572``, main before the mixing: alternating updates over-relaxed by a fixed
1.8, intermediate temperatures stopped at a marginal error of 1e-2), extracted with ``git archive`` into a
temporary directory; "after" is this working tree. Every solve runs in a fresh subprocess (same thread count,
``otpipe.solve`` in float64, one warm-up solve first so kernel loading is not timed), before and after
interleaved per case so both see the same machine load; the load average is recorded per case.

Cases (``otpipe.solve``, OT_eps(a, b), uniform weights): x uniform in [0, 1]^D and y uniform in [0.3, 1.1]^D
("uniform"), or x ~ N(0, 0.3^2 I) and y ~ N(0.5, 0.3^2 I) ("gaussian"); balanced p = 2 at N = M = 300 for
D = 2, 10 and blur 0.1 / 0.03 / 0.01 / 0.003; unbalanced (reach 0.3, 3) and p = 1 spot checks; N = M = 3,000
for a subset (``--sizes``).

Usage::

    python benchmarks/bench_converge.py --out benchmarks/results/converge.md
    python benchmarks/bench_converge.py --sizes 300 --only balanced
    python benchmarks/bench_converge.py --before <rev>
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-6
BEFORE = "0e6c572"


def _cases(sizes: list[int], only: str | None) -> list[dict]:
    out = []
    if 300 in sizes:
        for D in (2, 10):
            for kind in ("uniform", "gaussian"):
                for blur in (0.1, 0.03, 0.01, 0.003):
                    out.append(dict(group="balanced", N=300, D=D, kind=kind, blur=blur))
        for extra in (dict(reach=0.3), dict(p=1.0), dict(reach=3.0)):
            for D in (2, 10):
                for blur in (0.01, 0.003):
                    grp = "p = 1" if "p" in extra else f"reach {extra['reach']:g}"
                    out.append(dict(group=grp, N=300, D=D, kind="uniform", blur=blur, **extra))
    if 3000 in sizes:
        for D, blurs in ((2, (0.01, 0.003)), (10, (0.03, 0.003))):
            for blur in blurs:
                out.append(dict(group="balanced", N=3000, D=D, kind="uniform", blur=blur))
    if only:
        out = [c for c in out if c["group"] == only]
    return out


def _data(case: dict):
    import torch

    g = torch.Generator().manual_seed(0)
    N, D = case["N"], case["D"]
    if case["kind"] == "uniform":
        return torch.rand(N, D, generator=g, dtype=torch.float64), 0.8 * torch.rand(N, D, generator=g,
                                                                                       dtype=torch.float64) + 0.3
    return 0.3 * torch.randn(N, D, generator=g, dtype=torch.float64), 0.3 * torch.randn(
        N, D, generator=g, dtype=torch.float64) + 0.5


def _worker(case: dict) -> dict:
    """Run one case with whatever ``otpipe`` is importable; return its figures."""
    import warnings

    import torch

    import otpipe

    warnings.simplefilter("ignore")
    x, y = _data(case)
    kw = dict(blur=case["blur"], tol=TOL, p=case.get("p", 2.0), reach=case.get("reach"))
    otpipe.solve(x[:50], y[:50], **kw)  # warm-up: kernel loading
    t0 = time.perf_counter()
    r = otpipe.solve(x, y, **kw)
    t = time.perf_counter() - t0
    return dict(n_iter=int(r.n_iter), err=float(r.marginal_error), converged=bool(r.converged), time=t,
                value=float(r.value), otpipe=otpipe.__file__, threads=torch.get_num_threads())


def _run(case: dict, path: Path, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(path))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(case)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return dict(timeout=time.perf_counter() - t0)
    if p.returncode != 0:
        raise RuntimeError(f"worker failed for {case}:\n{p.stderr[-2000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    if not res["otpipe"].startswith(str(path)):
        raise RuntimeError(f"worker imported {res['otpipe']}, not the copy under {path}")
    return res


def _cell(r: dict) -> list[str]:
    if "timeout" in r:
        return ["-", "-", "-", f"> {r['timeout']:.0f}"]
    return [str(r["n_iter"]), f"{r['err']:.1e}", "yes" if r["converged"] else "**no**", f"{r['time']:.2f}"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="300,3000")
    ap.add_argument("--only", default=None, help="one group: balanced, 'reach 0.3', 'reach 3', 'p = 1'")
    ap.add_argument("--before", default=BEFORE, help="git revision of the baseline solver")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per solve")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(_worker(json.loads(args.worker))), flush=True)
        return
    cases = _cases([int(s) for s in args.sizes.split(",")], args.only)
    lines = [
        f"Produced by `python benchmarks/bench_converge.py {shlex.join(argv if argv is not None else sys.argv[1:])}`"
        f" on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; before = `{args.before}`, after = this tree; tol = {TOL:g}, "
        "max_iter 10,000 (default); float64; one solve each in a fresh process, before and after interleaved.",
        "",
        "| case | N | D | blur | before: updates | err | conv. | s | after: updates | err | conv. | s | "
        "speed-up | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="otpipe-before-") as tmp:
        arc = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "otpipe"], check=True,
                             capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=arc, check=True)
        for case in cases:
            load0 = os.getloadavg()[0]
            before = _run(case, Path(tmp), args.timeout)
            after = _run(case, ROOT, args.timeout)
            load = max(load0, os.getloadavg()[0])
            sp = (f"{before['time'] / after['time']:.1f}x" if "timeout" not in before and "timeout" not in after
                  else "")
            name = f"{case['group']}, {case['kind']}"
            row = [name, f"{case['N']:,}", str(case["D"]), f"{case['blur']:g}", *_cell(before), *_cell(after), sp,
                   f"{load:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
