"""Seeded mutations of real DICOM files, and the worker that feeds them to every door.

Used by ``tests/test_fuzz.py``: the cases are written into a folder, then batches of them
run in subprocesses (``python tests/_fuzzlib.py CASES.json RESULTS.jsonl``) under a
memory limit (``RLIMIT_AS``) and a per-case alarm; the parent kills a batch that stops
answering and records its case in flight as a hang.

For each case the worker calls, as a user would reach them: napari's ``get_reader``
(must not raise), ``napari-dicom info FILE``, ``napari-dicom export FILE -o OUT``, and the
napari reader function with ``napari.layers.Image`` built from what it returns (napari
refuses equal or non-finite contrast limits). It records exceptions that escaped
(tracebacks), the messages printed, and the exit codes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import resource
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: real files (pydicom's test data and pydicom-data) in several transfer syntaxes
SEEDS = {
    "CT_small.dcm": "Explicit VR Little Endian",
    "MR_small_implicit.dcm": "Implicit VR Little Endian",
    "MR_small_bigendian.dcm": "Explicit VR Big Endian",
    "image_dfl.dcm": "Deflated Explicit VR Little Endian",
    "SC_rgb_jpeg_dcmtk.dcm": "JPEG Baseline (YBR)",
    "JPEG-lossy.dcm": "JPEG Extended 12-bit",
    "SC_rgb_jpeg_gdcm.dcm": "JPEG Lossless SV1 (RGB)",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS Lossless",
    "JPEGLSNearLossless_16.dcm": "JPEG-LS Near-Lossless",
    "JPEG2000.dcm": "JPEG 2000",
    "MR_small_RLE.dcm": "RLE Lossless",
    "SC_rgb_rle.dcm": "RLE Lossless (RGB)",
    "rtdose.dcm": "multi-frame RT Dose",
}

_US_VALUES = (0, 1, 0xFFFF, 0x8000, 7)
_FIELDS: dict[int, tuple[str, tuple[Any, ...]]] = {
    0x00280010: ("US", _US_VALUES),  # Rows
    0x00280011: ("US", _US_VALUES),  # Columns
    0x00280100: ("US", (0, 1, 7, 64, 0xFFFF)),  # Bits Allocated
    0x00280101: ("US", (0, 33, 0xFFFF)),  # Bits Stored
    0x00280102: ("US", (0, 63, 0xFFFF)),  # High Bit
    0x00280002: ("US", (0, 2, 4, 0xFFFF)),  # Samples per Pixel
    0x00280103: ("US", (2, 0xFFFF)),  # Pixel Representation
    0x00280006: ("US", (2, 0xFFFF)),  # Planar Configuration
    0x00280004: ("CS", ("RGB", "PALETTE COLOR", "YBR_FULL_422", "MONOCHROME1", "XX", "")),
    0x00280008: ("IS", ("0", "-1", "1e400", "-inf", "99999999", "17179869184")),
    0x00281053: ("DS", ("inf", "nan", "1e400", "-1e400", "0", "1e38")),
    0x00281052: ("DS", ("inf", "nan", "1e400", "-inf", "1e38")),
    0x00281050: ("DS", ("inf", "nan", "1e400", "-1", "40\\nan")),
    0x00281051: ("DS", ("inf", "nan", "0", "-1", "1e400", "0\\0")),
    0x00080005: ("CS", ("ISO_IR 999", "\x01\x02garbage", "ISO 2022 IR 87\\XX")),
}


def _elements(data: bytes) -> tuple[list[tuple[int, int, int, str]], bool, bool] | None:
    """Top-level data set elements ``(tag, element start, value start, VR)``, and the
    encoding (implicit, little), from pydicom's raw read; None for a deflated file."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if ts == "1.2.840.10008.1.2.1.99":
        return None
    implicit, little = ds.original_encoding
    out = []
    for tag, raw in ds._dict.items():
        vt = getattr(raw, "value_tell", None)
        vr = getattr(raw, "VR", None) or ""
        if vt is None:
            continue
        if implicit:
            start = vt - 8
        else:
            start = vt - (12 if vr in ("OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR",
                                       "OD", "OL", "OV", "SV", "UV") else 8)
        out.append((int(tag), start, vt, vr))
    return out, bool(implicit), bool(little)


