"""`iqa-export`: the command line, a thin layer over the library.

Each command parses options, builds a config, calls one public function and prints the
result. Exit codes: 0 ok, 1 user error (a ``CdiqaError``, printed without a traceback),
2 internal bug.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from cdiqa.errors import CdiqaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, export, calibrate, build and serve the cdiqa FR-IQA model.")


def echo_json(obj) -> None:
    """Print machine-readable output."""
    typer.echo(json.dumps(obj, indent=2, default=str))


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator:
    """A rich progress bar on stderr; yields ``advance(n=1)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.advance(task, n)

        yield advance


# ---- commands (each one short; the work lives in the library) ----


@app.command()
def version() -> None:
    """Print the cdiqa version."""
    from cdiqa import __version__

    typer.echo(__version__)


def main() -> None:
    """Console entry point: user errors exit 1 with one line, bugs exit 2."""
    try:
        app(standalone_mode=False)
    except CdiqaError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        sys.exit(getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as exc:  # click usage errors are handled below
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
