"""Hostile and malformed input through every door: no crash, no hang, no memory blow-up,
one clear line naming the file (issue 10, hostile input; issue 11, point 6).

The fuzz and memory-bomb cases run in worker subprocesses (``tests/_fuzzlib.py``) under an
address-space limit (``RLIMIT_AS``) and a per-case alarm, many cases per process; the
other tests go through the CLI's ``main([...])`` and napari's ``viewer.open``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import struct
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

from napari_dicom._reader import napari_get_reader
from napari_dicom.cli import main
from napari_dicom.core.phantom import write_ct_phantom

sys.path.insert(0, str(Path(__file__).parent))
import _fuzzlib

#: cases per seed file (13 seeds in 12 transfer syntaxes, plus deep-nesting files)
PER_SEED = 22
#: what a worker may map (napari and its imports take ~1.2 GB of address space)
MEMORY_LIMIT = 3 << 30
#: the lines the CLI writes to stderr; anything else (a traceback, a decoder's second
#: line) is unclear
CLI_LINE = re.compile(r"^(skipped: |failed: |warning: |napari-dicom (info|export): )")


def _check_record(rec: dict[str, Any]) -> list[str]:
    """What is wrong with one case's record: crashes, unclear or unnamed messages."""
    name = Path(rec["path"]).name
    problems = [f"crash: {c.strip().splitlines()[-1]}" for c in rec.get("crash", [])]
    for cmd in ("info", "export"):
        out = rec.get(cmd) or {}
        for line in out.get("stderr", "").splitlines():
            if line.strip() and (not CLI_LINE.match(line) or len(line) > 600):
                problems.append(f"{cmd}: unclear line {line[:200]!r}")
        if out.get("rc") not in (0, 1):
            problems.append(f"{cmd}: exit status {out.get('rc')}")
        if out.get("rc") == 1 and name not in out.get("stderr", ""):
            problems.append(f"{cmd}: failed without naming the file: {out.get('stderr')!r}")
    for note in rec.get("napari") or []:
        if "\n" in note.strip() or len(note) > 600:
            problems.append(f"napari: unclear notification {note[:200]!r}")
    return problems


def test_fuzz_mutations_no_crash_no_hang_clear_messages(tmp_path: Path) -> None:
    """A few hundred seeded mutations (truncations, bit flips, byte mutations, header
    fields set to 0 / 65535 / inf / NaN / 1e400 / garbage, VRs set to 'XX', stray item
    tags, deep nesting) of real files in 12 transfer syntaxes: get_reader, ``info``,
    ``export`` and the napari reader (with ``napari.layers.Image`` built from its output)
    neither raise nor hang, and every message is one line naming the file."""
    cases = _fuzzlib.make_cases(tmp_path, PER_SEED)
    assert len(cases) >= 280
    records, dead = _fuzzlib.run_all(cases, tmp_path, batches=2, batch_timeout=150,
                                     memory_limit=MEMORY_LIMIT)
    assert dead == []  # no case hung or killed its process
    assert len(records) == len(cases)
    problems = {r["path"]: p for r in records.values() if (p := _check_record(r))}
    what = {c["path"]: c["what"] for c in cases}
    assert not problems, "\n".join(f"{what[k]}: {v}" for k, v in list(problems.items())[:10])
    # the cases are hostile: many are refused, many still open (the fuzz reaches decoders)
    exported = sum(1 for r in records.values() if "images: 1 written" in r["export"]["stdout"]
                   or re.search(r"images: [1-9]\d* written", r["export"]["stdout"]))
    refused = sum(1 for r in records.values() if r["export"]["rc"] == 1)
    assert exported > 60 and refused > 60, (exported, refused)
    assert max(r["maxrss_mb"] for r in records.values()) < 1500


# --------------------------------------------------------------------------------------
# memory bombs: one per compressed transfer syntax
# --------------------------------------------------------------------------------------

#: seed file per compressed transfer syntax
BOMB_SEEDS = {
    "JPEG Baseline": "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG Extended": "JPEG-lossy.dcm",
    "JPEG Lossless": "SC_rgb_jpeg_gdcm.dcm",
    "JPEG-LS": "MR_small_jpeg_ls_lossless.dcm",
    "JPEG 2000": "JPEG2000.dcm",
    "RLE": "MR_small_RLE.dcm",
    "Deflate": "image_dfl.dcm",
}
BUDGET_REFUSAL = "more than the memory budget"


def _claim_huge(src: str, dst: Path, rows: int, cols: int, frames: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(src))
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = frames
    ds.save_as(dst)


