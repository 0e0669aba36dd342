"""napari sample data: pydicom's test images and a synthetic CT series, opened by the reader."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from .core.phantom import write_ct_phantom

#: the sample CT series: slices, size, (slice, row, column) spacing in mm
SAMPLE_SLICES = 40
SAMPLE_SIZE = 128
SAMPLE_SPACING = (2.5, 0.7, 0.7)


def _testdata(name: str) -> str:
    try:
        from pydicom.data import get_testdata_file
    except ImportError as exc:  # pragma: no cover - pydicom is a dependency
        raise RuntimeError("the DICOM samples need pydicom") from exc
    path = get_testdata_file(name)
    if path is None:
        raise RuntimeError(f"pydicom's test file {name} is not installed")
    return str(path)


def _read(path: str | Path) -> list[Any]:
    from ._reader import read_dicom

    return list(read_dicom(str(path)))


def ct_slice() -> list[Any]:
    """pydicom's CT_small.dcm (one 128 x 128 CT slice, HU)."""
    return _read(_testdata("CT_small.dcm"))


def mr_slice() -> list[Any]:
    """pydicom's MR_small.dcm (one 64 x 64 MR slice)."""
    return _read(_testdata("MR_small.dcm"))


def sample_series_folder() -> Path:
    """Folder holding the synthetic CT series (written once, reused while complete)."""
    folder = Path(tempfile.gettempdir()) / "napari-dicom-sample" / __version__
    marker = folder / "complete.json"
    want = {"slices": SAMPLE_SLICES, "size": SAMPLE_SIZE, "spacing": list(SAMPLE_SPACING)}
    try:
        if json.loads(marker.read_text()) == want:
            return folder
    except (OSError, ValueError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("IM*.dcm"):
        old.unlink()
    write_ct_phantom(
        folder, SAMPLE_SLICES, SAMPLE_SIZE, SAMPLE_SPACING,
        series_description="Phantom CT (sample)", extension=".dcm",
    )
    marker.write_text(json.dumps(want))
    return folder


def ct_series() -> list[Any]:
    """A synthetic 40-slice CT series (phantom in HU, two stored windows)."""
    return _read(sample_series_folder())
