"""Tickets prepared in each lifecycle state (through the same services the bot uses)
for the permission matrix."""

from __future__ import annotations

from typing import Any

from db import repositories as repo
from db.models import Artifact, ArtifactKind, SampleSet, SubjectKind, Ticket
from db.services import NewTicket, apply_transition
from db.tickets import act, choose_epoch, request_ticket
from db.training import configure
from lab.lifecycle import Action, Actor, LabRole, TicketState
from tests.bot.conftest import Lab, seed_images, who_of

ROLE_OF = {
    "nobody": (),
    "requester": (),
    "curator": ("Dataset Curator",),
    "captioner": ("Captioner",),
    "trainer": ("Trainer",),
    "claimer": ("Trainer",),
    "tester": ("Tester",),
    "admin": ("Lab Admin",),
}
LAB_ROLES = {
    "Dataset Curator": LabRole.CURATOR,
    "Captioner": LabRole.CAPTIONER,
    "Trainer": LabRole.TRAINER,
    "Tester": LabRole.TESTER,
    "Lab Admin": LabRole.ADMIN,
}


def members(lab: Lab) -> dict[str, Any]:
    return {name: lab.member(name, *roles) for name, roles in ROLE_OF.items()}


def _system(lab: Lab, ticket_id: int, action: Action, reason: str | None = None) -> None:
    with lab.factory.begin() as session:
        apply_transition(session, ticket_id, action, Actor.system(), lab.bot.rules, reason=reason)


def ticket_in(lab: Lab, people: dict[str, Any], state: TicketState, *, config: bool = True) -> int:
    """A new ticket by `requester`, claimed (from CLAIMED on) by `claimer`; its number."""
    requester = who_of(lab, people["requester"])
    admin = who_of(lab, people["admin"], LabRole.ADMIN)
    claimer = who_of(lab, people["claimer"], LabRole.TRAINER)
    new = NewTicket("Aria", SubjectKind.CHARACTER, "sd15", "ar1a", "woman")
    ticket_id, number = request_ticket(lab.factory, requester, new)
    rules = lab.bot.rules
    path = [
        TicketState.DATASET,
        TicketState.CAPTIONING,
        TicketState.REVIEW,
        TicketState.READY,
        TicketState.CLAIMED,
        TicketState.TRAINING,
        TicketState.TESTING,
        TicketState.RELEASED,
    ]
    target = TicketState.TRAINING if state is TicketState.FAILED else state
    if path.index(target) >= 1:
        seed_images(lab, people["requester"], ticket_id)
        act(lab.factory, requester, ticket_id, Action.FINISH_DATASET, rules)
    if path.index(target) >= 2:
        act(lab.factory, requester, ticket_id, Action.FINISH_CAPTIONS, rules)
    if path.index(target) >= 3:
        act(lab.factory, requester, ticket_id, Action.APPROVE, rules)
    if path.index(target) >= 4:
        act(lab.factory, claimer, ticket_id, Action.CLAIM, rules)
        if config:
            configure(
                lab.factory,
                claimer,
                ticket_id,
                rules,
                preset="sd15-character",
                config={"preset": "sd15-character", "max_train_epochs": 2},
            )
    if path.index(target) >= 5:
        act(lab.factory, claimer, ticket_id, Action.START_TRAINING, rules)
    if state is TicketState.FAILED:
        _system(lab, ticket_id, Action.TRAINING_FAILED, reason="out of memory")
    if path.index(target) >= 6:
        _system(lab, ticket_id, Action.TRAINING_SUCCEEDED)
        with lab.factory.begin() as session:
            job = repo.latest_job(session, ticket_id)
            assert job is not None
            for epoch in (1, 2):  # the run saved two epochs (a release needs the file)
                session.add(
                    Artifact(
                        job_id=job.id,
                        kind=ArtifactKind.LORA,
                        epoch=epoch,
                        storage_key=f"jobs/{job.id}/lora-e{epoch:04d}.safetensors",
                        sha256=f"{epoch:064x}",
                        size_bytes=10,
                    )
                )
            sample = SampleSet(ticket_id=ticket_id, epoch=2, prompts=["ar1a, woman"])
            session.add(sample)
            session.flush()
            repo.add_outbox(
                session,
                repo.OutboxItem(
                    "discord.sample_grid", {"sample_set_id": sample.id}, f"grid:{sample.id}"
                ),
            )
    if path.index(target) >= 7:
        choose_epoch(lab.factory, ticket_id, 2)
        act(lab.factory, admin, ticket_id, Action.RELEASE, rules, admin_override=True)
    with lab.factory() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.status is state, (ticket.status, state)
    return number
