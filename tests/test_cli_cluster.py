"""``napari-dicom export --scheduler``: the export on a real Dask ``distributed`` cluster on
loopback (a LocalCluster of worker processes, and a ``dask scheduler`` + two ``dask
worker`` processes started here), against the local run of the same tree: the same
bytes in every file, a worker killed mid-run, a run interrupted then resumed with
``--skip-existing``, and the de-identified export."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import napari_dicom
from napari_dicom.cli import main

distributed = pytest.importorskip("distributed")

SRC_PATH = str(Path(napari_dicom.__file__).resolve().parents[1])
CT = "1.2.840.10008.5.1.4.1.1.2"


def _write_series(folder: Path, n: int, number: int, size: int = 32,
                  frames: int | None = None, window: bool = True,
                  extremes: bool = False, modality: str = "CT") -> None:
    """``n`` CT files (or one multi-frame file of ``frames`` frames) in ``folder``.

    ``modality``: not CT, a series with no stored window gets a min-max window from its
    values (CT gets W 400 / L 40). ``extremes``: values in a narrow band (stored
    1000-1100) but for one pixel of the second plane (0) and one of the last but one
    (4095): a min-max window over the whole series differs from one over any range of
    planes without both."""
    folder.mkdir(parents=True)
    series_uid, study_uid = generate_uid(), "1.2.826.0.1.3680043.8.498.1"
    rng = np.random.default_rng(number)
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT
        meta.MediaStorageSOPInstanceUID = sop = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT, sop
        ds.PatientID, ds.StudyDate, ds.StudyDescription = "CLUSTER01", "20240102", "HEAD"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, number, i + 1
        ds.SeriesDescription = f"series {number}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        if window:
            ds.WindowCenter, ds.WindowWidth = 40, 400
        if frames:
            ds.NumberOfFrames = frames
            shape: tuple[int, ...] = (frames, size, size)
        else:
            ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
            shape = (size, size)
        if extremes:
            px = rng.integers(1000, 1101, shape, dtype=np.uint16)
            px[..., 0, 0] = {1: 0, n - 2: 4095}.get(i, px[..., 0, 0])
        else:
            px = rng.integers(0, 4096, shape, dtype=np.uint16)
        ds.PixelData = px.tobytes()
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Several series (stored window, and none: a min-max window from the data), a
    multi-frame file, a truncated file and a file that is not DICOM."""
    root = tmp_path_factory.mktemp("cluster") / "src"
    for k in range(5):
        _write_series(root / f"s{k}", 3 + k, k + 1, window=k % 2 == 0)
    _write_series(root / "cine", 1, 20, frames=7)
    (root / "s0" / "cut.dcm").write_bytes((root / "s0" / "000.dcm").read_bytes()[:600])
    (root / "notes.txt").write_text("not DICOM\n")
    return root


