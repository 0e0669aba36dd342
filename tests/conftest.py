"""Shared fixtures."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from napari_dicom.core import pixels
from napari_dicom.core.series import Series


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, Any, Any]]:
    """Every call of the project's decode function (``core.pixels._decode``, which the
    loader, the lazy planes and the fast-decode check all go through), counted by
    ``(file, frame, fast decoder or None for pydicom)``; the real function does the work.
    The fast-decode check is forgotten so it runs (and is counted) again."""
    seen: Counter[tuple[str, Any, Any]] = Counter()
    real = pixels._decode

    def counting(path: str, frame: Any, series: Series, fast: Any = None,
                 plane: Any = None) -> Any:
        seen[str(path), frame, fast] += 1
        return real(path, frame, series, fast, plane)

    monkeypatch.setattr(pixels, "_decode", counting)
    monkeypatch.setattr(pixels, "_FAST_CHECKED", {})
    return seen
