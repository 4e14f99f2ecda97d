"""Click command ``otpipe run WORKFLOW.yaml``: validate a YAML workflow spec and run it with provenance.

See :mod:`otpipe.workflows.runner` for the spec format (its steps call the functions of :mod:`otpipe.api`);
imports only Click at import time.
"""
from __future__ import annotations

import click

from otpipe.cli.options import dry_run_option, echo_json, json_option, quiet_option, setup_logging

__all__ = ["run"]


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@dry_run_option("Validate and print the plan; compute and write nothing.")
@click.option("--resume", is_flag=True, help="Keep the outputs of steps whose parameters and inputs are unchanged.")
@click.option("--run-dir", "--out", "-o", "run_dir", type=click.Path(file_okay=False), default=None,
              help="Directory of the run (default: the spec's run_dir).")
@json_option("Print the run's summary (steps, status, changes, output hashes) as JSON on stdout.")
@quiet_option
def run(workflow, dry_run, resume, run_dir, as_json, quiet):
    """Run the workflow spec WORKFLOW (YAML): steps synth/ingest -> distances -> ... -> report, with provenance."""
    from otpipe.workflows.runner import run_workflow

    setup_logging(quiet)
    lines: list[str] = []
    echo = lines.append if (as_json or quiet) else click.echo
    prov = run_workflow(workflow, dry_run=dry_run, resume=resume, run_dir=run_dir, echo=echo)
    if prov is None:
        if as_json:
            echo_json({"dry_run": True, "plan": lines})
        return
    ran = sum(1 for s in prov["steps"] if s["status"] == "ran")
    changed = [f"{s['id']} ({s['changed']})" for s in prov["steps"] if str(s.get("changed", "")).startswith("changed")]
    if as_json:
        keys = ("id", "step", "status", "changed", "reproduced", "seconds", "output_hash")
        echo_json({"workflow": prov["workflow"], "run_dir": str(prov["run_dir"]), "seconds": prov["seconds"],
                   "steps": [{k: s.get(k) for k in keys} for s in prov["steps"]]})
    elif not quiet:
        click.echo(f"run {prov['workflow']}: {ran} step(s) ran, {len(prov['steps']) - ran} kept, "
                   f"{prov['seconds']:.1f} s -> {prov['run_dir']}/provenance.json")
        if changed:
            click.echo("changed since the last run: " + "; ".join(changed))
