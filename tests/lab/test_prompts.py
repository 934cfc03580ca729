"""The prompt files the worker writes: sizes and steps from the job and the lab only."""

from __future__ import annotations

import pytest

from lab.prompts import PromptError, prompt_file_text


def test_prompt_files_take_sizes_from_the_job_capped_by_the_lab():
    text = prompt_file_text(["ar1a, woman"], resolution=(4096, 768), steps=500)
    assert text == "ar1a, woman --w 2048 --h 768 --s 100\n"


def test_prompt_files_refuse_member_options():
    with pytest.raises(PromptError):
        prompt_file_text(["ar1a, woman --w 16384"], resolution=(512, 512), steps=20)
