"""Click command ``otpipe run WORKFLOW.yaml``: validate a YAML workflow spec and run it with provenance.

See :mod:`otpipe.workflows` for the spec format; imports only Click at import time.
"""
from __future__ import annotations

import click

__all__ = ["run"]


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; compute and write nothing.")
@click.option("--resume", is_flag=True, help="Keep the outputs of steps whose parameters and inputs are unchanged.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None, help="Override the spec's run_dir.")
def run(workflow, dry_run, resume, run_dir):
    """Run the workflow spec WORKFLOW (YAML): steps synth/ingest -> distances -> ... -> report, with provenance."""
    from ..workflows import run_workflow

    prov = run_workflow(workflow, dry_run=dry_run, resume=resume, run_dir=run_dir, echo=click.echo)
    if prov is not None:
        ran = sum(1 for s in prov["steps"] if s["status"] == "ran")
        changed = [f"{s['id']} ({s['changed']})" for s in prov["steps"] if str(s.get("changed", "")).startswith("changed")]
        click.echo(f"run {prov['workflow']}: {ran} step(s) ran, {len(prov['steps']) - ran} kept, "
                   f"{prov['seconds']:.1f} s -> {prov['run_dir']}/provenance.json")
        if changed:
            click.echo("changed since the last run: " + "; ".join(changed))
