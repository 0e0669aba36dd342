"""A CT without a stored window (no Window Center / Width, no VOI LUT) opens in the
soft-tissue window W 400 / L 40, said to be chosen, not stored (core.pixels.
ct_default_window); CTs that store one, uncalibrated CTs and other modalities do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from napari_dicom.core.phantom import ct_phantom_volume, write_ct_phantom
from napari_dicom.core.pixels import (
    CT_DEFAULT_WINDOW,
    default_display,
    load_series,
    series_metadata,
)
from napari_dicom.core.render import minmax_window
from napari_dicom.core.scan import scan


def _series(folder: Path):  # type: ignore[no-untyped-def]
    (s,) = scan([str(folder)]).series
    return s


def test_ct_without_window_opens_in_the_soft_tissue_window(tmp_path: Path) -> None:
    paths = write_ct_phantom(tmp_path, n_slices=4, size=32, stored_window=False)
    ds = pydicom.dcmread(paths[0])
    assert "WindowCenter" not in ds and "VOILUTSequence" not in ds and ds.Modality == "CT"
    s = _series(tmp_path)
    data = load_series(s, lazy=False)
    display, note = default_display(s, data)
    assert (display.window.center, display.window.width) == (40.0, 400.0)
    assert display.window.function == "LINEAR" and display.window == CT_DEFAULT_WINDOW
    assert note.startswith("no stored window: CT default soft-tissue window W 400 / L 40")
    assert "not stored in the file" in note
    meta = series_metadata(s, display, note)
    assert meta["default_stored"] is False
    assert meta["default"]["window"]["center"] == 40.0 and meta["windows"] == []
    assert "not stored" in meta["summary"]


def test_ct_with_a_stored_window_keeps_it(tmp_path: Path) -> None:
    write_ct_phantom(tmp_path, n_slices=4, size=32)
    s = _series(tmp_path)
    display, note = default_display(s, load_series(s, lazy=False))
    assert note.startswith("stored window W 400 / L 40 (SOFT TISSUE)")
    assert series_metadata(s, display, note)["default_stored"] is True


def test_uncalibrated_ct_keeps_the_min_max_window(tmp_path: Path) -> None:
    """Values 0 to 2000 never reach air: not calibrated HU, so no fixed HU window."""
    vol = np.clip(ct_phantom_volume(3, 32, noise=0).astype(np.int32) + 1100, 0, 2000)
    write_ct_phantom(tmp_path, n_slices=3, size=32, volume=vol.astype(np.int16),
                     header_style="siemens", stored_window=False)
    s = _series(tmp_path)
    data = load_series(s, lazy=False)
    display, note = default_display(s, data)
    assert display.window == minmax_window(float(data.min()), float(data.max()))
    assert note.startswith("min-max")
    assert series_metadata(s, display, note)["default_stored"] is False


def test_other_modalities_keep_the_min_max_window(tmp_path: Path) -> None:
    paths = write_ct_phantom(tmp_path, n_slices=3, size=32, stored_window=False, noise=0)
    for p in paths:  # the same values labelled MR (no Rescale Type: no HU)
        ds = pydicom.dcmread(p)
        ds.Modality = "MR"
        del ds.RescaleType
        ds.save_as(p)
    s = _series(tmp_path)
    assert s.modality == "MR" and s.value_unit == ""
    display, note = default_display(s, load_series(s, lazy=False))
    assert note.startswith("min-max") and display.window != CT_DEFAULT_WINDOW
