"""PNG stack export: ``core.export.export_stack`` against the seeds' baseline, same run.

Volume: a 300 x 512 x 512 int16 CT phantom in HU (``core.phantom``), window W 400 / L 40.

* baseline (the seeds): per slice, float64 window arithmetic, clip, uint8, Pillow's
  default PNG compression, one slice at a time on one thread;
* ours: ``export_stack`` (lookup-table rendering per batch of planes, minimal PNG writer
  with the Sub filter and libdeflate (imagecodecs) level 1, ``jobs`` threads, atomic
  writes, manifest).

Both run ``--repeat`` times (default 5) in pairs, each into a new folder (nothing is deleted
until the end: on ext4, creating files just after deleting many is slower); the speed-up
is the median of the pairs' ratios (this shared machine's speed drifts within minutes).
Prints slices/s, MB written and peak traced memory (tracemalloc: numpy buffers included,
one more run of each), and the ratios. Goal: >= 8x the baseline; peak memory < 1.5x the
volume (the volume itself is allocated before measuring, so the figure shown is the
export's extra memory).

    python benchmarks/bench_export.py [--slices 300] [--size 512] [--jobs N] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from napari_dicom.core.export import DEFLATE_ENGINE, export_stack
from napari_dicom.core.phantom import ct_phantom_volume
from napari_dicom.core.render import Display, Window

CENTER, WIDTH = 40.0, 400.0


def baseline(vol: np.ndarray, folder: Path) -> None:
    """The seeds' export: float arithmetic per slice, Pillow defaults, one thread."""
    folder.mkdir()
    for i, s in enumerate(vol):
        x = s.astype(np.float64)
        y = ((x - (CENTER - 0.5)) / (WIDTH - 1) + 0.5) * 255.0
        img = np.clip(y, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"slice_{i:04d}.png")


def ours(vol: np.ndarray, folder: Path, jobs: int | None) -> None:
    export_stack(vol, Display(Window(CENTER, WIDTH)), folder.with_suffix(".png"), jobs=jobs)


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def traced_peak(fn: Callable[[], None]) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--jobs", type=int, default=None, help="threads for ours (default: all)")
    ap.add_argument("--repeat", type=int, default=5, help="pairs of timed runs (default 5)")
    args = ap.parse_args(argv)

    vol = ct_phantom_volume(args.slices, args.size)
    n = vol.shape[0]
    print(f"volume {vol.shape} {vol.dtype}: {vol.nbytes / 1e6:.0f} MB; cores {os.cpu_count()}; "
          f"deflate engine {DEFLATE_ENGINE}")
    root = Path(tempfile.mkdtemp(prefix="bench_export_"))
    try:
        b_runs, o_runs = [], []
        for i in range(args.repeat):  # in pairs, into new folders: nothing deleted between
            b_runs.append(timed(lambda i=i: baseline(vol, root / f"base{i}")))
            o_runs.append(timed(lambda i=i: ours(vol, root / f"ours{i}", args.jobs)))
        b_mb, o_mb = folder_mb(root / "base0"), folder_mb(root / "ours0")
        b_peak = traced_peak(lambda: baseline(vol, root / "base_traced"))
        o_peak = traced_peak(lambda: ours(vol, root / "ours_traced", args.jobs))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    b_dt, o_dt = statistics.median(b_runs), statistics.median(o_runs)
    rows = [("baseline (seeds)", b_dt, b_mb, b_peak), ("export_stack", o_dt, o_mb, o_peak)]
    print(f"{'':18s} {'slices/s':>9s} {'s':>7s} {'MB written':>11s} {'peak extra MB':>14s}"
          "   (time: median of the runs)")
    for name, dt, mb, peak in rows:
        print(f"{name:18s} {n / dt:9.0f} {dt:7.2f} {mb:11.1f} {peak / 1e6:14.1f}")
    ratios = [b / o for b, o in zip(b_runs, o_runs, strict=True)]
    speedup = statistics.median(ratios)
    total = (vol.nbytes + o_peak) / vol.nbytes
    print(f"speed-up {speedup:.1f}x, median of {len(ratios)} pairs ranging "
          f"{min(ratios):.1f}-{max(ratios):.1f}x (goal >= 8x): "
          f"{'ok' if speedup >= 8 else 'BELOW GOAL'}")
    print(f"peak memory with the volume: {total:.2f}x the volume (goal < 1.5x): "
          f"{'ok' if total < 1.5 else 'ABOVE GOAL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
