"""Auto-captioning through the worker: the request a captioner makes (the bot's service),
its task row, the worker's service (what the Celery task runs) with tiny models built
in code, and the result as caption revisions by "auto" that follow the lab's rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db import migrate
from db import repositories as repo
from db.autocaption import record_auto_captions, request_autocaption
from db.captions import CaptionError
from db.models import Caption, OutboxMessage, Ticket
from db.services import TransitionRefused
from lab.autocaption import CaptionerKind
from lab.lifecycle import TicketState
from lab.tasks import CaptionPayload
from tests.worker.captioning import COLOURS, HAND_CAPTION, caption_settings, seed_captioning_ticket
from trainer.captioners.tiny import WORDS, build_tiny_blip, build_tiny_tagger
from worker.captioning import run_caption_request
from worker.runtime import build_runtime

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("captioners")
    return {
        "wd-tiny": {"kind": "tagger", "model": str(build_tiny_tagger(root / "wd"))},
        "blip-tiny": {
            "kind": "captioner",
            "model": str(build_tiny_blip(root / "blip")),
            "max_new_tokens": 6,
            "batch_size": 2,
        },
    }


@pytest.fixture
def make_settings(tmp_path: Path, models: dict):
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    migrate.upgrade(url)

    def make(**rules: object):
        return caption_settings(tmp_path / "home", url, models, **rules)

    return make


def _queued_payload(rt, seeded, request_id: int, **options) -> CaptionPayload:
    """Ask as the captioner would (/caption auto), then read the task row's payload."""
    request_autocaption(rt.factory, seeded.who, seeded.ticket_id, rt.settings.rules,
                        request_id=request_id, **options)  # fmt: skip
    with rt.factory() as session:
        row = session.scalar(
            select(OutboxMessage).where(
                OutboxMessage.idempotency_key == f"loralab.caption:{seeded.ticket_id}:{request_id}"
            )
        )
    assert row.kind == "task" and row.payload["name"] == "loralab.caption"
    assert row.payload["queue"] == "cpu" and row.payload["task_id"] == row.idempotency_key
    return CaptionPayload(**row.payload["payload"])


def _revisions(rt, image_ids: list[int]) -> dict[int, list[Caption]]:
    with rt.factory() as session:
        rows = session.scalars(
            select(Caption).where(Caption.image_id.in_(image_ids)).order_by(Caption.revision)
        ).all()
    found: dict[int, list[Caption]] = {i: [] for i in image_ids}
    for row in rows:
        found[row.image_id].append(row)
    return found


def _notices(rt, ticket_id: int) -> dict[str, str]:
    with rt.factory() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "discord.notice"))
        return {r.idempotency_key: r.payload["text"] for r in rows
                if r.payload["ticket_id"] == ticket_id}  # fmt: skip


def test_tagger_captions_a_dataset_through_the_worker_with_the_lab_rules(make_settings):
    rt = build_runtime(make_settings())
    seeded = seed_captioning_ticket(rt.settings, base_model="pony")
    payload = _queued_payload(rt, seeded, request_id=501)
    assert payload.kind == CaptionerKind.TAGGER.value  # pony captions with booru tags

    assert run_caption_request(rt, payload) == 4
    assert run_caption_request(rt, payload) is None  # a repeated delivery records nothing

    revisions = _revisions(rt, seeded.image_ids)
    assert [c.text for c in revisions[seeded.hand_captioned]] == [HAND_CAPTION]  # kept
    for image_id, colour in zip(seeded.image_ids[1:], COLOURS[1:], strict=True):
        (auto,) = revisions[image_id]
        assert auto.source == "auto" and auto.author_id is None
        tags = auto.text.split(", ")
        assert tags[:2] == ["sks", "dog"]  # trigger first, class token second
        assert tags.count("dog") == 1 and "german shepherd" in tags  # implied "dog" dropped
        assert "simple background" not in tags  # blacklisted (as simple_background)
        assert len(tags) == 2 + 5  # max_tags after trigger and class
        assert "long hair" in tags and all("_" not in t or t == "^_^" for t in tags)
        assert tags[2] == "hatsune miku"  # character tags first (scored 0.95 ≥ 0.85)
        assert "kagamine rin" not in tags  # a character at 0.6 is under 0.85
        assert ("red theme" in tags) == (colour[0] > 200)  # the pixels reached the model
    notice = _notices(rt, seeded.ticket_id)[f"autocaption:{seeded.ticket_id}:501"]
    assert notice.startswith("Auto-captions are ready: 4 image(s) captioned by wd-tiny")
    with rt.factory() as session:
        facts = repo.ticket_facts(session, session.get(Ticket, seeded.ticket_id))
    assert facts.uncaptioned_count == 0 and facts.missing_trigger_count == 0


