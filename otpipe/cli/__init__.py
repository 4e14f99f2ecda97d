"""The ``otpipe`` command line (Click).

One module per command group in this package (``store``: synth/ingest/info, ``distances``,
``report``, ``barycenter``, ``two_sample``, ``complexity``, ``run``: workflows, ``example``); each is
registered here lazily, so that ``otpipe --help`` stays fast and a failing optional import only
affects its own command. A command parses its options, calls its function of :mod:`otpipe.api` and
echoes the result.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from otpipe._text import escape
from otpipe._version import __version__

__all__ = ["main", "cli"]

# command name -> (module, attribute)
_COMMANDS = {
    "example": ("otpipe.cli.example", "example"),
    "synth": ("otpipe.cli.store", "synth"),
    "ingest": ("otpipe.cli.store", "ingest"),
    "info": ("otpipe.cli.store", "info"),
    "barycenter": ("otpipe.cli.barycenter", "barycenter"),
    "distances": ("otpipe.cli.distances", "distances"),
    "report": ("otpipe.cli.report", "report"),
    "complexity": ("otpipe.cli.complexity", "complexity"),
    "run": ("otpipe.cli.run", "run"),
    "two-sample": ("otpipe.cli.two_sample", "two_sample"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(_COMMANDS))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in _COMMANDS:
            return cmd
        module_name, attr = _COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command whose module is not there yet
            if exc.name == module_name:
                return None
            raise
        return getattr(module, attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="otpipe")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """otpipe: optimal-transport and kernel distances between collections of measures."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or bool(os.environ.get("OTPIPE_DEBUG"))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr: ``otpipe: warning: ...`` (no source line, no path)."""
    click.echo(f"otpipe: warning: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors and a non-zero exit on bad input; Ctrl-C exits with 130
    after the command saved what was done (its message says how to resume)."""
    import warnings

    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("OTPIPE_DEBUG"))
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="otpipe", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # Click turns Ctrl-C into Abort; otpipe.engine.interrupt.Interrupted (its cause) says how to resume
        cause = exc.__cause__ if isinstance(exc, click.exceptions.Abort) else exc
        msg = str(cause).strip() if isinstance(cause, KeyboardInterrupt) else ""
        click.echo(f"Interrupted: {msg}" if msg else "Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, OSError) as exc:
        if debug:
            raise
        click.echo(f"Error: {escape(str(exc))}", err=True)
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:  # unexpected: still one line unless asked
        if debug:
            raise
        click.echo(f"Error: {type(exc).__name__}: {escape(str(exc))} (run with --debug for the traceback)", err=True)
        sys.exit(1)
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    main()
