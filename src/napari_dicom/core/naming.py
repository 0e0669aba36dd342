"""Output folder names for exported series: ``<Patient>/<Study>/<Series>`` under a root.

Every series gets its own folder::

    OUT/<PatientID>/<StudyDate>_<StudyDescription>/<SeriesNumber>_<SeriesDescription>/

Each component is made portable by :func:`napari_dicom.core.series.sanitize` (letters,
digits, ``.``, ``_``, ``-``; no separators, never ``.`` or ``..``) after folding accents
to ASCII (``é`` -> ``e``); names Windows reserves (``CON``, ``NUL``, ``COM1``..., also
with an extension: ``NUL.txt`` is NUL) get ``_`` after that part (``NUL_.txt``). Two
different studies (Study Instance UID, PS3.3 C.7.2.1) or series (Series Instance UID,
C.7.3.1) that would share a name get ``_2``, ``_3``... in the order they are asked for;
the comparison ignores case so that the layout survives a case-insensitive file system.
Every folder is checked, after resolving symbolic links, to lie inside the root.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .series import Series, sanitize

if TYPE_CHECKING:
    from .deid import Pseudonymizer

__all__ = ["OutputNamer", "UnsafePathError", "component", "series_parts"]

#: device names Windows refuses as file names, whatever the extension
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


_DOTS = re.compile(r"\.{2,}")


class UnsafePathError(ValueError):
    """An output path that would land outside the output root."""


def component(text: str | None, fallback: str, max_len: int = 64) -> str:
    """One portable path component from free DICOM text (LO/SH/DA values).

    Accents are folded to ASCII first (NFKD, combining marks dropped), then
    :func:`~napari_dicom.core.series.sanitize` keeps ``[A-Za-z0-9._-]`` (runs of dots
    become ``_``); the result is
    never empty, ``.`` or ``..`` and never a Windows device name.
    """
    folded = unicodedata.normalize("NFKD", text or "")
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    folded = _DOTS.sub("_", folded)  # "a/../b" -> "a_b", not "a_.._b"
    name = sanitize(folded, fallback=fallback, max_len=max_len)
    stem, dot, rest = name.partition(".")
    if stem.upper() in _RESERVED:  # "NUL.txt" is NUL too: the stem itself must change
        name = f"{stem}_{dot}{rest}"
    return name


def series_parts(series: Series) -> tuple[str, str, str]:
    """The three folder names of a series: patient, study and series.

    * patient: Patient ID (0010,0020), else ``unknown_patient``;
    * study: ``<StudyDate>_<StudyDescription>`` (0008,0020 / 0008,1030), else ``unknown_study``;
    * series: ``<SeriesNumber>_<SeriesDescription>`` (0020,0011 / 0008,103E), else
      ``series``.
    """
    patient = component(series.patient_id, "unknown_patient")
    study = component(
        "_".join(p for p in (series.study_date, series.study_description) if p), "unknown_study"
    )
    number = "" if series.number is None else str(series.number)
    name = component("_".join(p for p in (number, series.description) if p), "series")
    return patient, study, name


@dataclass
class _Level:
    """Names handed out under one parent: key (UID) -> name, and the names in use."""

    by_key: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    children: dict[str, _Level] = field(default_factory=dict)

    def name_for(self, key: str, wanted: str) -> str:
        if key in self.by_key:
            return self.by_key[key]
        name, n = wanted, 1
        while name.casefold() in self.used:
            n += 1
            name = f"{wanted}_{n}"
        self.by_key[key] = name
        self.used.add(name.casefold())
        return name

    def child(self, name: str) -> _Level:
        return self.children.setdefault(name.casefold(), _Level())


class OutputNamer:
    """Hands out one folder per series under ``root``, unique within one run.

    The same inputs, scanned in the same (sorted) order, give the same folders, so a run
    with ``--skip-existing`` finds the files of the previous one.

    Parameters
    ----------
    root
        The output root (``-o OUT``); it need not exist yet.
    pseudonyms
        De-identified names (:mod:`~napari_dicom.core.deid`): keyed hashes of the Patient
        ID and the Study / Series Instance UIDs instead of the header's text.
    """

    def __init__(self, root: str | os.PathLike[str],
                 pseudonyms: Pseudonymizer | None = None) -> None:
        self.root = Path(root).resolve()
        self.pseudonyms = pseudonyms
        self._tree = _Level()

    def folder_for(self, series: Series, key: str | None = None) -> Path:
        """The output folder of ``series`` (not created).

        ``key`` tells series apart; it defaults to the Series Instance UID. Pass a
        distinct key when one series was split in several (e.g. by orientation).

        Raises
        ------
        UnsafePathError
            If the folder would resolve (symbolic links followed) outside the root.
        """
        if self.pseudonyms is not None:
            patient, study, name = self.pseudonyms.series_parts(series, key)
        else:
            patient, study, name = series_parts(series)
        level = self._tree
        p_name = level.name_for(f"patient:{series.patient_id}", patient)
        level = level.child(p_name)
        s_name = level.name_for(
            f"study:{series.study_uid or (series.study_date, series.study_description)}", study
        )
        level = level.child(s_name)
        n_name = level.name_for(f"series:{key if key is not None else series.uid}", name)
        folder = self.root / p_name / s_name / n_name
        self.check_inside(folder)
        return folder

    def check_inside(self, path: str | os.PathLike[str]) -> Path:
        """``path`` resolved; raises :class:`UnsafePathError` when it leaves the root."""
        resolved = Path(path).resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise UnsafePathError(f"{path} resolves to {resolved}, outside the output folder "
                                  f"{self.root}")
        return resolved
