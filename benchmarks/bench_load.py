"""Benchmark pixel loading: core.pixels.load_series against the naive pydicom loop.

Run: ``python benchmarks/bench_load.py [--slices 300] [--size 512] [--repeat 3]``

For a 300-slice 512 x 512 int16 CT (uncompressed, and JPEG Lossless SV1) it prints

* full eager load, slices/s, against ``for f in files: dcmread(f).pixel_array`` measured in
  the same run (best of ``--repeat``), and the ratio (targets: uncompressed >= 1.2x,
  JPEG Lossless >= 2.5x);
* time to the first slice of a lazy load (dask, one chunk per plane);
* peak memory of an eager load in a fresh subprocess (tracemalloc, numpy allocations
  included) against the final array (target <= 1.3x);
* which JPEG Lossless decoder is fastest and whether it releases the GIL (the same frames
  decoded serially and on 2 threads).

``--user`` measures what a user gets instead (issue 12), on series written as GE (signed
16 bits, intercept -1024, Pixel Padding Value), Siemens (unsigned 12 of 16 bits) and
Philips-style (unsigned 16 bits stored) headers, uncompressed and JPEG Lossless, 300 and
1000 slices of 512 x 512 (``--user-slices``), each beside the naive loop
``np.stack([dcmread(f).pixel_array for f in files])`` timed in the same run:

* full read: ``ViewerModel().open(folder, plugin="napari-dicom")`` then
  ``np.asarray(layer.data)`` (goals: >= 2x the naive loop uncompressed, >= 6x JPEG
  Lossless);
* first slice shown: ``open`` returned with the layer sliced, and that minus the header
  scan alone (goal <= 0.3 s at 1000 slices);
* peak memory of the user path in a fresh process (tracemalloc, over a second open of
  the series: the first makes the imports) against the final array (goal <= 1.1x) and its
  dtype (goal int16 for all three);
* ``--widget``: the Window / Level widget taking a 1000-slice layer right after its
  volume was swapped in: until it is shown (on the current slice, the loader's exact
  histogram then still being summed) and until it shows the whole-series histogram;
  against the same widget on a plain copy of the array (goal <= 0.2 s). Needs a display
  (``xvfb-run``).

Each user open is followed, outside the timing, by the wait for the loader's histogram
(summed on its thread after the load), so that it takes no CPU time from the naive loop
timed next. The naive loop reads the files first in each pair: where the machine does
not keep 500 MiB of files cached, it pays the disk reads the user path then does not.

``--counting``: the exact series histogram of a 1000-slice volume (the widget's), counted
with ``np.bincount`` against the compiled loop of ``core.counting``, and what loading
that loop costs in a fresh process.

Run: ``xvfb-run -a python benchmarks/bench_load.py --user [--widget] [--user-slices 300 1000]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

KINDS = {"uncompressed": ExplicitVRLittleEndian, "jpeg-lossless": JPEGLosslessSV1}
TARGETS = {"uncompressed": 1.2, "jpeg-lossless": 2.5}


def ensure_series(kind: str, slices: int, size: int) -> Path:
    """The benchmark series folder: bench_scan's when it exists, else written here."""
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    try:
        from bench_scan import ensure_bench_series  # type: ignore[import-not-found]
    except ImportError:
        ensure_bench_series = None
    if ensure_bench_series is not None and slices == 300 and size == 512:
        try:
            return Path(ensure_bench_series(kind))
        except (TypeError, ValueError, KeyError):
            pass  # a kind name it does not know: write our own below
    from napari_dicom.core.phantom import write_ct_phantom

    folder = Path(tempfile.gettempdir()) / f"napari-dicom-bench-load-{kind}-{slices}x{size}"
    if len(list(folder.glob("IM*"))) != slices:
        print(f"writing {slices} slices of {size}x{size} ({kind}) to {folder} ...", flush=True)
        write_ct_phantom(folder, n_slices=slices, size=size, spacing=(1.0, 0.7, 0.7),
                         transfer_syntax=KINDS[kind])
    return folder


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def series_of(folder: Path) -> Any:
    from napari_dicom.core.scan import scan

    result = scan([folder])
    assert len(result.series) == 1, result.summary()
    return result.series[0]


_PEAK = """
import sys, tracemalloc, resource
from napari_dicom.core.scan import scan
from napari_dicom.core.pixels import load_series
s = scan([sys.argv[1]]).series[0]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
a = load_series(s, lazy=False)
cur, peak = tracemalloc.get_traced_memory()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(a.nbytes, peak, (rss1 - rss0) * 1024, a.dtype)
"""