@pytest.fixture(scope="module")
def long_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough series (40 x 6 images of 96x96) for a run that can be cut in the middle."""
    root = tmp_path_factory.mktemp("cluster_long") / "src"
    for k in range(40):
        _write_series(root / f"s{k:02d}", 6, k + 1, size=96)
    return root


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _tree(out: Path) -> dict[str, bytes]:
    """Every file under ``out``, hidden ones (staging folders) included."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def reference(mixed: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict]:
    out = tmp_path_factory.mktemp("ref") / "out"
    code, _, err = _run(["export", str(mixed), "-o", str(out), "-q"])
    assert "cut.dcm" in err
    return code, _tree(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (SRC_PATH, env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (free ports)."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    logs = tmp_path_factory.mktemp("dask_logs")
    procs = []

    def start(name: str, *args: str) -> None:
        with (logs / f"{name}.log").open("wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "dask", *args],
                                          stdout=log, stderr=subprocess.STDOUT, env=_env(),
                                          cwd=logs))

    start("scheduler", "scheduler", "--host", "127.0.0.1", "--port",
          address.rsplit(":", 1)[1], "--no-dashboard")
    for i in (1, 2):
        start(f"worker{i}", "worker", address, "--nthreads", "1", "--nworkers", "1",
              "--host", "127.0.0.1", "--no-dashboard")
    try:
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _worker_pids(address: str) -> dict[str, int]:
    with distributed.Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        return dict(client.run(os.getpid))


def test_local_cluster_writes_the_local_bytes(mixed: Path, reference: tuple[int, dict],
                                              tmp_path: Path) -> None:
    """``--scheduler local:2``: every file, PNGs and manifests, the same bytes as the
    local run; the truncated file reported the same way; the summary names the workers."""
    code, stdout, stderr = _run(["export", str(mixed), "-o", str(tmp_path / "out"), "-q",
                                 "--scheduler", "local:2"])
    ref_code, ref_tree = reference
    assert code == ref_code == 1  # the truncated file is skipped and said
    tree = _tree(tmp_path / "out")
    assert sorted(tree) == sorted(ref_tree)
    assert [k for k in tree if tree[k] != ref_tree[k]] == []
    assert sum(k.endswith(".png") for k in tree) == 3 + 4 + 5 + 6 + 7 + 7
    assert "cut.dcm" in stderr
    assert "workers: 2 (2 local worker process(es)" in stdout
    assert "files: 27 read" in stdout  # 25 + 1 multi-frame + the truncated one


def test_scheduler_and_workers_processes_write_the_local_bytes(
        mixed: Path, reference: tuple[int, dict], scheduler: str, tmp_path: Path) -> None:
    code, stdout, _ = _run(["export", str(mixed), "-o", str(tmp_path / "out"), "-q",
                            "--scheduler", scheduler])
    assert code == reference[0]
    assert _tree(tmp_path / "out") == reference[1]
    assert f"workers: 2 (2 worker(s) of the scheduler {scheduler})" in stdout


def _export_process(src: Path, out: Path, *extra: str,
                    split: int | None = None) -> subprocess.Popen[bytes]:
    env = _env()
    if split is not None:
        env["NAPARI_DICOM_SPLIT_PLANES"] = str(split)
    return subprocess.Popen(
        [sys.executable, "-m", "napari_dicom", "export", str(src), "-o", str(out), "-q",
         *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _series_done(out: Path) -> int:
    """Series folders in place (a swapped-in folder is complete: it has its manifest)."""
    return sum(1 for m in out.glob("*/*/*/manifest.csv"))


def _wait_for(proc: subprocess.Popen[bytes], out: Path, n: int) -> int:
    """Poll until ``n`` series are in place; return how many (or fail if the run ended)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = _series_done(out)
        if done >= n:
            return done
        assert proc.poll() is None, "the export ended before it could be cut"
        time.sleep(0.005)
    raise AssertionError("no series was exported within 120 s")


@pytest.fixture(scope="module")
def long_reference(long_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("long_ref") / "out"
    assert _run(["export", str(long_tree), "-o", str(out), "-q"])[0] == 0
    return _tree(out)


def _kill_a_worker(proc: subprocess.Popen[bytes], out: Path,
                   workers: dict[str, int]) -> tuple[int, bytes]:
    """SIGKILL one of ``workers`` while ``proc`` exports into ``out``; wait for the run
    to end, and check it ended well and after the kill. The victim's pid and stdout."""
    victim = next(iter(workers.values()))
    os.kill(victim, signal.SIGKILL)
    finished_at_kill = (out / "manifest.csv").exists()
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr.decode()
    assert not finished_at_kill
    return victim, stdout


def test_worker_killed_mid_run(long_tree: Path, long_reference: dict, scheduler: str,
                               tmp_path: Path) -> None:
    """A worker process killed (SIGKILL) while the export runs: Dask runs its tasks
    again, the run completes, and every file is the local run's (no staging folder or
    partial PNG left anywhere)."""
    out = tmp_path / "out"
    before = _worker_pids(scheduler)
    proc = _export_process(long_tree, out, "--scheduler", scheduler)
    _wait_for(proc, out, 2)
    victim, stdout = _kill_a_worker(proc, out, before)
    assert _tree(out) == long_reference
    assert b"series: 40 exported, 0 failed" in stdout
    after = _worker_pids(scheduler)  # the nanny started a new worker process
    assert victim not in after.values()


def test_skip_existing_after_an_interrupted_run(long_tree: Path, long_reference: dict,
                                                scheduler: str, tmp_path: Path) -> None:
    """A cluster run interrupted (SIGINT) part way, then resumed with --skip-existing: the
    PNGs of the first run are kept as they are (same inode, same time), one cut short
    meanwhile is written anew, only the missing ones are written, and the files end as
    the local run's (the run manifest says which were written when)."""
    out = tmp_path / "out"
    proc = _export_process(long_tree, out, "--scheduler", scheduler)
    _wait_for(proc, out, 3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert not (out / "manifest.csv").exists()
    time.sleep(1.0)  # tasks already running on the workers finish (their series swap in)
    kept = {p: p.stat() for p in out.rglob("*.png")}
    assert 0 < len(kept) < 240
    cut = sorted(kept)[0]
    cut.write_bytes(cut.read_bytes()[:-20])  # cut short, as an interrupted copy leaves it
    del kept[cut]

    code, stdout, err = _run(["export", str(long_tree), "-o", str(out), "-q",
                              "--skip-existing", "--scheduler", scheduler])
    assert code == 0, err
    for p, st in kept.items():
        now = p.stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), p
    tree = _tree(out)
    run_manifest = tree.pop("manifest.csv")
    ref = dict(long_reference)
    ref_manifest = ref.pop("manifest.csv")
    assert tree == ref
    assert f"images: {240 - len(kept)} written, {len(kept)} already present" in stdout
    assert "1 PNGs present but cut short written anew" in stdout
    rows = run_manifest.decode().splitlines()
    assert len(rows) == len(ref_manifest.decode().splitlines()) == 41
    assert sum(",skipped-existing," in r for r in rows) >= 2  # whole series kept as they were


def test_lost_scheduler_is_one_line_and_resumable(long_tree: Path, long_reference: dict,
                                                  tmp_path: Path) -> None:
    """The scheduler killed mid-run: one error line naming it, exit status 1, the series
    in place stay, and a resumed run completes the output."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    logs = tmp_path / "logs"
    logs.mkdir()
    sched = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host",
                              "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                              "--no-dashboard"], env=_env(), cwd=logs,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads",
                               "1", "--host", "127.0.0.1", "--no-dashboard"], env=_env(),
                              cwd=logs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "out"
    try:
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
        proc = _export_process(long_tree, out, "--scheduler", address)
        _wait_for(proc, out, 2)
        sched.kill()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        for p in (sched, worker):
            p.kill()
            p.wait(15)
    lines = stderr.decode().strip().splitlines()
    assert proc.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("napari-dicom export: error: lost the "
                                                   f"Dask scheduler {address}"), lines
    assert "--skip-existing" in lines[0]
    assert b"run manifest: not written" in stdout
    assert _series_done(out) >= 2
    code, _, err = _run(["export", str(long_tree), "-o", str(out), "-q", "--skip-existing"])
    assert code == 0, err
    tree = _tree(out)
    tree.pop("manifest.csv")
    assert tree == {k: v for k, v in long_reference.items() if k != "manifest.csv"}


def test_scheduler_that_does_not_answer(mixed: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_dicom.core import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 2.0)  # 10 s by default
    address = f"tcp://127.0.0.1:{_free_port()}"
    code, _, stderr = _run(["export", str(mixed), "-o", str(tmp_path / "out"),
                            "--scheduler", address])
    assert code == 1
    assert stderr.startswith(f"napari-dicom export: error: cannot reach the Dask scheduler "
                             f"{address}")
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spec", ["local:0", "local:x"])
def test_bad_local_worker_count(spec: str, mixed: Path, tmp_path: Path) -> None:
    code, _, stderr = _run(["export", str(mixed), "-o", str(tmp_path), "--scheduler", spec])
    assert code == 2
    assert "--scheduler local:N needs a positive number" in stderr


# --------------------------------------------------------------------------------------
# Long series written in plane ranges by several tasks
# (NAPARI_DICOM_SPLIT_PLANES=8: series of more than 8 planes are split, 8 planes a range)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two long series of 40 planes, one with no stored window (its display is the
    min-max over the WHOLE series, which only the 2nd and 39th planes reach), one with
    a stored window; and a short one."""
    root = tmp_path_factory.mktemp("cluster_split") / "src"
    _write_series(root / "minmax", 40, 31, size=192, window=False, extremes=True,
                  modality="MR")
    _write_series(root / "stored", 40, 32, size=192)
    _write_series(root / "short", 3, 33, size=192, window=False)
    return root


@pytest.fixture(scope="module")
def split_reference(split_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("split_ref") / "out"
    assert _run(["export", str(split_tree), "-o", str(out), "-q"])[0] == 0
    tree = _tree(out)
    row = next(r for r in tree["manifest.csv"].decode().splitlines() if "minmax" in r)
    # stored 0..4095 - 1024 (C.11.2.1.2.1 note 4): the whole series, not a range of it
    assert ",1024,4096,LINEAR,W 4096 / L 1024 min-max," in row, row
    return tree


def test_long_series_split_over_two_workers(split_tree: Path, split_reference: dict,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``--scheduler local:2`` with the split lowered to 8 planes: each long series is
    written by 5 range tasks over both workers, and every file (PNGs, stack manifests,
    run manifest) is the local run's, the min-max window of the whole series included."""
    monkeypatch.setenv("NAPARI_DICOM_SPLIT_PLANES", "8")
    code, stdout, stderr = _run(["export", str(split_tree), "-o", str(tmp_path / "out"),
                                 "-q", "--scheduler", "local:2"])
    assert code == 0, stderr
    assert "; 2 series of more than 8 planes written in 10 plane ranges" in stdout
    tree = _tree(tmp_path / "out")
    assert sorted(tree) == sorted(split_reference)  # no staging folder or temporary file
    assert [k for k in tree if tree[k] != split_reference[k]] == []


def test_bad_split_setting(split_tree: Path, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAPARI_DICOM_SPLIT_PLANES", "0")
    code, _, stderr = _run(["export", str(split_tree), "-o", str(tmp_path / "out"),
                            "--scheduler", "local:1"])
    assert code == 2
    assert "NAPARI_DICOM_SPLIT_PLANES must be a positive number of planes" in stderr
    assert not (tmp_path / "out").exists()


def _staged_pngs(out: Path) -> int:
    """PNGs in staging folders (a split series being written)."""
    return sum(1 for _ in out.glob("*/*/.*.partial/*.png"))


def test_worker_killed_during_a_split_series(split_tree: Path, split_reference: dict,
                                            scheduler: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed (SIGKILL) while the ranges of a split series are being written:
    Dask runs its tasks again (the same staging folder, new temporary names), and the
    output is the local run's with no staging folder or temporary file left. Then
    ``--skip-existing`` on the cluster, after one plane is cut short and one removed,
    writes exactly those two (resumed ranges write into the final folder)."""
    out = tmp_path / "out"
    before = _worker_pids(scheduler)
    proc = _export_process(split_tree, out, "--scheduler", scheduler, split=8)
    deadline = time.monotonic() + 120
    while _staged_pngs(out) == 0:
        assert proc.poll() is None, "the export ended before a range was written"
        assert time.monotonic() < deadline, "no range was written within 120 s"
        time.sleep(0.002)
    victim, stdout = _kill_a_worker(proc, out, before)
    assert b"2 series of more than 8 planes written in 10 plane ranges" in stdout
    tree = _tree(out)
    assert sorted(tree) == sorted(split_reference)
    assert [k for k in tree if tree[k] != split_reference[k]] == []
    assert victim not in _worker_pids(scheduler).values()

    planes = sorted(out.glob("CLUSTER01/*/31_series_31/*.png"))  # the min-max series
    assert len(planes) == 40
    planes[5].write_bytes(planes[5].read_bytes()[:-20])
    planes[30].unlink()
    monkeypatch.setenv("NAPARI_DICOM_SPLIT_PLANES", "8")
    code, stdout2, err = _run(["export", str(split_tree), "-o", str(out), "-q",
                               "--skip-existing", "--scheduler", scheduler])
    assert code == 0, err
    assert "images: 2 written, 81 already present" in stdout2
    assert "1 PNGs present but cut short written anew" in stdout2
    tree = _tree(out)
    assert tree.pop("manifest.csv") != split_reference["manifest.csv"]  # says what was kept
    assert tree == {k: v for k, v in split_reference.items() if k != "manifest.csv"}


def _held(client: distributed.Client, name: str) -> int:
    """Futures this client holds of tasks running ``name``."""
    return sum(1 for key in list(client.futures) if str(key).startswith(f"{name}-"))


def test_finished_series_are_let_go(split_tree: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a series' result is in, the client lets go of its tasks (for a split series,
    its first and range tasks too), so a worker dying later cannot have them run again
    behind the run's back (an export rewritten, a staging folder opened again with no
    task left to install it); after the run the scheduler holds no task of it."""
    from napari_dicom.core.batch import ExportOptions
    from napari_dicom.core.cluster import DaskRunner
    from napari_dicom.core.scan import scan

    monkeypatch.setenv("NAPARI_DICOM_SPLIT_PLANES", "8")

    def settle(check: Callable[[], bool]) -> bool:
        """``check()`` once Dask has handled the releases (they are messages)."""
        deadline = time.monotonic() + 30
        while not check() and time.monotonic() < deadline:
            time.sleep(0.01)
        return check()

    with DaskRunner("local:2") as runner:
        client = runner.client
        scanned = scan([str(split_tree)], reader=runner.read_headers)
        assert settle(lambda: _held(client, "read_headers") == 0)
        long = {i for i, s in enumerate(scanned.series) if len(s.planes) > 8}
        assert len(long) == 2
        work = [(i, s, tmp_path / "out" / f"s{i}") for i, s in enumerate(scanned.series)]
        results = {}
        for i, res in runner.export_series(work, ExportOptions()):
            results[i] = res
            left = len(long - set(results))
            assert settle(lambda left=left: _held(client, "shared_prepare") == left
                          and _held(client, "shared_range") == 5 * left), (i, left)
        assert sorted(results) == list(range(len(scanned.series)))
        assert [r.status for r in results.values()] == ["ok"] * len(results)
        assert settle(lambda: client.run_on_scheduler(
            lambda dask_scheduler: len(dask_scheduler.tasks)) == 0)
