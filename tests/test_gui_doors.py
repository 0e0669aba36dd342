"""The plugin reached as napari reaches it: File > Open / drag-and-drop without naming the
plugin, the progress bars and reader preferences napari really uses (run under xvfb)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from napari.plugins import _npe2
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
from pydicom.pixels import apply_modality_lut

from napari_dicom._reader import napari_get_reader, read_dicom

DICOMDIR = get_testdata_file("DICOMDIR")
#: an extensionless CR image of the DICOMDIR tree, as CDs and PACS exports name them
CR_6154 = str(Path(DICOMDIR).parent / "77654033" / "CR1" / "6154")
PLUGIN = "napari-dicom"


@contextlib.contextmanager
def no_dialog(qtbot: Any) -> Iterator[list[str]]:
    """Collect (and close) any modal dialog napari opens, such as its reader choice.

    napari's File > Open path blocks on the dialog; closing it keeps a failing test from
    hanging, and the list says a dialog was shown.
    """
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    seen: list[str] = []

    def close_modal() -> None:
        w = QApplication.activeModalWidget()
        if w is not None:
            seen.append(type(w).__name__)
            w.reject()

    timer = QTimer()
    timer.timeout.connect(close_modal)
    timer.start(200)
    try:
        yield seen
    finally:
        timer.stop()


def _file_open(viewer: Any, path: str) -> list[Any]:
    """What File > Open and a drop on the window do: ``QtViewer._qt_open`` (no plugin)."""
    before = list(viewer.layers)
    viewer.window._qt_viewer._qt_open([path], stack=False)
    return [layer for layer in viewer.layers if layer not in before]


def test_extensionless_file_opens_through_file_open(make_napari_viewer: Any, qtbot: Any) -> None:
    viewer = make_napari_viewer()
    with no_dialog(qtbot) as dialogs:
        layers = _file_open(viewer, CR_6154)
    assert dialogs == []
    assert len(layers) == 1
    ds = pydicom.dcmread(CR_6154)
    want = apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_allclose(np.asarray(layers[0].data), want, rtol=1e-6)  # float32
    # the same through viewer.open without naming the plugin
    (again,) = viewer.open(CR_6154, plugin=None)
    np.testing.assert_allclose(np.asarray(again.data), want, rtol=1e-6)


def test_dicomdir_opens_through_file_open(
    make_napari_viewer: Any, qtbot: Any, tmp_path: Path
) -> None:
    # a small DICOM medium written by pydicom: extensionless files in a PT*/ST*/SE* tree
    from napari_dicom.core.phantom import write_ct_phantom

    write_ct_phantom(tmp_path / "src", n_slices=6, size=32)
    fs = FileSet()
    for f in sorted((tmp_path / "src").iterdir()):
        fs.add(pydicom.dcmread(f))
    fs.add(pydicom.dcmread(CR_6154))
    fs.write(tmp_path / "cd")
    dicomdir = str(tmp_path / "cd" / "DICOMDIR")
    viewer = make_napari_viewer()
    with no_dialog(qtbot) as dialogs:
        layers = _file_open(viewer, dicomdir)
    assert dialogs == []
    # every image the DICOMDIR lists is a plane of one of the layers
    images = [i for i in FileSet(dicomdir) if i.node.record_type == "IMAGE"]
    assert sorted(layer.data.shape for layer in layers) == [(6, 32, 32), (16, 16)]
    assert len(images) == 7


def test_extensionless_patterns_claim_no_other_format(tmp_path: Path) -> None:
    # napari lists napari-dicom for extensionless names (DICOMDIR, IM000001) and .dcm...
    for name in ("DICOMDIR", "IM000001", "6154", "I10", "scan.dcm", "SCAN.DCM"):
        assert PLUGIN in _npe2.get_readers(str(tmp_path / name)), name
    # ...but never for another format, so opening those asks nothing new
    for name in ("a.tif", "b.png", "c.zarr", "notes.txt", "1.2.840.10008.tif"):
        assert PLUGIN not in _npe2.get_readers(str(tmp_path / name)), name
    # and its probe declines an extensionless file that is not DICOM
    readme = tmp_path / "README"
    readme.write_text("not DICOM\n")
    assert napari_get_reader(str(readme)) is None
    assert napari_get_reader(CR_6154) is read_dicom


def test_progress_bar_updates_are_throttled_by_time(make_napari_viewer: Any) -> None:
    """The reader's napari progress bar (shown in the window's activity dock) appears only
    once the work has run 0.2 s and then moves at most every 0.2 s, however many files.

    The reader's clock is replaced by a scripted one (10 ms per file) so the count does not
    depend on this machine's speed; the progress objects are napari's own."""
    from napari.utils import progress

    from napari_dicom._reader import _PROGRESS_EVERY, _close, _progress_bar

    make_napari_viewer()
    t = iter(np.arange(0.0, 100.0, 0.01))
    state, callback = _progress_bar(0, "Reading DICOM headers", clock=lambda: float(next(t)))
    values: list[int] = []
    created = len(progress._all_instances)
    for done in range(1, 15):  # the first 0.14 s: no bar yet
        callback(done, 1000)
    assert state["bar"] is None and len(progress._all_instances) == created
    def watch(event: Any) -> None:
        for bar in event.added:
            bar.events.value.connect(lambda v: values.append(v.value))

    progress._all_instances.events.changed.connect(watch)
    try:
        for done in range(15, 1001):  # 10 s of work over 1000 files
            callback(done, 1000)
    finally:
        progress._all_instances.events.changed.disconnect(watch)
    bar = state["bar"]
    assert bar in progress._all_instances and bar.total == 1000
    assert 10.0 / _PROGRESS_EVERY - 2 <= len(values) <= 10.0 / _PROGRESS_EVERY  # not 1000
    assert values == sorted(values) and values[0] <= 25 and values[-1] >= 980
    _close(state)
    assert bar not in progress._all_instances


def test_a_series_warning_is_shown_once(make_napari_viewer: Any, tmp_path: Path) -> None:
    from napari.utils.notifications import notification_manager

    from napari_dicom.core.phantom import write_ct_phantom

    write_ct_phantom(tmp_path, n_slices=8, size=16, skip=(3,))  # a gap in the series
    viewer = make_napari_viewer()
    n = len(notification_manager.records)
    (layer,) = viewer.open(str(tmp_path), plugin=PLUGIN)
    said = [str(r.message) for r in notification_manager.records[n:]]
    gaps = [m for m in said if "slice spacing varies" in m]
    assert len(gaps) == 1, said
    assert gaps[0].split(": ")[0] in layer.name
