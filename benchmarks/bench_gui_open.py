"""Benchmark opening a DICOM folder in a real napari window against its two parts.

Run under a display (``xvfb-run -a python benchmarks/bench_gui_open.py [--slices 120 300]
[--size 512] [--repeat 3]``).

For each folder (a CT phantom of ``--slices`` slices of ``--size`` x ``--size`` int16, written
once to the temp folder) it prints, in one run:

* ``reader``: the bare reader call (``napari_dicom._reader.read_dicom``) in a fresh process
  that never imports Qt (best of ``--repeat``);
* ``add_image``: napari's own ``viewer.add_image`` of the same array with the same layer
  arguments in the window, until the window has drawn it (best of ``--repeat``);
* ``GUI open``: ``viewer.open(folder, plugin=None)`` in the window as File > Open does it
  (napari-dicom the preferred reader for folders, as ``napari-dicom set-reader`` makes it),
  with napari's progress bars, until drawn (best of ``--repeat``);
* the ratio GUI open / (reader + add_image); goal <= 1.1x.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = """
import sys, time
from napari_dicom._reader import read_dicom
best = 1e9
for _ in range({repeat}):
    t0 = time.perf_counter()
    layers = read_dicom({folder!r})
    best = min(best, time.perf_counter() - t0)
    del layers
assert "qtpy" not in sys.modules and "PyQt6" not in sys.modules, "the bare run imported Qt"
print(best)
"""


def ensure_folder(slices: int, size: int) -> Path:
    from napari_dicom.core.phantom import write_ct_phantom

    folder = Path(tempfile.gettempdir()) / f"napari-dicom-bench-gui-{slices}x{size}"
    if len(list(folder.glob("IM*"))) != slices:
        print(f"writing {slices} slices of {size}x{size} to {folder} ...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            f.unlink()
        write_ct_phantom(folder, n_slices=slices, size=size, spacing=(1.0, 0.7, 0.7))
    return folder


def bare_reader(folder: Path, repeat: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", BARE.format(folder=str(folder), repeat=repeat)],
        check=True, capture_output=True, text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _drawn(viewer: object) -> None:
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    viewer.window._qt_viewer.canvas.native.repaint()  # type: ignore[attr-defined]
    QApplication.processEvents()


def in_window(folder: Path, repeat: int) -> tuple[float, float]:
    import napari
    from napari.settings import get_settings

    from napari_dicom._reader import read_dicom

    viewer = napari.Viewer(show=True)
    settings = get_settings()
    saved = dict(settings.plugins.extension2reader)
    # what `napari-dicom set-reader` stores; not saved to the user's settings file
    settings.plugins.extension2reader = {**saved, "*/": "napari-dicom"}
    try:
        ((data, kwargs, _),) = read_dicom(str(folder))
        add_best = open_best = 1e9
        for _ in range(repeat):
            t0 = time.perf_counter()
            layer = viewer.add_image(data, **kwargs)
            _drawn(viewer)
            add_best = min(add_best, time.perf_counter() - t0)
            viewer.layers.remove(layer)
            _drawn(viewer)

            t0 = time.perf_counter()
            layers = viewer.open(str(folder), plugin=None)  # as File > Open
            _drawn(viewer)
            open_best = min(open_best, time.perf_counter() - t0)
            assert len(layers) == 1 and layers[0].data.shape == data.shape
            viewer.layers.clear()
            _drawn(viewer)
    finally:
        settings.plugins.extension2reader = saved
        viewer.close()
    return add_best, open_best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, nargs="+", default=[120, 300])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    # the settings file napari reads is left alone: a throwaway one for this process
    import os

    os.environ["NAPARI_CONFIG"] = str(Path(tempfile.mkdtemp()) / "settings.yaml")
    for n in args.slices:
        folder = ensure_folder(n, args.size)
        reader = bare_reader(folder, args.repeat)
        add, gui = in_window(folder, args.repeat)
        ratio = gui / (reader + add)
        print(
            f"{n} slices of {args.size}x{args.size}: reader {reader:.2f} s + add_image "
            f"{add:.2f} s = {reader + add:.2f} s; GUI open {gui:.2f} s: {ratio:.2f}x "
            f"(goal <= 1.1x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
