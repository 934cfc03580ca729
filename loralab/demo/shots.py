"""Pictures of the real messages for the guides (``docs/guides/images/``), taken from a
demo's HTML report with headless Chromium and cropped to the message.

    loralab demo --dir .loralab/demo
    python -m loralab.demo.shots .loralab/demo/report docs/guides/images

Each picture names the message it shows by where it was posted and a text it must
contain, so a change in the bot's wording fails loudly here instead of silently
picturing the wrong message.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageChops

log = logging.getLogger(__name__)

BACKGROUND = (0x31, 0x33, 0x38)
"""The report's page colour: everything else is the message."""

# picture name → (message pages' prefix, a text the message shows)
SHOTS: dict[str, tuple[str, str]] = {
    "admin-setup": ("replies-lab-admin", "Lab setup done"),
    "admin-role-picker": ("lab-guide", "Pick your lab roles"),
    "admin-guide-post": ("lab-guide", "How LoRA Lab works"),
    "admin-stats": ("replies-lab-admin", "Lab contributions"),
    "requester-request": ("replies-requester", "opened"),
    "requester-ticket-card": ("lab-requests-1-aria", "Ticket #1 Aria"),
    "requester-approve": ("replies-requester", "Approved"),
    "requester-release": ("releases", "Released: #1 Aria"),
    "curator-upload-zip": ("replies-dataset-curator", "14 of 16 files added"),
    "curator-upload-tiny": ("replies-dataset-curator", "tiny.png"),
    "curator-status": ("replies-dataset-curator", "Buckets (training)"),
    "captioner-missing": ("replies-captioner", "no caption yet"),
    "captioner-trigger": ("replies-captioner", "do not start with the trigger word"),
    "captioner-tags": ("replies-captioner", "16/16"),
    "trainer-board": ("job-board", "Claimed by"),
    "trainer-claim-race": ("replies-trainer", "already claimed"),
    "trainer-config": ("replies-trainer", "will train with"),
    "trainer-workers": ("replies-trainer", "last heartbeat"),
    "trainer-progress": ("lab-requests-1-aria", "Training job 1"),
    "tester-grid": ("testing", "epoch 2"),
    "tester-vote": ("replies-tester", "changed your vote"),
}


# picture name → a whole page of the report
PAGES: dict[str, str] = {"ticket-post": "lab-requests-1-aria.html"}


def find_message(report: Path, prefix: str, text: str) -> Path:
    """The first ``msg-<prefix>-NN.html`` page that shows `text`."""
    for page in sorted(report.glob(f"msg-{prefix}-*.html")):
        if text in page.read_text("utf-8"):
            return page
    raise LookupError(f"no message in {prefix} shows {text!r} (in {report})")


def crop(path: Path, margin: int = 12) -> None:
    """Cut the picture down to what differs from the page colour, plus a margin."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, BACKGROUND)).getbbox()
    if box is None:
        raise ValueError(f"{path} is empty")
    left, top, right, bottom = box
    rgb.crop(
        (
            max(0, left - margin),
            max(0, top - margin),
            min(rgb.width, right + margin),
            min(rgb.height, bottom + margin),
        )
    ).save(path, optimize=True)


def screenshot(chromium: str, page: Path, target: Path, *, width: int = 820) -> None:
    """Render `page` with headless Chromium into `target` (then crop it)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},2400",
                f"--screenshot={target}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    crop(target)


def render(report: Path, out: Path, chromium: str | None = None) -> list[Path]:
    """Write every picture of `SHOTS` into `out`; returns their paths."""
    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("Chromium is needed for the pictures (apt-get install chromium)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    sources = {name: find_message(report, *where) for name, where in SHOTS.items()}
    sources |= {name: report / page for name, page in PAGES.items()}
    for name, source in sources.items():
        target = out / f"{name}.png"
        screenshot(chromium, source, target)
        written.append(target)
        log.info("wrote %s", target)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m loralab.demo.shots REPORT_DIR OUT_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__)
        return 2
    for path in render(Path(args[0]), Path(args[1])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
