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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kinds", nargs="*", default=list(KINDS))
    args = ap.parse_args(argv)
    for kind in args.kinds:
        bench_kind(kind, args.slices, args.size, args.repeat)
    bench_jpeg_decoders(args.slices, args.size, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
