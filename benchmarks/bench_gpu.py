"""Issue 13's GPU table, side by side in one run: otpipe ``triton`` vs flash-sinkhorn vs otpipe ``tensorized``,
the multiscale solver with gradients, and the digits distance matrix on GPU workers.

Sections (``--sections``, all by default), p = 2, float32, scaling 0.5, diameter sqrt(D), x uniform in
[0, 1]^D, y = 0.8 * uniform + 0.1, S_eps value + gradient w.r.t. x (debiased, GeomLoss's fixed eps-scaling):

* ``solver``: N = M = 20k and 50k, D = 3 (blur 0.05) and 64 (blur 0.5): otpipe triton (TF32 off, the default,
  and on) vs flash-sinkhorn fp32 (``allow_tf32=False``) and tf32 vs otpipe tensorized (20k only). Accuracy:
  relative error of the value and of the gradient (max abs, relative to the max abs) against a float64 solve
  (otpipe triton in float64, whose kernels agree with the dense float64 reference to 1e-11 in the tests);
  target <= 1e-5 at fp32;
* ``large``: N = M = 200k, D = 3: otpipe triton vs flash-sinkhorn tf32 (and fp32);
* ``multiscale``: N = M = 200k and 1M, D = 3, blur 0.01: otpipe multiscale (block-sparse Triton kernels,
  clustering on the device) S_eps + gradient vs the value of otpipe's full triton solve (target: 1M under 5 s,
  within 1e-4);
* ``digits``: the S_eps matrix of all 1,797 scikit-learn digits (1.6 M pairs) by ``otpipe distances --gpus``
  (``python -m otpipe.cli``), 20 of its entries checked against ``otpipe.sinkhorn_divergence`` in float64 on
  the CPU; ``--digits-cpu`` gives the 2-core CPU figure measured elsewhere (same command without ``--gpus``).

Each timing: ``torch.cuda.synchronize()`` around the call, one untimed call first (Triton compilation,
flash-sinkhorn's autotuning), then the best of ``--repeats`` with the implementations interleaved. A section
or row that fails is reported in the table and the run goes on; ``--budget`` seconds in all (rows beyond it
are marked skipped). Output: one markdown file (``--out``) with the machine line and one table.

Usage::

    python benchmarks/bench_gpu.py --out gpu.md                                   # on a GPU machine
    python benchmarks/bench_gpu.py --device cpu --small --out smoke.md            # smoke test: Triton's
                                                                                  # interpreter, tiny sizes
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

__all__ = ["main"]

_T0 = time.perf_counter()
_BUDGET = [float("inf")]
_SAVE = [lambda: None]  # writes the table so far (a run killed by its time limit keeps its finished rows)


def _left() -> float:
    return _BUDGET[0] - (time.perf_counter() - _T0)


# --------------------------------------------------------------------------------------------- helpers
def _data(n: int, D: int, device: str, dtype, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=g, dtype=torch.float64)
    y = 0.8 * torch.rand(n, D, generator=g, dtype=torch.float64) + 0.1
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _value_grad(loss, x, y):
    """``(S, dS/dx)`` of ``loss(x, y)`` (detached)."""
    import torch

    xg = x.clone().requires_grad_()
    v = loss(xg, y)
    (g,) = torch.autograd.grad(v, [xg])
    return float(v.detach()), g.detach()


def _timed(fn, device: str):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _otpipe(backend: str, blur: float, D: int, tf32: bool = False, **kw):
    import otpipe

    def loss(x, y):
        from otpipe.geometry.backends import triton as tb

        tb.ALLOW_TF32 = tf32
        try:
            return otpipe.sinkhorn_divergence(x, y, p=2, blur=blur, scaling=0.5, diameter=math.sqrt(D),
                                              backend=backend, **kw)
        finally:
            tb.ALLOW_TF32 = False
    return loss


def _flash(blur: float, D: int, tf32: bool):
    from flash_sinkhorn import SamplesLoss

    f = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.5, debias=True, half_cost=True, allow_tf32=tf32,
                    diameter=math.sqrt(D))
    return lambda x, y: f(x, y)


def _flash_available() -> str | None:
    try:
        import flash_sinkhorn  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
    return None


def _rel_grad(g, ref) -> float:
    return float((g.double() - ref.double()).abs().max() / ref.double().abs().max())


def _fmt_t(t: float) -> str:
    return f"{t:.3f} s" if t >= 0.01 else f"{t * 1e3:.2f} ms"


def _err(exc: BaseException) -> str:
    return f"ERROR {type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}".replace("|", "/")


# -------------------------------------------------------------------------------------------- sections
def _side_by_side(rows: list, label: str, n: int, D: int, impls: dict, device: str, repeats: int, ref=None,
                  anchor: str | None = None) -> None:
    """Time ``impls`` (name -> loss) on one problem, interleaved; one table row per implementation."""
    import torch

    x, y = _data(n, D, device, torch.float32)
    best, val, grad, bad = {}, {}, {}, {}
    for k, f in impls.items():  # warm-up: compilation / autotuning, and the value
        if _left() < 0:
            bad[k] = "skipped (time budget)"
            continue
        try:
            t, (v, g) = _timed(lambda: _value_grad(f, x, y), device)
            best[k], val[k], grad[k] = t, v, g
            print(f"  {label} N={n} D={D} {k}: first call {t:.3f} s, S = {v:.8g}", flush=True)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            bad[k] = _err(exc)
    for _ in range(repeats):
        for k in list(best):
            if _left() < 0:
                break
            t, _ = _timed(lambda: _value_grad(impls[k], x, y), device)
            best[k] = min(best[k], t)
    for k in impls:
        if k in bad:
            rows.append(f"| {label} | {n:,} | {D} | {k} | {bad[k]} | | | | |")
            continue
        if ref is not None:
            rv, rg = ref
            ev, eg = f"{abs(val[k] - rv) / abs(rv):.1e}", f"{_rel_grad(grad[k], rg):.1e}"
        else:
            ev = eg = "-"
        ratio = f"{best[anchor] / best[k]:.2f}x" if anchor in best else "-"
        rows.append(f"| {label} | {n:,} | {D} | {k} | {_fmt_t(best[k])} | {val[k]:.8g} | {ev} | {eg} | {ratio} |")
        print(rows[-1], flush=True)
    _SAVE[0]()
    x = y = None  # free the GPU memory before the next problem
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _solver(rows, device, small, repeats, flash_why):
    import torch

    cases = ([(40, 3, 0.05), (40, 20, 0.5)] if small else
             [(20000, 3, 0.05), (20000, 64, 0.5), (50000, 3, 0.05), (50000, 64, 0.5)])
    for n, D, blur in cases:
        if _left() < 0:
            rows.append(f"| value + grad | {n:,} | {D} | (all) | skipped (time budget) | | | | |")
            continue
        impls = {"otpipe triton": _otpipe("triton", blur, D), "otpipe triton, TF32": _otpipe("triton", blur, D, True)}
        if flash_why is None:
            impls["flash-sinkhorn fp32"] = _flash(blur, D, False)
            impls["flash-sinkhorn tf32"] = _flash(blur, D, True)
        if n <= 20000:
            impls["otpipe tensorized"] = _otpipe("tensorized", blur, D)
        try:  # the float64 reference
            x, y = _data(n, D, device, torch.float64)
            t, ref = _timed(lambda: _value_grad(_otpipe("triton", blur, D), x, y), device)
            print(f"  float64 reference N={n} D={D}: {t:.2f} s, S = {ref[0]:.12g}", flush=True)
            x = y = None
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append(f"| value + grad | {n:,} | {D} | float64 reference | {_err(exc)} | | | | |")
            ref = None
        _side_by_side(rows, f"value + grad, blur {blur}", n, D, impls, device, repeats, ref,
                      "flash-sinkhorn fp32" if flash_why is None else None)


def _large(rows, device, small, repeats, flash_why):
    n, D, blur = (64, 3, 0.05) if small else (200000, 3, 0.05)
    impls = {"otpipe triton": _otpipe("triton", blur, D)}
    if flash_why is None:
        impls["flash-sinkhorn tf32"] = _flash(blur, D, True)
        impls["flash-sinkhorn fp32"] = _flash(blur, D, False)
    _side_by_side(rows, f"value + grad, blur {blur}", n, D, impls, device, max(1, repeats - 1), None,
                  "flash-sinkhorn tf32" if flash_why is None else None)


def _multiscale(rows, device, small, repeats):
    import torch

    sizes = (200, 300) if small else (200000, 1000000)
    D, blur = 3, 0.01
    for n in sizes:
        if _left() < 0:
            rows.append(f"| multiscale value + grad, blur {blur} | {n:,} | {D} | (all) | skipped (time budget) "
                        "| | | | |")
            continue
        try:
            x, y = _data(n, D, device, torch.float32)
            ms = _otpipe("multiscale", blur, D)
            t_first, (v, _) = _timed(lambda: _value_grad(ms, x, y), device)
            best = t_first
            for _ in range(max(1, repeats - 1)):
                if _left() < 0:
                    break
                best = min(best, _timed(lambda: _value_grad(ms, x, y), device)[0])
            # the full (not truncated) solve's value: no gradient, one run (the reference; dense in the CPU smoke
            # test, where the interpreted full solve would take minutes)
            full = "triton" if device.startswith("cuda") else "tensorized"
            with torch.no_grad():
                t_full, v_full = _timed(lambda: float(_otpipe(full, blur, D)(x, y)), device)
            rel = abs(v - v_full) / abs(v_full)
            kind = "triton" if device.startswith("cuda") else "cpu"
            rows.append(f"| multiscale value + grad, blur {blur} | {n:,} | {D} | otpipe multiscale ({kind} blocks) | "
                        f"{_fmt_t(best)} (first {_fmt_t(t_first)}) | {v:.8g} | {rel:.1e} vs full | - | "
                        f"{t_full / best:.1f}x |")
            rows.append(f"| full solve, value only, blur {blur} | {n:,} | {D} | otpipe {full} | {_fmt_t(t_full)} | "
                        f"{v_full:.8g} | reference | - | - |")
            print(rows[-2], rows[-1], sep="\n", flush=True)
            _SAVE[0]()
            x = y = None
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append(f"| multiscale value + grad, blur {blur} | {n:,} | {D} | otpipe multiscale | {_err(exc)} "
                        "| | | | |")


def _digits(rows, device, small, cpu_figure: str | None, workdir: Path):
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from digits_collection import make

    n = 40 if small else None
    store = workdir / "digits.zarr"
    k = make(str(store), n)
    out = workdir / "digits_result.zarr"
    cmd = [sys.executable, "-m", "otpipe.cli", "distances", str(store), "--out", str(out), "--overwrite", "-q",
           "--no-progress"]
    cmd += ["--gpus"] if device.startswith("cuda") else ["--n-workers", "2"]
    if _left() < 0:
        rows.append(f"| S_eps matrix, digits | {k:,} | 2 | otpipe distances | skipped (time budget) | | | | |")
        return
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        last = r.stderr.strip().splitlines()[-1][:150].replace("|", "/") if r.stderr.strip() else ""
        rows.append(f"| S_eps matrix, digits | {k:,} | 2 | otpipe distances | ERROR (exit {r.returncode}): {last} "
                    "| | | | |")
        print(r.stderr[-3000:], flush=True)
        return
    import otpipe
    from otpipe import store as st
    from otpipe.engine.result import open_result

    ds = open_result(out)
    run_s = float(ds.attrs["seconds"])
    S = ds.divergence.values
    c = st.open(store)
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(20):
        i, j = rng.choice(k, 2, replace=False)
        mi, mj = c[int(i)].normalized(), c[int(j)].normalized()
        ref = float(otpipe.sinkhorn_divergence(np.asarray(mi.points, np.float64), np.asarray(mj.points, np.float64),
                                               np.asarray(mi.weights, np.float64), np.asarray(mj.weights, np.float64),
                                               diameter=float(ds.attrs["diameter"]), backend="tensorized"))
        errs.append(abs(S[i, j] - ref) / abs(ref))
    pairs = k * (k - 1) // 2
    where = "--gpus (one worker per GPU)" if device.startswith("cuda") else "--n-workers 2 (CPU smoke)"
    rows.append(f"| S_eps matrix, digits, float32 | {k:,} ({pairs:,} pairs) | 2 | otpipe distances {where} | "
                f"{run_s:.1f} s run, {wall:.1f} s command | - | {max(errs):.1e} (20 pairs vs float64) | - | "
                f"{pairs / run_s:,.0f} pairs/s |")
    if cpu_figure and not small:
        rows.append(f"| S_eps matrix, digits, float32 | {k:,} ({pairs:,} pairs) | 2 | same command, no --gpus, "
                    f"2-core CPU (measured elsewhere) | {cpu_figure} | - | - | - | - |")
    print(rows[-1], flush=True)


# ------------------------------------------------------------------------------------------------- main
def _machine(device: str, flash_why: str | None) -> str:
    import torch

    from otpipe import __version__

    bits = []
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        bits.append(f"{torch.cuda.get_device_name(0)} ({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs,"
                    f" {torch.cuda.device_count()} GPU(s))")
        try:
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.split()
            bits.append(f"driver {drv[0]}" if drv else "")
        except Exception:  # noqa: BLE001
            pass
        bits.append(f"CUDA {torch.version.cuda}")
    else:
        bits.append(f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), Triton interpreter "
                    "(smoke test: timings mean nothing)")
    try:
        import triton

        bits.append(f"triton {triton.__version__}")
    except Exception:  # noqa: BLE001
        bits.append("triton missing")
    try:
        from importlib.metadata import version

        bits.append(f"flash-sinkhorn {version('flash-sinkhorn')}" if flash_why is None else
                    f"flash-sinkhorn unavailable ({flash_why})")
    except Exception:  # noqa: BLE001
        pass
    bits += [f"torch {torch.__version__}", f"Python {platform.python_version()}", f"otpipe {__version__}",
             datetime.datetime.now().strftime("%Y-%m-%d %H:%M")]
    return "Machine: " + ", ".join(b for b in bits if b) + "."


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes (the CPU smoke test)")
    ap.add_argument("--sections", default="solver,multiscale,large,digits")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=float("inf"), help="seconds; rows beyond it are skipped")
    ap.add_argument("--digits-cpu", default=None, help="the 2-core CPU figure of the digits matrix, as text")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    _BUDGET[0] = args.budget
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the Triton kernels are defined
        import warnings

        warnings.filterwarnings("ignore", category=RuntimeWarning)  # the interpreter's masked lanes
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device: run this on a GPU machine, or pass --device cpu --small (smoke test)")
        return 2
    flash_why = _flash_available() if args.device.startswith("cuda") else "needs CUDA"
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    rows = ["| figure | N = M | D | implementation | time | S_eps | rel. err. value | rel. err. grad | speed-up |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    tmp = tempfile.TemporaryDirectory(prefix="otpipe-bench-gpu-") if args.workdir is None else None
    workdir = Path(tmp.name) if tmp is not None else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = {"solver": lambda: _solver(rows, args.device, args.small, args.repeats, flash_why),
            "large": lambda: _large(rows, args.device, args.small, args.repeats, flash_why),
            "multiscale": lambda: _multiscale(rows, args.device, args.small, args.repeats),
            "digits": lambda: _digits(rows, args.device, args.small, args.digits_cpu, workdir)}
    status = 0
    _SAVE[0] = lambda: _write(args.out, args.device, flash_why, rows)
    for s in sections:
        if s not in jobs:
            print(f"bench_gpu: unknown section {s!r} (known: {', '.join(jobs)})")
            return 2
        print(f"# section {s} ({_left():.0f} s left)", flush=True)
        try:
            jobs[s]()
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append(f"| {s} | | | | {_err(exc)} | | | | |")
            status = 1
        _write(args.out, args.device, flash_why, rows)
    if tmp is not None:
        tmp.cleanup()
    _write(args.out, args.device, flash_why, rows)
    print((args.out.read_text()), flush=True)
    return status


def _write(out: Path, device: str, flash_why, rows: list) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    notes = ("S_eps value + gradient w.r.t. x, p = 2, float32, scaling 0.5, diameter sqrt(D), x ~ U[0,1]^D, "
             "y ~ 0.8 U[0,1]^D + 0.1; best of the repeats after an untimed first call. Errors: against a float64 "
             "solve (value: relative; gradient: max abs error / max abs). Speed-up: time of the anchor "
             "(flash-sinkhorn fp32 in the 20k/50k rows, tf32 in the 200k row; the full solve for multiscale) / time.")
    out.write_text(f"{_machine(device, flash_why)}\n\n{notes}\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
