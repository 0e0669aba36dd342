"""Benchmark opening a DICOM folder in a real napari window against its two parts.

Run under a display (``xvfb-run -a python benchmarks/bench_gui_open.py [--slices 120 300]
[--size 512] [--repeat 3]``).

For each folder (a CT phantom of ``--slices`` slices of ``--size`` x ``--size`` int16, written
once to the temp folder) it prints, in one run:

* ``reader``: the bare reader call (``napari_dicom._reader.read_dicom``) in a fresh process
  with no Qt application, until the pixels are in memory (the reader loads large series in
  the background: ``np.asarray`` of the layer data waits for it; best of ``--repeat``);
* ``add_image``: napari's own ``viewer.add_image`` of the same array with the same layer
  arguments in the window, until the window has drawn it (best of ``--repeat``);
* ``GUI open``: ``viewer.open(folder, plugin=None)`` in the window as File > Open does it
  (napari-dicom the preferred reader for folders, as ``napari-dicom set-reader`` makes it),
  with napari's progress bars, until the layer holds the loaded numpy array and the window
  has drawn it (best of ``--repeat``);
* the ratio GUI open / (reader + add_image); goal <= 1.1x;
* the same ratio for napari's own reader: ``viewer.open`` of the array saved as ``.npy``
  (napari's builtin reader) against ``np.load`` plus ``add_image``, what napari's open
  path (plugin lookup, its "Opening Files" progress bar) costs any reader;
* the same three in CPU time of the process (all its threads): on a machine whose other
  work takes CPU time from this one, the wall-clock ratio moves most, since the GUI open
  overlaps the decoding threads with napari's work on the GUI thread.

Each timed step starts once the loader's background work of the step before (the exact
series histogram, summed on its thread after the load) is done, so that it takes no CPU
time from the step measured.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = """
import time
import numpy as np
from napari_dicom._reader import read_dicom
best = cpu = 1e9
for _ in range({repeat}):
    t0, c0 = time.perf_counter(), time.process_time()
    layers = read_dicom({folder!r})
    arr = np.asarray(layers[0][0])
    best = min(best, time.perf_counter() - t0)
    cpu = min(cpu, time.process_time() - c0)
    # the loader's histogram, summed on its thread after the load, ends before the next
    # read (else it takes CPU time from it)
    getattr(layers[0][0], "series_histogram", lambda: None)()
    del layers, arr
print(best, cpu)
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


def bare_reader(folder: Path, repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the bare reader call, each the least of ``repeat``."""
    out = subprocess.run(
        [sys.executable, "-c", BARE.format(folder=str(folder), repeat=repeat)],
        check=True, capture_output=True, text=True,
    )
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def _drawn(viewer: object) -> None:
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    viewer.window._qt_viewer.canvas.native.repaint()  # type: ignore[attr-defined]
    QApplication.processEvents()


def in_window(
    folder: Path, repeat: int
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """((wall, CPU) of add_image, (wall, CPU) of the GUI open, (wall of ``np.load`` +
    add_image, wall of napari's own reader: ``viewer.open`` of the same array saved as
    ``.npy``)), each the least of ``repeat``."""
    import napari
    import numpy as np
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    from napari_dicom._reader import read_dicom
    from napari_dicom.core.stats import histogram_pending

    viewer = napari.Viewer(show=True)
    settings = get_settings()
    saved = dict(settings.plugins.extension2reader)
    # what `napari-dicom set-reader` stores; not saved to the user's settings file
    settings.plugins.extension2reader = {**saved, "*/": "napari-dicom"}
    try:
        ((data, kwargs, _),) = read_dicom(str(folder))
        getattr(data, "series_histogram", lambda: None)()
        data = np.asarray(data)
        npy = Path(tempfile.mkdtemp()) / "volume.npy"
        np.save(npy, data)
        add_best = open_best = add_cpu = open_cpu = npy_add = npy_open = 1e9
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            layer = viewer.add_image(data, **kwargs)
            _drawn(viewer)
            add_best = min(add_best, time.perf_counter() - t0)
            add_cpu = min(add_cpu, time.process_time() - c0)
            viewer.layers.remove(layer)
            _drawn(viewer)

            t0, c0 = time.perf_counter(), time.process_time()
            layers = viewer.open(str(folder), plugin=None)  # as File > Open
            while not isinstance(layers[0].data, np.ndarray):  # background load: swapped in
                QApplication.processEvents()
                time.sleep(0.001)
            _drawn(viewer)
            open_best = min(open_best, time.perf_counter() - t0)
            open_cpu = min(open_cpu, time.process_time() - c0)
            assert len(layers) == 1 and layers[0].data.shape == data.shape
            while histogram_pending(layers[0].data) is not None:  # its thread's last work
                QApplication.processEvents()
                time.sleep(0.001)
            viewer.layers.clear()
            _drawn(viewer)

            # napari's own reader on the same array: what viewer.open costs any reader
            t0 = time.perf_counter()
            layer = viewer.add_image(np.load(npy), **kwargs)
            _drawn(viewer)
            npy_add = min(npy_add, time.perf_counter() - t0)
            viewer.layers.clear()
            _drawn(viewer)
            t0 = time.perf_counter()
            viewer.open(str(npy), plugin="napari", **kwargs)
            _drawn(viewer)
            npy_open = min(npy_open, time.perf_counter() - t0)
            viewer.layers.clear()
            _drawn(viewer)
    finally:
        settings.plugins.extension2reader = saved
        viewer.close()
    npy.unlink()
    return (add_best, add_cpu), (open_best, open_cpu), (npy_add, npy_open)


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
        (reader, reader_cpu) = bare_reader(folder, args.repeat)
        (add, add_cpu), (gui, gui_cpu), (npy_add, npy_open) = in_window(folder, args.repeat)
        ratio = gui / (reader + add)
        print(
            f"{n} slices of {args.size}x{args.size}: reader {reader:.2f} s + add_image "
            f"{add:.2f} s = {reader + add:.2f} s; GUI open {gui:.2f} s: {ratio:.2f}x "
            f"(goal <= 1.1x) | CPU time: {reader_cpu:.2f} + {add_cpu:.2f} s; GUI open "
            f"{gui_cpu:.2f} s: {gui_cpu / (reader_cpu + add_cpu):.2f}x | napari's own reader "
            f"on the array saved as .npy: np.load + add_image {npy_add:.2f} s; viewer.open "
            f"{npy_open:.2f} s: {npy_open / npy_add:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