def peak_memory(folder: Path) -> tuple[int, int, int, str]:
    out = subprocess.run([sys.executable, "-c", _PEAK, str(folder)], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2]), out[3]


def bench_kind(kind: str, slices: int, size: int, repeat: int) -> None:
    from napari_dicom.core.pixels import load_series

    folder = ensure_series(kind, slices, size)
    s = series_of(folder)
    files = [p.path for p in s.planes]
    n = len(files)

    def naive() -> None:
        for f in files:
            _ = pydicom.dcmread(f).pixel_array

    t_naive = best_of(naive, repeat)
    t_eager1 = best_of(lambda: load_series(s, lazy=False, jobs=1), repeat)
    t_eager = best_of(lambda: load_series(s, lazy=False), repeat)
    ratio = t_naive / t_eager
    print(f"\n== {kind}: {n} slices of {size}x{size}, {os.cpu_count()} CPUs")
    print(f"naive dcmread().pixel_array loop : {t_naive:6.3f} s  {n / t_naive:7.0f} slices/s")
    print(f"load_series eager, 1 thread       : {t_eager1:6.3f} s  {n / t_eager1:7.0f} slices/s")
    print(f"load_series eager, all threads    : {t_eager:6.3f} s  {n / t_eager:7.0f} slices/s"
          f"  -> {ratio:.2f}x naive (target >= {TARGETS[kind]}x)")

    t0 = time.perf_counter()
    lazy = load_series(s, lazy=True)
    first = np.asarray(lazy[0])
    t_first = time.perf_counter() - t0
    print(f"lazy: first slice after           : {t_first * 1e3:6.1f} ms  ({first.dtype})")

    nbytes, peak, rss, dtype = peak_memory(folder)
    print(f"eager peak memory (tracemalloc)   : {peak / 2**20:6.1f} MiB for a "
          f"{nbytes / 2**20:.1f} MiB {dtype} array -> {peak / nbytes:.2f}x (target <= 1.3x); "
          f"max RSS grew {rss / 2**20:.1f} MiB")


def bench_jpeg_decoders(slices: int, size: int, repeat: int) -> None:
    """pydicom's JPEG Lossless plugins vs imagecodecs, serial and on 2 threads."""
    from pydicom.encaps import get_frame
    from pydicom.pixels import get_decoder

    folder = ensure_series("jpeg-lossless", slices, size)
    files = sorted(str(p) for p in folder.glob("IM*"))[:100]
    frames = []
    for f in files:
        ds = pydicom.dcmread(f)
        frames.append((ds, get_frame(ds.PixelData, 0, number_of_frames=1)))
    print(f"\n== JPEG Lossless decoders, {len(files)} frames of {size}x{size}")
    plugins = list(get_decoder(JPEGLosslessSV1).available_plugins)
    candidates: dict[str, Callable[[Any], Any]] = {}
    for name in plugins:
        candidates[f"pydicom plugin {name!r}"] = (
            lambda item, name=name: pydicom.pixels.pixel_array(item[0], decoding_plugin=name))
    try:
        import imagecodecs

        candidates["imagecodecs.jpeg8_decode"] = lambda item: imagecodecs.jpeg8_decode(item[1])
        candidates["imagecodecs.ljpeg_decode"] = lambda item: imagecodecs.ljpeg_decode(item[1])
    except ImportError:
        print("imagecodecs not installed")
    for label, fn in candidates.items():
        serial = best_of(lambda fn=fn: [fn(it) for it in frames], repeat)
        with ThreadPoolExecutor(2) as pool:
            threaded = best_of(lambda fn=fn, pool=pool: list(pool.map(fn, frames)), repeat)
        per = serial / len(frames) * 1e3
        print(f"{label:32s}: {per:6.2f} ms/frame serial, 2 threads {serial / threaded:.2f}x "
              f"({'releases' if serial / threaded > 1.4 else 'holds'} the GIL)")


# --------------------------------------------------------------------------------------
# the user's path (issue 12)
# --------------------------------------------------------------------------------------

STYLES = ("ge", "siemens", "philips")
USER_GOALS = {"uncompressed": 2.0, "jpeg-lossless": 6.0}


