"""The demo's whole story, as `loralab demo` runs it but without the install: the real
bot in simcord's guild, a real `loralab worker` process, the tiny base model. The
released file must load in diffusers, and the reports must say what happened."""

from __future__ import annotations

import json
import os

import aiohttp
import click
import pytest

from loralab.demo.lab import DemoPaths
from loralab.demo.report import sha256_of
from loralab.demo.runner import DemoOptions, run_demo

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

PHASES = [
    "0. The lab",
    "1. Setup",
    "2. Request",
    "3. Dataset",
    "4. Captions",
    "5. Review",
    "6. Claim race",
    "7. Training",
    "8. Testing",
    "9. Release",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    options = DemoOptions(
        root=root / "out",
        json_report=root / "report.json",
        echo=lines.append,
        interactive=True,
        interactive_seconds=0,  # the page closes as soon as the story is over
        on_preview=_visit(lines, PAGES),
    )
    report = run_demo(options)
    return DemoPaths(root / "out"), root / "report.json", report, "\n".join(lines)


PAGES: list[dict] = []
"""What the interactive page answered, and what the transcript had said by then."""


def _visit(lines: list[str], pages: list[dict]):
    async def visit(url: str) -> None:
        # The story waits for this: what the transcript holds now is what ran before
        # the page answered.
        async with aiohttp.ClientSession() as http, http.get(url.split("#")[0]) as answer:
            pages.append(
                {
                    "url": url,
                    "status": answer.status,
                    "text": await answer.text(),
                    "said": list(lines),
                }
            )

    return visit


def test_the_ticket_is_released_with_a_lora_diffusers_loads(demo_run):
    import torch
    from diffusers import StableDiffusionPipeline

    paths, json_path, report, _ = demo_run
    written = json.loads(json_path.read_text())
    assert written == json.loads(json.dumps(report))  # the file is the returned report
    assert json.loads(paths.json_report.read_text()) == written  # and the default copy
    assert written["ok"] and written["error"] is None
    assert written["ticket"]["status"] == "RELEASED"
    assert written["ticket"]["chosen_epoch"] == 2
    assert written["ticket"]["job"]["status"] == "succeeded"
    lora = written["released_lora"]
    assert lora["path"].endswith("ar1a-v1-e2.safetensors")
    assert sha256_of(paths.released / "ar1a-v1-e2.safetensors") == lora["sha256"]
    stored = {a["kind"]: a for a in written["artifacts"] if a["kind"] == "lora"}
    assert stored["lora"]["stored_sha256"] == lora["sha256"]  # what the worker stored

    pipe = StableDiffusionPipeline.from_pretrained(str(paths.base), safety_checker=None)
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 77, pipe.unet.config.cross_attention_dim)

    def unet_out() -> torch.Tensor:
        with torch.no_grad():
            return pipe.unet(latents, 10, encoder_hidden_states=context).sample

    before = unet_out()
    pipe.load_lora_weights(lora["path"], adapter_name="demo")
    assert "demo" in pipe.get_active_adapters()
    assert not torch.allclose(before, unet_out()), "the LoRA changed nothing in the UNet"


def test_the_report_has_every_phase_grids_and_loss_curve(demo_run):
    paths, _, report, _ = demo_run
    assert [p["name"] for p in report["phases"]] == PHASES
    assert all(p["seconds"] >= 0 for p in report["phases"])
    assert len(report["grids"]) == 2  # one per saved epoch
    for grid in report["grids"]:
        with open(grid["path"], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert report["loss_curve"]["path"] == str(paths.loss_curve.resolve())
    assert report["bot_errors"] == [] or all("injected" in e for e in report["bot_errors"])


def test_the_transcript_tells_the_story(demo_run):
    paths, _, _, printed = demo_run
    # the file is what was printed, without the terminal's colours
    assert paths.transcript.read_text() == click.unstyle(printed) + "\n"
    assert "cora (Dataset Curator) ▸ /dataset upload file:set.zip" in printed
    assert "14 of 16 files added" in printed  # a corrupt file and a duplicate refused
    assert "❌ tiny.png" in printed
    assert "2 of 16 images have no caption yet" in printed
    assert "do not start with the trigger word" in printed  # the caption fix
    assert "tom (Trainer) ▸ clicks [Claim]" in printed
    assert "This job was already claimed by tara." in printed
    assert "**demo-gpu@" in printed  # /train workers shows the real worker process
    assert "training: step" in printed  # progress (a tqdm bar on a terminal)
    assert "You changed your vote to 👎" in printed
    assert "Released epoch 2" in printed
    for label in ("released LoRA", "sample grids", "loss curve", "HTML report"):
        assert label in printed


def test_the_html_report_shows_the_channels_as_they_appeared(demo_run):
    paths = demo_run[0]
    index = (paths.report / "index.html").read_text()
    for page in ("releases.html", "job-board.html", "testing.html", "lab-requests-1-aria.html"):
        assert page in index
        assert (paths.report / page).exists()
    releases = (paths.report / "releases.html").read_text()
    assert "Released: #1 Aria" in releases and "ar1a-v1-e2.safetensors" in releases
    board = (paths.report / "job-board.html").read_text()
    assert "Claimed by <b>tara</b>" in board
    thread = (paths.report / "lab-requests-1-aria.html").read_text()
    assert thread.count("Samples for #1 Aria") == 2
    # released: the grids' vote buttons are closed
    assert "class='btn success disabled'>👍 Good" in thread
    images = [p for p in (paths.report / "files").iterdir() if p.suffix == ".png"]
    assert len(images) >= 2
    replies = (paths.report / "replies-trainer.html").read_text()
    assert "You claimed this job" in replies


def test_interactive_opens_the_page_before_the_story_goes_on(demo_run):
    printed = demo_run[3]
    assert len(PAGES) == 1
    page = PAGES[0]
    assert page["url"].startswith("http://127.0.0.1:") and "#" in page["url"]
    assert page["status"] == 200 and "SimCord Preview" in page["text"]
    said = "\n".join(page["said"])
    # The page answered once the ticket's post existed, before its dataset, training,
    # testing and release played (in the page).
    assert "── 2. Request" in said and "the bot opened the forum post" in said
    for later in ("3. Dataset", "7. Training", "9. Release"):
        assert f"── {later}" not in said
    assert f"Interactive: open {page['url']}" in said
    assert printed.index("Interactive: open") < printed.index("── 3. Dataset")
    assert "The story is over; the page stays open" in printed
