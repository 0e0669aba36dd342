"""``napari-dicom export --deidentify``: none of the identifying values written into the
test series appears in any output file name or any byte of any output file."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import importlib.util
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_dicom.cli import main

CT = "1.2.840.10008.5.1.4.1.1.2"
US = "1.2.840.10008.5.1.4.1.1.6.1"
SC = "1.2.840.10008.5.1.4.1.1.7"

#: identifying values written into every series (besides the UIDs, collected per run)
IDENT = {
    "PatientName": "Zyxwvut^Quintessa",
    "PatientID": "PID8675309",
    "PatientBirthDate": "19580423",
    "StudyDate": "20190817",
    "SeriesDate": "20190818",
    "AcquisitionDate": "20190819",
    "ContentDate": "20190820",
    "StudyTime": "134501",
    "StudyDescription": "HEAD WITHOUT CONTRAST QX",
    "AccessionNumber": "ACC99887766",
    "InstitutionName": "Mercy Valley Hospital",
    "ReferringPhysicianName": "Referrer^Xavier",
    "StudyID": "STUDY4711",
}
SERIES_DESCRIPTIONS = ("AXIAL BRAIN ZQ", "ABDOMEN SCOUT KV", "CAROTID DOPPLER JW")


def _date_forms(da: str) -> list[str]:
    y, m, d = da[:4], da[4:6], da[6:]
    return [da, f"{y}-{m}-{d}", f"{y}.{m}.{d}", f"{y}/{m}/{d}", f"{y}_{m}_{d}",
            f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}-{m}-{y}", f"{d}{m}{y}"]


def _text_forms(text: str) -> list[str]:
    """The value, its parts, and the forms a portable file name makes of it."""
    forms = {text, text.replace("^", " "), text.replace("^", "_"), text.replace(" ", "_")}
    forms.update(p for p in text.replace("^", " ").split() if len(p) >= 6)
    return sorted(forms)


def _write_series(folder: Path, *, modality: str, sop_class: str, number: int,
                  description: str, study_uid: str, n: int, burned_in: str | None,
                  uids: list[str]) -> None:
    folder.mkdir(parents=True)
    series_uid = generate_uid()
    frame_uid = generate_uid()
    uids += [series_uid, frame_uid]
    rng = np.random.default_rng(number)
    for i in range(n):
        sop_uid = generate_uid()
        uids.append(sop_uid)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        for kw, value in IDENT.items():
            setattr(ds, kw, value)
        ds.SeriesDescription = description
        ds.Modality = modality
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber, ds.InstanceNumber = number, i + 1
        if burned_in is not None:
            ds.BurnedInAnnotation = burned_in
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 12
        if modality == "US":
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit, ds.PixelRepresentation = 7, 0
            ds.PixelData = rng.integers(0, 256, (12, 12), dtype=np.uint8).tobytes()
        else:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.ImagePositionPatient = [0.0, 0.0, 2.5 * i]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 2.5
            ds.SliceLocation = 2.5 * i
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.WindowCenter, ds.WindowWidth = 40, 400
            ds.PixelData = rng.integers(0, 4096, (12, 12), dtype=np.uint16).tobytes()
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One patient, two studies: a CT series, an OT series with Burned In Annotation =
    YES and a US series; the source folder itself is named after the patient."""
    root = tmp_path_factory.mktemp("deid") / "Zyxwvut_Quintessa_PID8675309"
    uids: list[str] = []
    study_a, study_b = generate_uid(), generate_uid()
    uids += [study_a, study_b]
    _write_series(root / "ct", modality="CT", sop_class=CT, number=3,
                  description=SERIES_DESCRIPTIONS[0], study_uid=study_a, n=3,
                  burned_in=None, uids=uids)
    _write_series(root / "ot", modality="OT", sop_class=SC, number=4,
                  description=SERIES_DESCRIPTIONS[1], study_uid=study_a, n=1,
                  burned_in="YES", uids=uids)
    _write_series(root / "us", modality="US", sop_class=US, number=5,
                  description=SERIES_DESCRIPTIONS[2], study_uid=study_b, n=1,
                  burned_in=None, uids=uids)
    return root, uids


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _png_texts(data: bytes) -> bytes:
    """The text chunks of a PNG, zTXt / compressed iTXt inflated."""
    out = b""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out += key + b"\0" + zlib.decompress(rest[1:])
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            flag, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _tkey, _, text = rest.partition(b"\0")
            out += key + b"\0" + (zlib.decompress(text) if flag else text)
        pos += 12 + length
    return out


