"""The `esjoin` command line."""

import typer

app = typer.Typer(no_args_is_help=True, help="esjoin: run and test the event-sourcing pipeline locally")
