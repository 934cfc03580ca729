"""`/train config` takes only the keys a trainer may set, each within the lab's limits;
paths and the memory budget are the worker's (issue 14, point 4)."""

from __future__ import annotations

import pytest

from lab.lifecycle import TicketState
from lab.settings import LabRules
from lab.training.allowed import TrainingLimits
from tests.bot.conftest import followup_text, running_lab
from tests.bot.matrix_setup import members, ticket_in

pytestmark = pytest.mark.anyio

PREFIX = "That training configuration is not valid: "
REFUSED = {
    "resolution=16384": "resolution: resolution 16384×16384 is over this lab's limit of "
    "1536 px per side (a Lab Admin sets the limits)",
    "max_train_epochs=100000000": "max_train_epochs: max_train_epochs 100000000 is over this "
    "lab's limit of 100 (a Lab Admin sets the limits)",
    "network_dim=1000000": "network_dim: network_dim 1000000 is over this lab's limit of 256 "
    "(a Lab Admin sets the limits)",
    "train_batch_size=100000": "train_batch_size: train_batch_size 100000 is over this lab's "
    "limit of 16 (a Lab Admin sets the limits)",
    "memory_budget_gb=100000": "memory_budget_gb is set by the worker for every run; leave it out.",
    "latent_cache_dir=/any/path": "latent_cache_dir is set by the worker for every run; leave it "
    "out.",
}


async def test_hostile_training_configs_are_refused_by_name(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.CLAIMED, config=False)

        async def configure(overrides: str) -> str:
            result = await people["claimer"].slash(
                lab.general, "train config", ticket=number, kind="character", overrides=overrides
            )
            return followup_text(result)

        for overrides, problem in REFUSED.items():
            assert await configure(overrides) == PREFIX + problem, overrides
        assert "`sd15-character` resolution=768 network_dim=64" in await configure(
            "resolution=768 network_dim=64"
        )


async def test_the_limits_are_the_labs_to_set(tmp_path, template_db):
    rules = LabRules(training=TrainingLimits(max_train_epochs=4))
    async with running_lab(tmp_path, template_db, settings={"rules": rules}) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.CLAIMED, config=False)
        result = await people["claimer"].slash(
            lab.general,
            "train config",
            ticket=number,
            kind="character",
            overrides="max_train_epochs=8",
        )
        assert "over this lab's limit of 4" in followup_text(result)
