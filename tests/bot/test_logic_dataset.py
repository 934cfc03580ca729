"""`bot/exts/dataset/_logic.py` as pure functions: what to fetch, what to answer."""

from __future__ import annotations

from bot.exts.dataset._logic import UploadOutcome, fetch_refusal, report, size_refusal

HOSTS = frozenset({"cdn.discordapp.com"})
MIB = 1_048_576


def test_only_discord_attachments_under_the_cap_are_fetched():
    ok = fetch_refusal("a.png", "https://cdn.discordapp.com/a.png", 2 * MIB, HOSTS, 10 * MIB)
    assert ok is None
    elsewhere = fetch_refusal("a.png", "https://evil.example/a.png", 10, HOSTS, 10 * MIB)
    assert elsewhere == "❌ a.png: not a Discord attachment; not fetched."
    big = fetch_refusal("b.png", "https://cdn.discordapp.com/b.png", 12 * MIB, HOSTS, 10 * MIB)
    assert big == "❌ b.png: 12.0 MiB is over the 10.0 MiB limit for one file."
    small_cap = fetch_refusal("c.png", "https://cdn.discordapp.com/c", 2048, HOSTS, 1024)
    assert small_cap == "❌ c.png: 2 KiB is over the 1 KiB limit for one file."


def test_bytes_beyond_what_the_attachment_claimed_are_refused():
    assert size_refusal("a.png", 10, 10) is None
    assert size_refusal("a.png", 11, 10) == "❌ a.png: larger than it claimed; refused."


def test_the_report_counts_accepted_files_and_keeps_warnings():
    outcome = UploadOutcome(
        lines=["✅ a.png (512×512)", "❌ b.png: too small"], warnings=["blurry"]
    )
    text = report(outcome, total=7)
    assert text.splitlines() == [
        "**1 of 2 files added** · the dataset has 7 images.",
        "✅ a.png (512×512)",
        "❌ b.png: too small",
        "⚠️ blurry",
    ]


def test_a_long_report_is_cut_to_fit_one_message():
    outcome = UploadOutcome(lines=[f"✅ image-{i:03}.png (512×512)" for i in range(300)])
    text = report(outcome, total=300)
    assert len(text) <= 1900
    assert text.splitlines()[0] == "**300 of 300 files added** · the dataset has 300 images."
    assert text.endswith("more lines.")
    shown = len(text.splitlines()) - 2
    assert text.splitlines()[-1] == f"…and {300 - shown} more lines."
