"""Benchmark: ``napari-dicom export`` against the seeds' loop and DCMTK's dcmj2pnm.

Input: two 300-slice 512 x 512 CT series (one uncompressed, one JPEG Lossless SV1), the
synthetic phantom written once into a cache folder (``benchmarks/bench_scan.py``'s
``ensure_bench_series`` when present, else :func:`napari_dicom.core.phantom.write_ct_phantom`).

Measured in the same run, each whole:

1. ``napari-dicom export SRC -o OUT -q`` as a subprocess (start-up and imports included);
2. the seeds' loop in this process: for each file ``pydicom.dcmread`` -> ``pixel_array``
   -> ``apply_modality_lut`` -> first stored window (numpy) -> ``Image.save(png)`` with
   Pillow's default settings, one file after the other;
3. ``dcmj2pnm +on +Wi 1 FILE OUT.png``, one process per file, as a shell loop would run
   it. It is slow to start per file: by default a subset is timed and extrapolated to
   all files (``--dcmtk-all`` times every file); the output says which.

The package is byte-compiled first (``compileall``), as pip does when it installs a
wheel: an editable checkout is not, and with ``PYTHONDONTWRITEBYTECODE`` set (as on the
machines here) every run would compile it again, ~40 ms that no installed copy pays.

Steps 1 and 2 run ``--repeat`` times (default 5, each into a fresh folder), one after
the other in pairs (CLI, seeds' loop, CLI, ...), so that each pair sees the machine at
the same speed: on a shared 2-core machine the speed drifts by 20-30 % within minutes.
The ratio reported is the median of the pairs' ratios; the medians of both are shown.

Prints images/s and ratios. Goal: >= 5x the seeds' loop, faster than dcmj2pnm per file.

``--single-images N`` adds a second case: N single-image series (1024 x 1024, half
uncompressed, half JPEG Lossless), as in a folder of radiographs, where the parallelism
has to come from running series side by side; timed with all jobs and with ``--jobs 1``.

    python benchmarks/bench_cli.py [--slices 300] [--size 512] [--jobs N] [--repeat 5]
                                   [--dcmtk-all] [--single-images 120]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("NAPARI_DICOM_BENCH_DIR", Path(tempfile.gettempdir())
                            / "napari-dicom-bench"))


def ensure_series(kind: str, slices: int, size: int) -> Path:
    """The cached benchmark series of ``kind`` ("native" or "ljpeg"); written if missing."""
    if (slices, size) == (300, 512):
        try:
            sys.path.insert(0, str(Path(__file__).parent))
            from bench_scan import ensure_bench_series  # type: ignore[import-not-found]

            return Path(ensure_bench_series({"native": "raw", "ljpeg": "jpegll"}[kind]))
        except ImportError:
            pass
        finally:
            sys.path.pop(0)
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

    from napari_dicom.core.phantom import write_ct_phantom

    folder = CACHE / f"cli_{kind}_{slices}x{size}"
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        ts = ExplicitVRLittleEndian if kind == "native" else JPEGLosslessSV1
        t0 = time.perf_counter()
        write_ct_phantom(folder, n_slices=slices, size=size, spacing=(1.0, 0.7, 0.7),
                         transfer_syntax=ts, series_number=1 if kind == "native" else 2,
                         series_description=f"Bench {kind}", extension=".dcm")
        done.write_text("ok\n")
        print(f"  wrote {slices} slices ({kind}) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return folder


def ensure_single_images(n: int, size: int = 1024) -> Path:
    """``n`` single-image series (alternately uncompressed and JPEG Lossless), cached."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

    from napari_dicom.core.phantom import write_ct_phantom

    folder = CACHE / f"single_{n}x{size}"
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        for i in range(n):
            write_ct_phantom(folder / f"p{i:04d}", n_slices=1, size=size, seed=i,
                             series_number=i + 1, patient_id=f"P{i:04d}", extension=".dcm",
                             transfer_syntax=JPEGLosslessSV1 if i % 2 else ExplicitVRLittleEndian)
        done.write_text("ok\n")
    return folder


def dicom_files(folders: list[Path]) -> list[Path]:
    return sorted(p for f in folders for p in f.rglob("*.dcm"))


def run_cli(folders: list[Path], out: Path, jobs: int | None, show: bool = True) -> float:
    cmd = [sys.executable, "-m", "napari_dicom", "export", *map(str, folders), "-o", str(out),
           "-q"]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"napari-dicom export failed ({proc.returncode}):\n{proc.stderr}")
    if show:
        print("  " + proc.stdout.strip().replace("\n", "\n  "))
    return dt


def median_of(times: list[float]) -> float:
    print("  runs: " + ", ".join(f"{t:.2f}" for t in times) + " s")
    return statistics.median(times)


