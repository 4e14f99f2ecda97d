"""Reproducible workflows: a YAML spec of otpipe steps (synth/ingest -> distances -> ... -> report) run with
provenance (:mod:`~otpipe.workflows.runner`; the ``otpipe run`` command is :mod:`otpipe.cli.run`).

A step calls one function of the API registry (:data:`otpipe.api.STEPS`): the runner checks a step's params
against that function's annotated parameters and calls it, so this floor sits above the API and below the CLI
(docs/architecture.md).
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
