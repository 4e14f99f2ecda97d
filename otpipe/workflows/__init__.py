"""Reproducible workflows: a YAML spec of otpipe steps (synth/ingest -> distances -> ... -> report) run with
provenance (:mod:`~otpipe.workflows.runner`), and the ``otpipe run`` command (:mod:`~otpipe.workflows.command`).

A step is one otpipe command: the runner validates a step's params against that command's options and runs it, so
this floor sits above the CLI (docs/architecture.md).
"""
from __future__ import annotations

from otpipe.workflows.runner import (
    MAX_ALIAS_NODES,
    MAX_ID,
    MAX_SHOWN,
    STEP_RECORD,
    STEP_TYPES,
    Step,
    Workflow,
    load_spec,
    run_workflow,
    tree_hash,
)

__all__ = ["load_spec", "Workflow", "Step", "run_workflow", "tree_hash", "STEP_TYPES", "STEP_RECORD", "MAX_ID",
           "MAX_ALIAS_NODES", "MAX_SHOWN"]