def seeds_loop(files: list[Path], out: Path) -> float:
    """What the seed scripts did: pydicom + window + Pillow defaults, one file at a time."""
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_modality_lut

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        hu = apply_modality_lut(ds.pixel_array, ds)
        wc = ds.WindowCenter
        ww = ds.WindowWidth
        c = float(wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc)
        w = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
        lo, hi = c - w / 2, c + w / 2
        img = (np.clip((hu - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
        Image.fromarray(img).save(out / f"{i:05d}.png")
    return time.perf_counter() - t0


def dcmtk_loop(files: list[Path], out: Path, sample: int | None) -> tuple[float, int]:
    """dcmj2pnm once per file; returns (seconds for the files timed, files timed)."""
    exe = shutil.which("dcmj2pnm")
    if exe is None:
        return float("nan"), 0
    out.mkdir(parents=True, exist_ok=True)
    chosen = files
    if sample is not None and sample < len(files):
        idx = np.linspace(0, len(files) - 1, sample).round().astype(int)
        chosen = [files[i] for i in sorted(set(idx.tolist()))]
    t0 = time.perf_counter()
    for i, f in enumerate(chosen):
        subprocess.run([exe, "+on", "+Wi", "1", str(f), str(out / f"{i:05d}.png")],
                       check=True, capture_output=True)
    return time.perf_counter() - t0, len(chosen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--jobs", type=int, default=None, help="--jobs for napari-dicom")
    ap.add_argument("--dcmtk-sample", type=int, default=100,
                    help="files timed for dcmj2pnm (extrapolated); default 100")
    ap.add_argument("--dcmtk-all", action="store_true", help="time dcmj2pnm on every file")
    ap.add_argument("--repeat", type=int, default=5, help="pairs of runs (CLI, seeds' "
                    "loop); the median of their ratios is reported (default 5)")
    ap.add_argument("--single-images", type=int, default=0, metavar="N",
                    help="also time N single-image series (1024 x 1024)")
    args = ap.parse_args()

    import compileall

    import napari_dicom

    compileall.compile_dir(Path(napari_dicom.__file__).parent, quiet=1)
    folders = [ensure_series(k, args.slices, args.size) for k in ("native", "ljpeg")]
    files = dicom_files(folders)
    n = len(files)
    print(f"input: {n} files ({args.slices} x {args.size}x{args.size}, native + JPEG "
          f"Lossless) in {', '.join(map(str, folders))}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
        tmpdir = Path(tmp)
        runs, seeds = [], []
        for i in range(args.repeat):  # in pairs: both halves see the machine alike
            runs.append(run_cli(folders, tmpdir / f"cli{i}", args.jobs, show=False))
            seeds.append(seeds_loop(files, tmpdir / f"seed{i}"))
        pngs = len(list((tmpdir / "cli0").rglob("*.png")))
        assert pngs == n, f"expected {n} PNGs, got {pngs}"
        print("napari-dicom export (subprocess, whole run):")
        t_cli = median_of(runs)
        print(f"  {t_cli:7.2f} s  {n / t_cli:8.1f} images/s  (median)")
        print("seeds' loop (pydicom + window + Pillow defaults, one process):")
        t_seed = median_of(seeds)
        print(f"  {t_seed:7.2f} s  {n / t_seed:8.1f} images/s  (median)")
        ratios = [b / a for a, b in zip(runs, seeds, strict=True)]

        sample = None if args.dcmtk_all else args.dcmtk_sample
        t_dc, k = dcmtk_loop(files, tmpdir / "dcmtk", sample)
        if k:
            per_file = t_dc / k
            how = "all files" if k == n else f"{k} of {n} files timed, extrapolated"
            print(f"dcmj2pnm +on +Wi 1, one process per file ({how}):")
            print(f"  {per_file * n:7.2f} s  {1 / per_file:8.1f} images/s "
                  f"({per_file * 1000:.1f} ms per file)")
        else:
            per_file = float("nan")
            print("dcmj2pnm: not installed (apt-get install dcmtk), skipped")

    print("ratios (higher = napari-dicom faster):")
    print(f"  vs seeds' loop : {statistics.median(ratios):6.1f}x   (goal >= 5x; median of "
          f"the pairs, which range {min(ratios):.1f}-{max(ratios):.1f}x)")
    if k:
        print(f"  vs dcmj2pnm    : {per_file * n / t_cli:6.1f}x   (goal > 1x)")
    if args.single_images:
        single_images(args.single_images, args.repeat)


def single_images(n: int, repeat: int) -> None:
    folder = ensure_single_images(n)
    files = dicom_files([folder])
    print(f"\n{n} single-image series (1024 x 1024) in {folder}:")
    with tempfile.TemporaryDirectory(prefix="bench_cli_single_") as tmp:
        tmpdir = Path(tmp)
        for label, jobs in (("all jobs", None), ("--jobs 1", 1)):
            t = median_of([run_cli([folder], tmpdir / f"{jobs}_{i}", jobs, show=False)
                           for i in range(repeat)])
            print(f"  napari-dicom export, {label}: {t:6.2f} s  {n / t:6.1f} images/s")
        t_seed = seeds_loop(files, tmpdir / "seed")
        print(f"  seeds' loop: {t_seed:6.2f} s  {n / t_seed:6.1f} images/s")


if __name__ == "__main__":
    main()
