"""Loading through napari (viewer.open): the background load swaps the finished array into
the layer without changing what is shown, each plane is decoded once whatever reads the
series (widget histogram, 3-D), and a series over the memory budget stays lazy."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_dicom.core import pixels, stats, volume
from napari_dicom.core.phantom import ct_phantom_volume, write_ct_phantom
from napari_dicom.core.volume import SeriesVolume

PLUGIN = "napari-dicom"
N, SIZE = 24, 64


@pytest.fixture(scope="module")
def series_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ge_series")
    write_ct_phantom(folder, n_slices=N, size=SIZE, spacing=(2.0, 0.7, 0.7))
    return folder


def _gate_histograms(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[int]]:
    """Series histograms are summed only once the returned gate is set; ``sums`` records
    each sum started (its plane count)."""
    gate = threading.Event()
    sums: list[int] = []
    real = volume.histogram_of

    def gated_histogram(arr: np.ndarray, jobs: int = 1) -> Any:
        sums.append(arr.shape[0])
        gate.wait(30)
        return real(arr, jobs)

    monkeypatch.setattr(volume, "histogram_of", gated_histogram)
    return gate, sums


def _gate_decode(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Background decoding starts only once the returned gate is set."""
    gate = threading.Event()
    run = volume._Planes.run

    def gated_run(self: Any, *args: Any, **kwargs: Any) -> None:
        gate.wait(30)
        run(self, *args, **kwargs)

    monkeypatch.setattr(volume._Planes, "run", gated_run)
    return gate


def test_background_load_swaps_in_the_same_picture(
    make_napari_viewer: Any, qtbot: Any, series_folder: Path, monkeypatch: pytest.MonkeyPatch,
    decodes: Counter[tuple[str, Any, Any]],
) -> None:
    monkeypatch.setattr(volume, "BACKGROUND_BYTES", 0)  # this small series loads behind too
    monkeypatch.setattr(volume, "SETTLE_BYTES", 0)  # and is not waited for
    # the background threads start their work when the test says so (a 24-slice series
    # would otherwise be loaded before the test looks at the lazy data)
    gate = _gate_decode(monkeypatch)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Window / Level")
    layer = viewer.open(str(series_folder), plugin=PLUGIN)[0]
    lazy = layer.data
    assert isinstance(lazy, SeriesVolume) and lazy.in_memory
    assert widget._layer_combo.value is layer
    assert widget._scope.value == "current slice", (widget._scope.value, type(layer.data))
    assert lazy.dtype == np.int16  # GE header allows int32; the values fit int16
    shown = viewer.screenshot(canvas_only=True, flash=False)
    limits, cmap, step = tuple(layer.contrast_limits), layer.colormap.name, viewer.dims.point
    planes = np.stack([np.asarray(lazy[k]) for k in range(0, N, 2)])  # decoded on demand
    assert not lazy.loaded
    gate.set()  # the background threads decode the other half

    qtbot.waitUntil(lambda: isinstance(layer.data, np.ndarray), timeout=30000)
    assert layer.data is lazy.result()
    np.testing.assert_array_equal(layer.data[::2], planes)
    np.testing.assert_array_equal(layer.data, ct_phantom_volume(N, SIZE))
    assert layer.data.dtype == np.int16
    assert tuple(layer.contrast_limits) == limits and layer.colormap.name == cmap
    assert viewer.dims.point == step
    np.testing.assert_array_equal(viewer.screenshot(canvas_only=True, flash=False), shown)

    # the widget goes to the whole series once the volume is in memory and its histogram
    # summed; its histogram and 3-D read the array in memory: no file again
    qtbot.waitUntil(lambda: widget._scope.value == "whole series", timeout=30000)
    _edges, counts = widget._stats_for(layer).histogram(256, "series")
    assert counts.sum() == int((layer.data != -3024).sum())  # padding left out
    viewer.dims.ndisplay = 3
    qtbot.wait(50)
    fast = pixels._fast_kind(lazy.series)
    ours = {key[:2]: n for key, n in decodes.items() if key[2] == fast}
    assert len(ours) == N and set(ours.values()) == {1}


