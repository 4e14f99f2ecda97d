"""``otpipe two-sample``: permutation two-sample tests over collections, with a report plot.

``otpipe two-sample COLLECTION [OTHER] --out OUT.zarr [--by auto|measure|label|collection] ...`` writes
the xarray Dataset of :func:`otpipe.api.two_sample` (checkpointed:
Ctrl-C keeps the finished tests, ``--resume`` continues) and a PNG next to it (``OUT.png``): the
null histogram with the observed statistic for a single test, ``-log10 p`` with the corrections'
rejections marked for many (``otpipe report OUT`` gives the full page).
"""
from __future__ import annotations

import time
from pathlib import Path

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

#: the --by choices (as in otpipe.pipelines.two_sample.BY, without importing it at start-up)
BY_CHOICES = ("auto", "measure", "label", "collection")

__all__ = ["two_sample"]


@click.command("two-sample")
@click.argument("collection", type=click.Path(file_okay=False))
@click.argument("other", required=False, type=click.Path(file_okay=False))
@out_option("Result Zarr store (xarray Dataset), checkpointed while it runs.", file_okay=False)
@click.option("--statistic", type=click.Choice(["sinkhorn", "mmd", "energy"]), default="sinkhorn", show_default=True)
@click.option("--by", type=click.Choice(list(BY_CHOICES)), default="auto", show_default=True,
              help="Groups tested against each other: the pooled measures of each label, each measure, or whole "
                   "collections (two collections). auto: label when the collection(s) have labels (one test per "
                   "pair of labels), else measure (one test per pair of measures: N(N-1)/2 tests for N measures). "
                   "The number of tests is printed before the run starts.")
@click.option("--n-permutations", type=click.IntRange(min=1), default=999, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed: test (i, j) uses SeedSequence([seed, i, j]).")
@click.option("--block-size", type=click.IntRange(min=1), default=100, show_default=True, help="Permutations per batched solve.")
@click.option("--p", "p", type=float, default=2.0, show_default=True, help="Sinkhorn: exponent of the cost |x-y|^p/p.")
@click.option("--blur", type=float, default=0.05, show_default=True, help="Sinkhorn: eps = blur^p.")
@click.option("--scaling", type=float, default=0.5, show_default=True, help="Sinkhorn: eps-scaling factor.")
@click.option("--tol", type=float, default=None, help="Sinkhorn: converge to this marginal error (default: fixed schedule).")
@click.option("--backend", default="auto", show_default=True, help="Sinkhorn reduction backend.")
@click.option("--sigma", multiple=True, help="MMD Gaussian bandwidth(s) or 'median' (default); repeat for several.")
@resume_option
@overwrite_option
@dry_run_option("Print the tests (how many, which groups) and a cost estimate (tests x permutations x the time "
                "of one block of permutations, measured here), and exit.")
@click.option("--no-plot", is_flag=True, help="Do not write the report PNG.")
@json_option()
@progress_option
@quiet_option
@cluster_options
def two_sample(collection, other, out, statistic, by, n_permutations, seed, block_size, p, blur, scaling, tol,
               backend, sigma, resume, overwrite, dry_run, no_plot, as_json, no_progress, quiet, **kw):
    """Permutation two-sample tests between the labels (or measures) of COLLECTION, or against OTHER."""
    import numpy as np

    from otpipe import api
    from otpipe.engine import estimate

    setup_logging(quiet)
    spec = client_from_options(kw)
    outp = Path(out) if out is not None else None  # without --out: the result in memory, no PNG (a dry run: a plan)
    t0 = time.perf_counter()
    res = api.two_sample(collection, other, out=outp, statistic=statistic, by=by, n_permutations=n_permutations,
                         seed=seed, block_size=block_size, p=p, blur=blur, scaling=scaling, tol=tol, backend=backend,
                         sigma=sigma, resume=resume, overwrite=overwrite, dry_run=dry_run, no_plot=no_plot,
                         cluster=spec, progress=not (no_progress or quiet))
    if dry_run:
        if as_json:
            echo_json(res)
        else:
            done = f" ({res['tests_done']} already done)" if "tests_done" in res else ""
            click.echo(f"plan: {res['description']}{done}\n  {estimate.line(res)}\n"
                       f"  timed: one block of permutations of {res['timed_test']}")
        warn = estimate.warning_text(res, "consider --by label, fewer --n-permutations, --statistic energy or mmd "
                                          "(no Sinkhorn solves), or more workers")
        if warn:
            click.echo(f"otpipe: warning: {warn}", err=True)
        return
    ds = res
    n_tests = int(ds.attrs["n_tests"])
    summary = {"out": None if outp is None else str(outp), "n_tests": n_tests, "by": ds.attrs.get("by"), "statistic": statistic,
               "n_permutations": int(n_permutations), "seconds": round(time.perf_counter() - t0, 3)}
    pv = ds["pvalue"].values
    if n_tests == 1:
        summary["pvalue"] = float(pv[np.isfinite(pv)][0])
        summary["statistic_value"] = float(ds["statistic"].values[np.isfinite(pv)][0])
    else:
        summary["rejected_fdr_0.05"] = int(np.nansum(ds["p_bh"].values <= 0.05) // (1 if other is not None else 2))
    for k in ("marginal_error_median", "marginal_error_max", "convergence_warning"):
        if k in ds.attrs:
            summary[k] = ds.attrs[k]
    if not no_plot and outp is not None:
        summary["plot"] = str(outp.with_suffix(".png"))
    if as_json:
        echo_json(summary)
    elif not quiet:
        msg = (f"{n_tests} test(s) ({statistic}, {n_permutations} permutations, by {summary['by']}) "
               f"in {summary['seconds']:.1f} s -> " + (str(outp) if outp is not None else "not stored (pass --out to keep it)"))
        if n_tests == 1:
            msg += f"; p = {summary['pvalue']:.4g}"
        else:
            msg += f"; {summary['rejected_fdr_0.05']} rejected at FDR 0.05"
        if "plot" in summary:
            msg += f"; plot {summary['plot']}"
        click.echo(msg)
