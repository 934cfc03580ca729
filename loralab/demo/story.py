"""The script: one ticket from `/lab setup` to its release, played by members with
different roles, against the real bot and a real worker.

setup → request → 20 uploads (one corrupt, two duplicates, one too small) → a caption
fix → review → a claim race → training with progress → sample grids → votes → release.
Each phase checks what the members saw; anything unexpected stops the story with a
`DemoError` that says what happened.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from db.models import ArtifactKind, JobStatus
from db.tickets import locate_ticket
from lab.lifecycle import TicketState
from loralab.demo.materials import png, zip_of
from loralab.demo.world import ENDED, DemoError, Member, World, samples_messages

TRIGGER = "ar1a"


@dataclass
class Outcome:
    """What the story ended with (read back from the lab's database)."""

    ticket_id: int
    ticket_number: int
    job_id: int
    released_epoch: int


def expect(condition: object, what: str) -> None:
    """Stop the story when a member did not see what the script expects."""
    if not condition:
        raise DemoError(what)


async def play(
    world: World,
    overrides: str,
    *,
    training_timeout: float = 900,
    base_ready: Callable[[], Awaitable[object]] | None = None,
    on_post: Callable[[Any], Awaitable[object]] | None = None,
) -> Outcome:
    """Play the whole story; returns the released ticket's ids. `base_ready` is awaited
    before training starts (the base model may still be being built); `on_post` gets the
    ticket's forum post as soon as the bot opened it (the interactive page shows it)."""
    t = world.transcript
    with t.section("1. Setup"):
        admin = world.members["owner"]
        reply = await world.slash(admin, world.general, "lab setup")
        expect("Lab setup done" in reply, f"/lab setup failed: {reply}")
        cast = [
            ("cora", "Dataset Curator", "curator"),
            ("cap", "Captioner", "captioner"),
            ("tess0", "Tester", "tester"),
            ("tess1", "Tester", "tester"),
            ("tess2", "Tester", "tester"),
        ]
        world.add_member("rita", "Requester")
        for name, role, value in cast:
            member = world.add_member(name, role)
            reply = await world.slash(member, world.general, "role join", role=value)
            expect("You are now" in reply, f"{name} could not join {role}: {reply}")
        # Trainer is approval-only by default: a Lab Admin gives it (in Discord).
        for name in ("tara", "tom"):
            trainer = world.add_member(name, "Trainer", granted=("Trainer",))
            reply = await world.slash(trainer, world.general, "role join", role="trainer")
            expect("already have" in reply, f"{name} was not given Trainer: {reply}")

    with t.section("2. Request"):
        rita = world.members["rita"]
        fields = {
            "name": "Aria",
            "trigger": TRIGGER,
            "class_token": "woman",
            "description": "A red-haired adventurer.",
        }
        reply = await world.modal(
            rita, world.general, "lora request", fields, kind="character", base="sd15"
        )
        expect("opened" in reply, f"/lora request failed: {reply}")
        await world.relay()
        thread = world.channel("lab-requests").threads[-1]
        ticket_id = locate_ticket(world.factory, world.guild.id, channel_id=thread.id)
        t.note(f"the bot opened the forum post “{thread.name}” with the ticket card")
        if on_post is not None:
            await on_post(thread)

    with t.section("3. Dataset"):
        await _dataset(world, thread)
    with t.section("4. Captions"):
        await _captions(world, thread)
    with t.section("5. Review"):
        reply = await world.slash(rita, thread, "dataset approve")
        expect("job-board" in reply, f"/dataset approve failed: {reply}")
        await world.relay()
    with t.section("6. Claim race"):
        winner = await _claim_race(world)
    with t.section("7. Training"):
        if base_ready is not None:
            await base_ready()
        job_id = await _train(world, winner, thread, ticket_id, overrides, training_timeout)
    with t.section("8. Testing"):
        epoch = await _test(world, thread, job_id)
    with t.section("9. Release"):
        reply = await world.slash(rita, thread, "lora release", epoch=epoch)
        expect(f"Released epoch {epoch}" in reply, f"/lora release failed: {reply}")
        await world.wait_until(
            lambda: world.ticket(ticket_id).release_message_id,
            timeout=60,
            what="the #releases post",
        )
        post = world.channel("releases").last_message
        t.note(f"#releases: “{post.embeds[0].title}” with {post.attachments[0].filename}")
        reply = await world.slash(admin, world.general, "lora stats")
    ticket = world.ticket(ticket_id)
    expect(ticket.status is TicketState.RELEASED, f"the ticket ended {ticket.status}")
    return Outcome(ticket_id, ticket.number, job_id, epoch)


async def _dataset(world: World, thread: object) -> None:
    cora = world.members["cora"]
    good = {f"img{i:02d}.png": png(i) for i in range(14)}
    captions = {f"img{i:02d}.txt": f"{TRIGGER}, woman, pose {i}".encode() for i in range(14)}
    archive = zip_of({**good, **captions, "copy.png": png(3), "broken.png": b"\x89PNG nope"})
    reply = await world.slash(cora, thread, "dataset upload", file=("set.zip", archive))
    expect("14 of 16 files added" in reply, f"the zip upload went wrong: {reply}")
    reply = await world.slash(
        cora,
        thread,
        "dataset upload",
        file=("extra1.png", png(100)),
        file2=("extra2.png", png(101)),
        file3=("again.png", png(5)),
    )
    expect("2 of 3 files added" in reply, f"the single uploads went wrong: {reply}")
    reply = await world.slash(cora, thread, "dataset upload", file=("tiny.png", png(200, (64, 64))))
    expect("❌" in reply, f"a 64×64 image was accepted: {reply}")
    await world.slash(cora, thread, "dataset status")
    reply = await world.slash(cora, thread, "dataset done")
    expect("captioning is open" in reply, f"/dataset done failed: {reply}")


async def _captions(world: World, thread: object) -> None:
    cap = world.members["cap"]
    reply = await world.slash(cap, thread, "caption done")
    expect("no caption yet" in reply, f"captions were accepted with two missing: {reply}")
    result = await cap.actor.slash(thread, "dataset status")
    listing = result.response.embeds[0].description or ""
    ids = [int(line.split("`")[1]) for line in listing.splitlines() if "extra" in line]
    expect(len(ids) == 2, f"the dataset listing shows no extra images: {listing}")
    world.transcript.step(cap.name, cap.role, "/dataset status", result)
    await world.modal(
        cap, thread, "caption edit", {"text": f"{TRIGGER}, woman, smiling"}, image=ids[0]
    )
    txt = zip_of({"extra2.txt": b"woman, sitting"})
    reply = await world.slash(cap, thread, "caption upload", file=("caps.zip", txt))
    expect("1 captions matched" in reply, f"the caption upload went wrong: {reply}")
    reply = await world.slash(cap, thread, "caption done")
    expect("trigger word" in reply, f"a caption without the trigger word passed: {reply}")
    reply = await world.slash(cap, thread, "caption bulk", operation="add", tag=TRIGGER)
    expect("1 captions changed" in reply, f"/caption bulk went wrong: {reply}")
    await world.slash(cap, thread, "caption tags")
    reply = await world.slash(cap, thread, "caption done")
    expect("review" in reply, f"/caption done failed: {reply}")


async def _claim_race(world: World) -> Member:
    """Two trainers press Claim at the same moment. simcord runs one interaction at a
    time, so "the same moment" is: Discord fails the board edit once (a 500), so the
    second trainer still sees the button; the database's compare-and-set decides."""
    tara, tom = world.members["tara"], world.members["tom"]
    board = world.channel("job-board")
    offer = board.last_message
    expect(offer is not None and "Claim" in str(offer.components), "no Claim button on the board")
    world.transcript.note("tara and tom both press Claim; Discord fails the board edit once")
    world.env.inject_error("PATCH", f"/channels/{board.id}/messages/*", status=500)
    reply = await world.click(tara, offer, "Claim")
    expect(reply.startswith("You claimed this job"), f"tara's claim failed: {reply}")
    reply = await world.click(tom, offer, "Claim")
    expect("already claimed by tara" in reply, f"tom's claim was not refused: {reply}")
    await world.relay(world.bot.relay_interval + 1)  # the relay retries the failed edit
    expect(board.last_message.components == [], "the board still shows the Claim button")
    world.transcript.note("the relay retried the edit: the board now says “Claimed by tara”")
    return tara


async def _train(
    world: World, trainer: Member, thread: object, ticket_id: int, overrides: str, timeout: float
) -> int:
    reply = await world.slash(
        trainer, thread, "train config", kind="character", overrides=overrides
    )
    expect("will train with" in reply, f"/train config was refused: {reply}")
    await world.wait_until(_worker_checked_in(world), timeout=120, what="the worker to check in")
    await world.slash(trainer, world.general, "train workers")
    reply = await world.slash(trainer, thread, "train start")
    expect("queued" in reply, f"/train start failed: {reply}")
    job = world.latest_job(ticket_id)
    expect(job is not None, "no training job was created")
    job_id = job.id
    world.transcript.note(f"job {job_id} goes to the worker through the filesystem broker")
    progress = TrainingProgress(world, ticket_id)
    try:
        await world.wait_until(
            lambda: world.latest_job(ticket_id).status in ENDED,
            timeout=timeout,
            what="the training to end",
            on_tick=progress.update,
        )
        progress.update()
    finally:
        progress.close()
    job = world.latest_job(ticket_id)
    if job.status is not JobStatus.SUCCEEDED:
        raise DemoError(f"training ended {job.status}: {job.error}\n{_tail(world)}")
    await world.wait_until(
        lambda: samples_messages(thread), timeout=60, what="the sample grids in the post"
    )
    edited = next(m for m in thread.history() if m.content.startswith("**Training job"))
    world.transcript.note("progress message in the post: " + edited.content.splitlines()[0])
    for message in samples_messages(thread):
        world.transcript.note(f"grid posted: “{message.embeds[0].title}”")
    return job_id


async def _test(world: World, thread: object, job_id: int) -> int:
    grid = samples_messages(thread)[-1]
    testers = [world.members[f"tess{i}"] for i in range(3)]
    for tester in testers:
        reply = await world.click(tester, grid, "Good")
        expect("You voted" in reply, f"{tester.name}'s vote failed: {reply}")
    reply = await world.click(testers[0], grid, "Not yet")
    expect("changed your vote" in reply, f"changing a vote failed: {reply}")
    reply = await world.click(testers[0], grid, "Good")
    expect("👍 3 · 👎 0" in reply, f"the tally is wrong: {reply}")
    await world.relay()
    epochs = [a.epoch for a in world.artifacts(job_id, ArtifactKind.LORA)]
    expect(epochs, "the job stored no LoRA")
    return max(epochs)


class TrainingProgress:
    """A tqdm bar fed from the job's progress row (what the worker reports); on a
    terminal that is not interactive, one line per epoch instead."""

    def __init__(self, world: World, ticket_id: int) -> None:
        self.world = world
        self.ticket_id = ticket_id
        self.live = sys.stdout.isatty()
        self.bar = tqdm(
            total=1, unit="step", desc="training", disable=not self.live, file=sys.stdout
        )
        self.epoch_shown: object = None
        self.last = ""

    def update(self) -> None:
        progress = self.world.latest_job(self.ticket_id).progress or {}
        total = int(progress.get("total_steps") or 0)
        step = int(progress.get("step") or 0)
        epoch = f"{progress.get('epoch', '?')}/{progress.get('total_epochs', '?')}"
        loss = progress.get("loss")
        text = f"epoch {epoch}" + (f" loss {loss:.4f}" if isinstance(loss, float) else "")
        if total and self.bar.total != total:
            self.bar.reset(total=total)
        self.bar.n = step
        self.bar.set_postfix_str(text if total else "the worker is loading the base model")
        self.last = f"training: step {step}/{total}, {text}"
        if total and progress.get("epoch") != self.epoch_shown:
            self.epoch_shown = progress.get("epoch")
            # On a terminal the bar shows it; the transcript file gets a line per epoch.
            self.world.transcript.note(self.last, terminal=not self.live)

    def close(self) -> None:
        self.bar.close()
        if self.last and self.live:
            self.world.transcript.note(self.last)


def _worker_checked_in(world: World) -> object:
    from db.training import workers

    return lambda: workers(world.factory)


def _tail(world: World) -> str:
    return world.worker.tail() if world.worker is not None else ""
