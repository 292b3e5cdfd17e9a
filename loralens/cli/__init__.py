"""The `loralens` command: a thin shell over the Python API. Each command group lives in its own module."""

from __future__ import annotations

import sys

import click

from loralens import __version__
from loralens.errors import LoralensError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loralens")
def cli() -> None:
    """Fine-tune Whisper's encoder for speech emotion recognition with LoRA, then open the adapted model up."""


def _register() -> None:
    # Imported here so that `loralens --help` stays quick and each group stays in its own module.
    from loralens.cli import analyze as analyze_cmds
    from loralens.cli import data as data_cmds
    from loralens.cli import export as export_cmds
    from loralens.cli import models as models_cmds
    from loralens.cli import predict as predict_cmds
    from loralens.cli import report as report_cmds
    from loralens.cli import run as run_cmds
    from loralens.cli import train as train_cmds

    cli.add_command(models_cmds.models)
    cli.add_command(data_cmds.data)
    cli.add_command(train_cmds.train)
    cli.add_command(analyze_cmds.analyze)
    cli.add_command(run_cmds.run)
    cli.add_command(run_cmds.demo)
    cli.add_command(report_cmds.report)
    cli.add_command(predict_cmds.predict)
    cli.add_command(export_cmds.export)


_register()


def run_command(command: click.Command, argv: list[str] | None, prog_name: str) -> int:
    """Run a click command on `argv` and return its exit code: errors on bad input (LoralensError) are printed
    without a traceback and give 2; a full disk, a denied permission or a read-only folder (OSError) one line
    and 1; click's usage errors their own code; Ctrl-C 130. Warnings of loralens print as `warning: ...`."""
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except LoralensError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except Exception as e:  # a full disk / denied write arrives as OSError, sometimes wrapped by a library
        from loralens.io import describe_os_error, user_os_error

        os_error = user_os_error(e)
        if os_error is None:
            raise
        message, hint = describe_os_error(os_error)  # type: ignore[misc]
        click.echo(f"error: {message}\n  hint: {hint}", err=True)
        return 1
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (`loralens ...`)."""
    return run_command(cli, argv, "loralens")


if __name__ == "__main__":
    sys.exit(main())