def _patch_codestream(src: str, dst: Path) -> None:
    """The codestream's own header (JPEG SOF / JPEG-LS SOF55 / JPEG 2000 SIZ) says
    65500 x 65500; the DICOM header keeps its size."""
    data = bytearray(Path(get_testdata_file(src)).read_bytes())  # type: ignore[arg-type]
    at = data.find(b"\xff\x4f\xff\x51")
    if at >= 0:  # J2K SIZ: Xsiz, Ysiz at +8, +12
        struct.pack_into(">II", data, at + 8, 65500, 65500)
    else:
        at = min(i for m in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc3", b"\xff\xf7")
                 if (i := data.find(m, 300)) >= 0)
        struct.pack_into(">HH", data, at + 5, 65500, 65500)
    dst.write_bytes(bytes(data))


def _deflate_bomb(dst: Path) -> None:
    """A deflated CT slice whose data set inflates 48 MiB past what its header promises
    (zeros after the pixel data, in Data Set Trailing Padding: ~50 kB on disk)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.DataSetTrailingPadding = bytes(48 << 20)
    ds.save_as(dst, little_endian=True, implicit_vr=False)
    ds = pydicom.dcmread(dst)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(dst, enforce_file_format=True)


def test_memory_bombs_refused_before_allocating(tmp_path: Path) -> None:
    """Per compressed transfer syntax, a file whose header claims 65535 x 65535 pixels in
    2 G frames (and one claiming 16 G frames of 64 x 64), a codestream whose own header
    says 65500 x 65500 under a DICOM header of the real size, and a deflate bomb: each is
    refused with a message naming it, in a worker whose address space is capped at 3 GB
    (the claims are terabytes) and whose peak memory stays that of napari's import."""
    cases: list[dict[str, str]] = []
    expect: dict[str, str] = {}
    for kind, src in BOMB_SEEDS.items():
        path = tmp_path / f"claim_{kind.replace(' ', '_')}.dcm"
        _claim_huge(src, path, 65535, 65535, "2147483647")
        cases.append({"path": str(path), "what": f"{kind}: 65535 x 65535 x 2 G frames"})
        expect[str(path)] = BUDGET_REFUSAL
    path = tmp_path / "claim_16G_frames.dcm"
    _claim_huge("MR_small_RLE.dcm", path, 64, 64, "17179869184")
    cases.append({"path": str(path), "what": "RLE: 16 G frames"})
    expect[str(path)] = BUDGET_REFUSAL
    for kind in ("JPEG Baseline", "JPEG Lossless", "JPEG-LS", "JPEG 2000"):
        path = tmp_path / f"codestream_{kind.replace(' ', '_')}.dcm"
        _patch_codestream(BOMB_SEEDS[kind], path)
        cases.append({"path": str(path), "what": f"{kind}: codestream says 65500 x 65500"})
        expect[str(path)] = "the compressed image says 65500 x 65500 pixels"
    path = tmp_path / "deflate_bomb.dcm"
    _deflate_bomb(path)
    assert path.stat().st_size < 200_000
    cases.append({"path": str(path), "what": "deflate bomb"})
    expect[str(path)] = "inflates to more than"

    records, dead = _fuzzlib.run_all(cases, tmp_path, batches=1, batch_timeout=120,
                                     memory_limit=MEMORY_LIMIT)
    assert dead == []
    for case in cases:
        rec = records[case["path"]]
        assert _check_record(rec) == [], case["what"]
        err = rec["export"]["stderr"]
        assert rec["export"]["rc"] == 1, case["what"]
        assert expect[case["path"]] in err and Path(case["path"]).name in err, (
            case["what"], err)
        assert rec["claimed"] is True  # napari gets a clear message, not "no reader"
        assert any(expect[case["path"]] in n for n in rec["napari"]), rec["napari"]
    assert max(r["maxrss_mb"] for r in records.values()) < 1500


