"""The ``napari-dicom`` command line, run as ``main([...])`` on real and synthetic DICOM."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLosslessSV1

from napari_dicom.cli import main
from napari_dicom.core.batch import CLAHE_MISSING, RUN_MANIFEST_COLUMNS
from napari_dicom.core.phantom import HU_PADDING, read_hu, write_ct_phantom
from napari_dicom.core.render import Display, Window, render_uint8

RG3_UNCR = get_testdata_file("RG3_UNCR.dcm")  # CR, MONOCHROME1, window 550/1024
EMRI_SMALL = get_testdata_file("emri_small.dcm")  # MR, 10 frames of 64 x 64
N, SIZE = 8, 64

# the synthetic tree: series folders by patient, then the series of each study folder; the
# two studies of P1 share date and description, so one of them gets "_2"
STUDY = "20240101_Phantom_study"
LAYOUT = {
    "P1": {frozenset({"1_Axial_soft", "2_a_b"}), frozenset({"1"})},
    "evil": {frozenset({"7_Lung_thin"})},
}
SOURCES = {"1_Axial_soft": "p1/study_a/axial", "2_a_b": "p1/study_a/ljpeg",
           "1": "p1/study_b/dots", "7_Lung_thin": "p2/lung"}


def _layout(out: Path) -> dict[str, set[frozenset[str]]]:
    found: dict[str, dict[str, set[str]]] = {}
    for png in out.rglob("*.png"):
        patient, study, series = png.parent.relative_to(out).parts
        found.setdefault(patient, {}).setdefault(study, set()).add(series)
    studies = {p: set(d) for p, d in found.items()}
    assert studies == {"P1": {STUDY, STUDY + "_2"}, "evil": {STUDY}}
    return {p: {frozenset(v) for v in d.values()} for p, d in found.items()}


def _phantom(folder: Path, **kw: object) -> list[Path]:
    return write_ct_phantom(folder, n_slices=N, size=SIZE, spacing=(2.0, 0.8, 0.8),
                            extension=".dcm", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two patients, three studies, four series (one JPEG Lossless, unsafe names), junk
    files and a truncated DICOM file."""
    root = tmp_path_factory.mktemp("tree")
    _phantom(root / "p1/study_a/axial", series_number=1, series_description="Axial soft",
             patient_id="P1", study_uid="1.2.826.0.1.3680043.10.1.1")
    _phantom(root / "p1/study_a/ljpeg", series_number=2, series_description="a/b",
             patient_id="P1", study_uid="1.2.826.0.1.3680043.10.1.1",
             transfer_syntax=JPEGLosslessSV1, seed=2)
    _phantom(root / "p1/study_b/dots", series_number=1, series_description="..",
             patient_id="P1", study_uid="1.2.826.0.1.3680043.10.1.2", seed=3)
    _phantom(root / "p2/lung", series_number=7, series_description="Lung thin",
             patient_id="../evil", study_uid="1.2.826.0.1.3680043.10.1.3", seed=4)
    (root / "README.txt").write_text("not DICOM\n")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "p2" / "picture.png")
    broken = root / "broken"
    broken.mkdir()
    good = _phantom(root / "tmp_src", series_number=9, series_description="Broken",
                    patient_id="P9", seed=5)
    raw = good[0].read_bytes()
    (broken / "truncated.dcm").write_bytes(raw[: len(raw) - SIZE * SIZE])  # pixels cut
    shutil.rmtree(root / "tmp_src")
    return root


