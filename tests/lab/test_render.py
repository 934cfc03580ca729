"""Sample grids and loss curves: geometry and content, read back from the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lab.render import loss_curve, moving_average, sample_grid


def _solid(color, size=(64, 32)):
    return Image.new("RGB", size, color)


def test_grid_places_each_cell_in_its_row_and_column():
    colors = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(255, 255, 0), (0, 255, 255), None]]
    cells = [[_solid(c) if c else None for c in row] for row in colors]
    grid = sample_grid(
        cells, ["a cat", "a dog"], ["e1", "e2", "e3"], cell=100, label_width=50, header=20
    )
    assert grid.size == (50 + 3 * 100, 20 + 2 * 100)
    for r, row in enumerate(colors):
        for c, color in enumerate(row):
            centre = (50 + c * 100 + 50, 20 + r * 100 + 50)
            assert grid.getpixel(centre) == (color or (24, 25, 28))
    # wide cells keep their aspect: 64×32 scaled up to 100×50, blank above and below
    assert grid.getpixel((50 + 50, 20 + 10)) == (24, 25, 28)
    assert grid.getpixel((50 + 2, 20 + 50)) == (255, 0, 0)  # enlarged to the cell's width


def test_labels_are_drawn():
    grid = sample_grid([[_solid((0, 0, 0))]], ["a long prompt " * 5], ["epoch 1"], cell=80)
    labels = np.asarray(grid)[:, :200]
    header = np.asarray(grid)[:28, 220:]
    assert (labels > 200).any() and (header > 200).any()


def test_grid_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="len\\(row_labels\\)"):
        sample_grid([[_solid((0, 0, 0))]], ["a", "b"], ["e1"])


def test_moving_average():
    assert moving_average([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]


def test_loss_curve_draws_a_falling_line():
    losses = [1.0 / (1 + i / 10) for i in range(200)]
    image = np.asarray(loss_curve(losses, epoch_steps=[50, 100, 150]))
    blue = np.argwhere((image[:, :, 2] > 200) & (image[:, :, 0] < 120))
    assert len(blue) > 100
    left = blue[blue[:, 1] < 150][:, 0].mean()  # rows (y) of the early part
    right = blue[blue[:, 1] > 650][:, 0].mean()
    assert left < right  # high loss drawn near the top, low loss near the bottom


def test_loss_curve_without_values_says_so():
    image = np.asarray(loss_curve([float("nan")]))
    assert (image > 200).any()
