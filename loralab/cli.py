"""`loralab`: the command line. Each command group lives in its own module and is
imported lazily, so `loralab db upgrade` never imports torch or discord."""

from __future__ import annotations

import importlib
import logging

import click

from loralab.errors import describe_error

# name -> "module:attribute" of a click command; later features add their line here.
COMMANDS: dict[str, str] = {
    "db": "loralab.commands.db:db",
    "bot": "loralab.commands.bot:bot",
    "worker": "loralab.commands.worker:worker",
    "dataset": "loralab.commands.dataset:dataset",
    "train": "loralab.commands.train:train",
    "demo": "loralab.commands.demo:demo",
    "up": "loralab.commands.up:up",
    "invite-url": "loralab.commands.invite:invite_url",
    "outbox": "loralab.commands.outbox:outbox",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when they are run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def invoke(self, ctx: click.Context) -> object:
        """Known errors become one line and an exit code; ``-v`` shows the traceback."""
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise
        except Exception as error:
            described = describe_error(error)
            if described is None or (ctx.obj or {}).get("verbose"):
                raise
            click.echo(f"Error: {described.message}", err=True)
            ctx.exit(described.exit_code)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v", "--verbose", is_flag=True, help="Log debug messages; show tracebacks of errors."
)
@click.version_option(package_name="loralab")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """LoRA Lab: a collaborative LoRA training lab run from a Discord server."""
    ctx.obj = {"verbose": verbose}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    main()
