"""The plugin reached as napari reaches it: File > Open / drag-and-drop without naming the
plugin, the progress bars and reader preferences napari really uses (run under xvfb)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
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
    once the work has run 0.5 s, then moves at most every 0.2 s, however many files, and
    less often when its updates are slow (at most 5 % of the time).

    The reader's clock is scripted (10 ms per file) so the count does not depend on this
    machine's speed; the progress objects are napari's own."""
    from napari.utils import progress

    from napari_dicom._reader import (
        _PROGRESS_EVERY,
        _PROGRESS_FIRST,
        _PROGRESS_SHARE,
        _close,
        _progress_bar,
    )

    make_napari_viewer()
    now = [0.0]
    slow_update = [0.0]  # extra seconds an update takes, added to the clock by it

    def clock() -> float:
        return now[0]

    def run(files: int) -> tuple[Any, list[int]]:
        values: list[int] = []

        def watch(event: Any) -> None:
            for bar in event.added:
                bar.events.value.connect(lambda v: values.append(v.value))
                bar.events.value.connect(lambda v: now.__setitem__(0, now[0] + slow_update[0]))

        now[0] = 0.0
        state, callback = _progress_bar(0, "Reading DICOM headers", clock=clock)
        progress._all_instances.events.changed.connect(watch)
        try:
            for done in range(1, files + 1):
                now[0] += 0.01
                callback(done, files)
                if now[0] < _PROGRESS_FIRST - 0.01:
                    assert state["bar"] is None
        finally:
            progress._all_instances.events.changed.disconnect(watch)
        return state, values

    state, values = run(1000)  # 10 s of work over 1000 files
    bar = state["bar"]
    assert bar in progress._all_instances and bar.total == 1000
    n_max = (10.0 - _PROGRESS_FIRST) / _PROGRESS_EVERY + 1
    assert n_max - 3 <= len(values) <= n_max  # not 1000
    assert values == sorted(values) and values[0] <= 52 and values[-1] >= 980
    _close(state)
    assert bar not in progress._all_instances
    # updates that take 0.1 s each (a slow repaint) come at most every 2 s
    slow_update[0] = 0.1
    state, values = run(1000)
    spent = len(values) * slow_update[0]
    assert spent <= _PROGRESS_SHARE * now[0] + slow_update[0]
    _close(state)


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


def test_set_reader_once_then_folders_and_dcm_ask_nothing(
    make_napari_viewer: Any, qtbot: Any, tmp_path: Path
) -> None:
    from napari._app_model import get_app_model
    from napari.errors import MultipleReaderError
    from PIL import Image

    from napari_dicom.core.phantom import write_ct_phantom

    a, b, pngs = tmp_path / "a", tmp_path / "b", tmp_path / "pngs"
    write_ct_phantom(a, n_slices=4, size=16, series_description="First")
    write_ct_phantom(b, n_slices=5, size=16, series_description="Second")
    pngs.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pngs / "x.png")
    viewer = make_napari_viewer()
    # out of the box napari's own reader competes for every folder: File > Open asks
    with pytest.raises(MultipleReaderError):
        viewer.open(str(a), plugin=None)
    # the command napari lists under File > IO Utilities, run as the menu runs it
    app = get_app_model()
    listed = [getattr(i, "command", None) for i in app.menus.get_menu("napari/file/io_utilities")]
    assert "napari-dicom.use_for_dicom" in [c.id for c in listed if c is not None]
    app.commands.execute_command("napari-dicom.use_for_dicom").result()
    for folder, n in ((a, 4), (b, 5)):  # a second folder asks nothing either
        with no_dialog(qtbot) as dialogs:
            layers = _file_open(viewer, str(folder))
        assert dialogs == []
        assert [lyr.data.shape[0] for lyr in layers] == [n] and "dicom" in layers[0].metadata
    with no_dialog(qtbot) as dialogs:  # a .dcm file too
        (ct,) = _file_open(viewer, get_testdata_file("CT_small.dcm"))
    assert dialogs == [] and "dicom" in ct.metadata
    # a folder napari-dicom declines is offered to the other readers in napari's dialog
    with no_dialog(qtbot) as dialogs:
        assert _file_open(viewer, str(pngs)) == []
    assert dialogs == ["QtReaderDialog"]


def test_cli_set_reader_writes_and_undoes_napari_preferences(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "settings.yaml"
    script = (  # both runs in one process: napari's import is the slow part
        "from napari_dicom.cli import main\n"
        "import os, yaml, pathlib\n"
        "p = pathlib.Path(os.environ['NAPARI_CONFIG'])\n"
        "assert main(['set-reader']) == 0\n"
        "print(yaml.safe_load(p.read_text())['plugins']['extension2reader'])\n"
        "assert main(['set-reader', '--undo']) == 0\n"
    )
    env = {**os.environ, "NAPARI_CONFIG": str(cfg)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True).stdout
    set_line = next(line for line in out.splitlines() if line.startswith("{"))
    prefs = yaml.safe_load(set_line)
    assert prefs["*/"] == prefs["*.dcm"] == prefs["*.DCM"] == PLUGIN
    assert "napari opens */, *.dcm" in out and "preferences removed: */" in out
    after = (yaml.safe_load(cfg.read_text()).get("plugins") or {}).get("extension2reader")
    after = after or {}  # napari leaves defaults out of the file
    assert PLUGIN not in after.values()