# --------------------------------------------------------------------------------------
# the file system: FIFOs, symlinked series, link loops, hidden files
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_hang(seconds: int) -> Iterator[None]:
    def fail(_sig: int, _frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _phantom(folder: Path, n: int = 3, **kw: Any) -> list[Path]:
    return write_ct_phantom(folder, n_slices=n, size=32, extension=".dcm", **kw)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_fifo_in_folder_is_not_opened(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    """A named pipe beside the slices (opening it would block forever) is left out and
    named; the series exports. get_reader claims the folder without blocking."""
    src = tmp_path / "study"
    _phantom(src / "series")
    os.mkfifo(src / "series" / "pipe")
    with _no_hang(60):
        assert napari_get_reader(str(src)) is not None
        rc = main(["export", str(src), "-o", str(tmp_path / "out")])
    _out, err = capsys.readouterr()
    assert rc == 0
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3
    assert f"warning: {src / 'series' / 'pipe'}: a named pipe (FIFO); not opened" in err
    with _no_hang(60):
        rc = main(["info", str(src / "series" / "pipe")])
    _out, err = capsys.readouterr()
    assert rc == 1
    assert "pipe: a named pipe (FIFO), not a file or folder; not opened" in err


def _linked_study(tmp_path: Path) -> Path:
    """study/ holds two series folders as links (one to a folder outside it) and a link
    back to study/ itself (a loop)."""
    store = tmp_path / "store"
    _phantom(store / "a", series_number=1, series_description="Axial A")
    _phantom(store / "b", series_number=2, series_description="Axial B")
    study = tmp_path / "study"
    study.mkdir()
    (study / "s1").symlink_to(store / "a", target_is_directory=True)
    (study / "s2").symlink_to(store / "b", target_is_directory=True)
    (study / "again").symlink_to(study, target_is_directory=True)
    return study


def test_symlinked_series_followed_and_loop_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _linked_study(tmp_path)
    with _no_hang(60):
        rc = main(["info", str(study)])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "2 series" in out and "Axial A" in out and "Axial B" in out
    note = (f"{study / 'again'}: a link to a folder already read ({study.resolve()}); "
            "not followed again")
    assert err.splitlines().count(f"warning: {note}") == 1
    with _no_hang(60):
        rc = main(["export", str(study), "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0 and "series: 2 exported" in out
    assert err.splitlines().count(f"warning: {note}") == 1
    assert "not opened: 1 (named pipes, devices, link loops; see the warnings)" in out
    from napari_dicom.core.scan import scan

    res = scan([study])
    assert len(res.series) == 2 and res.not_walked == 1
    assert [w for w in res.warnings if "not followed" in w] == [note]
    assert "1 not opened (pipes, devices, link loops)" in res.summary()


def test_symlinked_study_in_napari(make_napari_viewer: Any, tmp_path: Path) -> None:
    """Through napari's open (no plugin named where the user would not name one): two
    layers, and the loop reported once in napari's notifications."""
    from napari.utils.notifications import notification_manager

    study = _linked_study(tmp_path)
    viewer = make_napari_viewer()
    before = len(notification_manager.records)
    with _no_hang(120):
        viewer.open(str(study), plugin="napari-dicom")
    assert sorted(layer.name for layer in viewer.layers) == ["1 CT Axial A", "2 CT Axial B"]
    notes = [str(n.message) for n in notification_manager.records[before:]]
    assert sum("not followed again" in n for n in notes) == 1, notes


def test_hidden_only_and_late_dicom_folders_are_claimed(tmp_path: Path) -> None:
    """A folder whose only DICOM files are hidden, and one whose first 6000 entries are
    not DICOM, are claimed (and read); a folder with no DICOM at all is not."""
    hidden = tmp_path / "hidden"
    for i, f in enumerate(_phantom(tmp_path / "h", n=2)):
        hidden.mkdir(exist_ok=True)
        f.rename(hidden / f".slice{i}")
    assert napari_get_reader(str(hidden)) is not None
    late = tmp_path / "late"
    late.mkdir()
    for i in range(6000):
        (late / f"a{i:05d}").write_bytes(b"not dicom")
    _phantom(late / "zz_series", n=2)
    assert napari_get_reader(str(late)) is not None
    none = tmp_path / "none"
    none.mkdir()
    for i in range(50):
        (none / f"n{i}").write_bytes(b"x" * 200)
    assert napari_get_reader(str(none)) is None


def test_get_reader_never_raises_on_truncated_deflate(tmp_path: Path) -> None:
    data = Path(get_testdata_file("image_dfl.dcm")).read_bytes()  # type: ignore[arg-type]
    for cut in (400, 1259, len(data) - 100):
        p = tmp_path / f"cut{cut}.dcm"
        p.write_bytes(data[:cut])
        reader = napari_get_reader(str(p))  # claims it (a Part 10 file) without raising
        assert reader is not None


# --------------------------------------------------------------------------------------
# malformed headers through the CLI and napari
# --------------------------------------------------------------------------------------


def _insert_stray_item(path: Path) -> None:
    """An Item tag (FFFE,E000) at the top level of the data set, before (0020,000D)."""
    data = path.read_bytes()
    at = data.find(b"\x20\x00\x0d\x00")
    assert at > 0
    path.write_bytes(data[:at] + struct.pack("<HHI", 0xFFFE, 0xE000, 0) + data[at:])


def test_stray_item_tag_does_not_stop_the_run(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10, item 7: a file with a stray item tag at the top level, given beside good
    files, is reported in one line naming it; the good files are exported."""
    bad_series = _phantom(tmp_path / "bad", n=3, series_number=1)
    good = _phantom(tmp_path / "good", n=4, series_number=2,
                    series_description="Good")
    for f in bad_series:
        _insert_stray_item(f)
    rc = main(["export", str(tmp_path / "bad"), str(tmp_path / "good"),
               "-o", str(tmp_path / "out")])
    _out, err = capsys.readouterr()
    assert "Traceback" not in err
    pngs = sorted((tmp_path / "out").rglob("*.png"))
    assert len([p for p in pngs if "Good" in str(p)]) == len(good)
    lines = [line for line in err.splitlines() if bad_series[0].name in line]
    if rc == 1:  # the damaged files are refused, one line each, naming them
        assert lines and all(CLI_LINE.match(line) for line in lines)
    else:  # or read despite the stray item (pydicom skips it): all seven planes written
        assert len(pngs) == 7


def _with(tmp_path: Path, name: str, **values: str) -> Path:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom: invalid DS values
        for k, v in values.items():
            setattr(ds, k, v)
        ds.save_as(path)
    return path


def test_non_finite_values_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                   ) -> None:
    """Rescale Slope inf, Rescale Intercept NaN, Number of Frames 1e400: each file is
    refused on one line naming it; a window of 1e400 or width 0 is dropped with a warning
    and the image exported with a min-max window."""
    bad = [_with(tmp_path, "slope.dcm", RescaleSlope="inf"),
           _with(tmp_path, "intercept.dcm", RescaleIntercept="nan")]
    win = _with(tmp_path, "window.dcm", WindowCenter="1e400", WindowWidth="0")
    rc = main(["export", *map(str, [*bad, win]), "-o", str(tmp_path / "out")])
    _out, err = capsys.readouterr()
    assert rc == 1
    assert "skipped: " + str(bad[0]) + ": unusable image header (Rescale Slope inf" in err
    assert "skipped: " + str(bad[1]) + ": unusable image header" in err
    assert "stored window 1 (centre inf, width 0) ignored" in err
    assert len(list((tmp_path / "out").rglob("*.png"))) == 1


def test_non_finite_and_equal_limits_via_napari(make_napari_viewer: Any, tmp_path: Path
                                                ) -> None:
    """Through ``viewer.open`` of a folder: an intercept of 1e38 with a window of width 1
    (limits that are equal once napari rounds them to float32) opens with increasing
    contrast limits and no error notification; the file beside it with Rescale Slope inf
    gets one warning naming it, on one line."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    folder = tmp_path / "mixed"
    folder.mkdir()
    _with(folder, "big.dcm", RescaleIntercept="1e38", WindowCenter="1e38", WindowWidth="1")
    _with(folder, "slope.dcm", RescaleSlope="inf", SeriesInstanceUID="1.2.3.4")
    viewer = make_napari_viewer()
    before = len(notification_manager.records)
    viewer.open(str(folder), plugin="napari-dicom")
    records = notification_manager.records[before:]
    errors = [r for r in records if r.severity == NotificationSeverity.ERROR]
    assert errors == []
    (layer,) = viewer.layers
    lo, hi = layer.contrast_limits
    assert np.float32(hi) > np.float32(lo) and lo == pytest.approx(1e38, rel=1e-6)
    warned = [str(r.message) for r in records if "slope.dcm" in str(r.message)]
    assert len(warned) == 1 and "Rescale Slope inf" in warned[0] and "\n" not in warned[0]


def _dicomdir(folder: Path, refs: list[list[str]]) -> Path:
    """A DICOMDIR whose image records reference ``refs`` (File-set IDs, PS3.10 8.3)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "TEST"
    records = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # '..' is no valid CS: the point
        for ref in refs:
            rec = Dataset()
            rec.DirectoryRecordType = "IMAGE"
            rec.ReferencedFileID = ref
            records.append(rec)
        ds.DirectoryRecordSequence = records
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "DICOMDIR"
        ds.save_as(path, enforce_file_format=True)
    return path


def test_dicomdir_problems_get_a_clear_message(make_napari_viewer: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A DICOMDIR that is not DICOM, or whose records point outside its folder (never
    read: its folder is), is claimed by get_reader and refused with a message naming
    the problem, in the CLI and through napari's open (not "no compatible reader")."""
    text = tmp_path / "text" / "DICOMDIR"
    text.parent.mkdir()
    text.write_text("not a directory\n")
    outside = _dicomdir(tmp_path / "cd", [["..", "elsewhere", "IM1"]])
    _phantom(tmp_path / "elsewhere", n=1)
    for path, why in ((text, "DICOMDIR: not a DICOM file"),
                      (outside, "DICOMDIR: 1 of its 1 records point outside its folder "
                                "(e.g. ../elsewhere/IM1), which is not read")):
        assert napari_get_reader(str(path)) is not None
        assert main(["info", str(path)]) == 1
        _out, err = capsys.readouterr()
        assert f"skipped: {path}: {why.split(': ', 1)[1]}" in err
        viewer = make_napari_viewer()
        with pytest.raises(Exception) as info:  # napari wraps the reader's error
            viewer.open(str(path), plugin="napari-dicom")
        chain = [str(info.value), str(info.value.__cause__), str(info.value.__context__)]
        assert any(why in c for c in chain), chain
