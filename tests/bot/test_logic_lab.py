"""`bot/exts/lab/_logic.py`: what `/lab setup` creates fits Discord's limits."""

from __future__ import annotations

from bot.exts.lab._logic import GUIDES, STATUS_TAGS, TEXT_CHANNELS
from lab.lifecycle import TicketState


def test_every_ticket_state_has_a_forum_tag_within_discords_20_characters():
    assert set(STATUS_TAGS) == {state.value for state in TicketState}
    assert all(0 < len(name) <= 20 for name in STATUS_TAGS.values())
    assert len(set(STATUS_TAGS.values())) == len(STATUS_TAGS)


def test_each_guide_fits_one_message_and_the_channels_have_distinct_names():
    assert all(len(text) <= 2000 for text in GUIDES.values())
    names = [name for name, _ in TEXT_CHANNELS.values()]
    assert len(set(names)) == len(names)
