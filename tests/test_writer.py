"""The npe2 writer: File > Save Selected Layers as .png writes what the layer shows.

Run under ``xvfb-run -a python -m pytest tests/test_writer.py``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from npe2 import PluginManager
from PIL import Image
from pydicom.data import get_testdata_file

from napari_dicom._colormaps import layer_display_kwargs
from napari_dicom._writer import colormap_palette, export_layer
from napari_dicom.core.meta import META_KEY
from napari_dicom.core.phantom import ct_phantom_volume
from napari_dicom.core.render import Display, Window, render_uint8

PLUGIN = "napari-dicom"


@pytest.fixture(scope="module")
def ct_hu() -> np.ndarray:
    """CT_small.dcm in HU (stored int16, Rescale Intercept -1024, slope 1)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    return (ds.pixel_array.astype(np.int16) - 1024).astype(np.int16)


def read_png(path: str | Path) -> tuple[np.ndarray, str]:
    with Image.open(path) as im:
        im.load()
        return np.asarray(im), im.mode


def save(viewer: Any, layer: Any, path: Path) -> list[str]:
    viewer.layers.selection = {layer}
    return viewer.layers.save(str(path), selected=True, plugin=PLUGIN)


def test_grey_layer_png_is_the_displayed_window(make_napari_viewer: Any, ct_hu: np.ndarray,
                                                tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    layer = viewer.add_image(ct_hu, colormap="gray")
    layer.contrast_limits = (-160, 239)  # W 400 / L 40
    written = save(viewer, layer, tmp_path / "ct.png")
    assert written == [str(tmp_path / "ct.png")]
    px, mode = read_png(written[0])
    assert mode == "L"
    np.testing.assert_array_equal(px, render_uint8(ct_hu, Display(Window(40, 400))))
    # soft tissue window: air is black, bone white, something in between
    assert px.min() == 0 and px.max() == 255


def test_gray_r_is_inverted_and_gamma_applies(make_napari_viewer: Any, ct_hu: np.ndarray,
                                              tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    layer = viewer.add_image(ct_hu, colormap="gray_r", contrast_limits=(-160, 239), gamma=0.6)
    (path,) = save(viewer, layer, tmp_path / "inv.png")
    px, mode = read_png(path)
    assert mode == "L"
    want = render_uint8(ct_hu, Display(Window(40, 400), invert=True, gamma=0.6))
    np.testing.assert_array_equal(px, want)
    plain = render_uint8(ct_hu, Display(Window(40, 400), gamma=0.6))
    assert np.abs(px.astype(int) - (255 - plain.astype(int))).max() <= 1


def test_viridis_gives_rgb_through_the_colormap(make_napari_viewer: Any, ct_hu: np.ndarray,
                                                tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    layer = viewer.add_image(ct_hu, colormap="viridis", contrast_limits=(-160, 239))
    (path,) = save(viewer, layer, tmp_path / "vir.png")
    px, mode = read_png(path)
    assert mode == "RGB" and px.shape == (*ct_hu.shape, 3)
    level = render_uint8(ct_hu, Display(Window(40, 400)))
    # napari's own colormap evaluated at each pixel's level
    rgba = layer.colormap.map(level.ravel().astype(np.float64) / 255.0)
    want = np.floor(rgba[:, :3] * 255 + 0.5).reshape(px.shape)
    assert np.abs(px.astype(int) - want.astype(int)).max() <= 1
    assert tuple(px[level == 0][0]) == tuple(colormap_palette("viridis")[0])  # dark purple


def test_3d_layer_gives_sorted_folder_and_manifest(make_napari_viewer: Any,
                                                   tmp_path: Path) -> None:
    vol = ct_phantom_volume(5, 48)
    meta = {META_KEY: {"series_instance_uid": "1.2.3.4",
                       "locations": [10.0, 12.5, 15.0, 17.5, 20.0],
                       "sop_instance_uids": [f"1.2.3.4.{i}" for i in range(5)]}}
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol, contrast_limits=(-1350, 149), metadata=meta)  # W 1500 / L -600
    written = save(viewer, layer, tmp_path / "lung.png")
    folder = tmp_path / "lung"
    assert written[-1] == str(folder / "manifest.csv")
    assert [Path(p).name for p in written[:-1]] == [f"lung_{i:04d}.png" for i in range(1, 6)]
    px, _ = read_png(written[2])
    np.testing.assert_array_equal(px, render_uint8(vol[2], Display(Window(-600, 1500))))
    with open(written[-1], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["location_mm"], r["sop_instance_uid"]) for r in rows][1] == (
        "lung_0002.png", "12.5", "1.2.3.4.1")
    assert {r["window_center"] for r in rows} == {"-600"}


def test_sigmoid_curve_colormap_is_written_exactly(make_napari_viewer: Any, ct_hu: np.ndarray,
                                                   tmp_path: Path) -> None:
    """A SIGMOID window (C.11.2.1.3.1) shown through the reader's curve colormap: the PNG is
    the exact SIGMOID while the limits are the step's; after the user moves them, what napari
    then shows (the curve over the new limits), still grey."""
    sigmoid = Display(Window(40, 400, "SIGMOID"))
    meta = {META_KEY: {"display": {"window": sigmoid.window.to_dict(), "voi_lut": None}}}
    viewer = make_napari_viewer()
    layer = viewer.add_image(ct_hu, metadata=meta, **layer_display_kwargs(sigmoid, False))
    (path,) = save(viewer, layer, tmp_path / "sig.png")
    px, mode = read_png(path)
    assert mode == "L"
    np.testing.assert_array_equal(px, render_uint8(ct_hu, sigmoid))
    # moved limits: the curve colormap over a LINEAR ramp of the new limits
    layer.contrast_limits = (-500, 500)
    (moved,) = save(viewer, layer, tmp_path / "moved.png")
    mpx, mmode = read_png(moved)
    assert mmode == "L"
    curve = colormap_palette(layer.colormap)[:, 0]
    np.testing.assert_array_equal(mpx, curve[render_uint8(ct_hu, Display(Window(0.5, 1001)))])
    assert (mpx != px).any()


def test_export_layer_is_byte_identical_to_save(make_napari_viewer: Any, ct_hu: np.ndarray,
                                                tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    layer = viewer.add_image(ct_hu, colormap="gray_r", contrast_limits=(-1350, 149))
    (saved,) = save(viewer, layer, tmp_path / "a.png")
    progress: list[tuple[int, int]] = []
    (exported,) = export_layer(layer, str(tmp_path / "b.png"),
                               progress=lambda d, t: progress.append((d, t)))
    assert Path(saved).read_bytes() == Path(exported).read_bytes()
    assert progress == [(1, 1)]


def test_rgb_layer_is_written_as_rgb(make_napari_viewer: Any, tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("SC_rgb.dcm"))
    rgb = ds.pixel_array
    viewer = make_napari_viewer()
    layer = viewer.add_image(rgb, rgb=True)
    (path,) = save(viewer, layer, tmp_path / "rgb.png")
    px, mode = read_png(path)
    assert mode == "RGB"
    np.testing.assert_array_equal(px, rgb)


def test_unwritable_target_is_a_clear_error(make_napari_viewer: Any, ct_hu: np.ndarray,
                                            tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.stack([ct_hu, ct_hu]), contrast_limits=(-160, 239))
    with pytest.raises(OSError, match="file") as info:
        save(viewer, layer, blocker / "ct.png")
    assert "not a folder" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_offered_for_image_and_labels_png_not_for_points(make_napari_viewer: Any,
                                                         tmp_path: Path) -> None:
    make_napari_viewer()  # napari's plugin manager with this plugin registered
    pm = PluginManager.instance()

    def ours(layer_types: list[str]) -> list[str]:
        return [w.command for w in pm.iter_compatible_writers(layer_types)
                if w.command.startswith(PLUGIN)]

    assert ours(["image"]) == ["napari-dicom.write_png"]
    # labels get the label-map writer (values as stored, not a display rendering)
    assert ours(["labels"]) == ["napari-dicom.write_label_png"] and ours(["points"]) == []
    writer = next(w for w in pm.iter_compatible_writers(["image"])
                  if w.command.startswith(PLUGIN))
    assert writer.filename_extensions == [".png"]


def test_files_napari_dicom_did_not_write_are_refused_in_one_line(
        make_napari_viewer: Any, ct_hu: np.ndarray, tmp_path: Path) -> None:
    """Save Selected Layers into a folder holding the user's own manifest.csv: refused,
    the file untouched, nothing written; napari shows the one-line message as the
    notification of the failed save."""
    from napari.utils.notifications import notification_manager

    from napari_dicom.core.export import ExportRefused

    folder = tmp_path / "ct"
    folder.mkdir()
    (folder / "manifest.csv").write_text("my,own,table\n")
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.stack([ct_hu, ct_hu]), contrast_limits=(-160, 239))
    with pytest.raises(ExportRefused) as info:
        save(viewer, layer, tmp_path / "ct.png")
    message = str(info.value)
    assert "\n" not in message and "Errno" not in message
    assert message == (f"{folder} holds manifest.csv, not written by napari-dicom: "
                       "not overwritten")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ct", "manifest.csv"]
    assert (folder / "manifest.csv").read_text() == "my,own,table\n"
    # what napari's exception hook does with an error raised by File > Save
    notification_manager.receive_error(type(info.value), info.value, info.value.__traceback__)
    assert notification_manager.records[-1].message == message


def test_saving_again_replaces_the_own_earlier_export_whole(
        make_napari_viewer: Any, ct_hu: np.ndarray, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    big = viewer.add_image(np.stack([ct_hu] * 5), contrast_limits=(-160, 239))
    save(viewer, big, tmp_path / "ct.png")
    small = viewer.add_image(np.stack([ct_hu] * 2), contrast_limits=(-1000, 400))
    written = save(viewer, small, tmp_path / "ct.png")
    folder = tmp_path / "ct"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ct_0001.png", "ct_0002.png", "manifest.csv"]
    assert sorted(Path(p).name for p in written) == sorted(p.name for p in folder.iterdir())
    px, _ = read_png(folder / "ct_0002.png")
    np.testing.assert_array_equal(px, render_uint8(ct_hu, Display(Window.from_limits(-1000, 400))))
    assert [p.name for p in tmp_path.iterdir()] == ["ct"]  # no staging folder left
