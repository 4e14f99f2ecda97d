"""``otpipe barycenter COLLECTION --out OUT``: one barycenter per group, as a collection store and a PNG."""
from __future__ import annotations

import json

import click

from ._common import client_from_options, cluster_options

__all__ = ["barycenter"]


def _floats(s: str | None):
    if s is None:
        return None
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--weights must be comma-separated numbers, got {s!r}") from None


@click.command("barycenter")
@click.argument("collection", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Collection store to write (one measure per group).")
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
@click.option("--overwrite", is_flag=True)
@cluster_options
def barycenter(collection, out, **kw):
    """Wasserstein barycenter of each group of COLLECTION (debiased Sinkhorn, free or fixed support)."""
    from ..pipeline.barycenter import run_barycenter

    spec = client_from_options(kw)
    groups = kw.pop("groups")
    summary = run_barycenter(
        collection, out, group_by=kw.pop("group_by"), groups=groups.split(",") if groups else None,
        weights=_floats(kw.pop("weights")), method=kw.pop("method"), n_points=kw.pop("n_points"), init=kw.pop("init"),
        p=kw.pop("p"), blur=kw.pop("blur"), tol=kw.pop("tol"), max_iter=kw.pop("max_iter"), seed=kw.pop("seed"),
        grid=kw.pop("grid"), debiased=not kw.pop("biased"), learn_weights=kw.pop("learn_weights"),
        overwrite=kw.pop("overwrite"), plot=kw.pop("plot"), spec=spec,
    )
    click.echo(json.dumps(summary, indent=1))
