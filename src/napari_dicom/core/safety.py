"""Limits against hostile or damaged input: the memory budget, bounded inflation, codestream
size checks, the errors a damaged header raises, and one-line messages.

Every door (reader, CLI, writer) reaches files through ``core.scan`` and ``core.pixels``;
those call the guards here, so one place decides how much a file may make us allocate:

* :func:`memory_budget`: the most any one allocation driven by a file's header may take.
  ``NAPARI_DICOM_MEMORY_BUDGET`` (bytes, or with a ``K``/``M``/``G`` suffix) sets it;
  by default it is :data:`BUDGET_FRACTION` of the memory available now (the smaller of
  the free RAM and what an address-space limit, ``RLIMIT_AS``, leaves).
* A header whose pixel data would exceed the budget is refused before anything is
  allocated (:func:`too_large`); a codestream whose own header (JPEG SOF, JPEG-LS SOF55,
  JPEG 2000 SIZ) is larger than the DICOM header says is refused before it is decoded
  (:func:`codestream_size`); a deflated data set is inflated at most to what its header
  promises (:func:`read_deflated`).
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from typing import Any, BinaryIO

from pydicom.errors import BytesLengthException, InvalidDicomError

__all__ = [
    "BUDGET_ENV",
    "BUDGET_FRACTION",
    "HEADER_ERRORS",
    "TooLargeError",
    "codestream_size",
    "is_deflated_part10",
    "is_panic",
    "memory_available",
    "memory_budget",
    "one_line",
    "pixel_bytes",
    "read_deflated",
    "too_large",
]

#: environment variable that sets the memory budget (bytes; suffixes K, M, G allowed)
BUDGET_ENV = "NAPARI_DICOM_MEMORY_BUDGET"
#: share of the available memory one file may claim when no budget is set
BUDGET_FRACTION = 0.5

#: what pydicom (and our own header code) raise on a damaged, truncated or crafted header:
#: unknown VRs and stray items (NotImplementedError), deep nesting (RecursionError),
#: IS/DS values such as 1e400 (OverflowError, ValueError), a value length that is not a
#: multiple of its VR's size (BytesLengthException), a garbage Specific Character
#: Set (LookupError), a truncated deflated data set (zlib.error), short buffers
#: (struct.error, EOFError), and an element length of gigabytes (MemoryError: Python's
#: file read allocates the length asked for; nothing is held once it failed)
HEADER_ERRORS = (
    InvalidDicomError, BytesLengthException, EOFError, ValueError, struct.error, LookupError,
    TypeError, AttributeError, NotImplementedError, OverflowError, RecursionError, zlib.error,
    MemoryError,
)

_DEFLATED = b"1.2.840.10008.1.2.1.99"
#: most bytes inflated to read the header of a deflated data set (a whole legitimate
#: header, large private elements included; a bomb before the pixel data stops here)
HEADER_INFLATE = 64 << 20
#: what a data set may hold beyond its header and pixel data (overlays, trailing elements)
INFLATE_SLACK = 1 << 20


class TooLargeError(ValueError):
    """A file would need more memory than the budget allows, or holds more than it says."""


_cache: tuple[float, int] = (-1.0, 0)


def _parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def memory_available() -> int:
    """Free memory now: MemAvailable (Linux) or free pages, within an RLIMIT_AS."""
    avail = 0
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if not avail:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 32
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            used = 0
            with open("/proc/self/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmSize:"):
                        used = int(line.split()[1]) * 1024
                        break
            avail = min(avail, max(0, soft - used))
    except (ImportError, OSError, ValueError):
        pass
    return avail


def memory_budget(available: int | None = None) -> int:
    """Bytes one file's pixel data (or a series array) may take in memory (see the module
    docstring): ``NAPARI_DICOM_MEMORY_BUDGET``, else :data:`BUDGET_FRACTION` of
    ``available`` (default :func:`memory_available`, re-read at most once a second: the
    scan asks for every file).
    """
    global _cache
    env = os.environ.get(BUDGET_ENV)
    if env:
        try:
            return max(1, _parse_size(env))
        except ValueError:
            pass  # a malformed setting falls back to the default
    if available is not None:
        return max(1, int(available * BUDGET_FRACTION))
    now = time.monotonic()
    if now - _cache[0] > 1.0:
        _cache = (now, max(1 << 20, int(memory_available() * BUDGET_FRACTION)))
    return _cache[1]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def too_large(nbytes: int, what: str) -> str | None:
    """The refusal message when ``nbytes`` exceed the memory budget, else ``None``."""
    budget = memory_budget()
    if nbytes <= budget:
        return None
    return (f"{what} needs {_mib(nbytes)}, more than the memory budget of {_mib(budget)} "
            f"(set {BUDGET_ENV} to change it)")


def pixel_bytes(rows: int, columns: int, samples: int, frames: int, bits: int) -> int:
    """Bytes of pixel data a header claims (PS3.5 8.1.1; bits packed for 1-bit data)."""
    return (max(0, rows) * max(0, columns) * max(1, samples) * max(1, frames)
            * max(1, bits) + 7) // 8


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust decoder's panic (``pyo3_runtime.PanicException``, a
    BaseException subclass that ``except Exception`` does not catch)."""
    return type(exc).__name__ == "PanicException"


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """A decoder's message on one line: pydicom's "Unable to decode as exceptions were
    raised by all available plugins:" followed by one line per plugin becomes
    ``"plugin: reason; plugin: reason"``; other line breaks become ``"; "``."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].startswith("Unable to decode as exceptions were raised"):
        lines = lines[1:] or lines
    out = "; ".join(lines) or type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3].rstrip() + "..."


# --------------------------------------------------------------------------------------
# deflated data sets (PS3.5 A.5): inflate no more than the header promises
# --------------------------------------------------------------------------------------


def is_deflated_part10(head: bytes) -> bool:
    """Whether the first bytes of a Part 10 file name Deflated Explicit VR Little Endian
    as its transfer syntax (searched in the file meta group)."""
    if len(head) < 144 or head[128:132] != b"DICM":
        return False
    end = 132 + 2048
    if head[132:136] == b"\x02\x00\x00\x00" and head[136:138] == b"UL":
        end = 144 + struct.unpack_from("<I", head, 140)[0]
    return _DEFLATED in head[132:end]


def read_deflated(fp: BinaryIO, *, stop_before_pixels: bool) -> Any:
    """A deflated Part 10 file read with bounded inflation (pydicom inflates it whole).

    Header only: at most :data:`HEADER_INFLATE` bytes are inflated. Whole: the data set
    is inflated up to its header's pixel data claim (within the budget) plus
    :data:`INFLATE_SLACK`; more raises :class:`TooLargeError` (a deflate bomb).
    """
    from pydicom.dataset import FileDataset
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    preamble = read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    zipped = fp.read()
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    head = d.decompress(zipped, HEADER_INFLATE)

    def at_pixels(tag: Any, vr: Any, length: Any) -> bool:
        return int(tag) in (0x7FE00010, 0x7FE00008, 0x7FE00009)

    buf = io.BytesIO(head)
    ds = read_dataset(buf, False, True, stop_when=at_pixels)
    if not stop_before_pixels:
        def num(keyword: str, default: int) -> int:
            v = ds.get(keyword)
            try:
                return int(v) if v not in (None, "") else default
            except (TypeError, ValueError, OverflowError):
                return default

        claim = pixel_bytes(num("Rows", 0), num("Columns", 0), num("SamplesPerPixel", 1),
                            num("NumberOfFrames", 1), num("BitsAllocated", 16))
        problem = too_large(claim, "the pixel data its header claims")
        if problem:
            raise TooLargeError(problem)
        limit = buf.tell() + claim + INFLATE_SLACK
        if not d.eof:
            head += d.decompress(d.unconsumed_tail, limit - len(head) + 1)
        if len(head) > limit:
            raise TooLargeError(
                f"the deflated data set inflates to more than the {_mib(limit)} its header "
                "promises (a deflate bomb?)")
    if not stop_before_pixels:
        ds = read_dataset(io.BytesIO(head), False, True)
    out = FileDataset(getattr(fp, "name", "<deflated>"), ds, preamble=preamble,
                      file_meta=meta, is_implicit_VR=False, is_little_endian=True)
    return out


# --------------------------------------------------------------------------------------
# codestream headers: the size an encoded frame will decode to
# --------------------------------------------------------------------------------------

#: JPEG start-of-frame markers (ITU T.81 B.1.1.3): C0-CF but DHT C4, JPG C8, DAC CC;
#: JPEG-LS SOF55 F7 (T.87)
_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}) | {0xF7}


def codestream_size(buf: bytes) -> tuple[int, int, int] | None:
    """``(rows, columns, components)`` from the header of a JPEG, JPEG-LS or JPEG 2000
    codestream (its first bytes), or ``None`` when they are not found there."""
    if buf[:4] == b"\xff\x4f\xff\x51" and len(buf) >= 42:  # J2K SOC + SIZ (T.800 A.5.1)
        xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", buf, 8)
        csiz = struct.unpack_from(">H", buf, 40)[0]
        return max(0, ysiz - yo), max(0, xsiz - xo), csiz
    if buf[:2] != b"\xff\xd8":
        return None
    pos = 2
    n = len(buf)
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", buf, pos + 2)
        if marker in _SOF and pos + 10 <= n:
            rows, cols = struct.unpack_from(">HH", buf, pos + 5)
            return rows, cols, buf[pos + 9]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None
