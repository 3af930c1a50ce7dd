"""Boxes and the feature-map geometry of region search (model.regions, model.embedder.input_frame).

Pure arithmetic, no model: where a cell of the 7x7 feature map lies in the user's image decides which part
of the photo "auto" searches, under every resize mode and after border trim.
"""

from __future__ import annotations

import numpy as np
import pytest

from conf.settings import ResizeMode
from model.embedder import input_frame
from model.regions import Box, auto_gate, choose, clip_box, strongest_blob, widen


def test_boxes_round_outward_and_clip_to_the_image() -> None:
    assert clip_box(10.2, 20.7, 30.1, 40.0, 640, 480) == Box(10, 20, 31, 41)
    assert clip_box(600, 400, 100, 100, 640, 480) == Box(600, 400, 40, 80)
    assert clip_box(0, 0, 1e6, 1e6, 640, 480) == Box.whole(640, 480)
    assert clip_box(640, 0, 10, 10, 640, 480) is None  # starts right of the last pixel column
    assert clip_box(5, 5, 0.5, 0.5, 640, 480) == Box(5, 5, 1, 1)  # a part of a pixel is that pixel


def test_widen_grows_on_every_side_within_the_image() -> None:
    assert widen(Box(100, 100, 100, 50), 0.1, 640, 480) == Box(90, 95, 120, 60)
    assert widen(Box(0, 0, 100, 100), 0.5, 120, 480) == Box(0, 0, 120, 150)


def test_the_strongest_blob_is_where_the_energy_is() -> None:
    energy = np.ones((7, 7))
    energy[4:6, 1:4] = 9.0  # the object: rows 4-5, columns 1-3
    energy[0, 6] = 5.0  # a weaker speck elsewhere
    assert strongest_blob(energy, 1.0) == pytest.approx((1 / 7, 4 / 7, 4 / 7, 6 / 7))
    assert strongest_blob(np.ones((7, 7)), 0.5) is None  # nothing stands out


@pytest.mark.parametrize(
    ("resize", "cell", "expected"),
    [
        # 800x400 image: squash stretches the square over all of it...
        (ResizeMode.SQUASH, (0.5, 0.5, 1.0, 1.0), Box(400, 200, 400, 200)),
        # ...the centre crop covers its central 400x400 square (x from 200)...
        (ResizeMode.CENTER_CROP, (0.5, 0.5, 1.0, 1.0), Box(400, 200, 200, 200)),
        # ...and padding a square of 800 centred on it (rows -200..600), whose padded rows are clipped away.
        (ResizeMode.PAD, (0.0, 0.0, 0.5, 0.5), Box(0, 0, 400, 200)),
    ],
)
def test_map_cells_land_where_the_model_saw_them(
    resize: ResizeMode, cell: tuple[float, float, float, float], expected: Box
) -> None:
    assert input_frame(800, 400, resize).box(*cell, 800, 400) == expected


def test_after_a_trim_cells_are_placed_in_the_untrimmed_image() -> None:
    # The model saw the 600x300 content that starts at (100, 50) of an 800x400 photo.
    assert input_frame(600, 300, ResizeMode.SQUASH, 100, 50).box(0.0, 0.0, 0.5, 0.5, 800, 400) == Box(100, 50, 300, 150)


def test_auto_answers_with_the_search_that_found_the_closest_match() -> None:
    assert choose(0.9, [0.8, 0.85]) is None
    assert choose(0.5, [0.8, 0.85]) == 1
    assert choose(None, [None, 0.3]) == 1
    assert choose(0.5, [None]) is None


def test_the_auto_gate_follows_the_duplicate_threshold_in_force() -> None:
    # EfficientNet-Lite0's measured default (0.746) gives the gate chosen on the tune split; a calibrated or
    # configured threshold moves it along.
    assert auto_gate(0.746) == pytest.approx(0.649, abs=0.001)
    assert auto_gate(0.9) > auto_gate(0.746)
