"""napari's menus as a user sees them: the plugin's entries in Layers > Visualize and
File > IO Utilities, and the PNG export reached from there (run under xvfb)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from napari._app_model import get_app_model
from napari._app_model.constants import MenuId
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

CT_SMALL = get_testdata_file("CT_small.dcm")


def _menu_commands(menu: str) -> list[str]:
    app = get_app_model()
    return [item.command.id for item in app.menus.get_menu(menu)
            if hasattr(item, "command")]


def test_napari_menus_hold_the_plugin_commands(make_napari_viewer: Any) -> None:
    make_napari_viewer()
    assert "napari-dicom.window_level" in _menu_commands(MenuId.LAYERS_VISUALIZE)
    assert "napari-dicom.export_png" in _menu_commands(MenuId.FILE_IO_UTILITIES)
    assert "napari-dicom.dicomweb" in _menu_commands(MenuId.FILE_ACQUIRE)


def test_export_png_from_io_utilities(make_napari_viewer: Any, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    [layer] = viewer.open(CT_SMALL, plugin="napari-dicom")
    ds = pydicom.dcmread(CT_SMALL)
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    layer.contrast_limits = (0.0, 200.0)  # a window chosen by the user
    # the menu entry's action: napari's app-model command opens the dock widget
    get_app_model().commands.execute_command("napari-dicom.export_png").result()
    assert [k for k in viewer.window.dock_widgets if "Export PNG" in k]
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-dicom", "Export PNG")
    out = tmp_path / "ct.png"
    widget.layer.value = layer
    widget.path.value = out
    widget()
    png = np.asarray(Image.open(out))
    # independent LINEAR ramp over the user's limits (PS3.3 C.11.2.1.2 with c, w = 100, 200)
    expected = np.clip(np.floor((hu - 0.0) / 200.0 * 255.0 + 0.5), 0, 255)
    assert png.shape == hu.shape
    assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1
