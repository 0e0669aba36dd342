"""``napari-dicom export`` never loses or clobbers files: foreign files refused, its own
earlier export replaced whole, Ctrl-C (a real SIGINT to a real process) and a full disk
(a real, small tmpfs) leave what was written intact, output names stay inside OUT."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from napari_dicom.cli import main
from napari_dicom.core.phantom import write_ct_phantom

N, SIZE = 6, 48
SRC_PATH = str(Path(__file__).resolve().parents[1] / "src")


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _series(folder: Path, n: int = N, size: int = SIZE, **kw: object) -> list[Path]:
    return write_ct_phantom(folder, n_slices=n, size=size, extension=".dcm",
                            **kw)  # type: ignore[arg-type]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _series_folder(out: Path) -> Path:
    (folder,) = {p.parent for p in out.rglob("*.png")}
    return folder


def _hidden(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*")]


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("ct")
    _series(src, series_description="Axial", patient_id="P1")
    return src


# --------------------------------------------------------------------------------------
# files napari-dicom did not write
# --------------------------------------------------------------------------------------


def test_a_foreign_run_manifest_refuses_the_run(ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.csv").write_text("subject,score\n1,42\n")
    code, _, stderr = _run(["export", str(ct), "-o", str(out), "-q"])
    assert code == 2
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "manifest.csv exists and was not written by napari-dicom" in stderr
    assert "--overwrite" in stderr
    assert _snapshot(out) == {"manifest.csv": b"subject,score\n1,42\n"}
    code, _, stderr = _run(["export", str(ct), "-o", str(out), "-q", "--overwrite"])
    assert code == 0, stderr
    assert (out / "manifest.csv").read_text().startswith("source,output,images,written")
    assert len(list(out.rglob("*.png"))) == N


def test_output_into_the_input_folder(ct: Path, tmp_path: Path) -> None:
    """``-o`` the input folder itself: the user's manifest.csv there is refused; without
    it the export goes beside the DICOM files, which stay as they were, and a second run
    (which now also sees the PNGs) replaces its own output."""
    data = tmp_path / "data"
    shutil.copytree(ct, data)
    (data / "manifest.csv").write_text("my,own\n")
    dicom = _snapshot(data)
    code, _, stderr = _run(["export", str(data), "-o", str(data), "-q"])
    assert code == 2 and "not written by napari-dicom" in stderr
    assert _snapshot(data) == dicom
    (data / "manifest.csv").unlink()
    for attempt in range(2):
        code, stdout, stderr = _run(["export", str(data), "-o", str(data), "-q"])
        assert code == 0, (attempt, stderr)
        assert "images: 6 written" in stdout
    after = _snapshot(data)
    dicom.pop("manifest.csv")
    assert {k: v for k, v in after.items() if k in dicom} == dicom
    assert len([k for k in after if k.endswith(".png")]) == N
    assert _hidden(data) == []


def test_a_foreign_png_in_a_series_folder_refuses_that_series(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _series(src / "a", series_number=1, series_description="A", patient_id="P1")
    _series(src / "b", series_number=2, series_description="B", patient_id="P1", seed=2)
    out = tmp_path / "out"
    code, _, _ = _run(["export", str(src), "-o", str(out), "-q"])
    assert code == 0
    folder_a = next(p for p in out.rglob("1_A") if p.is_dir())
    # the user replaces the export of A by their own annotated files, manifest included
    for p in folder_a.iterdir():
        p.write_bytes(b"annotated by hand: " + p.name.encode())
    mine = _snapshot(folder_a)
    code, _, stderr = _run(["export", str(src), "-o", str(out), "-q"])
    assert code == 1
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("refused:")]
    assert "1_A" in line and "not written by napari-dicom" in line and "--overwrite" in line
    assert _snapshot(folder_a) == mine
    with (out / "manifest.csv").open(newline="") as f:
        status = {r["series_description"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"A": "refused", "B": "ok"}
    code, _, _ = _run(["export", str(src), "-o", str(out), "-q", "--overwrite"])
    assert code == 0
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in folder_a.glob("*.png"))


def test_reexport_of_a_series_with_fewer_images_removes_the_stale_pngs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _series(src, series_description="Axial", patient_id="P1")
    out = tmp_path / "out"
    assert _run(["export", str(src), "-o", str(out), "-q"])[0] == 0
    for f in files[:2]:
        f.unlink()
    code, stdout, _ = _run(["export", str(src), "-o", str(out), "-q"])
    assert code == 0 and f"images: {N - 2} written" in stdout
    folder = _series_folder(out)
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == [f"{folder.name}_{i:04d}.png" for i in range(1, N - 1)]
    with (folder / "manifest.csv").open(newline="") as f:
        assert [r["file"] for r in csv.DictReader(f)] == pngs


# --------------------------------------------------------------------------------------
# Ctrl-C: a real SIGINT to a real process
# --------------------------------------------------------------------------------------


def _staged_pngs(parent: Path) -> int:
    try:
        return sum(len([n for n in os.listdir(parent / d) if n.endswith(".png")])
                   for d in os.listdir(parent) if d.endswith(".partial"))
    except OSError:  # the staging folder was just swapped in
        return 0


def _interrupt_once_staged(proc: subprocess.Popen[str], parent: Path,
                           n: int) -> tuple[int, str]:
    """Stop ``proc`` (SIGSTOP) once ``n`` PNGs are staged under ``parent``, send SIGINT,
    let it go on; return the staged count at the stop and its stderr."""
    try:
        deadline = time.monotonic() + 60
        while _staged_pngs(parent) < n and proc.poll() is None:
            assert time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.001)
        proc.send_signal(signal.SIGSTOP)
        staged = _staged_pngs(parent)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return staged, stderr


@pytest.fixture(scope="module")
def long_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("long")
    _series(src, n=150, size=96, series_description="Long", patient_id="P1", noise=30.0)
    return src


@pytest.mark.parametrize("sigint", ["default", "ignored by the parent shell"])
def test_sigint_mid_export_exits_130_and_keeps_the_earlier_export(
        long_series: Path, tmp_path: Path, sigint: str) -> None:
    """The process is stopped (SIGSTOP) once the new export has written some PNGs, then
    sent SIGINT: exit 130 with one line, the earlier export byte for byte, no staging
    folder left. 'ignored': started with SIGINT ignored, as ``cmd &`` in a script is."""
    src = long_series
    out = tmp_path / "out"
    code, _, _ = _run(["export", str(src), "-o", str(out), "-q"])
    assert code == 0
    folder = _series_folder(out)
    before = _snapshot(out)
    env = {**os.environ, "PYTHONPATH": SRC_PATH + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ignore = sigint != "default"
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_dicom", "export", str(src), "-o", str(out), "-q",
         "--jobs", "1", "--window=500,100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore
        else None)
    staged, stderr = _interrupt_once_staged(proc, folder.parent, 3)
    assert 3 <= staged < 150, "not stopped mid-export"
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "napari-dicom: interrupted"
    assert _snapshot(out) == before
    assert _hidden(out) == []


def test_sigint_while_small_series_run_side_by_side(tmp_path: Path) -> None:
    """40 small series converted side by side on 2 threads, SIGINT mid-run: exit 130;
    every series folder holds either its earlier export or the complete new one, byte
    for byte; the run manifest is the earlier run's."""
    src = tmp_path / "src"
    for k in range(40):
        _series(src / f"s{k:02d}", n=4, size=32, series_number=k + 1, seed=k,
                series_description="Small", patient_id="P1", noise=30.0,
                study_uid="1.2.826.0.1.3680043.10.7.1")
    old, new = tmp_path / "out", tmp_path / "reference"
    assert _run(["export", str(src), "-o", str(old), "-q"])[0] == 0
    assert _run(["export", str(src), "-o", str(new), "-q", "--window=500,100"])[0] == 0
    before, wanted = _snapshot(old), _snapshot(new)
    (study,) = {p.parent.parent for p in old.rglob("*.png")}
    env = {**os.environ, "PYTHONPATH": SRC_PATH + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_dicom", "export", str(src), "-o", str(old), "-q",
         "--jobs", "2", "--window=500,100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, stderr = _interrupt_once_staged(proc, study, 1)
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "napari-dicom: interrupted"
    after = _snapshot(old)
    assert after["manifest.csv"] == before["manifest.csv"]
    assert after.keys() == before.keys()
    replaced = 0
    for folder in sorted(p for p in study.iterdir()):
        names = [k for k in after if Path(k).parent == folder.relative_to(old)]
        assert len(names) == 5, folder  # 4 PNGs and the manifest
        if all(after[k] == before[k] for k in names):
            continue
        assert all(after[k] == wanted[k] for k in names), folder  # whole, never mixed
        replaced += 1
    assert replaced < 40, "not interrupted mid-run"
    assert _hidden(old) == []


# --------------------------------------------------------------------------------------
# a full disk: a real, small tmpfs
# --------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (root only); skipped, saying why, otherwise."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command: cannot make a small file system to fill")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({done.stderr.strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until only about ``leave`` bytes are free."""
    with open(disk / f"filler-{uuid.uuid4().hex}", "wb") as f:
        free = shutil.disk_usage(disk).free
        f.write(b"\0" * max(free - leave, 0))
        with contextlib.suppress(OSError):
            f.flush()


def test_full_disk_keeps_the_earlier_export_and_says_so_in_one_line(
        small_disk: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _series(src, n=12, size=64, series_description="Axial", patient_id="P1", noise=30.0)
    out = small_disk / "out"
    code, _, stderr = _run(["export", str(src), "-o", str(out), "-q"])
    assert code == 0, stderr
    before = _snapshot(out)
    one_png = max(len(v) for k, v in before.items() if k.endswith(".png"))
    _fill(small_disk, leave=4 * one_png)  # room for a few of the new PNGs, not all
    code, _, stderr = _run(["export", str(src), "-o", str(out), "-q", "--window=0,50"])
    assert code == 1
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert re.search(r"error: cannot write .*_00\d\d\.png: No space left on device "
                     r"\(stopped", stderr), stderr
    assert _snapshot(out) == before  # the first export, its run manifest included
    assert _hidden(out) == []


def test_full_disk_at_the_run_manifest_is_one_line(small_disk: Path, tmp_path: Path) -> None:
    """The only series is refused (nothing to write for it), then the run manifest
    finds the disk full."""
    src = tmp_path / "src"
    _series(src, series_description="Axial", patient_id="P1")
    out = small_disk / "out"
    assert _run(["export", str(src), "-o", str(out), "-q"])[0] == 0
    folder = _series_folder(out)
    (folder / "manifest.csv").write_text("not ours\n")
    before = _snapshot(out)
    _fill(small_disk, leave=0)
    code, _, stderr = _run(["export", str(src), "-o", str(out), "-q"])
    assert code == 1
    lines = stderr.splitlines()
    assert lines[0].startswith("refused: series")
    assert len(lines) == 2 and "No space left on device" in lines[1]
    assert "run manifest" in lines[1] and "Traceback" not in stderr
    assert _snapshot(out) == before


# --------------------------------------------------------------------------------------
# output names never leave OUT
# --------------------------------------------------------------------------------------

CRAFTED = [
    ("../../escaped", "../../../etc/passwd"),
    ("/tmp/absolute", "/abs/olute"),
    ("C:\\Windows\\System32", "..\\..\\boot.ini"),
    ("nul\x00byte", "a\x00/../b"),
    ("CON", "LPT1"),
    ("nul.txt", "com9.png"),
    ("x" * 64, "y" * 200),
    ("..", "."),
    ("~root", "$HOME"),
]


def test_crafted_names_stay_inside_out(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for k, (patient, description) in enumerate(CRAFTED):
        for f in _series(src / f"s{k}", n=2, size=16, series_number=k + 1, seed=k,
                         patient_id="P", series_description="D"):
            ds = pydicom.dcmread(f)
            with pydicom.config.disable_value_validation():  # written as crafted
                ds.PatientID = patient
                ds.SeriesDescription = description
                ds.StudyDescription = description
                ds.save_as(f)
    out = tmp_path / "nested" / "out"
    code, stdout, stderr = _run(["export", str(src), "-o", str(out), "-q"])
    assert code == 0, stderr
    assert f"series: {len(CRAFTED)} exported, 0 failed" in stdout
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(src)]
    assert len([p for p in files if p.suffix == ".png"]) == 2 * len(CRAFTED)
    reserved = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\..*)?", re.IGNORECASE)
    for p in files:
        rel = p.resolve().relative_to(out.resolve())  # raises when outside OUT
        for part in rel.parts:
            assert re.fullmatch(r"[A-Za-z0-9._-]+", part), rel
            assert part not in (".", "..") and not reserved.fullmatch(part), rel
            assert len(part.encode()) <= 255, rel
