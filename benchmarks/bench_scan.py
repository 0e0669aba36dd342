"""Benchmark: header scan of a 300-slice 512 x 512 CT series.

Writes (once) the phantom into ``benchmarks/_work/`` uncompressed and as JPEG Lossless
(instance numbers shuffled against position), then times :func:`napari_dicom.core.scan.scan`
against the naive loop ``[dcmread(f, stop_before_pixels=True) for f in files]`` (which does
not even group or sort) and prints files/s and the ratio.

Run: ``python benchmarks/bench_scan.py [--repeat 3]``. ``ensure_bench_series(kind)`` is
reused by other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

from napari_dicom.core.phantom import ct_phantom_volume, write_ct_phantom

WORK = Path(__file__).resolve().parent / "_work"
N_SLICES = 300
SIZE = 512
KINDS = {"raw": ExplicitVRLittleEndian, "jpegll": JPEGLosslessSV1}


def ensure_bench_series(
    kind: str = "raw", n_slices: int = N_SLICES, size: int = SIZE, header_style: str = "ge",
) -> Path:
    """Folder holding the benchmark series of ``kind`` (``"raw"`` or ``"jpegll"``), its
    headers written as ``header_style`` does (see ``write_ct_phantom``).

    Written once; a ``done.json`` marker records a complete write, so an interrupted write
    is redone.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    style = "" if header_style == "ge" else f"{header_style}_"
    folder = WORK / f"ct_{style}{kind}_{n_slices}x{size}"
    marker = folder / "done.json"
    if marker.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    t0 = time.perf_counter()
    vol = ct_phantom_volume(n_slices, size)
    write_ct_phantom(
        folder, n_slices, size, (1.0, 0.7, 0.7), transfer_syntax=KINDS[kind], volume=vol,
        series_description=f"Bench CT {kind}", extension=".dcm", header_style=header_style,
    )
    marker.write_text(json.dumps({"kind": kind, "n": n_slices, "size": size}))
    print(f"wrote {n_slices} files ({kind}) to {folder} in {time.perf_counter() - t0:.1f} s")
    return folder


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def naive(files: list[Path]) -> int:
    return len([pydicom.dcmread(f, stop_before_pixels=True) for f in files])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from napari_dicom.core.scan import scan

    for kind in KINDS:
        folder = ensure_bench_series(kind)
        files = _files(folder)
        n = len(files)
        t_naive = min(_timed(partial(naive, files)) for _ in range(args.repeat))
        t_scan = min(_timed(partial(scan, [folder])) for _ in range(args.repeat))
        cpus = os.cpu_count() or 1
        t_fork = min(_timed(partial(scan, [folder], processes=cpus))
                     for _ in range(args.repeat))
        res = scan([folder])
        s = res.series[0]
        print(
            f"{kind:7s} {n} files: naive dcmread(stop_before_pixels) {n / t_naive:7.0f} files/s"
            f" ({t_naive * 1e3:.0f} ms) | scan() {n / t_scan:7.0f} files/s"
            f" ({t_scan * 1e3:.0f} ms) | ratio {t_naive / t_scan:.2f}x"
            f" | scan(processes={cpus}) as the CLI runs it {n / t_fork:7.0f} files/s"
            f" | -> {len(res.series)} series, shape {s.shape}, scale {s.scale}"
        )


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