def test_thresholds_differ_for_general_and_character_tags(make_settings):
    rt = build_runtime(make_settings(max_tags=None))
    seeded = seed_captioning_ticket(rt.settings, base_model="illustrious")
    assert run_caption_request(rt, _queued_payload(rt, seeded, 7, overwrite=True)) == 5
    for image_id in seeded.image_ids:
        tags = _revisions(rt, [image_id])[image_id][-1].text.split(", ")
        assert "grass" in tags and "tree" in tags  # general tags at 0.45 / 0.4 ≥ 0.35
        assert "sky" not in tags  # 0.2
        assert "hatsune miku" in tags and "kagamine rin" not in tags  # 0.95 vs 0.6 < 0.85
        assert "^_^" in tags  # kaomoji keep their underscore


def test_kept_underscores_and_an_operator_implication_file(make_settings, tmp_path):
    extra = tmp_path / "implications.csv"
    extra.write_text("antecedent_name,consequent_name,status\n1girl,hatsune_miku,active\n")
    settings = make_settings(keep_underscores=["noobai"], implications=str(extra), max_tags=None)
    rt = build_runtime(settings)
    seeded = seed_captioning_ticket(settings, base_model="noobai")
    assert run_caption_request(rt, _queued_payload(rt, seeded, 8)) == 4
    tags = _revisions(rt, [seeded.image_ids[1]])[seeded.image_ids[1]][-1].text.split(", ")
    assert "long_hair" in tags and "german_shepherd" in tags
    assert "hatsune_miku" not in tags and "1girl" in tags


def test_sd_bases_get_sentences_from_the_captioner(make_settings):
    rt = build_runtime(make_settings())
    seeded = seed_captioning_ticket(rt.settings, base_model="sd15")
    payload = _queued_payload(rt, seeded, request_id=9)
    assert payload.kind == CaptionerKind.CAPTIONER.value
    assert run_caption_request(rt, payload) == 4
    for image_id in seeded.image_ids[1:]:
        (auto,) = _revisions(rt, [image_id])[image_id]
        trigger, cls, sentence = auto.text.split(", ")
        assert (trigger, cls, auto.source) == ("sks", "dog", "auto")
        assert 1 <= len(sentence.split()) <= 6 and set(sentence.split()) <= set(WORDS)


def test_who_may_ask_and_what_a_request_needs(make_settings):
    rt = build_runtime(make_settings())
    seeded = seed_captioning_ticket(rt.settings)
    with pytest.raises(TransitionRefused):
        request_autocaption(rt.factory, seeded.outsider, seeded.ticket_id, rt.settings.rules,
                            request_id=1)  # fmt: skip
    first = request_autocaption(rt.factory, seeded.who, seeded.ticket_id, rt.settings.rules,
                                request_id=2)  # fmt: skip
    again = request_autocaption(rt.factory, seeded.who, seeded.ticket_id, rt.settings.rules,
                                request_id=2)  # fmt: skip
    assert (first.images, first.repeated, again.repeated) == (4, False, True)
    with rt.factory() as session:
        tasks = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "task")).all()
    assert len(tasks) == 1
    run_caption_request(rt, CaptionPayload(**tasks[0].payload["payload"]))
    with pytest.raises(CaptionError, match="Every image already has a caption"):
        request_autocaption(rt.factory, seeded.who, seeded.ticket_id, rt.settings.rules,
                            request_id=3)  # fmt: skip


