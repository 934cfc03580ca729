"""Uploads cannot stall or bloat the bot: caption uploads are unpacked off the event
loop under caption-sized caps, and uploads never hold the threads database calls need."""

from __future__ import annotations

import asyncio
import io
import threading
import zipfile
from typing import Any

import pytest

from lab.dataset.sources import SourceFile
from lab.lifecycle import TicketState
from lab.storage import LocalStorage, StoredObject
from tests.bot.conftest import followup_text, running_lab
from tests.bot.images import png, zip_of
from tests.bot.matrix_setup import members, ticket_in

pytestmark = pytest.mark.anyio


async def test_caption_uploads_are_unpacked_off_the_event_loop(tmp_path, template_db, monkeypatch):
    loop_thread = threading.current_thread()
    readers: list[threading.Thread] = []
    real_read = SourceFile.read

    def spy(self: SourceFile, limit: int) -> bytes:
        readers.append(threading.current_thread())
        return real_read(self, limit)

    monkeypatch.setattr(SourceFile, "read", spy)
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.CAPTIONING)
        upload = zip_of({f"img{i}.txt": f"ar1a, woman, pose {i}".encode() for i in range(3)})
        result = await people["requester"].slash(
            lab.general, "caption upload", ticket=number, file=("caps.zip", upload)
        )
        assert followup_text(result).startswith("3 captions matched")
        assert readers and loop_thread not in readers


async def test_caption_uploads_are_capped_at_a_few_mib(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.CAPTIONING)
        big = b"ar1a, woman, " + b"x" * (5 * 2**20)
        result = await people["requester"].slash(
            lab.general, "caption upload", ticket=number, file=("big.txt", big)
        )
        assert "❌ big.txt: 5.0 MiB is over the 4.0 MiB limit for one file." in followup_text(
            result
        )
        # A small zip whose captions inflate past the cap is refused, not read to the end.
        texts = {f"img{i}.txt": b"ar1a, woman, " + b"y" * 15_000 for i in range(400)}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in texts.items():
                archive.writestr(name, data)
        bomb = buffer.getvalue()
        assert len(bomb) < 2**20
        result = await people["requester"].slash(
            lab.general, "caption upload", ticket=number, file=("caps.zip", bomb)
        )
        assert followup_text(result) == (
            "The captions of this upload pass 4 MiB in total; upload them in smaller parts."
        )


class ThreadRecordingStorage:
    """Local storage that notes which thread each write ran in."""

    def __init__(self, inner: LocalStorage) -> None:
        self.inner = inner
        self.writers: list[str] = []

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        self.writers.append(threading.current_thread().name)
        return self.inner.put_bytes(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_uploads_run_in_the_io_pool_and_never_hold_the_database_threads(
    tmp_path, template_db
):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.DATASET)
        storage = ThreadRecordingStorage(lab.storage)
        lab.bot.storage = storage
        result = await people["requester"].slash(
            lab.general, "dataset upload", ticket=number, file=("u.png", png(40))
        )
        assert "✅ u.png" in followup_text(result)
        assert storage.writers and all(name.startswith("lab-io") for name in storage.writers)
        # Every I/O thread stuck (as with uploads to a slow store), and more queued
        # behind them: a one-row query still gets a database thread at once.
        release = threading.Event()
        stuck = [
            asyncio.create_task(lab.bot.io.run(release.wait, 20))
            for _ in range(3 * lab.bot.io.threads)
        ]
        answer = await lab.bot.db.run(lambda factory: release.is_set())
        assert answer is False, "the query waited for the stuck uploads"
        release.set()
        assert all(await asyncio.gather(*stuck))
