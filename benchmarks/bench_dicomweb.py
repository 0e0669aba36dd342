"""Benchmark DICOMweb: a series opened from a real Orthanc on loopback, through the plugin,
beside the local read of the same files and a plain dicomweb-client loop, in one run.

Run: ``python benchmarks/bench_dicomweb.py [--slices 300] [--size 512] [--repeat 3]``
(needs the Debian packages orthanc and orthanc-dicomweb).

For a 300-slice 512 x 512 int16 CT, uncompressed and JPEG Lossless SV1, uploaded to an
Orthanc started for the run (the tests' helper, ``tests/_orthanc.py``, default Orthanc
settings but for the port and storage), it prints, each the median of ``--repeat`` runs
with the plugin's session servers closed (``Server.close()``: frames freed) before each:

* **first slice**: the series URL's headers read (``scan(url)``: one metadata request and
  the first-frame probe) and one plane decoded, as the reader's background volume gives
  it to napari (``SeriesVolume(series)[0]``); goal <= 0.5 s;
* **whole series** through the plugin: ``scan(url)`` + ``load_series(lazy=False)``,
  against the local read of the same files (``scan(folder)`` + ``load_series``), goal
  <= 2x the local read; the plugin, the local read and the plain client run back to back
  in each round and the ratios are the median of each round's own (a shared machine's
  load moves between rounds);
* the **plain client**: ``DICOMwebClient.iter_series`` (one multipart request for all
  instances, as dicomweb-client users write it) and ``pixel_array`` per instance; its
  first slice is the first instance decoded; goal: the plugin faster;
* the same series opened again in the session (frames from the cache).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

KINDS = {"uncompressed": ExplicitVRLittleEndian, "jpeg-lossless": JPEGLosslessSV1}


def median_of(fn: Callable[[], Any], repeat: int, before: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def fresh_session() -> None:
    """Forget the plugin's servers (and their frame caches): each run downloads again."""
    from napari_dicom.core import dicomweb

    for server in list(dicomweb._SERVERS.values()):
        server.close()  # its stream stopped, its frames freed, itself out of the session
    gc.collect()  # anything else of the last run freed now, not inside the next timing


def plugin_first(url: str) -> None:
    from napari_dicom.core.scan import scan
    from napari_dicom.core.volume import SeriesVolume

    series = scan([url]).series[0]
    plane = SeriesVolume(series, background=False)[0]
    assert plane.shape == series.shape[-2:]


def plugin_whole(url: str) -> np.ndarray:
    from napari_dicom.core.pixels import load_series
    from napari_dicom.core.scan import scan

    return np.asarray(load_series(scan([url]).series[0], lazy=False))


def local_whole(folder: Path) -> np.ndarray:
    from napari_dicom.core.pixels import load_series
    from napari_dicom.core.scan import scan

    return np.asarray(load_series(scan([str(folder)]).series[0], lazy=False))


def local_first(folder: Path) -> None:
    from napari_dicom.core.scan import scan
    from napari_dicom.core.volume import SeriesVolume

    SeriesVolume(scan([str(folder)]).series[0], background=False)[0]


def plain_client(base: str, study: str, series: str, first_only: bool) -> list[np.ndarray]:
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(base)
    out = []
    for ds in client.iter_series(study, series):
        out.append(ds.pixel_array)
        if first_only:
            break
    return out


