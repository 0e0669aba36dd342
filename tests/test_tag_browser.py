"""The DICOM tag browser through napari's doors: the dock widget from the plugin menu, a
series written with pydicom opened with viewer.open, the slider moved as a user does."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from qtpy.QtCore import Qt
from qtpy.QtGui import QGuiApplication
from qtpy.QtWidgets import QTreeWidgetItem

from napari_dicom.core.tags import filter_rows, read_rows

PLUGIN = "napari-dicom"
BROWSER = "DICOM Tags"
CT_SMALL = get_testdata_file("CT_small.dcm")
N = 5


def write_series(folder: Path) -> list[Path]:
    """Five 16 x 16 CT slices 3 mm apart; Instance Numbers against the position (so only
    the geometry sorts them), a private block and a sequence in each header."""
    folder.mkdir()
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(N):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.PatientName, ds.PatientID = "Tags^Test", "TAGS"
        ds.InstanceNumber = 100 - 7 * k
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SliceThickness = 3.0
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = f"1.2.3.4.{k}"
        ds.ReferencedImageSequence = [ref]
        block = ds.private_block(0x0009, "ACME_TAGS_1", create=True)
        block.add_new(0x01, "LO", f"private value {k}")
        ds.PixelData = np.full((16, 16), 1024 + 10 * k, np.uint16).tobytes()
        path = folder / f"slice{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _top(widget: Any) -> dict[str, QTreeWidgetItem]:
    tree = widget._tree
    items = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
    return {it.text(1): it for it in items}


def _file_at_slider(viewer: Any, paths: list[Path]) -> Dataset:
    """The file whose Image Position (Patient) z is the slider's world position: napari's
    first world axis is inferior, -z of DICOM LPS (independent of the plugin's lists)."""
    z = -float(viewer.dims.point[0])
    for p in paths:
        ds = pydicom.dcmread(p)
        if abs(float(ds.ImagePositionPatient[2]) - z) < 1e-3:
            return ds
    raise AssertionError(f"no file at z = {z}")


@pytest.fixture
def browser(make_napari_viewer: Any, tmp_path: Path) -> tuple[Any, Any, list[Path]]:
    viewer = make_napari_viewer()
    paths = write_series(tmp_path / "series")
    viewer.open(str(tmp_path / "series"), plugin=PLUGIN)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, BROWSER)
    return viewer, widget, paths


def test_browser_follows_the_slider(browser: tuple[Any, Any, list[Path]]) -> None:
    viewer, widget, paths = browser
    seen = set()
    for k in (0, 3, 1, N - 1):
        viewer.dims.set_current_step(0, k)
        ds = _file_at_slider(viewer, paths)
        rows = _top(widget)
        assert rows["InstanceNumber"].text(3) == str(ds.InstanceNumber)
        assert rows["SOPInstanceUID"].text(3) == ds.SOPInstanceUID
        assert rows["InstanceNumber"].text(0) == "(0020,0013)"
        assert rows["InstanceNumber"].text(2) == "IS"
        seen.add(ds.SOPInstanceUID)
        # the full header, not the summary: the private element with its creator
        private = next(it for it in rows.values() if it.text(0) == "(0009,1001)")
        assert private.text(4) == "ACME_TAGS_1"
        assert private.text(3) == f"private value {round(ds.ImagePositionPatient[2] / 3)}"
        # a sequence expands into its item and the item's elements
        seq = rows["ReferencedImageSequence"]
        assert seq.text(2) == "SQ" and seq.childCount() == 1
        item = seq.child(0)
        kids = {item.child(i).text(1): item.child(i).text(3) for i in range(item.childCount())}
        ref = ds.ReferencedImageSequence[0]
        assert kids["ReferencedSOPInstanceUID"] == ref.ReferencedSOPInstanceUID
        # pixel data summarised, never dumped: 16 x 16 x 2 bytes
        assert rows["PixelData"].text(3) == "OW, 512 bytes"
    assert len(seen) == 4


def test_filter_box_and_copy(browser: tuple[Any, Any, list[Path]], qtbot: Any) -> None:
    viewer, widget, paths = browser
    viewer.dims.set_current_step(0, 2)
    ds = _file_at_slider(viewer, paths)
    qtbot.keyClicks(widget._filter, "instancenumber")
    assert list(_top(widget)) == ["InstanceNumber"]
    widget._filter.clear()
    qtbot.keyClicks(widget._filter, "1.2.3.4")  # a value inside a sequence: kept with it
    top = _top(widget)
    assert list(top) == ["ReferencedImageSequence"]
    assert top["ReferencedImageSequence"].isExpanded()
    widget._filter.clear()
    item = _top(widget)["SOPInstanceUID"]
    widget._tree.setCurrentItem(item)
    widget._tree.setFocus()
    QGuiApplication.clipboard().clear()
    qtbot.keyClick(widget._tree, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert QGuiApplication.clipboard().text() == ds.SOPInstanceUID


def test_follows_the_selected_layer_and_says_not_dicom(
    browser: tuple[Any, Any, list[Path]],
) -> None:
    viewer, widget, _paths = browser
    dicom_layer = viewer.layers[0]
    other = viewer.add_image(np.zeros((4, 4)), name="plain")
    viewer.layers.selection.active = other
    assert widget.status == "Layer 'plain' is not a DICOM layer: no DICOM header to show."
    assert widget._tree.topLevelItemCount() == 0
    viewer.layers.selection.active = dicom_layer
    assert "InstanceNumber" in _top(widget)


def test_moved_file_is_said_and_layer_unaffected(
    browser: tuple[Any, Any, list[Path]], tmp_path: Path,
) -> None:
    viewer, widget, _paths = browser
    layer = viewer.layers[0]
    before = np.asarray(layer.data).copy()
    viewer.dims.set_current_step(0, 0)
    shutil.move(tmp_path / "series", tmp_path / "elsewhere")
    viewer.dims.set_current_step(0, 2)
    assert widget.status.startswith("cannot re-read ")
    assert "no longer there" in widget.status and "layer is unaffected" in widget.status
    assert widget._tree.topLevelItemCount() == 0
    assert np.array_equal(np.asarray(layer.data), before)
    assert list(viewer.layers) == [layer]


def test_read_rows_of_a_known_file_without_qt() -> None:
    rows = {r.keyword: r for r in read_rows(CT_SMALL)}
    ds = pydicom.dcmread(CT_SMALL)
    assert rows["PatientName"].value == str(ds.PatientName)
    assert rows["PixelData"].value == f"OW, {ds.Rows * ds.Columns * 2} bytes"
    assert rows["OtherPatientIDsSequence"].children[1].children[0].value == "1234ABCD"
    gems = [r for r in read_rows(CT_SMALL) if r.tag == "(0009,1001)"]
    assert gems[0].creator == "GEMS_IDEN_01"
    assert [r.keyword for r in filter_rows(read_rows(CT_SMALL), "kvp")] == ["KVP"]
