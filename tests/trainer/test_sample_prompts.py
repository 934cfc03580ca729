"""A prompt line cannot ask the sampler for a giant render (issue 14, point 3)."""

from __future__ import annotations

import pytest

from trainer.errors import ConfigError
from trainer.sampling import parse_prompt_line


@pytest.mark.parametrize(
    "line", ["woman --w 16384 --h 16384", "woman --h 4", "woman --s 100000", "woman --s 0"]
)
def test_sample_sizes_and_steps_are_bounded(line):
    with pytest.raises(ConfigError):
        parse_prompt_line(line, default_seed=0, default_size=(512, 512))


def test_ordinary_lines_still_parse():
    sample = parse_prompt_line("ar1a --w 1024 --h 768 --s 28", default_seed=3, default_size=(8, 8))
    assert (sample.width, sample.height, sample.steps, sample.seed) == (1024, 768, 28, 3)
