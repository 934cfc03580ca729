"""Member text that reaches a sampler: trigger words, class tokens and test prompts.

The worker writes kohya prompt files (``a photo of ar1a --w 512 --h 512 --s 20``), in
which ``--w``/``--h``/``--s`` set the size and the steps of a GPU render. Text from
members is therefore plain text, checked when it arrives: no ``--`` options, no line
breaks (a new line is a new prompt), no control characters. The sizes and steps the
worker writes come from the job's resolution and the lab's limits, never from a member.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from lab.errors import LabError

__all__ = [
    "SAMPLE_MAX_SIDE",
    "SAMPLE_MAX_STEPS",
    "PromptError",
    "check_class_token",
    "check_prompt",
    "check_trigger_word",
    "prompt_file_text",
]

SAMPLE_MAX_SIDE = 2048
"""No sample is rendered wider or taller than this, whatever the config says."""
SAMPLE_MAX_STEPS = 100
"""No sample takes more denoising steps than this."""

_OPTION = re.compile(r"(?:^|\s)--\S")
_TRIGGER = re.compile(r"^[^\s,]{1,40}$")


class PromptError(LabError):
    code = "bad_prompt_text"


def _plain(value: str, what: str, max_length: int) -> str:
    text = value.strip()
    if not text:
        raise PromptError(f"The {what} is empty.")
    if len(text) > max_length:
        raise PromptError(f"The {what} is longer than {max_length} characters.")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        raise PromptError(f"The {what} must be plain text on one line.")
    if _OPTION.search(text):
        raise PromptError(
            f"The {what} must be plain text: `--` options (like `--w 1024`) are not "
            "accepted; the lab sets sample sizes and steps itself."
        )
    return text


def check_trigger_word(value: str) -> str:
    """The trigger word, stripped: one word (no spaces or commas), at most 40 characters."""
    text = _plain(value, "trigger word", 40)
    if not _TRIGGER.match(text):
        raise PromptError("The trigger word must be one word without commas, e.g. `ar1a`.")
    return text


def check_class_token(value: str) -> str:
    """The class token (``woman``, ``red car``): one tag, so no commas."""
    text = _plain(value, "class token", 40)
    if "," in text:
        raise PromptError("The class token must be one tag without commas, e.g. `woman`.")
    return text


def check_prompt(value: str) -> str:
    """One test prompt, stripped; at most 300 characters."""
    return _plain(value, "prompt", 300)


def prompt_file_text(prompts: Sequence[str], *, resolution: tuple[int, int], steps: int) -> str:
    """A kohya prompt file: each prompt at the job's resolution (capped at
    :data:`SAMPLE_MAX_SIDE`) and ``steps`` (capped at :data:`SAMPLE_MAX_STEPS`)."""
    width, height = (min(side, SAMPLE_MAX_SIDE) for side in resolution)
    steps = max(1, min(steps, SAMPLE_MAX_STEPS))
    return "".join(f"{check_prompt(p)} --w {width} --h {height} --s {steps}\n" for p in prompts)