@pytest.fixture(scope="module")
def exported(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("out")
    cap = _run(["export", str(tree), "-o", str(out), "--jobs", "2"])
    return out, cap[0], cap[1]


def _run(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` with stdout / stderr captured (module-scoped fixtures cannot use capsys)."""
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _folder(out: Path, name: str) -> Path:
    (folder,) = {p.parent for p in out.rglob(f"{name}/*.png")}
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _stack(folder: Path) -> tuple[np.ndarray, list[dict[str, str]]]:
    """The PNGs of a series folder in manifest order, and the manifest rows."""
    rows = _rows(folder / "manifest.csv")
    return np.stack([_png(folder / r["file"]) for r in rows]), rows


def _hu_of(rows: list[dict[str, str]]) -> np.ndarray:
    return np.stack([read_hu(r["source_file"]) for r in rows])


# --------------------------------------------------------------------------------------
# export: layout, manifests, summary, exit codes
# --------------------------------------------------------------------------------------


def test_export_layout(exported: tuple[Path, int, str]) -> None:
    out, code, _ = exported
    assert _layout(out) == LAYOUT
    folders = {p.parent for p in out.rglob("*.png")}
    assert len(folders) == 4
    for folder in folders:
        pngs = sorted(p.name for p in folder.glob("*.png"))
        assert pngs == [f"{folder.name}_{i:04d}.png" for i in range(1, N + 1)]
        assert (folder / "manifest.csv").is_file()
    # nothing escaped OUT and nothing was written for junk or the broken file
    assert not any(".." in p.parts for p in out.rglob("*"))
    assert not list(out.rglob("*.tmp"))
    assert code == 1  # the truncated file was skipped


def test_run_manifest(exported: tuple[Path, int, str], tree: Path) -> None:
    out, _, _ = exported
    rows = _rows(out / "manifest.csv")
    assert list(rows[0]) == list(RUN_MANIFEST_COLUMNS)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == len(rows) == 4
    for r in ok:
        assert (out / r["output"] / "manifest.csv").is_file()
        assert Path(r["source"]).resolve() == (tree / SOURCES[Path(r["output"]).name]).resolve()
        assert r["images"] == r["written"] == str(N)
        # the phantom's first stored window: SOFT TISSUE 40 / 400
        assert (r["window_center"], r["window_width"], r["voi_function"]) == (
            "40", "400", "LINEAR")
        assert r["invert"] == "no"
    lung = next(r for r in ok if r["series_number"] == "7")
    assert lung["patient_id"] == "../evil"  # the manifest keeps the real value
    assert lung["series_description"] == "Lung thin"


def test_series_manifest(exported: tuple[Path, int, str], tree: Path) -> None:
    out, _, _ = exported
    rows = _rows(_folder(out, "1_Axial_soft") / "manifest.csv")
    assert len(rows) == N
    assert {"file", "index", "location_mm", "sop_instance_uid", "source_file",
            "window_center", "window_width", "voi_function", "invert"} <= set(rows[0])
    locations = [float(r["location_mm"]) for r in rows]
    assert locations == sorted(locations)  # array order = slice position order
    assert np.allclose(np.diff(locations), 2.0)
    sources = {Path(r["source_file"]).resolve() for r in rows}
    assert sources == {p.resolve() for p in (tree / "p1/study_a/axial").glob("*.dcm")}


def test_summary_and_skipped_report(exported: tuple[Path, int, str]) -> None:
    _, _, text = exported
    # _run captured stdout and stderr together in the fixture: stdout holds the summary
    assert "series: 4 exported, 0 failed" in text
    assert f"images: {4 * N} written" in text
    assert "files skipped: 1" in text


def test_skipped_file_named_on_stderr(tree: Path, tmp_path: Path) -> None:
    code, stdout, stderr = _run(["export", str(tree / "broken"), str(tree / "p2"),
                                 "-o", str(tmp_path)])
    assert code == 1
    assert "truncated.dcm" in stderr
    assert "series: 1 exported" in stdout
    assert len(list(tmp_path.rglob("*.png"))) == N


def test_undecodable_image_left_out(tree: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(tree / "p1/study_a/ljpeg", src)
    bad = sorted(src.glob("*.dcm"))[3]
    raw = bytearray(bad.read_bytes())
    soi = raw.find(b"\xff\xd8")  # JPEG start: wipe the frame header, keep the file size
    raw[soi + 2 : soi + 300] = bytes(298)
    bad.write_bytes(bytes(raw))
    code, stdout, stderr = _run(["export", str(src), "-o", str(tmp_path / "out")])
    assert code == 1
    # the decoders' several lines are one, naming the file
    assert f"skipped: {bad}: cannot decode the pixel data (pylibjpeg: libjpeg error" in stderr
    assert len(stderr.splitlines()) == 1
    assert "files skipped: 1" in stdout and "1 with damaged images left out" in stdout
    pngs, rows = _stack(_folder(tmp_path / "out", "2_a_b"))
    assert len(rows) == N - 1  # left out, not written as a filled plane
    assert str(bad) not in {r["source_file"] for r in rows}
    np.testing.assert_array_equal(pngs, render_uint8(_hu_of(rows), Display(Window(40, 400))))
    (run,) = _rows(tmp_path / "out" / "manifest.csv")
    assert run["status"] == "partial" and bad.name in run["message"]


def test_clean_input_exits_0(tree: Path, tmp_path: Path) -> None:
    code, stdout, stderr = _run(["export", str(tree / "p1"), "-o", str(tmp_path), "-q"])
    assert code == 0, stderr
    assert "series: 3 exported, 0 failed" in stdout
    assert stderr == ""


def test_ljpeg_series_decoded(exported: tuple[Path, int, str]) -> None:
    out, _, _ = exported
    pngs, rows = _stack(_folder(out, "2_a_b"))
    expected = render_uint8(_hu_of(rows), Display(Window(40, 400)))
    np.testing.assert_array_equal(pngs, expected)


# --------------------------------------------------------------------------------------
# pixel values for each window choice
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def axial(tree: Path) -> Path:
    return tree / "p1" / "study_a" / "axial"


def _export_axial(axial: Path, tmp: Path, *options: str) -> tuple[np.ndarray, np.ndarray, str]:
    code, _, stderr = _run(["export", str(axial), "-o", str(tmp), *options])
    assert code == 0, stderr
    pngs, rows = _stack(tmp / "P1" / "20240101_Phantom_study" / "1_Axial_soft")
    return pngs, _hu_of(rows), _rows(tmp / "manifest.csv")[0]["window"]


def test_default_is_first_stored_window(axial: Path, tmp_path: Path) -> None:
    pngs, hu, _ = _export_axial(axial, tmp_path)
    np.testing.assert_array_equal(pngs, render_uint8(hu, Display(Window(40, 400))))
    # soft tissue (40 HU) mid-grey, air black, bone white
    assert pngs[0][hu[0] == -1000].max() == 0
    assert pngs[0][hu[0] == 1500].min() == 255


def test_explicit_window(axial: Path, tmp_path: Path) -> None:
    pngs, hu, label = _export_axial(axial, tmp_path, "--window=-600,1500",
                                    "--voi-function", "sigmoid")
    np.testing.assert_array_equal(pngs, render_uint8(hu, Display(Window(-600, 1500, "SIGMOID"))))
    assert "W 1500 / L -600" in label


def test_preset_lung(axial: Path, tmp_path: Path) -> None:
    pngs, hu, label = _export_axial(axial, tmp_path, "--preset", "lung")
    np.testing.assert_array_equal(pngs, render_uint8(hu, Display(Window(-600, 1500))))
    # lung parenchyma (-850 HU) is dark grey, not black as in the soft-tissue window
    lung = pngs[-1][hu[-1] == -850]
    # ((-850 - (-600 - 0.5)) / (1500 - 1) + 0.5) * 255 = 85.06 -> 85 (C.11.2.1.2.1)
    assert lung.size > 10 and set(lung.tolist()) == {85}
    assert "Lung" in label


def test_minmax_excludes_padding(axial: Path, tmp_path: Path) -> None:
    pngs, hu, _ = _export_axial(axial, tmp_path, "--minmax")
    inside = hu[hu != HU_PADDING]
    lo, hi = int(inside.min()), int(inside.max())
    assert lo > HU_PADDING
    np.testing.assert_array_equal(pngs, render_uint8(hu, Display(Window.from_limits(lo, hi))))


def test_percentile_ignore_extremes(axial: Path, tmp_path: Path) -> None:
    pngs, hu, label = _export_axial(axial, tmp_path, "--percentile", "1", "99",
                                    "--ignore-extremes")
    v = hu[hu != HU_PADDING]
    v = v[(v > v.min()) & (v < v.max())]
    lo, hi = np.percentile(v, [1, 99])
    np.testing.assert_array_equal(pngs, render_uint8(hu, Display(Window.from_limits(lo, hi))))
    assert "percentile 1-99" in label


def test_invert_yes_and_no_on_monochrome1(tmp_path: Path) -> None:
    ds = pydicom.dcmread(RG3_UNCR)
    values = ds.pixel_array
    window = Window(float(ds.WindowCenter), float(ds.WindowWidth))
    results = {}
    for mode in ("auto", "yes", "no"):
        out = tmp_path / mode
        code, _, stderr = _run(["export", RG3_UNCR, "-o", str(out), "--invert", mode])
        assert code == 0, stderr
        (png,) = out.rglob("*.png")
        results[mode] = _png(png)
    expected = render_uint8(values, Display(window, invert=True))
    np.testing.assert_array_equal(results["auto"], expected)  # MONOCHROME1 shown inverted
    np.testing.assert_array_equal(results["yes"], expected)
    np.testing.assert_array_equal(results["no"], 255 - expected)


def test_frames_first_and_all(tmp_path: Path) -> None:
    code, _, stderr = _run(["export", EMRI_SMALL, "-o", str(tmp_path / "first"),
                            "--frames", "first"])
    assert code == 0, stderr
    first = sorted((tmp_path / "first").rglob("*.png"))
    code, _, stderr = _run(["export", EMRI_SMALL, "-o", str(tmp_path / "all")])
    assert code == 0, stderr
    every = sorted((tmp_path / "all").rglob("*.png"))
    assert (len(first), len(every)) == (1, 10)
    frames = pydicom.dcmread(EMRI_SMALL).pixel_array
    assert _png(first[0]).shape == (64, 64)
    # same window for both runs (min-max of... all frames vs frame 0) differs; compare
    # the picture's structure: the first PNG is the first frame's rendering
    rows = _rows(first[0].parent / "manifest.csv")
    assert rows[0]["frame"] == "0"
    lo, hi = int(frames[0].min()), int(frames[0].max())
    np.testing.assert_array_equal(
        _png(first[0]), render_uint8(frames[0], Display(Window.from_limits(lo, hi))))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_only_on_a_terminal(axial: Path, tmp_path: Path, quiet: bool,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    argv = ["export", str(axial), "-o", str(tmp_path)] + (["--quiet"] if quiet else [])
    assert main(argv) == 0
    text = term.getvalue()
    if quiet:
        assert text == ""
    else:
        last = text.rstrip("\n").split("\r")[-1]
        assert "100.0%" in last and "series 1/1" in last and "img/s" in last
        assert f"images {N}/{N}" in last  # the images of the series, not the two steps of each


# --------------------------------------------------------------------------------------
# resume, writer equivalence, CLAHE
# --------------------------------------------------------------------------------------


def test_skip_existing_keeps_files(axial: Path, tmp_path: Path) -> None:
    code, _, _ = _run(["export", str(axial), "-o", str(tmp_path)])
    assert code == 0
    pngs = sorted(tmp_path.rglob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in pngs}
    pngs[3].unlink()
    code, stdout, _ = _run(["export", str(axial), "-o", str(tmp_path), "--skip-existing"])
    assert code == 0
    assert "images: 1 written" in stdout and f"{N - 1} already present" in stdout
    after = {p: p.stat().st_mtime_ns for p in pngs}
    assert all(after[p] == before[p] for p in pngs if p != pngs[3])
    assert pngs[3].is_file()
    row = _rows(tmp_path / "manifest.csv")[0]
    assert (row["images"], row["written"]) == (str(N), "1")


def test_skip_existing_rewrites_a_png_cut_short(axial: Path, tmp_path: Path) -> None:
    """--skip-existing keeps a PNG only when it is whole: one of ours cut short (an
    interrupted copy) is written anew, byte for byte the first export's; a file that is
    not napari-dicom's is left as it is; the summary says both."""
    code, _, _ = _run(["export", str(axial), "-o", str(tmp_path)])
    assert code == 0
    pngs = sorted(tmp_path.rglob("*.png"))
    whole = pngs[2].read_bytes()
    pngs[2].write_bytes(whole[: len(whole) // 2])
    before = {p: p.stat().st_mtime_ns for p in pngs if p != pngs[2]}
    code, stdout, _ = _run(["export", str(axial), "-o", str(tmp_path), "--skip-existing"])
    assert code == 0
    assert pngs[2].read_bytes() == whole
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert "images: 1 written" in stdout
    assert "1 PNGs present but cut short written anew" in stdout
    assert f"resume: 0 series complete already (all PNGs present and whole), 1 completed, " \
        f"{N - 1} PNGs kept" in stdout


def test_png_bytes_equal_napari_writer(axial: Path, tmp_path: Path) -> None:
    from napari_dicom._reader import read_dicom
    from napari_dicom._writer import write_png

    ((data, attributes, layer_type),) = read_dicom(str(axial))
    assert layer_type == "image"
    written = write_png(str(tmp_path / "napari.png"), data, attributes)
    napari_pngs = sorted(p for p in map(Path, written) if p.suffix == ".png")
    code, _, _ = _run(["export", str(axial), "-o", str(tmp_path / "cli")])
    assert code == 0
    cli_pngs = sorted((tmp_path / "cli").rglob("*.png"))
    assert len(cli_pngs) == len(napari_pngs) == N
    for a, b in zip(cli_pngs, napari_pngs, strict=True):
        assert a.read_bytes() == b.read_bytes(), (a, b)


def test_long_series_exported_over_threads_equals_napari_writer(tmp_path: Path) -> None:
    """A series long enough to be exported over all threads, plane by plane as it is
    decoded (JPEG Lossless fast path), gives the napari writer's bytes."""
    from napari_dicom._reader import read_dicom
    from napari_dicom._writer import write_png

    src = tmp_path / "long"
    write_ct_phantom(src, n_slices=20, size=48, extension=".dcm", seed=7,
                     transfer_syntax=JPEGLosslessSV1)
    ((data, attributes, _),) = read_dicom(str(src))
    written = write_png(str(tmp_path / "napari.png"), data, attributes)
    napari_pngs = sorted(p for p in map(Path, written) if p.suffix == ".png")
    code, _, stderr = _run(["export", str(src), "-o", str(tmp_path / "cli"), "--jobs", "2"])
    assert code == 0, stderr
    cli_pngs = sorted((tmp_path / "cli").rglob("*.png"))
    assert len(cli_pngs) == len(napari_pngs) == 20
    for a, b in zip(cli_pngs, napari_pngs, strict=True):
        assert a.read_bytes() == b.read_bytes(), (a, b)


def test_jobs_do_not_change_the_output(tree: Path, tmp_path: Path) -> None:
    """With several jobs, small series are exported side by side; every file (PNGs and
    manifests, in the same order) is the same as with one job."""
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        code, _, _ = _run(["export", str(tree), "-o", str(out), "--jobs", jobs, "-q"])
        assert code == 1  # the truncated file
        outs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outs[0].keys() == outs[1].keys()
    assert len([p for p in outs[0] if p.suffix == ".png"]) == 4 * N
    for name in outs[0]:
        assert outs[0][name] == outs[1][name], name


def test_clahe(axial: Path, tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    plain, hu, _ = _export_axial(axial, tmp_path / "plain")
    eq, _, _ = _export_axial(axial, tmp_path / "clahe", "--clahe")
    assert eq.shape == plain.shape and eq.dtype == np.uint8
    assert not np.array_equal(eq, plain)
    # CLAHE spreads the soft-tissue window's grey levels: more distinct values inside
    body = hu[0] > -200
    assert len(np.unique(eq[0][body])) > len(np.unique(plain[0][body]))


def test_clahe_without_opencv(axial: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    assert main(["export", str(axial), "-o", str(tmp_path), "--clahe"]) == 2
    assert CLAHE_MISSING in capsys.readouterr().err
    assert CLAHE_MISSING == (
        "--clahe needs opencv-python-headless: pip install 'napari-dicom[clahe]'")
    assert not list(tmp_path.rglob("*.png"))


# --------------------------------------------------------------------------------------
# usage errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "40,0"], "width of at least 1"),
        (["--window", "forty"], "CENTER,WIDTH"),
        (["--window", "40,400", "--preset", "lung"], "not allowed with"),
        (["--preset", "nope"], "lung"),
        (["--percentile", "99", "1"], "must be below"),
        (["--ignore-extremes"], "--percentile"),
        (["--voi-function", "cubic"], "invalid choice"),
        (["--jobs", "0"], "at least 1"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str, axial: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(axial), "-o", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "o").exists()


def test_unknown_preset_lists_names(axial: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(axial), "-o", str(tmp_path), "--preset", "lungs2"]) == 2
    err = capsys.readouterr().err
    assert "unknown window preset 'lungs2'" in err
    for name in ("brain", "lung", "bone", "abdomen"):
        assert name in err


def test_missing_source_and_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["export", "-o", str(tmp_path / "o")]) == 2
    assert "SRC" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["explode"]) == 2


def test_help_documents_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("--window", "--preset", "--minmax", "--percentile", "--ignore-extremes",
                 "--voi-function", "--invert", "--frames", "--clahe", "--jobs",
                 "--skip-existing", "--quiet", "examples:", "exit status", "lung"):
        assert word in text, word
    assert main(["view", "--help"]) == 0
    assert "--screenshot" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------


def test_info_text(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tree / "p1" / "study_a")]) == 0
    out = capsys.readouterr().out
    assert "[1] 1 Axial soft" in out and "[2] 2 a/b" in out
    assert "patient   P1" in out
    assert "study     20240101 Phantom study" in out
    assert "modality  CT" in out
    assert f"images    {N} in {N} file(s), size {SIZE} x {SIZE}" in out
    assert "spacing   2 x 0.8 x 0.8 mm" in out
    assert "C 40 W 400 (SOFT TISSUE); C -600 W 1500 (LUNG)" in out
    assert "JPEG Lossless" in out and "1.2.840.10008.1.2.4.70" in out
    assert "Explicit VR Little Endian" in out
    assert "2 series" in out


def test_info_json(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tree), "--json"]) == 1  # the truncated file is listed
    doc = json.loads(capsys.readouterr().out)
    series = doc["series"]
    assert len(series) == 4
    by_number = {(s["patient_id"], s["series_number"], s["study_instance_uid"]): s
                 for s in series}
    axial = by_number[("P1", 1, "1.2.826.0.1.3680043.10.1.1")]
    assert axial["images"] == N and axial["rows"] == axial["columns"] == SIZE
    assert axial["spacing"] == [2.0, 0.8, 0.8]
    assert axial["modality"] == "CT" and axial["value_unit"] == "HU"
    assert [(w["center"], w["width"]) for w in axial["windows"]] == [(40, 400), (-600, 1500)]
    assert axial["transfer_syntax"] == "1.2.840.10008.1.2.1"
    assert [Path(s["path"]).name for s in doc["skipped"]] == ["truncated.dcm"]
    assert doc["non_dicom"] == 2  # README.txt and picture.png


def test_python_dash_m(tree: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "napari_dicom", "info", "--json",
                           str(tree / "p2")], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    (series,) = json.loads(proc.stdout)["series"]
    assert series["series_description"] == "Lung thin"



def test_program_start_leaves_download_extras_out_and_importable(tree: Path) -> None:
    """``export``/``info`` import pydicom as if ``requests`` and ``tqdm`` were absent (its
    test-file downloader then uses urllib, no progress bar): ~65 ms of start-up. Both
    can still be imported afterwards."""
    pytest.importorskip("requests")  # installed with napari (pooch)
    pytest.importorskip("tqdm")  # installed with napari
    code = (
        "import sys\n"
        f"sys.argv = ['napari-dicom', 'info', {str(tree / 'p2')!r}]\n"
        "from napari_dicom import cli\n"
        "try:\n    cli.run()\nexcept SystemExit as exc:\n    status = exc.code\n"
        "import pydicom.data.download as d\n"
        "print(status, 'requests' in sys.modules, 'tqdm' in sys.modules, d.HAVE_REQUESTS,"
        " d.USE_PROGRESS_BAR)\n"
        "import requests, tqdm\nprint(requests.get.__name__, tqdm.tqdm.__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["0 False False False False", "get tqdm"]


# --------------------------------------------------------------------------------------
# view (needs a display: run under xvfb-run)
# --------------------------------------------------------------------------------------


def test_view_screenshot(axial: Path, tmp_path: Path, qapp: object) -> None:
    shot = tmp_path / "s.png"
    code, stdout, stderr = _run(["view", str(axial), "--screenshot", str(shot)])
    assert code == 0, stderr
    assert "layers: 1 CT Axial soft" in stdout
    assert "docked: Window / Level" in stdout
    img = _png(shot)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
    # the dock widget is part of the window: the screenshot is wider than the canvas
    # and holds the phantom's soft-tissue greys as well as the UI's colours
    assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 50


def test_view_without_source_opens_sample(tmp_path: Path, qapp: object) -> None:
    shot = tmp_path / "sample.png"
    code, stdout, stderr = _run(["view", "--screenshot", str(shot)])
    assert code == 0, stderr
    assert "layers: 1 CT" in stdout  # the bundled phantom CT series
    assert "docked: Window / Level" in stdout
    assert shot.is_file()


def test_view_extensionless_file(tmp_path: Path, qapp: object) -> None:
    # a CR image of pydicom's DICOMDIR tree, named as on a CD: no extension
    cr = str(Path(get_testdata_file("DICOMDIR")).parent / "77654033" / "CR1" / "6154")
    shot = tmp_path / "cr.png"
    code, stdout, stderr = _run(["view", cr, "--screenshot", str(shot)])
    assert code == 0, stderr
    assert "layers: 1 CR Cervical LAT" in stdout
    assert shot.is_file()
