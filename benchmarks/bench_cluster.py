"""Benchmark: ``napari-dicom export`` locally against ``--scheduler`` (Dask distributed).

Input: a tree of ``--series`` x ``--per-series`` small CT files (default 400 x 50 = 20 000
files of 64 x 64, one folder per series), written by this script into a temporary folder
(removed at the end).

Measured in the same run, each through :func:`napari_dicom.core.batch.export_all` (the
function the command line calls), into a fresh output folder:

1. ``local``: a fresh Python process per run, as the command line is (the scan over
   forked processes, series side by side on threads), ``--jobs`` = the cores; not this
   process, which holds the clients' threads and so could not fork its scan;
2. ``local:N``: a :class:`distributed.LocalCluster` of N worker processes
   (``--scheduler local:N``);
3. ``processes``: a ``dask scheduler`` and N ``dask worker`` processes started as separate
   programs on 127.0.0.1 (``--scheduler tcp://127.0.0.1:PORT``), as on real machines.

With ``--split-compare``, a fourth row, ``local:N whole``: the same LocalCluster with
long series NOT split by plane ranges (each one task, as before the split), to measure
what splitting gives where a few long series meet more workers (e.g. ``--series 1
--per-series 1200 --size 256``).

Each path first exports a small warm-up tree (imports, first-call costs in every
worker). The three run in ``--rounds`` rounds (default 3) of local, ``local:N``, processes: the
machine is shared and its speed drifts within minutes, so each cluster run is compared
with the local run of its own round. Prints files/s of the whole run and of the scan
(header reads) and export phases apart (median and range over the rounds), and the
cluster's overhead against the local run (median and range of the rounds; goal: within
15 %).
Cluster start-up (seconds, once per cluster) is printed apart and not in the rates: a
cluster is started once for many runs. Every output is compared byte for byte with the
first local run's.

    python benchmarks/bench_cluster.py [--series 400] [--per-series 50] [--size 64]
                                       [--workers 2] [--rounds 3] [--split-compare]
                                       [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SRC = str(Path(__file__).resolve().parents[1] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from napari_dicom.core.batch import ExportOptions, export_all  # noqa: E402
from napari_dicom.core.cluster import DaskRunner  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"


def write_tree(root: Path, n_series: int, per_series: int, size: int) -> int:
    """``n_series`` folders of ``per_series`` CT files; returns the number of files."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, (16, size, size), dtype=np.uint16)
    study = generate_uid()
    n = 0
    for s in range(n_series):
        folder = root / f"patient{s % 20:02d}" / f"series{s:04d}"
        folder.mkdir(parents=True)
        series_uid = generate_uid()
        for i in range(per_series):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT
            meta.MediaStorageSOPInstanceUID = sop = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = CT, sop
            ds.PatientID = f"BENCH{s % 20:02d}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
            ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", s + 1, i + 1
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = size
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
            ds.PixelSpacing = [0.7, 0.7]
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.WindowCenter, ds.WindowWidth = 40, 400
            ds.PixelData = pixels[(s + i) % 16].tobytes()
            ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)
            n += 1
    return n


def tree_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def run(src: Path, out: Path, jobs: int, runner: Any = None) -> dict[str, float]:
    t0 = time.perf_counter()
    batch = export_all([src], out, ExportOptions(jobs=jobs), runner=runner)
    total = time.perf_counter() - t0
    assert not batch.error and not batch.failed, batch.error
    return {"total": total, "scan": batch.scan_seconds, "export": batch.export_seconds,
            "images": batch.written, "workers": batch.workers}


class Whole:
    """A :class:`DaskRunner` exporting every series as one task (no plane ranges)."""

    def __init__(self, runner: DaskRunner) -> None:
        self.runner = runner
        self.workers = runner.workers

    def read_headers(self, files: list[str], progress: Any) -> list[Any]:
        return self.runner.read_headers(files, progress)

    def export_series(self, work: Any, options: ExportOptions) -> Any:
        saved, self.runner.split = self.runner.split, sys.maxsize
        try:
            yield from self.runner.export_series(work, options)
        finally:
            self.runner.split = saved


