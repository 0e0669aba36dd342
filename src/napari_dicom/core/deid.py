"""De-identified export (``napari-dicom export --deidentify``): pseudonymous names and metadata.

In the spirit of the Basic Application Level Confidentiality Profile (DICOM PS3.15 Annex
E, Table E.1-1), for what napari-dicom itself writes (folder and file names, the stack and
run manifests, the PNG text chunks):

* **replaced** by a keyed hash (HMAC-SHA256 with a secret key): Patient ID (folder
  ``P_<16 hex>``), Study Instance UID (``ST_<16 hex>``), Series Instance UID (``SE_<16
  hex>``, also the stem of the PNG names) and, in the manifests and PNG text, the Series and
  SOP Instance UIDs (``2.25.<decimal of 128 bits of the hash>``, a valid UID, PS3.5 B.2);
* **left out**: Patient Name, Patient ID, Birth Date, every date and time, Study and Series
  Description, Accession Number, Institution, source file paths and failure messages
  (which name files); none of them is written;
* **kept** (not identifying in Annex E's basic profile): Modality, Series Number, the
  window (centre, width, VOI LUT Function, polarity, VOI LUT explanation), slice
  location (mm), the image size and count, the status of each series. Pixel spacing is
  not written by the PNG export either way.

The same key gives the same pseudonyms (a later run, another machine); another key gives
others. The key and the pseudonym -> original table go to a separate mapping file
(:func:`write_mapping`), outside the output folder.

Pixels are not scrubbed: :func:`burned_in_reason` says when an image may carry burned-in
annotation (Burned In Annotation (0028,0301) = YES, ultrasound, secondary capture).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .series import Series

__all__ = [
    "MAPPING_FORMAT",
    "DeidError",
    "Pseudonymizer",
    "burned_in_reason",
    "default_mapping_path",
    "read_mapping_key",
    "write_mapping",
]

MAPPING_FORMAT = "napari-dicom de-identification mapping 1"

#: modalities whose images commonly carry burned-in text (PS3.15 E.1.1 note, C.7.6.1.1.1)
BURNED_IN_MODALITIES = frozenset({"US", "SC"})
#: Secondary Capture Image Storage SOP classes (PS3.4 B.5): screenshots, scanned documents
SECONDARY_CAPTURE = frozenset(
    ["1.2.840.10008.5.1.4.1.1.7"] + [f"1.2.840.10008.5.1.4.1.1.7.{i}" for i in range(1, 5)]
)

_PREFIX = {"patient": "P", "study": "ST", "series": "SE"}


class DeidError(ValueError):
    """A mapping file or key that cannot be used; the message names it."""


class Pseudonymizer:
    """Keyed, stable pseudonyms; remembers which pseudonym stands for which original.

    ``key`` is the secret as text (given by the user or :meth:`generate` d); the hash is
    ``HMAC-SHA256(key, "<kind>\\0<original>")``.
    """

    def __init__(self, key: str) -> None:
        if not key:
            raise DeidError("the de-identification key is empty")
        self.key = key
        self._key = key.encode("utf-8")
        self.entries: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a cluster worker (``export --scheduler``): the key alone. The
        worker's pseudonyms are the same; the table of originals stays with the command,
        which names the folders and writes the mapping file."""
        return {"key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["key"])  # type: ignore[misc]

    @classmethod
    def generate(cls) -> Pseudonymizer:
        """A new random key (256 bits, :mod:`secrets`)."""
        return cls(secrets.token_hex(32))

    def _digest(self, kind: str, original: str) -> bytes:
        return hmac.new(self._key, f"{kind}\0{original}".encode(), hashlib.sha256).digest()

    def _record(self, pseudonym: str, kind: str, original: str) -> str:
        with self._lock:
            self.entries[pseudonym] = {"kind": kind, "original": original}
        return pseudonym

    def name(self, kind: str, original: str) -> str:
        """``P_`` / ``ST_`` / ``SE_`` and 16 hex digits (64 bits) of the hash."""
        return self._record(f"{_PREFIX[kind]}_{self._digest(kind, original).hex()[:16]}",
                            kind, original)

    def uid(self, original: str, record: bool = False) -> str:
        """A UID standing for ``original``: ``2.25.`` and 128 bits of the hash (PS3.5 B.2)."""
        if not original:
            return ""
        value = f"2.25.{int.from_bytes(self._digest('uid', original)[:16], 'big')}"
        return self._record(value, "uid", original) if record else value

    def series_parts(self, series: Series, key: str | None = None) -> tuple[str, str, str]:
        """Patient, study and series folder names of ``series`` (``key``: a split series)."""
        series_key = key if key is not None else series.uid
        return (
            self.name("patient", series.patient_id),
            self.name("study", series.study_uid or f"series {series_key}"),
            self.name("series", series_key),
        )

    def scrub_meta(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """``series_metadata`` for the PNG text and the stack manifest: SOP Instance UIDs
        replaced, source file paths and the header left out."""
        out = {k: v for k, v in meta.items() if k not in ("files", "header")}
        uids = meta.get("sop_instance_uids")
        if isinstance(uids, (list, tuple)):
            out["sop_instance_uids"] = [self.uid(str(u)) if u else u for u in uids]
        if meta.get("series_instance_uid"):
            out["series_instance_uid"] = self.uid(str(meta["series_instance_uid"]))
        header = meta.get("header")
        if isinstance(header, Mapping) and "BitsStored" in header:
            out["header"] = {"BitsStored": header["BitsStored"]}
        return out


def burned_in_reason(series: Series) -> str | None:
    """Why the images of ``series`` may carry burned-in annotation, or None.

    Burned In Annotation (0028,0301) = YES; else a modality (US, SC) or a Secondary
    Capture SOP class that commonly does, unless the file says NO."""
    header = series.header or {}
    flag = str(header.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "Burned In Annotation = YES"
    if flag == "NO":
        return None
    if series.modality.upper() in BURNED_IN_MODALITIES:
        return f"modality {series.modality.upper()}"
    if str(header.get("SOPClassUID", "") or "") in SECONDARY_CAPTURE:
        return "Secondary Capture image"
    return None


def default_mapping_path(out: str | os.PathLike[str]) -> Path:
    """``OUT.deid-mapping.json`` beside the output folder (never inside it)."""
    root = Path(out).resolve()
    return root.with_name(root.name + ".deid-mapping.json")


def _load(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeidError(f"{path}: not a readable de-identification mapping ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MAPPING_FORMAT:
        raise DeidError(f"{path}: not a napari-dicom de-identification mapping file")
    return data


def read_mapping_key(path: str | os.PathLike[str]) -> str | None:
    """The key stored in an existing mapping file, or None when there is no file."""
    data = _load(Path(path))
    return None if data is None else str(data.get("key", "")) or None


def write_mapping(path: str | os.PathLike[str], pseud: Pseudonymizer) -> Path:
    """Write (or extend) the mapping file: the key and pseudonym -> original entries.

    An existing file made with the same key keeps its entries; one made with another key
    is refused (:class:`DeidError`). The file is readable by its owner only (0600).
    """
    from .export import write_atomic

    target = Path(path)
    data = _load(target)
    entries: dict[str, Any] = {}
    if data is not None:
        if data.get("key") != pseud.key:
            raise DeidError(f"{target} holds another key; pass that key or another mapping "
                            "file")
        entries.update(data.get("entries") or {})
    entries.update(pseud.entries)
    doc = {
        "format": MAPPING_FORMAT,
        "algorithm": "HMAC-SHA256(key, kind + NUL + original); names: 16 hex digits, "
                     "UIDs: 2.25. + first 128 bits",
        "key": pseud.key,
        "entries": dict(sorted(entries.items())),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
    os.chmod(target, 0o600)
    return target