def test_over_the_memory_budget_stays_lazy(
    make_napari_viewer: Any, qtbot: Any, series_folder: Path, monkeypatch: pytest.MonkeyPatch,
    decodes: Counter[tuple[str, Any, Any]],
) -> None:
    need = N * SIZE * SIZE * 2
    monkeypatch.setattr(volume, "memory_budget", lambda: need // 2)
    viewer = make_napari_viewer()
    layer = viewer.open(str(series_folder), plugin=PLUGIN)[0]
    data = layer.data
    assert isinstance(data, SeriesVolume) and not data.in_memory
    qtbot.wait(300)
    assert layer.data is data  # nothing swapped in: it stays lazy
    ref = ct_phantom_volume(N, SIZE)
    k = int(viewer.dims.current_step[0])
    np.testing.assert_array_equal(np.asarray(data[k]), ref[k])
    fast = pixels._fast_kind(data.series)
    shown = [key for key, n in decodes.items() if key[2] == fast]
    assert len(shown) < N  # only what was shown (and sampled) was decoded
    before = sum(decodes.values())
    viewer.dims.set_current_step(0, k)  # the same plane again: from the cache
    np.testing.assert_array_equal(np.asarray(layer.data[k]), ref[k])
    assert sum(decodes.values()) == before


def test_swap_does_not_wait_for_the_histogram_nor_does_the_widget(
    make_napari_viewer: Any, qtbot: Any, series_folder: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The finished array goes into the layer as soon as the planes are decoded; the exact
    series histogram is summed after, once; meanwhile the widget shows the current slice
    (the GUI does not wait for the sum) and goes to the whole series when it is done."""
    monkeypatch.setattr(volume, "BACKGROUND_BYTES", 0)
    monkeypatch.setattr(volume, "SETTLE_BYTES", 0)
    gate, sums = _gate_histograms(monkeypatch)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Window / Level")
    layer = viewer.open(str(series_folder), plugin=PLUGIN)[0]
    qtbot.waitUntil(lambda: isinstance(layer.data, np.ndarray), timeout=30000)
    # swapped in while the histogram is still being summed (the gate is shut)
    assert stats.histogram_pending(layer.data) is not None
    np.testing.assert_array_equal(layer.data, ct_phantom_volume(N, SIZE))
    qtbot.wait(100)  # the GUI runs on: the widget did not block on the sum
    assert widget._scope.value == "current slice"
    assert sums == [N]
    gate.set()
    qtbot.waitUntil(lambda: widget._scope.value == "whole series", timeout=30000)
    assert stats.histogram_pending(layer.data) is None
    _edges, counts = widget._stats_for(layer).histogram(256, "series")
    assert counts.sum() == int((layer.data != -3024).sum())  # padding left out
    assert sums == [N]  # summed once, by the loader


def test_loaded_before_napari_adds_the_layer_is_swapped_when_it_does(
    make_napari_viewer: Any, qtbot: Any, series_folder: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A volume that finishes loading before napari has added its layer (a small series,
    a quick disk) still reaches the layer as the finished array, once napari adds it."""
    from napari_dicom._reader import read_dicom

    monkeypatch.setattr(volume, "BACKGROUND_BYTES", 0)
    monkeypatch.setattr(volume, "SETTLE_BYTES", 0)
    viewer = make_napari_viewer()
    ((data, kwargs, _),) = read_dicom(str(series_folder))
    base = data.base if isinstance(data, volume.VolumeView) else data
    assert isinstance(base, SeriesVolume)
    base.result(timeout=30)
    qtbot.wait(100)  # the swap runs on the GUI thread: no layer shows the volume yet
    assert len(viewer.layers) == 0
    layer = viewer.add_image(data, **kwargs)  # what napari does with the reader's data
    qtbot.waitUntil(lambda: isinstance(layer.data, np.ndarray), timeout=30000)
    assert layer.data is base.result()
    np.testing.assert_array_equal(layer.data, ct_phantom_volume(N, SIZE))
    other = viewer.add_image(np.zeros((2, 4, 4), np.int16))  # later layers are left alone
    assert isinstance(other.data, np.ndarray) and other.data.shape == (2, 4, 4)


def test_summary_names_the_dtype_the_volume_ends_in(
    make_napari_viewer: Any, qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GE-style CT one of whose planes holds a value below int16: while it loads the
    layer's summary says int16 and that a plane may need int32; once the volume is in
    the layer, the summary says int32, as the data is (never a wrong dtype in words)."""
    import pydicom

    from napari_dicom.core.scan import scan

    write_ct_phantom(tmp_path, n_slices=N, size=SIZE, shuffle_instance_numbers=False)
    plane = scan([tmp_path]).series[0].planes[N - 1]
    ds = pydicom.dcmread(plane.path)
    stored = ds.pixel_array.copy()
    stored[5, 7] = -32768  # HU -33792
    ds.PixelData = stored.tobytes()
    ds.save_as(plane.path)
    monkeypatch.setattr(volume, "BACKGROUND_BYTES", 0)
    monkeypatch.setattr(volume, "SETTLE_BYTES", 0)
    gate = threading.Event()
    run = volume._Planes.run

    def gated_run(self: Any, *args: Any, **kwargs: Any) -> None:
        gate.wait(30)
        run(self, *args, **kwargs)

    monkeypatch.setattr(volume._Planes, "run", gated_run)
    viewer = make_napari_viewer()
    layer = viewer.open(str(tmp_path), plugin=PLUGIN)[0]
    assert layer.data.dtype == np.int16
    assert "values in HU (int16; int32 if a plane needs it)" in layer.metadata["dicom"]["summary"]
    gate.set()
    qtbot.waitUntil(lambda: isinstance(layer.data, np.ndarray), timeout=30000)
    assert layer.data.dtype == np.int32 and layer.data[N - 1, 5, 7] == -33792
    summary = layer.metadata["dicom"]["summary"]
    assert "values in HU (int32)" in summary and "int16" not in summary


def test_widget_sums_a_loaded_volumes_histogram_behind(
    make_napari_viewer: Any, qtbot: Any, series_folder: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A series loaded before the reader returned (a numpy array, no loader's histogram):
    the widget docked on it does not block the GUI on the whole-series histogram; it
    shows the current slice, sums the histogram once on a thread, then goes to the whole
    series. A second widget reuses that sum."""
    monkeypatch.setattr(volume, "BEHIND_BYTES", 1)  # this small volume counts as large
    gate, sums = _gate_histograms(monkeypatch)
    viewer = make_napari_viewer()
    layer = viewer.open(str(series_folder), plugin=PLUGIN)[0]
    assert isinstance(layer.data, np.ndarray)  # loaded now: no background loader
    assert stats.histogram_pending(layer.data) is None
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Window / Level")
    assert widget._layer_combo.value is layer
    qtbot.wait(100)  # the GUI runs on while the sum waits at the gate
    assert stats.histogram_pending(layer.data) is not None
    assert widget._scope.value == "current slice"
    assert sums == [N]
    gate.set()
    qtbot.waitUntil(lambda: widget._scope.value == "whole series", timeout=30000)
    _edges, counts = widget._stats_for(layer).histogram(256, "series")
    assert counts.sum() == int((layer.data != -3024).sum())  # padding left out
    assert widget._stats_for(layer).minmax("series") == (
        float(layer.data[layer.data != -3024].min()), float(layer.data.max()))
    viewer.window.remove_dock_widget("all")
    _, again = viewer.window.add_plugin_dock_widget(PLUGIN, "Window / Level")
    assert again._scope.value == "whole series" and sums == [N]  # kept with the array


@pytest.mark.parametrize("door", ["widget", "large series"])
def test_compiled_counting_loads_for_whom_needs_it(series_folder: Path, door: str) -> None:
    """In a fresh napari process: opening a small series does not load the compiled
    counting loop (0.3-0.7 s that a user who never looks at a histogram would pay);
    docking the Window / Level widget loads it behind, and so does opening a series from
    ``COMPILED_FROM`` bytes on (lowered here); the series histogram is exact."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import time
        import numpy as np
        import napari
        from qtpy.QtWidgets import QApplication
        from napari_dicom.core import counting, stats, volume
        viewer = napari.Viewer(show=False)

        def wait(until, seconds):
            t0 = time.time()
            while not until() and time.time() - t0 < seconds:
                QApplication.processEvents()
                time.sleep(0.01)

        def open_series():
            layer = viewer.open({str(series_folder)!r}, plugin="napari-dicom")[0]
            wait(lambda: isinstance(layer.data, np.ndarray), 60)
            return layer

        volume.BACKGROUND_BYTES = 0  # this small series loads behind, as a large one
        volume.SETTLE_BYTES = 0
        layer = open_series()
        wait(lambda: False, 1.0)  # a second of the GUI running
        assert not counting.compiled()
        if {door!r} == "widget":
            _, widget = viewer.window.add_plugin_dock_widget("napari-dicom", "Window / Level")
            wait(counting.compiled, 120)
            edges, counts = widget._stats_for(layer).histogram(256, "series")
            assert counts.sum() == int((layer.data != -3024).sum())
        else:
            volume.COMPILED_FROM = 1
            viewer.layers.clear()
            layer = open_series()
            wait(counting.compiled, 120)
            wait(lambda: stats.known_histogram(layer.data) is not None, 60)
            hist = stats.known_histogram(layer.data)
            assert hist is not None and hist.counts.sum() == layer.data.size
        assert counting.compiled()
        print("ok")
        viewer.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1:] == ["ok"]


def _open_gated(viewer: Any, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """``viewer.open`` with the background decode held at a gate until the test opens it."""
    gate = _gate_decode(monkeypatch)
    return viewer.open(str(folder), plugin=PLUGIN)[0], gate


def test_quick_series_opens_in_memory_with_the_same_picture(
    make_napari_viewer: Any, qtbot: Any, series_folder: Path, monkeypatch: pytest.MonkeyPatch,
    decodes: Counter[tuple[str, Any, Any]],
) -> None:
    """An uncompressed series that loads within SETTLE_SECONDS (this small one, made to
    load behind as a large one) is in memory when ``viewer.open`` returns: no swap later,
    no histogram summed behind napari's back (the widget sums it when it is docked), each
    plane decoded once; window, slider range and picture are those of the same series
    shown loading behind, so the picture does not depend on the disk's speed."""
    monkeypatch.setattr(volume, "BACKGROUND_BYTES", 0)
    viewer = make_napari_viewer()
    layer = viewer.open(str(series_folder), plugin=PLUGIN)[0]
    assert isinstance(layer.data, np.ndarray)  # at once: in memory
    np.testing.assert_array_equal(layer.data, ct_phantom_volume(N, SIZE))
    assert not stats.histogram_kept(layer.data)  # nothing summed behind
    ours = {key[:2]: n for key, n in decodes.items() if key[2] == "native"}
    assert len(ours) == N and set(ours.values()) == {1}
    quick = (tuple(layer.contrast_limits), tuple(layer.contrast_limits_range),
             layer.metadata["dicom"]["value_range"], layer.metadata["dicom"]["default_source"])
    shown = viewer.screenshot(canvas_only=True, flash=False)
    monkeypatch.setattr(volume, "BEHIND_BYTES", 1)  # the widget sums this one behind
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Window / Level")
    qtbot.waitUntil(lambda: widget._scope.value == "whole series", timeout=30000)
    _edges, counts = widget._stats_for(layer).histogram(256, "series")
    assert counts.sum() == int((layer.data != -3024).sum())  # padding left out
    viewer.window.remove_dock_widget("all")

    # the same series not waited for (the decode held back past the wait): shown lazily,
    # then swapped; the same window, range and picture
    viewer.layers.clear()
    monkeypatch.setattr(volume, "SETTLE_SECONDS", 0.05)
    lazy, gate = _open_gated(viewer, series_folder, monkeypatch)
    assert not isinstance(lazy.data, np.ndarray)
    gate.set()
    qtbot.waitUntil(lambda: isinstance(lazy.data, np.ndarray), timeout=30000)
    assert (tuple(lazy.contrast_limits), tuple(lazy.contrast_limits_range),
            lazy.metadata["dicom"]["value_range"],
            lazy.metadata["dicom"]["default_source"]) == quick
    np.testing.assert_array_equal(viewer.screenshot(canvas_only=True, flash=False), shown)


def test_compressed_series_is_not_waited_for(
    make_napari_viewer: Any, qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A JPEG Lossless series decodes far slower than it reads: the reader does not wait
    for it (its first slice is shown at once) and it is swapped in when loaded."""
    from pydicom.uid import JPEGLosslessSV1

    write_ct_phantom(tmp_path, n_slices=N, size=SIZE, transfer_syntax=JPEGLosslessSV1)
    monkeypatch.setattr(volume, "BACKGROUND_BYTES", 0)
    viewer = make_napari_viewer()
    layer, gate = _open_gated(viewer, tmp_path, monkeypatch)
    assert isinstance(layer.data, SeriesVolume | volume.VolumeView)
    base = layer.data.base if isinstance(layer.data, volume.VolumeView) else layer.data
    assert base.in_memory and not base.quick
    gate.set()
    qtbot.waitUntil(lambda: isinstance(layer.data, np.ndarray), timeout=30000)
    np.testing.assert_array_equal(layer.data, ct_phantom_volume(N, SIZE))
