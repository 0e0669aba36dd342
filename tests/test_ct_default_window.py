"""Opening a CT without a stored window through napari (File > Open's path): the layer
shows the soft-tissue window, and napari's notifications and the layer's metadata say it
was chosen by default, not stored in the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_dicom.core.phantom import write_ct_phantom
from napari_dicom.core.render import window_to_limits


def test_ct_without_window_opens_in_soft_tissue_and_says_so(
    make_napari_viewer: Any, tmp_path: Path
) -> None:
    write_ct_phantom(tmp_path, n_slices=4, size=32, stored_window=False,
                     series_description="No window")
    seen = len(notification_manager.records)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path), plugin="napari-dicom")
    assert tuple(layer.contrast_limits) == window_to_limits(40.0, 400.0)
    meta = layer.metadata["dicom"]
    assert meta["default_stored"] is False
    assert "chosen by napari-dicom, not stored in the file" in meta["default_source"]
    records = notification_manager.records[seen:]
    infos = [str(r.message) for r in records if r.severity == NotificationSeverity.INFO]
    assert any(m.startswith(f"{layer.name}: no stored window: CT default soft-tissue window "
                            "W 400 / L 40") for m in infos), infos
    assert [r for r in records if r.severity >= NotificationSeverity.WARNING] == []


def test_ct_with_stored_window_says_nothing_of_a_default(
    make_napari_viewer: Any, tmp_path: Path
) -> None:
    write_ct_phantom(tmp_path, n_slices=4, size=32)
    seen = len(notification_manager.records)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path), plugin="napari-dicom")
    assert layer.metadata["dicom"]["default_stored"] is True
    assert not any("no stored window" in str(r.message)
                   for r in notification_manager.records[seen:])
