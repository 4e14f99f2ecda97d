"""Click command ``otpipe complexity``: a sample-complexity study on Dask (see :mod:`otpipe.pipelines.complexity`).

Imports only Click at import time; NumPy, torch, Dask and xarray are loaded when the command runs.
"""
from __future__ import annotations

import time

import click

from otpipe.cli.options import (
    client_from_options,
    cluster_options,
    dry_run_option,
    echo_json,
    json_option,
    out_option,
    overwrite_option,
    progress_option,
    quiet_option,
    resume_option,
    setup_logging,
)

__all__ = ["complexity"]


def _floats(ctx, param, value):
    try:
        return [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _ints(ctx, param, value):
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


@click.command()
@out_option("Result Dataset (Zarr store) to write, checkpointed cell by cell.")
@click.option("--eps", default="0.01,0.1,1,10", show_default=True, callback=_floats, help="Temperatures eps (blur = eps^(1/p)).")
@click.option("--dims", default="2,3,5", show_default=True, callback=_ints, help="Dimensions d.")
@click.option("--n", "n", default="10,30,100,300,1000", show_default=True, callback=_ints, help="Sample sizes N.")
@click.option("--reps", type=int, default=100, show_default=True, help="Repetitions per cell.")
@click.option("--p", type=float, default=1.5, show_default=True, help="Cost |x - y|^p.")
@click.option("--divergence", type=click.Choice(["sinkhorn", "transport"]), default="sinkhorn", show_default=True,
              help="Divergence summarised by mean/std/kappa (both are computed unless --only).")
@click.option("--only", is_flag=True, help="Compute only the chosen --divergence (half the work).")
@click.option("--distribution", type=click.Choice(["uniform", "gaussian", "mixture"]), default="uniform", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--tol", type=float, default=1e-4, show_default=True, help="Marginal-error tolerance of each solve.")
@click.option("--scaling", type=float, default=0.7, show_default=True, help="eps-scaling factor (start at diameter^p).")
@click.option("--max-iter", type=int, default=None, help="Iteration cap per solve.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True)
@click.option("--figures", type=click.Path(file_okay=False), default=None,
              help="Directory for the figures and kappa table (default: <OUT stem>_figures).")
@click.option("--no-figures", is_flag=True, help="Do not draw figures.")
@resume_option
@overwrite_option
@dry_run_option("Print the grid and a cost estimate (one repetition per eps timed here), and exit.")
@json_option()
@progress_option
@quiet_option
@cluster_options
def complexity(out, dry_run, as_json, no_progress, quiet, **kw):
    """Sample complexity: E D_eps(mu_N, nu_N) ~ N^-kappa over a grid of eps, d and N (Genevay et al. 2018, App. A)."""
    from otpipe import api
    from otpipe.engine import estimate
    from otpipe.report.complexity import kappa_table

    setup_logging(quiet)
    spec = client_from_options(kw)
    t0 = time.perf_counter()
    res = api.complexity(out=out, dry_run=dry_run, cluster=spec, progress=not (no_progress or quiet), **kw)
    if dry_run:
        if as_json:
            echo_json(res)
        else:
            done = f" ({res['cells_done']} already done)" if "cells_done" in res else ""
            click.echo(f"plan: {res['cells']} cells{done} x {res['reps']} repetitions ({', '.join(res['divergences'])}): "
                       f"{res['solves']} Sinkhorn solves\n  {estimate.line(res)}\n  timed: {res['timed']}")
        warn = estimate.warning_text(res, "use fewer --reps, smaller --n, or more workers")
        if warn:
            click.echo(f"otpipe: warning: {warn}", err=True)
        return
    ds = res
    n_cells = ds.sizes["eps"] * ds.sizes["dim"] * ds.sizes["n"]
    seconds = time.perf_counter() - t0
    if as_json:
        kappa = {f"eps={float(e):g}": {f"d={int(d)}": [float(ds[v].values[i, j]) for v in ("kappa", "kappa_low", "kappa_high")]
                                      for j, d in enumerate(ds["dim"].values)} for i, e in enumerate(ds["eps"].values)}
        echo_json({"out": str(out), "cells": n_cells, "reps": kw["reps"], "seconds": round(seconds, 3), "kappa": kappa,
                   **{k: ds.attrs.get(k) for k in ("marginal_error_median", "marginal_error_max", "convergence_warning")}})
    elif not quiet:
        click.echo(kappa_table(ds))
        click.echo(f"wrote {out}: {n_cells} cells x {kw['reps']} reps ({seconds:.1f} s)")