def test_a_missing_model_is_told_to_the_thread(make_settings, tmp_path):
    rt = build_runtime(make_settings())
    settings = rt.settings.model_copy(update={"captioning": rt.settings.captioning.model_copy(
        update={"models": {}})})  # fmt: skip
    rt = build_runtime(settings)
    seeded = seed_captioning_ticket(settings)
    assert run_caption_request(rt, _queued_payload(rt, seeded, 11)) == 0
    assert _notices(rt, seeded.ticket_id)[f"autocaption:{seeded.ticket_id}:11"] == (
        "Auto-captioning failed: No tagger model is configured on this worker."
    )
    assert all(len(v) == 0 for k, v in _revisions(rt, seeded.image_ids).items()
               if k != seeded.hand_captioned)  # fmt: skip


def test_a_person_editing_meanwhile_wins_and_a_moved_ticket_gets_nothing(make_settings):
    rt = build_runtime(make_settings())
    seeded = seed_captioning_ticket(rt.settings)
    payload = _queued_payload(rt, seeded, 12)
    edited = seeded.image_ids[2]
    with rt.factory.begin() as session:
        repo.add_caption_revision(session, edited, "sks, dog, by hand", author_id=None)
    assert run_caption_request(rt, payload) == 3  # read when the worker starts
    assert [c.text for c in _revisions(rt, [edited])[edited]] == ["sks, dog, by hand"]
    # ...and checked again when recording: a caption written while the model ran wins.
    late = seed_captioning_ticket(rt.settings)
    with rt.factory.begin() as session:
        repo.add_caption_revision(session, late.image_ids[1], "sks, dog, late", author_id=None)
    drafts = {image_id: "sks, dog, draft" for image_id in late.image_ids[1:]}
    written = record_auto_captions(rt.factory, late.ticket_id, 99, drafts, overwrite=False,
                                   model_name="wd-tiny")  # fmt: skip
    assert written == 3
    assert "(1 skipped" in _notices(rt, late.ticket_id)[f"autocaption:{late.ticket_id}:99"]
    assert _revisions(rt, [late.image_ids[1]])[late.image_ids[1]][-1].text == "sks, dog, late"

    other = seed_captioning_ticket(rt.settings)
    payload = _queued_payload(rt, other, 13)
    with rt.factory.begin() as session:
        session.get(Ticket, other.ticket_id).status = TicketState.REVIEW
    assert run_caption_request(rt, payload) == 0
    assert (
        "not saved: the ticket is review now"
        in _notices(rt, other.ticket_id)[f"autocaption:{other.ticket_id}:13"]
    )


@pytest.mark.slow
def test_a_real_worker_process_captions_from_the_filesystem_broker(make_settings, tmp_path):
    """`loralab worker` (embedded: SQLite + filesystem broker) takes the task row the
    request wrote, runs the Celery task, and the captions and the notice appear."""
    from tests.worker.procs import wait_for, worker_process

    settings = make_settings()
    rt = build_runtime(settings)
    seeded = seed_captioning_ticket(settings, base_model="pony")
    request_autocaption(rt.factory, seeded.who, seeded.ticket_id, settings.rules,
                        request_id=777)  # fmt: skip
    key = f"autocaption:{seeded.ticket_id}:777"
    with worker_process(settings, "captioner", tmp_path / "worker.log") as worker:
        notice = wait_for(lambda: _notices(rt, seeded.ticket_id).get(key), timeout=120,
                          what="the auto-caption notice")  # fmt: skip
        output = worker.output()
    assert notice.startswith("Auto-captions are ready: 4 image(s)"), output[-3000:]
    assert "4/4 images captioned by wd-tiny" in output
    revisions = _revisions(rt, seeded.image_ids[1:])
    assert all(len(v) == 1 and v[0].source == "auto" for v in revisions.values())
    assert all(v[0].text.startswith("sks, dog, hatsune miku") for v in revisions.values())
