"""PNG stack export: ``core.export.export_stack`` against the seeds' baseline, same run.

Volume: a 300 x 512 x 512 int16 CT phantom in HU (``core.phantom``), window W 400 / L 40.

* baseline (the seeds): per slice, float64 window arithmetic, clip, uint8, Pillow's
  default PNG compression, one slice at a time on one thread;
* ours: ``export_stack`` (lookup-table rendering per batch of planes, minimal PNG writer
  with the Sub filter and libdeflate (imagecodecs) level 1, ``jobs`` threads, atomic
  writes, manifest).

Prints slices/s, MB written and peak traced memory (tracemalloc: numpy buffers included),
and the ratios. Goal: >= 8x the baseline; peak memory < 1.5x the volume (the volume itself
is allocated before measuring, so the figure shown is the export's extra memory).

    python benchmarks/bench_export.py [--slices 300] [--size 512] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def measure(fn: Callable[[], None], folder: Path) -> tuple[float, float, int]:
    """Time (untraced run), MB written, then peak traced memory (second, traced run)."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in folder.iterdir())
    shutil.rmtree(folder)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return dt, size / 1e6, peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--jobs", type=int, default=None, help="threads for ours (default: all)")
    args = ap.parse_args(argv)

    vol = ct_phantom_volume(args.slices, args.size)
    n = vol.shape[0]
    print(f"volume {vol.shape} {vol.dtype}: {vol.nbytes / 1e6:.0f} MB; cores {os.cpu_count()}; "
          f"deflate engine {DEFLATE_ENGINE}")
    root = Path(tempfile.mkdtemp(prefix="bench_export_"))
    try:
        b_dt, b_mb, b_peak = measure(lambda: baseline(vol, root / "base"), root / "base")
        o_dt, o_mb, o_peak = measure(lambda: ours(vol, root / "ours", args.jobs), root / "ours")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [("baseline (seeds)", b_dt, b_mb, b_peak), ("export_stack", o_dt, o_mb, o_peak)]
    print(f"{'':18s} {'slices/s':>9s} {'s':>7s} {'MB written':>11s} {'peak extra MB':>14s}")
    for name, dt, mb, peak in rows:
        print(f"{name:18s} {n / dt:9.0f} {dt:7.2f} {mb:11.1f} {peak / 1e6:14.1f}")
    speedup = b_dt / o_dt
    total = (vol.nbytes + o_peak) / vol.nbytes
    print(f"speed-up {speedup:.1f}x (goal >= 8x): {'ok' if speedup >= 8 else 'BELOW GOAL'}")
    print(f"peak memory with the volume: {total:.2f}x the volume (goal < 1.5x): "
          f"{'ok' if total < 1.5 else 'ABOVE GOAL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
