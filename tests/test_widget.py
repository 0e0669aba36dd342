"""Window / Level dock widget on real DICOM opened through the reader (run under xvfb)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from napari_dicom._widget import CUSTOM, MINMAX, RESET, WindowLevelWidget
from napari_dicom._writer import layer_display
from napari_dicom.core.adjust import center_to_slider, slider_to_center
from napari_dicom.core.meta import CURVE_SUFFIX, CURVE_SUFFIX_R
from napari_dicom.core.phantom import HU_PADDING, write_ct_phantom
from napari_dicom.core.render import limits_to_window, window_to_limits

CT_SMALL = get_testdata_file("CT_small.dcm")

LUNG = "CT Lung: W 1500 / L -600"
BONE = "CT Bone: W 2500 / L 480"


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("phantom")
    write_ct_phantom(folder, n_slices=12, size=64)
    return folder


def _open(viewer: Any, path: Path | str) -> Any:
    layers = viewer.open(str(path), plugin="napari-dicom")
    assert len(layers) == 1
    return layers[0]


@pytest.fixture
def setup(make_napari_viewer: Any, phantom_dir: Path, qtbot: Any) -> tuple[Any, Any, Any]:
    viewer = make_napari_viewer()
    widget = WindowLevelWidget(viewer)
    layer = _open(viewer, phantom_dir)
    return viewer, widget, layer


def _hu(layer: Any) -> np.ndarray:
    return np.asarray(layer.data)


# ---------------------------------------------------------------------------------------


def test_widget_loads_the_file_default_window(setup: tuple[Any, Any, Any]) -> None:
    _, widget, layer = setup
    assert widget.layer is layer
    assert widget._layer_combo.value is layer
    assert widget._readout.value == "W 400 / L 40"
    assert (widget._center.value, widget._width.value) == (40, 400)
    assert tuple(layer.contrast_limits) == window_to_limits(40, 400) == (-160.0, 239.0)
    choices = widget._preset.choices
    assert "SOFT TISSUE (file)" in choices and "LUNG (file)" in choices
    assert LUNG in choices and BONE in choices and MINMAX in choices and RESET in choices
    assert widget.reason == "" and widget._reason.native.isHidden()
    # the stored window is named in the preset chooser, not shown as "(custom)"
    assert widget._preset.value == "SOFT TISSUE (file)"


def test_centre_and_width_fields_set_the_limits(setup: tuple[Any, Any, Any]) -> None:
    _, widget, layer = setup
    widget._width.value = 1500
    widget._center.value = -600
    assert tuple(layer.contrast_limits) == (-1350.0, 149.0)
    assert widget._readout.value == "W 1500 / L -600"
    disp = layer.metadata["dicom"]["display"]
    assert disp["window"]["center"] == -600 and disp["window"]["width"] == 1500
    # the sliders move the same window
    lo, hi = widget._center_range
    widget._center_slider.value = center_to_slider(40, lo, hi)
    centre = slider_to_center(center_to_slider(40, lo, hi), lo, hi)
    assert abs(centre - 40) <= (hi - lo) / 1000  # one slider position
    assert tuple(layer.contrast_limits) == window_to_limits(centre, 1500)
    assert widget._center.value == centre


def test_external_limits_are_followed_without_drift(setup: tuple[Any, Any, Any]) -> None:
    _, widget, layer = setup
    limits = (-160.25, 239.75)
    for _ in range(5):
        layer.contrast_limits = limits
        c, w = limits_to_window(*limits)
        assert (widget.window.center, widget.window.width) == (c, w)
        assert widget._readout.value == "W 401 / L 40.25"
        assert window_to_limits(widget.window.center, widget.window.width) == limits
    # a user edit away and back returns exactly to the same limits
    widget._width.value = 800
    widget._width.value = 401
    assert tuple(layer.contrast_limits) == limits
    # napari's own controls move the fields
    layer.contrast_limits = (-1000, 1000)
    assert widget._readout.value == "W 2001 / L 0.5"
    assert widget._preset.value == CUSTOM
    # limits that happen to be a preset's are named as that preset
    layer.contrast_limits = window_to_limits(-600, 1500)
    assert widget._preset.value == "LUNG (file)"


def test_lung_and_bone_presets(setup: tuple[Any, Any, Any]) -> None:
    _, widget, layer = setup
    widget._preset.value = LUNG
    assert tuple(layer.contrast_limits) == (-1350.0, 149.0)
    assert widget._readout.value == "W 1500 / L -600"
    assert layer.metadata["dicom"]["display"]["window"]["explanation"] == "Lung"
    widget._preset.value = BONE
    assert tuple(layer.contrast_limits) == (-770.0, 1729.0)
    assert layer.colormap.name == "gray"


def test_file_presets_and_reset(setup: tuple[Any, Any, Any]) -> None:
    _, widget, layer = setup
    widget._preset.value = "LUNG (file)"
    assert widget._readout.value == "W 1500 / L -600"
    widget._invert.value = True
    assert layer.colormap.name == "gray_r"
    widget._preset.value = RESET
    assert widget._readout.value == "W 400 / L 40"
    assert layer.colormap.name == "gray"  # the phantom is MONOCHROME2
    assert widget._invert.value is False


def test_minmax_leaves_out_pixel_padding(setup: tuple[Any, Any, Any]) -> None:
    _, widget, layer = setup
    hu = _hu(layer)
    assert hu.min() == HU_PADDING
    widget._preset.value = MINMAX
    inside = hu[hu != HU_PADDING]
    assert tuple(layer.contrast_limits) == (float(inside.min()), float(inside.max()))


def test_percentile_ignore_extremes_equals_numpy(setup: tuple[Any, Any, Any]) -> None:
    viewer, widget, layer = setup
    hu = _hu(layer)
    v = hu[hu != HU_PADDING]
    inner = v[(v > v.min()) & (v < v.max())]
    widget._quick.value = "0.1 / 99.9"
    assert (widget._lo_q.value, widget._hi_q.value) == (0.1, 99.9)
    widget._ignore.value = True
    widget._scope.value = "whole series"
    widget._apply.clicked.emit()
    ref = np.percentile(inner, [0.1, 99.9])
    assert layer.contrast_limits == pytest.approx(ref, abs=1e-9)
    assert "whole series" in widget._status.value
    # current slice scope follows the viewer's slider
    # (the I axis runs against the slice order, superior first: step 7 shows the 8th plane
    # from the top, data plane n - 8)
    viewer.dims.set_current_step(0, 7)
    k = hu.shape[0] - 8
    widget._scope.value = "current slice"
    widget._ignore.value = False
    widget._lo_q.value, widget._hi_q.value = 1.0, 99.0
    widget._apply.clicked.emit()
    plane = hu[k][hu[k] != HU_PADDING]
    assert layer.contrast_limits == pytest.approx(np.percentile(plane, [1, 99]), abs=1e-9)


def test_invert_and_sigmoid(setup: tuple[Any, Any, Any]) -> None:
    _, widget, layer = setup
    widget._invert.value = True
    assert layer.colormap.name == "gray_r"
    widget._function.value = "SIGMOID"
    # SIGMOID (C.11.2.1.3.1) is shown by a curve colormap over c +/- 2w
    assert tuple(layer.contrast_limits) == (40 - 800, 40 + 800)
    assert layer.colormap.name.endswith(CURVE_SUFFIX_R)
    assert widget._readout.value == "W 400 / L 40 (SIGMOID)"
    assert layer.metadata["dicom"]["display"]["window"]["function"] == "SIGMOID"
    # what the writer will export
    d = layer_display(layer.metadata, layer.contrast_limits, layer.gamma, layer.colormap)
    assert (d.window.function, d.window.center, d.window.width, d.invert) == (
        "SIGMOID", 40, 400, True
    )
    widget._invert.value = False
    assert layer.colormap.name.endswith(CURVE_SUFFIX)
    assert not layer.colormap.name.endswith(CURVE_SUFFIX_R)
    widget._function.value = "LINEAR"
    assert tuple(layer.contrast_limits) == (-160.0, 239.0)
    assert layer.colormap.name == "gray"


def test_switching_layers_loads_their_state(setup: tuple[Any, Any, Any]) -> None:
    viewer, widget, phantom = setup
    widget._preset.value = LUNG
    small = _open(viewer, CT_SMALL)  # the new layer becomes active: the widget follows
    assert widget.layer is small
    # CT_small.dcm stores no window: the widget reads the reader's limits back
    c, w = limits_to_window(*small.contrast_limits)
    assert (widget.window.center, widget.window.width) == (c, w)
    assert small.metadata["dicom"]["modality"] == "CT"
    assert "SOFT TISSUE (file)" not in widget._preset.choices
    widget._layer_combo.value = phantom
    assert widget.layer is phantom
    assert widget._readout.value == "W 1500 / L -600"
    # the CT_small layer keeps its own limits
    widget._preset.value = BONE
    assert tuple(small.contrast_limits) != tuple(phantom.contrast_limits)


def test_removing_layers_and_empty_viewer(make_napari_viewer: Any, phantom_dir: Path) -> None:
    viewer = make_napari_viewer()
    widget = WindowLevelWidget(viewer)
    assert widget.layer is None
    assert "No image layer" in widget.reason and not widget._reason.native.isHidden()
    assert not widget._center.enabled and not widget._apply.enabled
    a = _open(viewer, phantom_dir)
    b = _open(viewer, CT_SMALL)
    assert widget.layer is b and widget._center.enabled and widget.reason == ""
    viewer.layers.remove(b)
    assert widget.layer is a
    assert widget._readout.value == "W 400 / L 40"
    viewer.layers.remove(a)
    assert widget.layer is None and not widget._width.enabled
    assert "No image layer" in widget.reason
    # a plain non-DICOM layer works in data units, without file or CT presets
    img = viewer.add_image(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64))
    assert widget.layer is img
    assert widget._preset.choices == (CUSTOM, MINMAX)
    assert widget._function.value == "LINEAR_EXACT"
    lo, hi = img.contrast_limits
    assert widget.window.width == pytest.approx(hi - lo)


def test_refused_values_show_a_reason(setup: tuple[Any, Any, Any]) -> None:
    _, widget, layer = setup
    before = tuple(layer.contrast_limits)
    widget._width.value = 0
    assert widget._status.value.startswith("refused: a LINEAR window needs a width of at least 1")
    assert tuple(layer.contrast_limits) == before
    assert widget._width.value == 400  # the field is put back
    widget._lo_q.value, widget._hi_q.value = 60.0, 40.0
    widget._apply.clicked.emit()
    assert "low percentile (60) must be below the high percentile (40)" in widget._status.value
    assert tuple(layer.contrast_limits) == before


def test_export_button_writes_what_export_layer_writes(
    setup: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    from napari_dicom._writer import export_layer

    _, widget, layer = setup
    widget._preset.value = LUNG
    widget._function.value = "SIGMOID"
    a = tmp_path / "a" / "out.png"
    b = tmp_path / "b" / "out.png"
    a.parent.mkdir()
    b.parent.mkdir()
    widget._export_path.value = a
    widget._export.clicked.emit()
    assert widget._status.value.startswith("wrote ")
    ref = export_layer(layer, str(b))
    got = sorted(p for p in a.parent.rglob("*") if p.is_file())
    want = sorted(p for p in b.parent.rglob("*") if p.is_file())
    assert [p.name for p in got] == [p.name for p in want] and len(ref) >= 12
    for x, y in zip(got, want, strict=True):
        assert x.read_bytes() == y.read_bytes(), x.name


def test_lazy_4d_layer_slice_and_series_percentiles(make_napari_viewer: Any) -> None:
    import dask.array as da

    viewer = make_napari_viewer()
    widget = WindowLevelWidget(viewer)
    rng = np.random.default_rng(3)
    vol = rng.integers(0, 4000, (3, 4, 32, 32)).astype(np.uint16)
    vol[2, 1] += 3000  # one bright plane
    layer = viewer.add_image(da.from_array(vol, chunks=(1, 1, 32, 32)), contrast_limits=(0, 7000))
    assert widget.layer is layer
    assert widget._scope.value == "current slice"  # lazy: no whole-volume pass by default
    viewer.dims.set_current_step(0, 2)
    viewer.dims.set_current_step(1, 1)
    widget._apply.clicked.emit()
    assert layer.contrast_limits == pytest.approx(np.percentile(vol[2, 1], [1, 99]), abs=1e-9)
    widget._scope.value = "whole series"
    widget._apply.clicked.emit()
    assert layer.contrast_limits == pytest.approx(np.percentile(vol, [1, 99]), abs=1e-9)
    assert "exact" in widget._status.value
