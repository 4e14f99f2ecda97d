"""Click command ``otpipe complexity``: a sample-complexity study on Dask (see :mod:`otpipe.pipeline.complexity`).

Imports only Click at import time; NumPy, torch, Dask and xarray are loaded when the command runs.
"""
from __future__ import annotations

import logging
import time

import click

from ._common import client_from_options, cluster_options

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
@click.option("--out", "-o", required=True, type=click.Path(), help="Result Dataset (Zarr store) to write.")
@click.option("--eps", default="0.01,0.1,1,10", show_default=True, callback=_floats, help="Temperatures eps (blur = eps^(1/p)).")
@click.option("--dims", default="2,3,5", show_default=True, callback=_ints, help="Dimensions d.")
@click.option("--n", "ns", default="10,30,100,300,1000", show_default=True, callback=_ints, help="Sample sizes N.")
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
@click.option("--overwrite", is_flag=True, help="Replace an existing result at OUT.")
@cluster_options
def complexity(out, eps, dims, ns, reps, p, divergence, only, distribution, seed, tol, scaling, max_iter, dtype,
               figures, no_figures, overwrite, **kw):
    """Sample complexity: E D_eps(mu_N, nu_N) ~ N^-kappa over a grid of eps, d and N (Genevay et al. 2018, App. A)."""
    from ..pipeline.complexity import kappa_table, run_study

    _log = logging.getLogger("otpipe")
    if not _log.handlers:
        _log.addHandler(logging.StreamHandler())
        _log.setLevel(logging.INFO)
    spec = client_from_options(kw)
    t0 = time.perf_counter()
    ds = run_study(
        out, eps=eps, dims=dims, ns=ns, reps=reps, p=p, divergence=divergence,
        divergences=(divergence,) if only else ("sinkhorn", "transport"), distribution=distribution, seed=seed,
        tol=tol, scaling=scaling, max_iter=max_iter, dtype=dtype, overwrite=overwrite,
        figures=None if no_figures else (figures or "auto"), cluster=spec,
    )
    n_cells = ds.sizes["eps"] * ds.sizes["dim"] * ds.sizes["n"]
    click.echo(kappa_table(ds))
    click.echo(f"wrote {out}: {n_cells} cells x {reps} reps ({time.perf_counter() - t0:.1f} s)")
