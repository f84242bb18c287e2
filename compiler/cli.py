"""The `aotc` command line."""
from __future__ import annotations

import json
import sys
import traceback
from typing import List, Optional

import typer

from .errors import AotcError
from .onnx_import import parse_shape

app = typer.Typer(
    name="aotc",
    help="aotc — ahead-of-time compiler for neural-network models. Turns an ONNX model (or a PyTorch "
         "module) into a deployable bundle for one target.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}

INPUT_SHAPE_HELP = ("Fix an input's shape, as NAME=DIMS (e.g. input_ids=1x128). Repeat for each input with "
                    "dynamic dimensions.")


def parse_input_shapes(items: Optional[List[str]]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        if not sep or not name:
            raise AotcError(f"--input-shape {item!r} is not NAME=DIMS; write e.g. --input-shape input_ids=1x128.")
        if name in shapes:
            raise AotcError(f"--input-shape gives {name!r} twice.")
        shapes[name] = parse_shape(dims)
    return shapes


def _version(value: bool):
    if value:
        from . import __version__
        typer.echo(f"aotc {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors (for bug reports)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    _state["debug"] = debug


@app.command()
def inspect(
    model: str = typer.Argument(..., help="An ONNX model file."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", "-s", help=INPUT_SHAPE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON, for scripts."),
):
    """Show a model's inputs, outputs, op histogram, parameters, FLOPs and unsupported ops.

    Exits with 2 if the model cannot be compiled as it is (unsupported ops, dynamic shapes left open),
    after printing what could be determined.
    """
    from .model_summary import format_report, summarize_onnx
    report, error = summarize_onnx(model, parse_input_shapes(input_shape))
    if as_json:
        report["error"] = str(error) if error else None
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(format_report(report))
    if error is not None:
        raise error


def main() -> None:
    """Entry point: user errors become one paragraph on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except AotcError as e:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except Exception as e:  # click usage errors and the like
        import click
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if _state["debug"]:
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e}. This is a bug in aotc; rerun with --debug "
                   "for the traceback and report it.", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
