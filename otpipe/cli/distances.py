"""Click command ``otpipe distances`` (``otpipe report`` lives in :mod:`otpipe.cli.report`)."""
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

__all__ = ["distances", "report"]


@click.command("distances")
@click.argument("collection", type=click.Path())
@click.option("--other", type=click.Path(), default=None, help="Second collection: an N x M run (default: N x N).")
@out_option("Result store (Zarr, xarray Dataset).")
@click.option("--loss", type=click.Choice(["sinkhorn", "energy", "gaussian", "laplacian", "hausdorff"]), default="sinkhorn", show_default=True)
@click.option("--p", "p", type=float, default=2.0, show_default=True, help="Cost exponent: |x-y|^p / p.")
@click.option("--blur", type=float, default=0.05, show_default=True, help="eps = blur^p (kernel bandwidth for gaussian/laplacian).")
@click.option("--reach", type=float, default=None, help="Unbalanced OT: KL penalty rho = reach^p.")
@click.option("--scaling", type=float, default=0.5, show_default=True, help="eps-scaling ratio in (0, 1).")
@click.option("--tol", type=float, default=None, help="Converged mode: marginal error tolerance (default: fixed schedule).")
@click.option("--max-iter", type=int, default=None, help="Iteration cap with --tol.")
@click.option("--diameter", type=float, default=None, help="Start of the eps-scaling (default: bounding box of all points).")
@click.option("--cost", type=click.Choice(["|x-y|^p/p", "|x-y|^p"]), default=None, help="Cost convention.")
@click.option("--backend", default="auto", show_default=True, help="Reduction backend: auto, cpu, triton, multiscale, tensorized, chunked, keops.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None, help="Compute dtype (default: that of the store).")
@click.option("--tile", type=int, default=None, help="Tile side: tile x tile pairs per task (default: automatic).")
@resume_option
@overwrite_option
@click.option("--verify", is_flag=True, help="Re-hash the input collection(s) against their recorded digests first (reads all the data).")
@dry_run_option("Print the plan (pairs, tiles, solves) and a cost estimate (a few solves timed here), and exit.")
@json_option()
@progress_option
@quiet_option
@cluster_options
def distances(collection, other, out, dry_run, as_json, no_progress, quiet, **kw):
    """Pairwise Sinkhorn divergences (or kernel losses) of COLLECTION (N x N) or COLLECTION x --other (N x M).

    Runs on Dask (an embedded LocalCluster on 127.0.0.1 by default), tile by tile; the result is
    an xarray Dataset in Zarr, checkpointed per tile: after an interruption (Ctrl-C keeps the
    finished tiles) rerun with --resume. Warns when the solves did not converge (see --tol).
    """
    setup_logging(quiet)
    from otpipe import api

    spec = client_from_options(kw)
    res = api.distances(collection, other, out=out, cluster=spec, progress=not no_progress and not quiet,
                        dry_run=dry_run, **kw)
    if dry_run:
        from otpipe.engine import estimate

        s = res
        if as_json:
            echo_json(s)
        else:
            click.echo(
                f"plan: {s['source']} x {s['target']} ({'symmetric' if s['symmetric'] else 'cross'}), tile {s['tile']}\n"
                f"  tiles (tasks): {s['tiles']}" + (f" ({s['tiles_done']} already done)" if "tiles_done" in s else "") + "\n"
                f"  pairs:         {s['pairs']}\n"
                f"  self terms:    {s['self_terms']} in {s['self_tasks']} tasks\n"
                f"  solves:        {s['solves']} (pair by pair: {s['solves_pair_by_pair']})\n"
                f"  {estimate.line(s)}"
            )
        warn = estimate.warning_text(s, "use fewer measures (a selection), a larger --blur, or more workers")
        if warn:
            click.echo(f"otpipe: warning: {warn}", err=True)
        return
    a = res.attrs
    keys = ("tiles_computed", "tiles_resumed", "self_tasks_computed", "pairs_computed", "seconds", "n_tiles", "tile",
            "diameter", "complete", "marginal_error_median", "marginal_error_max", "convergence_warning")
    if as_json:
        echo_json({k: a.get(k) for k in keys} | {"out": str(out)})
    elif not quiet:
        click.echo(f"wrote {out}: {res.sizes['source']} x {res.sizes['target']} {a.get('loss', '')} matrix, "
                   f"{a.get('pairs_computed', 0)} pairs computed now ({a.get('seconds', 0.0):.1f} s)")


from otpipe.cli.report import report  # noqa: E402  (was defined here; kept importable)
