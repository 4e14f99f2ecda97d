"""``otpipe barycenter COLLECTION --out OUT``: one barycenter per group, as a collection store and a PNG."""
from __future__ import annotations

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

__all__ = ["barycenter"]


@click.command("barycenter")
@click.argument("collection", type=click.Path())
@out_option("Collection store to write (one measure per group); a PNG goes next to it.")
@click.option("--group-by", type=click.Choice(["label", "none"]), default="label", show_default=True)
@click.option("--groups", default=None, help="Only these labels (comma-separated).")
@click.option("--weights", default=None, help="Barycentric weights w1,w2,... (one per measure, summing to one; single group).")
@click.option("--method", type=click.Choice(["auto", "free", "fixed"]), default="auto", show_default=True,
              help="free support, fixed support on the pixel grid (images), or auto (fixed for grid inputs).")
@click.option("--n-points", type=int, default=None, help="Support size of free-support barycenters (default: largest input).")
@click.option("--init", type=click.Choice(["sample", "mean"]), default="sample", show_default=True)
@click.option("--blur", type=float, default=None, help="Default: 0.02 x diameter (free), one pixel (fixed).")
@click.option("--p", type=float, default=2.0, show_default=True)
@click.option("--tol", type=float, default=None)
@click.option("--max-iter", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--grid", type=float, default=None, help="Pixel spacing of grid inputs (default: detected).")
@click.option("--biased", is_flag=True, help="Fixed support without debiasing (plain IBP).")
@click.option("--learn-weights", is_flag=True, help="Free support: also optimise the barycenter's weights.")
@click.option("--plot", type=click.Path(), default=None, help="PNG to write (default: OUT with .png).")
@resume_option
@overwrite_option
@dry_run_option("Print the groups (measures, points, method) and exit; compute and write nothing.")
@json_option("Print the summary as JSON on stdout (groups, iterations, convergence).")
@progress_option
@quiet_option
@cluster_options
def barycenter(collection, out, dry_run, as_json, no_progress, quiet, **kw):
    """Wasserstein barycenter of each group of COLLECTION (debiased Sinkhorn, free or fixed support).

    Warns on stderr, naming the groups, when a barycenter stops at --max-iter without converging.
    Each group's barycenter is stored in OUT as soon as it is done: Ctrl-C keeps the finished
    groups (exit status 130) and --resume computes only the missing ones.
    """
    from otpipe import api

    setup_logging(quiet)
    spec = client_from_options(kw)
    res = api.barycenter(collection, out=out, dry_run=dry_run, cluster=spec, progress=not (no_progress or quiet), **kw)
    if dry_run:
        plan = res
        if as_json:
            echo_json(plan)
        else:
            click.echo(f"plan: {plan['n_groups']} barycenter(s) of {collection} -> {out}")
            for g, d in plan["groups"].items():
                click.echo(f"  {g}: {d['measures']} measures, {d['points']} points, {d['method']} support"
                           + (f" of {d['support']} points" if d["method"] == "free" else ""))
        return
    summary = res
    if as_json:
        echo_json(summary)
    elif not quiet:
        click.echo(f"wrote {summary['out']} and {summary['plot']}: {len(summary['groups'])} barycenter(s)")
        for g, d in summary["groups"].items():
            click.echo(f"  {g}: {d['method']}, {d['n_measures']} measures, {d['n_points']} points, "
                       f"{d['n_iter']} iterations, {'converged' if d['converged'] else 'NOT converged'}")