def ensure_style_series(style: str, kind: str, slices: int, size: int = 512) -> Path:
    """A series written with ``header_style=style``, once, under ``benchmarks/_work``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_scan import ensure_bench_series

    short = {"uncompressed": "raw", "jpeg-lossless": "jpegll"}[kind]
    return Path(ensure_bench_series(short, slices, size, header_style=style))


def _dcm_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def _discover_plugins() -> None:
    """What napari does at start-up (a bare ViewerModel does not): find npe2 plugins."""
    import npe2

    npe2.PluginManager.instance().discover(include_npe1=False)


def user_open(folder: Path) -> tuple[float, float, Any]:
    """``(first slice shown, full read, array)``: ViewerModel.open, then np.asarray."""
    from napari.components import ViewerModel

    _discover_plugins()
    vm = ViewerModel()
    t0 = time.perf_counter()
    layer = vm.open(str(folder), plugin="napari-dicom")[0]
    np.asarray(layer._slice.image.raw)  # what the canvas draws: the current plane
    t_first = time.perf_counter() - t0
    arr = np.asarray(layer.data)
    t_full = time.perf_counter() - t0
    # the loader's histogram, summed on its thread after the load, ends before the next
    # step is timed (else it takes CPU time from it: the naive loop timed next)
    getattr(layer.data, "series_histogram", lambda: None)()
    vm.layers.clear()
    return t_first, t_full, arr


_USER_PEAK = """
import sys, tracemalloc
import numpy as np
from napari.components import ViewerModel
import gc, time
import npe2
npe2.PluginManager.instance().discover(include_npe1=False)
vm = ViewerModel()
# a first open makes the imports and caches a session makes once; then the measured one
np.asarray(vm.open(sys.argv[1], plugin="napari-dicom")[0].data)
vm.layers.clear()
time.sleep(1.0)  # its background histogram
gc.collect()
tracemalloc.start()
layer = vm.open(sys.argv[1], plugin="napari-dicom")[0]
a = np.asarray(layer.data)
cur, peak = tracemalloc.get_traced_memory()
print(a.nbytes, peak, a.dtype)
"""


def user_peak(folder: Path) -> tuple[int, int, str]:
    out = subprocess.run([sys.executable, "-c", _USER_PEAK, str(folder)], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), out[2]


def bench_user(style: str, kind: str, slices: int, repeat: int) -> None:
    """Naive loop and user path timed in pairs (this machine's page cache and load drift
    within minutes); the median of the pairs' ratios is reported."""
    import statistics

    from napari_dicom.core.scan import scan

    folder = ensure_style_series(style, kind, slices)
    files = _dcm_files(folder)
    naive, fulls, firsts, scans = [], [], [], []
    dtype = None
    for _ in range(repeat):
        naive.append(best_of(
            lambda: np.stack([pydicom.dcmread(f).pixel_array for f in files]), 1))
        scans.append(best_of(lambda: scan([folder]), 1))
        t_first, t_full, arr = user_open(folder)
        firsts.append(t_first)
        fulls.append(t_full)
        dtype = arr.dtype
        del arr
    nbytes, peak, _ = user_peak(folder)
    ratios = [n / u for n, u in zip(naive, fulls, strict=True)]
    after = [f - s for f, s in zip(firsts, scans, strict=True)]
    goal = USER_GOALS[kind]
    print(f"{style:8s} {kind:13s} {slices:5d} | naive {min(naive):6.2f} s | user full read "
          f"{min(fulls):6.2f} s -> {statistics.median(ratios):5.2f}x (pairs "
          f"{min(ratios):.2f}-{max(ratios):.2f}x; goal >= {goal:g}x) | first slice "
          f"{min(firsts):5.3f} s (scan alone {min(scans):5.3f} s, after it "
          f"{statistics.median(after):5.3f} s) | peak {peak / nbytes:4.2f}x of "
          f"{nbytes / 2**20:.0f} MiB | {dtype}", flush=True)