def run_local(src: Path, out: Path, jobs: int, warm: Path) -> dict[str, float]:
    """:func:`run` in a fresh process with no other thread, as ``napari-dicom export``
    runs (a process holding a Dask client's threads reads the headers in-process: it may
    not fork); ``warm`` is exported first there, outside the timing."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p))
    done = subprocess.run([sys.executable, __file__, "--child", str(src), str(out), str(jobs),
                           str(warm)], env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def child(src: str, out: str, jobs: str, warm: str) -> None:
    run(Path(warm), Path(out + "-warm"), int(jobs))
    shutil.rmtree(out + "-warm")
    print(json.dumps(run(Path(src), Path(out), int(jobs))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=400)
    ap.add_argument("--per-series", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--split-compare", action="store_true",
                    help="also run local:N with long series not split (one task each)")
    ap.add_argument("--tree", type=Path,
                    help="keep the input tree in this folder (written there once, reused)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    jobs = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="napari-dicom-bench-cluster-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.perf_counter()
        trees = tmp if args.tree is None else args.tree / (
            f"{args.series}x{args.per_series}x{args.size}")
        if not (trees / "done").exists():
            shutil.rmtree(trees / "src", ignore_errors=True)
            write_tree(trees / "src", args.series, args.per_series, args.size)
            (trees / "done").touch()
        n_files = args.series * args.per_series
        print(f"tree: {n_files} files in {args.series} series of {args.size}x{args.size} "
              f"(written in {time.perf_counter() - t0:.0f} s); load: "
              f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; cores: {jobs}")
        # warm-up: the first export in a process imports numpy, pydicom, the codecs (each
        # worker too): a small tree through every path before its timed run
        write_tree(tmp / "warm", 4, 5, args.size)
        source = trees / "src"
        n_warm = 0

        def warm(runner: Any = None) -> None:
            nonlocal n_warm
            n_warm += 1
            run(tmp / "warm", tmp / f"out-warm{n_warm}", jobs, runner)

        ref = tmp / "out-ref"
        run_local(source, ref, jobs, tmp / "warm")
        reference = tree_bytes(ref)
        shutil.rmtree(ref)

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p))
        address = f"tcp://127.0.0.1:{free_port()}"
        t0 = time.perf_counter()
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env,
                 "cwd": tmp}
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host",
                                       "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                       "--no-dashboard"], **quiet))  # type: ignore[call-overload]
        for _ in range(args.workers):
            procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address,
                                           "--nthreads", "1", "--host", "127.0.0.1",
                                           "--no-dashboard"], **quiet))  # type: ignore[call-overload]
        import distributed

        with distributed.Client(address, timeout=60) as c:
            c.wait_for_workers(args.workers, timeout=120)
        started = {"processes": time.perf_counter() - t0}
        t0 = time.perf_counter()
        with DaskRunner(f"local:{args.workers}") as local_n, DaskRunner(address) as remote:
            started[f"local:{args.workers}"] = time.perf_counter() - t0
            runners: dict[str, Any] = {"local": None, f"local:{args.workers}": local_n,
                                       "processes": remote}
            if args.split_compare:
                runners[f"local:{args.workers} whole"] = Whole(local_n)
            for r in runners.values():
                if r is not None:  # the local run warms up in its own process
                    warm(r)
            # rounds of (local, local:N, processes): each cluster run against the local
            # run of its own round, the machine's speed drifting between rounds
            table: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
            for k in range(args.rounds):
                for name, r in runners.items():
                    out = tmp / f"out-{k}-{name.replace(':', '').replace(' ', '')}"
                    table[name].append(run(source, out, jobs, r) if r is not None
                                       else run_local(source, out, jobs, tmp / "warm"))
                    assert tree_bytes(out) == reference, f"{name}: output differs"
                    shutil.rmtree(out)
        print(f"{args.rounds} rounds; per run: files/s (whole run, scan phase, export phase); "
              "overhead: the run's time against the local run of the same round")
        print(f"{'run':<16} {'workers':>7} {'files/s':>16} {'scan f/s':>16} "
              f"{'export f/s':>16} {'overhead (median, range)':>26} {'start-up s':>10}")
        for name, rows in table.items():
            def rng(key: str, rows: list[dict[str, float]] = rows) -> str:
                v = sorted(n_files / r[key] for r in rows)
                return f"{statistics.median(v):.0f} ({v[0]:.0f}-{v[-1]:.0f})"

            over = sorted(100 * (r["total"] / base["total"] - 1)
                          for r, base in zip(rows, table["local"], strict=True))
            ov = (f"{statistics.median(over):+.1f}% ({over[0]:+.0f}..{over[-1]:+.0f})"
                  if name != "local" else "")
            print(f"{name:<16} {rows[0]['workers']:>7.0f} {rng('total'):>16} {rng('scan'):>16} "
                  f"{rng('export'):>16} {ov:>26} {started.get(name, 0.0):>10.1f}")
        print("every output the same bytes as the local run's (goal: overhead within 15 %)")
        print(f"load after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
