"""Wheel gestures as numbers (no Qt): paging by notches, zooming about the cursor."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dicom.core.adjust import WHEEL_ZOOM_PER_NOTCH, wheel_pages, wheel_zoom


def test_one_slice_per_notch_towards_the_user_is_next() -> None:
    assert wheel_pages(0.0, -1.0) == (1, 0.0)
    assert wheel_pages(0.0, 1.0) == (-1, 0.0)
    assert wheel_pages(0.0, -1.0, inverted=True) == (-1, 0.0)  # "natural scrolling"
    # a wheel set to 3 lines a notch still moves one slice
    assert wheel_pages(0.0, -3.0) == (1, 0.0)


def test_trackpad_fractions_add_up_to_whole_slices() -> None:
    progress, moved = 0.0, 0
    for _ in range(10):
        steps, progress = wheel_pages(progress, -0.25)
        moved += steps
    assert moved == 2 and progress == pytest.approx(0.5)


def test_zoom_keeps_the_point_under_the_cursor() -> None:
    center, cursor = (10.0, 20.0), (14.0, 16.0)
    zoom, new_center = wheel_zoom(2.0, center, cursor, 1.0)
    assert zoom == pytest.approx(2.0 * WHEEL_ZOOM_PER_NOTCH)
    # screen offset of the cursor from the centre = (cursor - center) * zoom: unchanged
    before = (np.asarray(cursor) - np.asarray(center)) * 2.0
    after = (np.asarray(cursor) - np.asarray(new_center)) * zoom
    assert after == pytest.approx(before)
    back, _ = wheel_zoom(zoom, new_center, cursor, -1.0)
    assert back == pytest.approx(2.0)


@pytest.mark.parametrize("lo, hi", [(-1024.0, 3071.0), (0.0, 1.0), (1e-6, 1e-3), (0.0, 1e6)])
def test_centre_slider_is_linear_over_the_values(lo: float, hi: float) -> None:
    from napari_dicom.core.adjust import SLIDER_STEPS, center_to_slider, slider_to_center

    assert slider_to_center(0, lo, hi) == lo and slider_to_center(SLIDER_STEPS, lo, hi) == hi
    for pos in (1, 250, 500, 999):
        c = slider_to_center(pos, lo, hi)
        assert abs(c - (lo + (hi - lo) * pos / SLIDER_STEPS)) <= (hi - lo) * 1e-4
        assert center_to_slider(c, lo, hi) == pos  # round trip
    assert center_to_slider(lo - 5, lo, hi) == 0
    assert center_to_slider(hi * 2 + 1, lo, hi) == SLIDER_STEPS
    assert center_to_slider(3.0, 3.0, 3.0) == 0 and slider_to_center(7, 3.0, 3.0) == 3.0