def _set_value(data: bytes, elem: tuple[int, int, int, str], implicit: bool, little: bool,
               value: bytes) -> bytes:
    """Replace an element's value (and its length field) by ``value``."""
    _tag, start, vt, _vr = elem
    o = "<" if little else ">"
    old_len_at = vt - 4 if (implicit or vt - start == 12) else vt - 2
    fmt = o + ("I" if old_len_at == vt - 4 else "H")
    (old_len,) = struct.unpack_from(fmt, data, old_len_at)
    if old_len == 0xFFFFFFFF:
        return data
    if len(value) % 2:
        value += b" "
    head = data[:old_len_at] + struct.pack(fmt, len(value))
    return head + value + data[vt + old_len :]


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One seeded mutation of a file: ``(description, bytes)``."""
    kind = rng.choice(("truncate", "bitflip", "bytes", "field", "field", "field", "vr",
                       "item"))
    n = len(data)
    if kind == "truncate":
        at = rng.randrange(132, n) if rng.random() < 0.5 else rng.randrange(132, min(n, 1500))
        return f"truncated at {at} of {n}", data[:at]
    if kind in ("bitflip", "bytes"):
        buf = bytearray(data)
        hi = min(n, 2000) if rng.random() < 0.7 else n
        what = []
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(128, hi)
            if kind == "bitflip":
                buf[at] ^= 1 << rng.randrange(8)
            else:
                buf[at] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
            what.append(at)
        return f"{kind} at {sorted(what)}", bytes(buf)
    parsed = _elements(data)
    if parsed is None:  # deflated: mutate the compressed stream instead
        at = rng.randrange(300, n)
        return f"deflate stream byte {at}", data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1:]
    elems, implicit, little = parsed
    if kind == "field":
        present = [e for e in elems if e[0] in _FIELDS]
        if not present:
            return "no field", data
        e = rng.choice(present)
        vr, values = _FIELDS[e[0]]
        v = rng.choice(values)
        raw = struct.pack(("<" if little else ">") + "H", v) if vr == "US" else v.encode(
            "latin-1")
        return f"({e[0] >> 16:04X},{e[0] & 0xFFFF:04X}) = {v!r}", _set_value(
            data, e, implicit, little, raw)
    if kind == "vr" and not implicit:
        e = rng.choice(elems)
        at = e[1] + 4
        return f"VR of ({e[0] >> 16:04X},{e[0] & 0xFFFF:04X}) = 'XX'", (
            data[:at] + b"XX" + data[at + 2:])
    # a stray Item tag (FFFE,E000) in front of a top-level element (issue 10, item 7)
    e = rng.choice(elems)
    o = "<" if little else ">"
    item = struct.pack(o + "HHI", 0xFFFE, 0xE000, rng.choice((0, 8, 0xFFFFFFFF)))
    return f"stray item before ({e[0] >> 16:04X},{e[0] & 0xFFFF:04X})", (
        data[: e[1]] + item + data[e[1]:])


def deep_sequence_file(depth: int) -> bytes:
    """A Part 10 CT-like header with ``depth`` nested undefined-length sequences."""
    from pydicom.data import get_testdata_file

    base = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]
    open_sq = struct.pack("<HH2sHI", 0x0009, 0x1010, b"SQ", 0, 0xFFFFFFFF) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    nested = open_sq * depth + close * depth
    # after the meta group: 132 + meta length
    (meta_len,) = struct.unpack_from("<I", base, 140)
    at = 144 + meta_len
    # insert after the group 0008 elements (the private group 0009 sorts there)
    while struct.unpack_from("<H", base, at)[0] <= 0x0008:
        vr = base[at + 4 : at + 6]
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
            at += 12 + struct.unpack_from("<I", base, at + 8)[0]
        else:
            at += 8 + struct.unpack_from("<H", base, at + 6)[0]
    return base[:at] + nested + base[at:]


def make_cases(folder: Path, per_seed: int, seed: int = 10) -> list[dict[str, str]]:
    """Write the seeded cases into ``folder``; returns ``[{"path", "what"}]``."""
    from pydicom.data import get_testdata_file

    rng = random.Random(seed)
    cases = []
    for name in SEEDS:
        data = Path(get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]
        for i in range(per_seed):
            what, mutated = mutate(data, rng)
            path = folder / f"{Path(name).stem}__{i:03d}.dcm"
            path.write_bytes(mutated)
            cases.append({"path": str(path), "what": f"{name}: {what}"})
    for depth in (200, 5000):
        path = folder / f"deep_sequence_{depth}.dcm"
        path.write_bytes(deep_sequence_file(depth))
        cases.append({"path": str(path), "what": f"{depth} nested sequences"})
    return cases


# --------------------------------------------------------------------------------------
# the worker (runs in a subprocess)
# --------------------------------------------------------------------------------------


class _Hang(BaseException):
    pass


def _on_alarm(_sig: int, _frame: Any) -> None:
    raise _Hang


@contextlib.contextmanager
def _captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = old


def _door(name: str, fn: Callable[[], Any], rec: dict[str, Any]) -> Any:
    try:
        return fn()
    except _Hang:
        rec.setdefault("crash", []).append(f"{name}: hang (alarm)")
    except BaseException as exc:  # the point of the fuzz: record whatever escapes
        tb = traceback.format_exception(exc)
        rec.setdefault("crash", []).append(f"{name}: {''.join(tb[-3:])}")
    return None


def run_case(path: str, out_dir: str, seconds: int) -> dict[str, Any]:
    from napari_dicom._reader import napari_get_reader, read_dicom
    from napari_dicom.cli import main
    from napari_dicom.core.pixels import DicomLoadError

    rec: dict[str, Any] = {"path": path}
    signal.alarm(seconds)
    try:
        reader = _door("get_reader", lambda: napari_get_reader(path), rec)
        rec["claimed"] = reader is not None
        for cmd in (["info", path], ["export", path, "-o", out_dir, "-j", "1"]):
            with _captured() as (o, e):
                rc = _door(cmd[0], lambda c=cmd: main(c), rec)
            rec[cmd[0]] = {"rc": rc, "stdout": o.getvalue(), "stderr": e.getvalue()}

        def via_napari() -> list[str]:
            import napari.layers
            from napari.utils.notifications import notification_manager

            notes: list[str] = []
            notification_manager.notification_ready.connect(lambda n: notes.append(
                str(n.message)))
            try:
                try:
                    layers = read_dicom(path)
                except DicomLoadError as exc:
                    notes.append(f"DicomLoadError: {exc}")
                    return notes
                for data, kwargs, _kind in layers:
                    napari.layers.Image(data, **kwargs)
            finally:
                notification_manager.notification_ready.disconnect()
            return notes

        rec["napari"] = _door("napari", via_napari, rec)
    finally:
        signal.alarm(0)
    return rec


def worker(cases_json: str, results_jsonl: str) -> None:
    """Run the cases listed in ``cases_json``, one JSON line per case (a "start" line
    first, so that the parent knows which case a killed batch was on)."""
    limit = int(os.environ.get("FUZZ_MEMORY_LIMIT", str(3 << 30)))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    seconds = int(os.environ.get("FUZZ_CASE_SECONDS", "20"))
    signal.signal(signal.SIGALRM, _on_alarm)
    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    import napari.layers  # noqa: F401  (imported once per batch, not timed per case)

    from napari_dicom._reader import napari_get_reader  # noqa: F401

    cases = json.loads(Path(cases_json).read_text())
    with open(results_jsonl, "a") as log:
        for case in cases:
            log.write(json.dumps({"start": case["path"]}) + "\n")
            log.flush()
            out_dir = str(Path(case["path"]).with_suffix(".out"))
            rec = run_case(case["path"], out_dir, seconds)
            rec["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            log.write(json.dumps(rec) + "\n")
            log.flush()


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])


def run_all(cases: list[dict[str, str]], folder: Path, batches: int = 2,
            batch_timeout: float = 120.0, memory_limit: int = 3 << 30,
            ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Run ``cases`` in ``batches`` parallel worker processes; a batch that stops answering
    is killed, its case in flight recorded as a hang, and the rest of it run again.

    Returns the records by path and the paths that hung or killed their process.
    """
    import subprocess
    import time

    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["FUZZ_MEMORY_LIMIT"] = str(memory_limit)
    env.pop("NAPARI_DICOM_MEMORY_BUDGET", None)  # the default budget is under test
    todo = [cases[i::batches] for i in range(batches)]
    records: dict[str, dict[str, Any]] = {}
    dead: list[str] = []
    while any(todo):
        procs = []
        for i, part in enumerate(todo):
            if not part:
                continue
            cj, rj = folder / f"batch{i}.json", folder / f"batch{i}.jsonl"
            cj.write_text(json.dumps(part))
            rj.write_text("")
            p = subprocess.Popen([sys.executable, __file__, str(cj), str(rj)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append((i, p, rj))
        deadline = time.monotonic() + batch_timeout
        nxt: list[list[dict[str, str]]] = [[] for _ in todo]
        for i, p, rj in procs:
            try:
                p.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            started = None
            for line in rj.read_text().splitlines():
                rec = json.loads(line)
                if "start" in rec:
                    started = rec["start"]
                else:
                    records[rec["path"]] = rec
                    started = None
            if started is not None:  # killed (timeout, memory) or died on this case
                dead.append(f"{started}: worker exit {p.returncode} {err[-300:]}")
                done = {c["path"] for c in todo[i]} & (set(records) | {started})
                nxt[i] = [c for c in todo[i] if c["path"] not in done]
                records[started] = {"path": started, "crash": ["process killed or died"]}
            elif p.returncode != 0:
                dead.append(f"batch {i}: worker exit {p.returncode} {err[-300:]}")
        todo = nxt
    return records, dead
