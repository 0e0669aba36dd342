"""The package as napari and pip see it: manifest, entry points, Qt-free core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import npe2
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_is_valid_and_registered() -> None:
    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-dicom")
    assert manifest.display_name == "napari-dicom"
    readers = manifest.contributions.readers or []
    assert readers and readers[0].accepts_directories
    # names without a dot of up to 32 characters (DICOMDIR, IM000001): see test_gui_doors
    assert {"*.dcm", "*.dicom", "*.ima", "[!.]" * 8, "[!.]" * 32} <= set(
        readers[0].filename_patterns
    )
    writers = manifest.contributions.writers or []
    assert [(w.layer_types, w.filename_extensions) for w in writers] == [
        (["image"], [".png"]), (["labels"], [".png"])]
    widgets = manifest.contributions.widgets or []
    assert [w.display_name for w in widgets][:1] == ["Window / Level"]
    assert "DICOMweb" in [w.display_name for w in widgets]
    assert {"dicomweb+http://*", "dicomweb+https://*"} <= set(readers[0].filename_patterns)
    menus = manifest.contributions.menus or {}
    assert [m.command for m in menus["napari/file/acquire"]] == ["napari-dicom.dicomweb"]
    assert len(manifest.contributions.sample_data or []) >= 3


def test_manifest_at_top_level_is_the_one_shipped() -> None:
    top = ROOT / "napari.yaml"
    shipped = ROOT / "src" / "napari_dicom" / "napari.yaml"
    assert yaml.safe_load(top.read_text()) == yaml.safe_load(shipped.read_text())
    for cmd in yaml.safe_load(top.read_text())["contributions"]["commands"]:
        module, _, attr = cmd["python_name"].partition(":")
        mod = __import__(module, fromlist=[attr])
        assert callable(getattr(mod, attr)), cmd["python_name"]


def test_npe2_validate_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-dicom"],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


def test_core_imports_no_qt_nor_napari() -> None:
    code = (
        "import sys, pkgutil, importlib, napari_dicom.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module('napari_dicom.core.' + m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reader_in_a_script_imports_no_qt(tmp_path: Path) -> None:
    """The reader called without a GUI (a script, napari's headless ``ViewerModel``) on a
    series that loads in the background gives the whole volume and never imports Qt:
    there is no window to swap the array into or to widen a slider of."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from napari_dicom.core import volume\n"
        "from napari_dicom.core.phantom import ct_phantom_volume, write_ct_phantom\n"
        "from napari_dicom._reader import read_dicom\n"
        "volume.BACKGROUND_BYTES = 0  # this small series loads behind, as a large one\n"
        "volume.SETTLE_BYTES = 0  # and is not waited for as a quick one\n"
        f"write_ct_phantom({str(tmp_path)!r}, n_slices=12, size=32)\n"
        f"((data, kwargs, kind),) = read_dicom({str(tmp_path)!r})\n"
        "assert isinstance(data, volume.SeriesVolume) and data.in_memory, type(data)\n"
        "assert np.array_equal(np.asarray(data), ct_phantom_volume(12, 32))\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'superqt'))\n"
        "print(kind, bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "image []"


def test_manifest_menus_and_categories_in_npe2() -> None:
    """napari builds its menus from npe2's PluginManager: the commands must be there under
    napari's menu ids (Layers > Visualize, File > IO Utilities, File > Acquire)."""
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert {str(c) for c in pm.get_manifest("napari-dicom").categories} == {
        "IO", "Visualization"
    }

    def ours(menu: str) -> list[str]:
        return [m.command for m in pm.iter_menu(menu)
                if getattr(m, "command", "").startswith("napari-dicom.")]

    assert ours("napari/layers/visualize") == [
        "napari-dicom.window_level", "napari-dicom.on_image_info"
    ]
    assert ours("napari/layers/metadata") == ["napari-dicom.tag_browser"]
    assert ours("napari/file/io_utilities") == [
        "napari-dicom.export_png", "napari-dicom.use_for_dicom"
    ]
    assert ours("napari/file/acquire") == ["napari-dicom.dicomweb"]
    assert ours("napari/layers/measure") == ["napari-dicom.measure"]


def test_pyproject_has_hub_metadata() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["authors"]
    classifiers = set(project["classifiers"])
    assert "Framework :: napari" in classifiers
    # the Python requirement and the version classifiers say the same thing
    low = project["requires-python"].removeprefix(">=")
    versions = sorted(
        (c.rsplit(" ", 1)[1] for c in classifiers
         if c.startswith("Programming Language :: Python :: 3.")),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    assert versions and versions[0] == low
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in versions
