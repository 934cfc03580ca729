"""Bot handler latency: N members issuing commands at the same moment vs one at a time.

    .venv/bin/python -m bench.bench_bot [--members 16] [--rounds 10]

Runs the real bot (``create_bot``) against simcord's simulated Discord on a SQLite
lab database with a ticket holding 16 captioned images. Each round, N members fire
a slash command each *before* the bot runs (simcord's actors run one interaction at a
time, so the bench emits the N INTERACTION_CREATE events itself and then lets the
bot settle once); the N = 1 run fires the same commands one after the other.

"Handler latency" is the time from the bot receiving an interaction to its handler
returning (deferral, database work in worker threads, follow-up sent), measured
around `CommandTree._call`. Prints p50/p99 for both runs and their ratio, and the
throughput (calls per second of wall time, simcord's own work included).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from discord import app_commands
from simcord import interactions as _interactions
from simcord.actors import _resolve_visible_command
from simcord.enums import AppCommandType, InteractionType

from db import migrate
from lab.lifecycle import TicketState
from tests.bot.conftest import running_lab
from tests.bot.matrix_setup import members, ticket_in

COMMANDS = [
    ("lora status", {}),
    ("lora list", {}),
    ("dataset status", {}),
    ("caption tags", {}),
    ("lora stats", {}),
]

latencies: list[float] = []
_original_call = app_commands.CommandTree._call


async def _timed_call(self: Any, interaction: Any) -> None:
    started = time.perf_counter()
    try:
        await _original_call(self, interaction)
    finally:
        latencies.append(time.perf_counter() - started)


def emit_slash(actor: Any, channel: Any, name: str, options: dict[str, Any]) -> None:
    """Queue one slash command interaction without letting the bot run yet."""
    parts = name.split()
    root = _resolve_visible_command(actor, channel.id, parts[0], AppCommandType.CHAT_INPUT)
    leaf, nesting = _interactions.walk_to_subcommand(root, parts[1:])
    leaf_options, resolved = _interactions.build_options(
        actor, name, leaf, options, channel_id=channel.id
    )
    data: dict[str, Any] = {
        "id": root["id"],
        "name": root["name"],
        "type": AppCommandType.CHAT_INPUT,
        "options": _interactions.nest_options(root, nesting, leaf_options),
    }
    if resolved:
        data["resolved"] = resolved
    backend = actor._env.backend
    _, payload = _interactions.base_payload(
        backend,
        type=InteractionType.APPLICATION_COMMAND,
        channel_id=channel.id,
        guild_id=actor.guild.id,
        user_id=actor.id,
        data=data,
    )
    backend.emit("INTERACTION_CREATE", payload)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(n: int, rounds: int, home: Path, template: Path) -> tuple[list[float], float]:
    """Latencies of every handler, and the wall time of all rounds."""
    home.mkdir(parents=True, exist_ok=True)
    async with running_lab(home, template) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.CAPTIONING)
        await lab.relay()
        crowd = [lab.member(f"member{i}", "Captioner") for i in range(n)]
        latencies.clear()
        started = time.perf_counter()
        for round_ in range(rounds):
            for i, member in enumerate(crowd):
                name, options = COMMANDS[(round_ + i) % len(COMMANDS)]
                emit_slash(
                    member,
                    lab.general,
                    name,
                    {**options, "ticket": number}
                    if name not in ("lora list", "lora stats")
                    else options,
                )
                if n == 1:
                    await lab.env.settle(timeout=30)
            if n > 1:
                await lab.env.settle(timeout=60)
        wall = time.perf_counter() - started
        assert not lab.env.errors, lab.env.errors
    return list(latencies), wall


async def main(n: int, rounds: int) -> None:
    app_commands.CommandTree._call = _timed_call  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        migrate.upgrade(f"sqlite:///{template}")
        single, single_wall = await run(1, rounds * n, Path(tmp) / "one", template)
        crowd, crowd_wall = await run(n, rounds, Path(tmp) / "many", template)
    rows = [("N = 1", single, single_wall), (f"N = {n}", crowd, crowd_wall)]
    print(f"{'run':<8} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'calls/s':>8}")
    for label, values, wall in rows:
        print(
            f"{label:<8} {len(values):>6} {percentile(values, 0.5) * 1000:>8.1f} "
            f"{percentile(values, 0.99) * 1000:>8.1f} {statistics.mean(values) * 1000:>8.1f} "
            f"{len(values) / wall:>8.0f}"
        )
    print(
        f"ratio N={n} / N=1: p50 {percentile(crowd, 0.5) / percentile(single, 0.5):.2f}x, "
        f"p99 {percentile(crowd, 0.99) / percentile(single, 0.99):.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.members, args.rounds))