def _needles(uids: list[str]) -> list[str]:
    found: list[str] = []
    for kw, value in IDENT.items():
        found += _date_forms(value) if kw.endswith("Date") else _text_forms(value)
    for d in SERIES_DESCRIPTIONS:
        found += _text_forms(d)
    return found + uids


def _leaks(out: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(needle, where) for every identifying value found in a name or a file's bytes."""
    leaks = []
    files = [p for p in out.rglob("*")]
    assert files
    for p in files:
        name = str(p.relative_to(out)).lower()
        blob = b""
        if p.is_file():
            raw = p.read_bytes()
            blob = raw + (_png_texts(raw) if raw[:4] == b"\x89PNG" else b"")
        blob = blob.lower()
        for n in needles:
            if n.lower() in name:
                leaks.append((n, f"name {p.relative_to(out)}"))
            if n.lower().encode() in blob:
                leaks.append((n, f"content of {p.relative_to(out)}"))
    return leaks


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def _hmac(key: str, kind: str, original: str) -> str:
    """The pseudonym as core.deid documents it, computed here independently."""
    return hmac.new(key.encode(), f"{kind}\0{original}".encode(), hashlib.sha256).hexdigest()


def test_default_output_carries_the_identifiers(source: tuple[Path, list[str]],
                                                tmp_path: Path) -> None:
    """The search below is able to find them: the plain export names them."""
    src, uids = source
    code, _, _ = _run(["export", str(src), "-o", str(tmp_path / "out"), "-q"])
    assert code == 0
    found = {n for n, _ in _leaks(tmp_path / "out", _needles(uids))}
    assert {"PID8675309", "20190817", "HEAD_WITHOUT_CONTRAST_QX", "AXIAL_BRAIN_ZQ"} <= found
    assert set(uids) & found  # SOP / Series Instance UIDs in the manifests and PNG text


def test_deidentified_output_has_no_identifier(source: tuple[Path, list[str]],
                                               tmp_path: Path) -> None:
    src, uids = source
    out = tmp_path / "out"
    code, stdout, stderr = _run(["export", str(src), "-o", str(out), "-q", "--deidentify",
                                 "--deid-key", "s3cret"])
    assert code == 0, stderr
    assert _leaks(out, _needles(uids)) == []
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 5  # 3 CT + 1 OT + 1 US: everything was exported

    # names: P_/ST_/SE_ + the first 16 hex digits of HMAC-SHA256(key, kind NUL original)
    headers = [pydicom.dcmread(next((src / d).glob("*.dcm"))) for d in ("ct", "ot", "us")]
    series_uids = {"SE_" + _hmac("s3cret", "series", ds.SeriesInstanceUID)[:16]:
                   ds.SeriesInstanceUID for ds in headers}
    study_of = {ds.SeriesInstanceUID: ds.StudyInstanceUID for ds in headers}
    assert {p.parent.name for p in pngs} == set(series_uids)
    for folder in {p.parent for p in pngs}:
        patient, study, _ = folder.relative_to(out).parts
        assert patient == "P_" + _hmac("s3cret", "patient", "PID8675309")[:16]
        assert study == "ST_" + _hmac("s3cret", "study", study_of[series_uids[folder.name]])[:16]
        assert all(p.name.startswith(folder.name + "_") for p in folder.glob("*.png"))
    assert len(series_uids) == 3

    # the mapping file, beside OUT, maps every pseudonym back
    mapping = out.with_name("out.deid-mapping.json")
    assert str(mapping) in stdout
    doc = json.loads(mapping.read_text())
    assert doc["key"] == "s3cret"
    entries = doc["entries"]
    for name, uid in series_uids.items():
        assert entries[name] == {"kind": "series", "original": uid}
    patient = next(iter(pngs)).parent.parent.parent.name
    assert entries[patient] == {"kind": "patient", "original": "PID8675309"}
    with (out / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # the run manifest's pseudonymous UIDs map back too
        folder_name = Path(row["output"]).name
        assert entries[row["series_instance_uid"]]["original"] == series_uids[folder_name]
        assert row["series_instance_uid"].startswith("2.25.")
        assert row["modality"] in ("CT", "OT", "US")
        assert row["patient_id"] == patient

    # burned-in annotation: one warning per OT (YES) and US series, none for the CT one
    warnings = [ln for ln in stderr.splitlines() if "burned-in annotation" in ln]
    assert len(warnings) == 2
    assert any("Burned In Annotation = YES" in w for w in warnings)
    assert any("modality US" in w for w in warnings)
    assert "burned-in annotation possible in 2 series" in stdout


def test_pseudonyms_stable_per_key(source: tuple[Path, list[str]], tmp_path: Path) -> None:
    src, _ = source
    keyfile = tmp_path / "key.txt"
    keyfile.write_text("s3cret\n")
    runs = {}
    for name, extra in (("a", ["--deid-key", "s3cret"]), ("b", ["--deid-key-file", str(keyfile)]),
                        ("c", ["--deid-key", "other"])):
        code, _, err = _run(["export", str(src), "-o", str(tmp_path / name), "-q",
                             "--deidentify", *extra])
        assert code == 0, err
        runs[name] = _tree(tmp_path / name)
    assert runs["a"] == runs["b"]  # same key: same names, same bytes
    names_a = {Path(k).name for k in runs["a"]} - {"manifest.csv"}
    names_c = {Path(k).name for k in runs["c"]} - {"manifest.csv"}
    assert names_a and names_c and not names_a & names_c


def test_generated_key_is_kept_and_reused(source: tuple[Path, list[str]],
                                          tmp_path: Path) -> None:
    src, _ = source
    out = tmp_path / "gen"
    assert _run(["export", str(src), "-o", str(out), "-q", "--deidentify"])[0] == 0
    mapping = tmp_path / "gen.deid-mapping.json"
    key = json.loads(mapping.read_text())["key"]
    assert len(key) == 64 and mapping.stat().st_mode & 0o077 == 0
    first = _tree(out)
    assert _run(["export", str(src), "-o", str(out), "-q", "--deidentify"])[0] == 0
    assert _tree(out) == first  # the stored key was reused: same names
    other = tmp_path / "gen2"
    assert _run(["export", str(src), "-o", str(other), "-q", "--deidentify", "--deid-key",
                 key])[0] == 0
    assert _tree(other) == first


def test_mapping_inside_output_refused(source: tuple[Path, list[str]], tmp_path: Path) -> None:
    src, _ = source
    out = tmp_path / "o"
    code, _, err = _run(["export", str(src), "-o", str(out), "--deidentify",
                         "--deid-mapping", str(out / "map.json")])
    assert code == 2 and "inside the output folder" in err
    assert not out.exists()
    code, _, err = _run(["export", str(src), "-o", str(out), "--deid-key", "k"])
    assert code == 2 and "--deidentify" in err
    code, _, err = _run(["export", str(src), "-o", str(out), "--deidentify", "--masks"])
    assert code == 2 and "--masks" in err
    assert not out.exists()


def test_messages_name_no_identifier(source: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Under --deidentify, stderr and stdout name source files by their path under SRC
    and carry none of the identifying values (the SRC folder here is named after the
    patient); the same run without it shows them (the check is able to fail)."""
    import shutil

    src, uids = source
    copy = tmp_path / src.name
    shutil.copytree(src, copy)
    (copy / "ct" / "cut.dcm").write_bytes((copy / "ct" / "000.dcm").read_bytes()[:700])
    needles = [n.lower() for n in _needles(uids)]
    plain = _run(["export", str(copy), "-o", str(tmp_path / "plain"), "-q"])
    assert plain[0] == 1
    assert any(n in (plain[1] + plain[2]).lower() for n in needles)
    code, stdout, stderr = _run(["export", str(copy), "-o", str(tmp_path / "out"), "-q",
                                 "--deidentify", "--deid-key", "s3cret"])
    assert code == 1
    assert f"skipped: {Path('ct', 'cut.dcm')}: " in stderr
    said = (stdout + stderr).lower()
    assert [n for n in needles if n in said] == []


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                    reason="needs the 'cluster' extra")
def test_deidentified_on_a_cluster(source: tuple[Path, list[str]], tmp_path: Path) -> None:
    """``--scheduler local:2 --deidentify``: the de-identified local run's bytes, no
    identifying value in any name or byte, none on stderr or stdout."""
    src, uids = source
    local = _run(["export", str(src), "-o", str(tmp_path / "a"), "-q", "--deidentify",
                  "--deid-key", "s3cret"])
    code, stdout, stderr = _run(["export", str(src), "-o", str(tmp_path / "b"), "-q",
                                 "--deidentify", "--deid-key", "s3cret",
                                 "--scheduler", "local:2"])
    assert code == local[0] == 0, stderr
    assert _tree(tmp_path / "b") == _tree(tmp_path / "a")
    assert _leaks(tmp_path / "b", _needles(uids)) == []
    said = (stdout + stderr).lower()
    assert [n for n in _needles(uids) if n.lower() in said] == []
    assert "workers: 2" in stdout
