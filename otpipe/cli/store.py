"""Click commands ``otpipe synth``, ``otpipe ingest`` and ``otpipe info``.

Registered lazily by :mod:`otpipe.cli`. This module imports only Click at import time (so that
``otpipe --help`` stays fast); Zarr and NumPy are imported when a command runs. Errors are
raised as ``ValueError`` / ``OSError`` and turned into one-line messages by ``otpipe.cli.main``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from otpipe.cli.options import dry_run_option, echo_json, json_option, out_option, overwrite_option, quiet_option

__all__ = ["synth", "ingest", "info"]

_DTYPE = click.Choice(["float32", "float64"])


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _summary(c, seconds: float) -> str:
    return (
        f"wrote {c.path}: {len(c)} measures, {c.n_points} points, D={c.dim}, {c.dtype}, "
        f"{c.n_shards} shard(s), {c.content_hash} ({seconds:.1f} s)"
    )


def _summary_dict(c, seconds: float) -> dict:
    return {"out": str(c.path), "n_measures": len(c), "n_points": int(c.n_points), "dim": int(c.dim),
            "dtype": str(c.dtype), "n_shards": int(c.n_shards), "hash": str(c.content_hash), "seconds": round(seconds, 3)}


@click.command()
@click.argument("out_arg", metavar="[OUT]", required=False, type=click.Path(file_okay=False))
@out_option("Collection to write (a Zarr store).", required=False, file_okay=False)
@click.option("--kind", "kind", multiple=True, default=("mixed",), show_default=True,
              help="Family: uniform, gaussian, mixture, circle, sphere, torus, or mixed (all valid for --dim). "
                   "Repeat or comma-separate for several (cycled).")
@click.option("--n-measures", type=click.IntRange(min=1), default=10, show_default=True, help="Number of measures.")
@click.option("--n-points", type=click.IntRange(min=1), default=100, show_default=True, help="Points per measure (maximum with --min-points).")
@click.option("--min-points", type=click.IntRange(min=1), default=None, help="Draw sizes uniformly in [MIN_POINTS, N_POINTS].")
@click.option("--dim", type=click.IntRange(min=1), default=2, show_default=True, help="Dimension D.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed (measure i uses rng([seed, i])).")
@click.option("--weights", type=click.Choice(["uniform", "random"]), default="uniform", show_default=True, help="Uniform 1/N or random positive weights.")
@click.option("--noise", type=click.FloatRange(min=0), default=0.05, show_default=True, help="Noise level of the shapes.")
@click.option("--spread", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Random centres in [-spread, spread]^D (0: all centred).")
@click.option("--dtype", type=_DTYPE, default="float32", show_default=True, help="Storage dtype.")
@click.option("--shard-points", type=click.IntRange(min=1), default=None, help="Target points per shard (default: as many as fit in 16 MiB, e.g. 2^20 points in R^3 float32).")
@overwrite_option
@dry_run_option("Print what would be written (measures, points, families) and exit; write nothing.")
@json_option()
@quiet_option
def synth(out_arg, out, dry_run, as_json, quiet, **kw):
    """Write a reproducible synthetic collection of measures to --out (labels = families).

    The positional OUT of otpipe 0.1 (otpipe synth OUT) still works, with a deprecation warning.
    """
    from otpipe import api

    if out_arg is not None:
        if out is not None and out != out_arg:
            raise click.UsageError("give the output once, as --out (the positional OUT is deprecated)")
        click.echo("otpipe: warning: `otpipe synth OUT` is deprecated and will be removed in the next release: "
                   "use `otpipe synth --out OUT`", err=True)
        out = out_arg
    if out is None:
        raise click.UsageError("Missing option '-o' / '--out'.")
    t0 = time.perf_counter()
    res = api.synth(out=out, dry_run=dry_run, **kw)
    if dry_run:
        if as_json:
            echo_json(res)
        else:
            n_points, min_points = kw["n_points"], kw["min_points"]
            sizes = f"{min_points}-{n_points}" if min_points else f"{n_points}"
            click.echo(f"plan: {out}: {res['n_measures']} measures of {sizes} points in D={res['dim']} "
                       f"({', '.join(res['kinds'])}, cycled), {res['dtype']}, at most {_human(res['bytes_at_most'])}")
        return
    _report(res, time.perf_counter() - t0, as_json, quiet)


#: notes printed one per line after the summary (then a count)
_MAX_NOTES = 5


def _report(c, seconds: float, as_json: bool, quiet: bool, notes: list[str] | None = None) -> None:
    if as_json:
        d = _summary_dict(c, seconds)
        if notes:
            d["notes"] = notes
        echo_json(d)
    elif not quiet:
        click.echo(_summary(c, seconds))
        for n in (notes or [])[:_MAX_NOTES]:
            click.echo(f"  {n}")
        if notes and len(notes) > _MAX_NOTES:
            click.echo(f"  ... and {len(notes) - _MAX_NOTES} more such notes (--json lists them all)")


@click.command()
@click.argument("sources", nargs=-1, required=True)
@out_option("Collection to write (a Zarr store).", file_okay=False)
@click.option("--format", "format", type=click.Choice(["auto", "npy", "npz", "csv", "txt", "xyz", "ply", "png", "jpg", "image"]),
              default="auto", show_default=True, help="Input format (auto: by file extension).")
@click.option("--append", is_flag=True, help="Append to an existing collection at --out.")
@overwrite_option
@click.option("--labels", type=click.Choice(["none", "parent"]), default="none", show_default=True,
              help="parent: label = name of the file's directory.")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="CSV with columns file (or path/name), label[, name] giving labels (and names).")
@click.option("--names", type=click.Choice(["stem", "relpath"]), default="stem", show_default=True,
              help="Measure names: file stems, or paths relative to the source directory.")
@click.option("--weight-column", default=None, help="Column index/name (tables) or vertex property (PLY) holding weights.")
@click.option("--columns", default=None, help="Comma-separated coordinate columns (indices or names).")
@click.option("--invert", is_flag=True, help="Images: use vmax - intensity (dark = mass).")
@click.option("--threshold", type=float, default=None, help="Images: intensities below this become 0.")
@click.option("--downsample", type=click.IntRange(min=1), default=1, show_default=True, help="Images: sum over KxK pixel blocks.")
@click.option("--dtype", type=_DTYPE, default=None, help="Storage dtype (default float32; with --append, the store's).")
@click.option("--shard-points", type=click.IntRange(min=1), default=None, help="Target points per shard (default: as many as fit in 16 MiB, e.g. 2^20 points in R^3 float32).")
@click.option("--follow-symlinks", is_flag=True,
              help="Also read symbolic links to files outside the folder being ingested (the directory or glob "
                   "given, or a named file's folder); refused by default.")
@dry_run_option("List the files that would be read (names, labels, formats) and exit; read and write no data.")
@json_option()
@quiet_option
def ingest(sources, out, dry_run, as_json, quiet, **kw):
    """Ingest files, directories or globs of point clouds / images (SOURCES) into a collection.

    One file is one measure: .npy/.npz arrays, .csv/.txt/.xyz columns, .ply vertices, images
    (.png/.jpg: weights = pixel intensities, times alpha/255 for images with transparency).
    Names come from file stems and must be unique. A text table's first row is read as column
    names only when none of its fields is a number or a missing value (NA, empty, ...); the
    summary lists the files read with a header. Rows that do not parse are refused with their
    line number.
    """
    from otpipe import api

    if dry_run:
        found = api.ingest(list(sources), out=out, dry_run=True, **kw)
        rows = found["files"]
        if as_json:
            echo_json(found)
        else:
            labs = sorted({str(r["label"]) for r in rows if r["label"] is not None})
            click.echo(f"plan: {len(rows)} file(s) -> {out}" + (f" ({len(labs)} labels: {', '.join(labs[:10])}"
                                                                   f"{', ...' if len(labs) > 10 else ''})" if labs else ""))
            for r in rows[:20]:
                click.echo(f"  {r['file']} -> {r['name']}" + (f" [{r['label']}]" if r["label"] is not None else ""))
            if len(rows) > 20:
                click.echo(f"  ... ({len(rows) - 20} more)")
        return
    t0 = time.perf_counter()
    notes: list[str] = []
    c = api.ingest(list(sources), out=out, notes=notes, **kw)
    _report(c, time.perf_counter() - t0, as_json, quiet, notes)


@click.command()
@click.argument("store", type=click.Path())
@json_option("Print the summary as JSON.")
@click.option("--verify", is_flag=True, help="Recompute the content hash from the data (reads everything).")
@quiet_option
def info(store, as_json, verify, quiet):
    """Summarise a collection (counts, dimension, sizes, labels, dtype, hash, chunking) or a result store."""
    from otpipe.engine.result import describe
    from otpipe.store.collection import open as _open

    r = describe(store) if Path(store).exists() else None
    if r is not None:  # a result: what it holds, not a refusal
        if as_json:
            click.echo(json.dumps(r, indent=2, default=str))
        elif not quiet:
            lines = [f"result      {r['path']}  ({r['type']}{'' if r.get('complete', True) else ', unfinished'})"]
            for name, a in r["arrays"].items():
                dims = f" ({', '.join(a['dims'])})" if a["dims"] else ""
                lines.append(f"  {name:<22} {' x '.join(map(str, a['shape'])) or 'scalar'}{dims}  {a['dtype']}")
            if r.get("parameters"):
                lines.append("parameters  " + ", ".join(f"{k}={v}" for k, v in r["parameters"].items() if v is not None))
            for k, v in r.items():
                if k not in ("path", "type", "arrays", "parameters"):
                    lines.append(f"{k:<11} {v}" if len(k) < 12 else f"{k}: {v}")
            click.echo("\n".join(lines))
        return
    c = _open(store)
    d = c.info()
    if verify:
        d["verified"] = c.verify()
    if as_json:
        click.echo(json.dumps(d, indent=2))
    elif quiet:  # the exit status tells (with --verify: 1 on a mismatch)
        pass
    else:
        s = d["points_per_measure"]
        lines = [
            f"collection  {d['path']}  ({d['format']} v{d['format_version']}, {d['created_by']}, created {d['created']})",
            f"measures    {d['n_measures']}",
            f"points      {d['n_points']}  (per measure: min {s['min']}, median {s['median']:g}, max {s['max']})",
            f"dimension   {d['dim']}",
            f"dtype       {d['dtype']}",
            f"shards      {d['n_shards']}  (shard_points {d['shard_points']}, chunk_points {d['chunk_points']}, {d['n_rows']} rows)",
            f"size        {_human(d['data_bytes'])} data, {_human(d['stored_bytes'])} on disk",
            f"hash        {d['hash']}",
        ]
        if d["labels"] is not None:
            lab = ", ".join(f"{k}: {v}" for k, v in list(d["labels"].items())[:20])
            more = f", ... ({len(d['labels'])} labels)" if len(d["labels"]) > 20 else ""
            lines.append(f"labels      {lab}{more}")
        else:
            lines.append("labels      (none)")
        if verify:
            lines.append(f"verified    {'OK' if d['verified'] else 'MISMATCH'}")
        click.echo("\n".join(lines))
    if verify and not d["verified"]:
        c.verify(raise_on_error=True)
