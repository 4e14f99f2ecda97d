"""The ``otpipe`` command line (Click).

One module per command group in this package (``store``: synth/ingest/info, ``distances``,
``report``, ``barycenter``, ``two_sample``, ``complexity``, ``workflows``: run, ``example``); each is
registered here lazily, so that ``otpipe --help`` stays fast and a failing optional import only
affects its own command.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from .._text import escape
from .._version import __version__

__all__ = ["main", "cli"]

# command name -> (module, attribute)
_COMMANDS = {
    "example": ("otpipe.cli.example", "example"),
    "synth": ("otpipe.cli.store", "synth"),
    "ingest": ("otpipe.cli.store", "ingest"),
    "info": ("otpipe.cli.store", "info"),
    "barycenter": ("otpipe.cli.barycenter", "barycenter"),
    "distances": ("otpipe.cli.distances", "distances"),
    "report": ("otpipe.cli.distances", "report"),
    "complexity": ("otpipe.cli.complexity", "complexity"),
    "run": ("otpipe.cli.workflows", "run"),
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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors and a non-zero exit on bad input."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("OTPIPE_DEBUG"))
    try:
        cli.main(args=argv, prog_name="otpipe", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
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


if __name__ == "__main__":  # pragma: no cover
    main()