def raw_transfer(base: str, study: str, series: str) -> int:
    """The floor: the series in one streamed request, bytes counted and dropped."""
    import requests

    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    n = 0
    with requests.get(f"{base}/studies/{study}/series/{series}", headers={"Accept": accept},
                      stream=True, timeout=60) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 22):
            n += len(chunk)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from _orthanc import ORTHANC, Orthanc, dicomweb_plugin

    if ORTHANC is None or dicomweb_plugin() is None:
        print("Orthanc with its DICOMweb plugin is needed (Debian: orthanc orthanc-dicomweb)")
        return 1
    from napari_dicom.core.phantom import write_ct_phantom

    root = Path(tempfile.mkdtemp(prefix="napari-dicom-bench-dicomweb-"))
    folders = {}
    for i, (kind, ts) in enumerate(KINDS.items()):
        folders[kind] = root / kind
        print(f"writing {args.slices} slices of {args.size}x{args.size} ({kind}) ...",
              flush=True)
        write_ct_phantom(folders[kind], n_slices=args.slices, size=args.size,
                         spacing=(1.0, 0.7, 0.7), transfer_syntax=ts, seed=i,
                         series_number=i + 1, series_description=kind)
    server = Orthanc(root / "orthanc")
    try:
        t = time.perf_counter()
        n = server.upload(p for f in folders.values() for p in sorted(f.iterdir()))
        print(f"Orthanc {server.url}: {n} instances uploaded in {time.perf_counter() - t:.1f} s")
        # the files and Orthanc's copies written to disk before timing (the writeback of
        # ~630 MB otherwise lands in the first figures)
        os.sync()
        rows = []
        for kind, folder in folders.items():
            ds = pydicom.dcmread(next(iter(sorted(folder.iterdir()))), stop_before_pixels=True)
            study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            url = server.dicomweb(study, series)
            # warm up (Orthanc's own caches, imports) and check the values
            fresh_session()
            got = plugin_whole(url)
            want = local_whole(folder)
            assert got.dtype == want.dtype and np.array_equal(got, want), kind
            plain_client(server.base, study, series, first_only=True)
            r = args.repeat
            first = median_of(lambda u=url: plugin_first(u), r, fresh_session)
            again = median_of(lambda u=url: plugin_whole(u), r, lambda: None)
            loc_first = median_of(lambda f=folder: local_first(f), r, lambda: None)
            args_c = (server.base, study, series)
            pl_first = median_of(lambda a=args_c: plain_client(*a, True), r, lambda: None)
            raw = median_of(lambda a=args_c: raw_transfer(*a), r, lambda: None)
            # the whole series in rounds of (plugin, local read, plain client), back to back,
            # so that each round's ratios see the same load on a shared machine
            rounds = []
            for _ in range(r):
                fresh_session()
                rounds.append([timed(lambda u=url: plugin_whole(u)),
                               timed(lambda f=folder: local_whole(f)),
                               timed(lambda a=args_c: plain_client(*a, False))])
            whole, loc_whole, pl_whole = (statistics.median(t[i] for t in rounds)
                                          for i in range(3))
            vs_local = statistics.median(t[0] / t[1] for t in rounds)
            vs_client = statistics.median(t[2] / t[0] for t in rounds)
            rows.append((kind, first, whole, again, loc_first, loc_whole, pl_first, pl_whole,
                         raw, vs_local, vs_client))
    finally:
        server.stop()
    mb = args.slices * args.size * args.size * 2 / 1e6
    print(f"\n{args.slices} slices of {args.size}x{args.size} int16 ({mb:.0f} MB of values), "
          f"Orthanc on loopback, median of {args.repeat}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores\n")
    head = (f"{'series':<14} {'first slice':>12} {'whole':>8} {'again':>8} | "
            f"{'local 1st':>9} {'local':>7} {'whole/local':>11} | {'client 1st':>10} "
            f"{'client':>7} {'client/plugin':>13} | {'raw HTTP':>8}")
    print(head)
    print("-" * len(head))
    for kind, first, whole, again, lf, lw, pf, pw, raw, vs_local, vs_client in rows:
        print(f"{kind:<14} {first:>10.3f} s {whole:>6.2f} s {again:>6.2f} s | {lf:>7.3f} s "
              f"{lw:>5.2f} s {vs_local:>10.2f}x | {pf:>8.3f} s {pw:>5.2f} s "
              f"{vs_client:>12.2f}x | {raw:>6.2f} s")
    print("\nraw HTTP: the series in one streamed request, bytes dropped (the transfer alone, "
          "no parsing or decoding)")
    print("\ngoals: first slice <= 0.5 s; whole <= 2x local; faster than the plain client "
          "(client/plugin > 1)")
    print("whole/local and client/plugin: the median of the rounds' own ratios (each round "
          "times the three back to back)")
    for kind, first, _w, _a, _lf, _lw, _pf, _pw, _raw, vs_local, vs_client in rows:
        verdict = [("first slice", first <= 0.5), ("whole <= 2x local", vs_local <= 2),
                   ("faster than the client", vs_client > 1)]
        print(f"  {kind}: " + ", ".join(f"{k} {'met' if ok else 'NOT met'}"
                                        for k, ok in verdict))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
