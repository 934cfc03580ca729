"""`loralab demo --interactive`: simcord's preview serves the simulated guild on
127.0.0.1 while the clock keeps running."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from loralab.demo.runner import serve_preview
from tests.bot.conftest import open_request, running_lab

pytestmark = pytest.mark.anyio


async def test_the_preview_serves_the_ticket_post(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        thread = await open_request(lab, lab.member("rita"))
        urls: list[str] = []
        pages: list[tuple[int, str]] = []
        stop = asyncio.Event()
        elapsed = lab.env.backend.clock.elapsed

        async def visit(url: str) -> None:
            urls.append(url)
            async with aiohttp.ClientSession() as http, http.get(url.split("#")[0]) as r:
                pages.append((r.status, await r.text()))

        async def stop_soon() -> None:
            await asyncio.sleep(2.5)
            stop.set()

        stopper = asyncio.create_task(stop_soon())
        await serve_preview(
            lab.env, thread, [lab.admin], tick=lab.bot.relay_interval, on_url=visit, stop=stop
        )
        await stopper
        assert urls and urls[0].startswith("http://127.0.0.1:")
        assert "#" in urls[0]  # the capability travels in the fragment
        status, text = pages[0]
        assert status == 200 and "SimCord Preview" in text
        assert lab.env.backend.clock.elapsed > elapsed  # the relay's clock kept running
