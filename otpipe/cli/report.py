"""``otpipe report RESULT --out DIR``: an HTML page (``DIR/index.html`` + PNGs) for any otpipe result."""
from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["report"]


@click.command("report")
@click.argument("result", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Directory for index.html and its PNGs (created if needed).")
@click.option("--title", default=None, help="Page title.")
@click.option("--max-measures", type=click.IntRange(min=1), default=30, show_default=True,
              help="Collections: measures drawn (the same number of each label).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (files, summary lines, notes) on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def report(result, out, title, max_measures, as_json, quiet):
    """An HTML report (index.html + PNGs, with a short text summary) of any otpipe RESULT, by its type.

    \b
    collection    a sample of each label: images upright on one common grid, or point clouds
    barycenters   each group's barycenter (image or cloud) with its convergence flag
    distances     clustered heatmap with label colour strips, MDS embedding, 1-NN label
                  accuracy, convergence summary (marginal errors, iterations)
    two-sample    table of statistics, p-values and Holm / Benjamini-Hochberg p-values;
                  -log10 p with the rejections marked (the permutation null for one test)
    complexity    decay curves R(N) with the fitted rates kappa and their intervals
    """
    from otpipe import api

    out_p = Path(out)
    old_form = out_p.suffix.lower() == ".png"  # the old form: --out FILE.png (FILE.html next to it)
    if old_form:
        from otpipe.report import write_report

        files = write_report(result, out_p.parent if str(out_p.parent) else Path("."), title=title,
                             max_measures=max_measures, page=out_p.with_suffix(".html").name,
                             png_names={"__first__": out_p.name})
    else:
        files = api.report(result, out=out_p, title=title, max_measures=max_measures)
    if old_form:  # warned once it worked: an error stays one line
        click.echo(f"Warning: --out {out} (a PNG file) is deprecated: --out takes a directory; wrote "
                   f"{files.html.name} and its PNGs next to it", err=True)
    if as_json:
        click.echo(json.dumps(files.as_dict()))
        return
    if quiet:
        return
    for line in files.lines:
        click.echo(line)
    for line in files.notes:
        click.echo(f"Note: {line}", err=True)
    click.echo(f"wrote {files.html} ({len(files.pngs)} figure(s))", err=True)