def bench_widget(folder: Path) -> None:
    """The Window / Level widget taking a layer whose volume was just swapped in (its
    exact histogram then still being summed on the loader's thread), until it shows the
    whole-series histogram; and the same widget on a plain numpy copy of the volume."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=False)
    try:
        layer = viewer.open(str(folder), plugin="napari-dicom")[0]
        t0 = time.perf_counter()
        while not isinstance(layer.data, np.ndarray):  # the background load's swap
            QApplication.processEvents()
            time.sleep(0.001)
        t_swap = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, widget = viewer.window.add_plugin_dock_widget("napari-dicom", "Window / Level")
        QApplication.processEvents()
        t_shown = time.perf_counter() - t0
        while widget._scope.value != "whole series":  # its histogram summed
            QApplication.processEvents()
            time.sleep(0.001)
        t_ours = time.perf_counter() - t0
        viewer.window.remove_dock_widget("all")
        copy = viewer.add_image(np.array(layer.data), metadata=layer.metadata,
                                contrast_limits=layer.contrast_limits, name="plain copy")
        t0 = time.perf_counter()
        viewer.window.add_plugin_dock_widget("napari-dicom", "Window / Level")
        QApplication.processEvents()
        t_plain = time.perf_counter() - t0
        del copy
        viewer.layers.clear()
        # the widget already docked when the series is opened: from the swap (the volume
        # in memory) until it shows the whole-series histogram
        _, widget = viewer.window.add_plugin_dock_widget("napari-dicom", "Window / Level")
        QApplication.processEvents()
        layer = viewer.open(str(folder), plugin="napari-dicom")[0]
        while not isinstance(layer.data, np.ndarray):
            QApplication.processEvents()
            time.sleep(0.001)
        t0 = time.perf_counter()
        while widget._scope.value != "whole series":
            QApplication.processEvents()
            time.sleep(0.001)
        t_docked = time.perf_counter() - t0
        print(f"widget taking the layer, {layer.data.shape[0]} slices, right after the swap "
              f"({t_swap:4.2f} s after open returned): shown in {t_shown:5.3f} s (current "
              f"slice), whole-series histogram after {t_ours:5.3f} s | same widget on a "
              f"plain numpy copy: {t_plain:5.3f} s | widget docked before the open: "
              f"whole-series histogram {t_docked:5.3f} s after the swap (goal <= 0.2 s)",
              flush=True)
    finally:
        viewer.close()


def bench_counting(folder: Path, repeat: int) -> None:
    """The exact series histogram of a loaded 1000-slice volume (what the widget shows):
    ``np.bincount`` against the compiled loop of ``core.counting``, both on 2 threads
    (``histogram_of``), in this process; and what loading the compiled loop costs, in a
    fresh process (numba's import and its cached loops)."""
    from napari_dicom.core import counting
    from napari_dicom.core.pixels import load_series
    from napari_dicom.core.scan import scan
    from napari_dicom.core.volume import histogram_of

    if counting.compiled():
        raise SystemExit("--counting must run before anything loads the compiled loop")
    arr = np.asarray(load_series(scan(folder).series[0]))
    jobs = 2

    def best(fn: Callable[[], Any]) -> tuple[float, Any]:
        times, out = [], None
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    t_np, h_np = best(lambda: histogram_of(arr, jobs))
    code = ("import time; t=time.perf_counter(); from napari_dicom.core import counting; "
            "ok=counting.warm_up().result(); print(ok, time.perf_counter()-t)")
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split()
    if not counting.warm_up().result():
        print("compiled counting unavailable (numba missing or failing)")
        return
    t_nb, h_nb = best(lambda: histogram_of(arr, jobs))
    assert np.array_equal(h_np.counts, h_nb.counts) and h_np.offset == h_nb.offset
    print(f"series histogram, {arr.shape[0]} x {arr.shape[1]} x {arr.shape[2]} {arr.dtype}, "
          f"{jobs} threads: np.bincount {t_np:5.3f} s | compiled {t_nb:5.3f} s -> "
          f"{t_np / t_nb:4.1f}x | loading the compiled loop in a fresh process "
          f"{float(warm[1]):4.2f} s (once per process)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kinds", nargs="*", default=list(KINDS))
    ap.add_argument("--user", action="store_true", help="the user's path (issue 12)")
    ap.add_argument("--user-slices", type=int, nargs="*", default=[300, 1000])
    ap.add_argument("--styles", nargs="*", default=list(STYLES))
    ap.add_argument("--widget", action="store_true", help="the widget on 1000 slices")
    ap.add_argument("--counting", action="store_true",
                    help="the series histogram: np.bincount against the compiled loop")
    args = ap.parse_args(argv)
    if args.counting:
        bench_counting(ensure_style_series("ge", "uncompressed", 1000), args.repeat)
        return 0
    if args.user or args.widget:
        print(f"machine: {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    if args.user:
        for slices in args.user_slices:
            for kind in args.kinds:
                for style in args.styles:
                    bench_user(style, kind, slices, args.repeat)
    if args.widget:
        for style in args.styles:
            bench_widget(ensure_style_series(style, "uncompressed", 1000))
    if args.user or args.widget:
        return 0
    for kind in args.kinds:
        bench_kind(kind, args.slices, args.size, args.repeat)
    bench_jpeg_decoders(args.slices, args.size, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
