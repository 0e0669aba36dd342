"""Output folder names: portable, inside the root, unique per study / series."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from napari_dicom.core.naming import OutputNamer, UnsafePathError, component, series_parts
from napari_dicom.core.series import Series


def _series(
    uid: str = "1.2.3",
    *,
    patient: str = "P1",
    study_uid: str = "1.2",
    date: str = "20240101",
    study: str = "Chest",
    number: int | None = 3,
    description: str = "Thorax 1.0",
) -> Series:
    return Series(
        uid=uid,
        planes=[],
        shape=(1, 4, 4),
        number=number,
        description=description,
        study_uid=study_uid,
        patient_id=patient,
        study_date=date,
        study_description=study,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a/b", "a_b"),
        ("..", "x"),
        ("../../etc/passwd", "etc_passwd"),
        ("C:\\Windows", "C_Windows"),
        ("Thorax 1.0 (Lung)", "Thorax_1.0_Lung"),
        ("Crâne élevé", "Crane_eleve"),
        ("CON", "CON_"),
        ("nul.txt", "nul_.txt"),  # Windows: NUL with any extension is the device
        ("com9.png", "com9_.png"),
        ("LPT1.tar.gz", "LPT1_.tar.gz"),
        ("", "x"),
        ("   ", "x"),
    ],
)
def test_component_is_portable(text: str, expected: str) -> None:
    assert component(text, "x") == expected


def test_series_parts_layout() -> None:
    assert series_parts(_series()) == ("P1", "20240101_Chest", "3_Thorax_1.0")
    bare = _series(patient="", date="", study="", number=None, description="")
    assert series_parts(bare) == ("unknown_patient", "unknown_study", "series")


def test_folder_layout_and_stable_names(tmp_path: Path) -> None:
    namer = OutputNamer(tmp_path / "out")
    s = _series()
    folder = namer.folder_for(s)
    assert folder == (tmp_path / "out").resolve() / "P1" / "20240101_Chest" / "3_Thorax_1.0"
    assert namer.folder_for(s) == folder  # same series, same folder
    # a fresh namer over the same inputs gives the same folders (resume)
    assert OutputNamer(tmp_path / "out").folder_for(s) == folder


def test_collisions_get_suffixes(tmp_path: Path) -> None:
    namer = OutputNamer(tmp_path)
    a = namer.folder_for(_series("1.1", description="a/b"))
    b = namer.folder_for(_series("1.2", description="a_b"))  # same sanitised name
    c = namer.folder_for(_series("1.3", description="A_B"))  # differs only by case
    assert (a.name, b.name, c.name) == ("3_a_b", "3_a_b_2", "3_A_B_3")
    # a second study on the same day with the same description: its own study folder
    d = namer.folder_for(_series("2.1", study_uid="9.9", description="a/b"))
    assert d.parent.name == "20240101_Chest_2"
    assert d.name == "3_a_b"  # series names are unique per study folder
    # a split of one series under its own key
    e = namer.folder_for(_series("1.1", description="a/b"), key="1.1#2")
    assert e.name == "3_a_b_4"


def test_unsafe_text_stays_inside_root(tmp_path: Path) -> None:
    namer = OutputNamer(tmp_path / "out")
    s = _series(patient="../..", study="..", description="../../../tmp", date="/")
    folder = namer.folder_for(s)
    assert folder.is_relative_to((tmp_path / "out").resolve())
    assert [p for p in folder.relative_to((tmp_path / "out").resolve()).parts] == [
        "unknown_patient", "unknown_study", "3_tmp"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symlink_escaping_root_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "P1").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside the output folder"):
        OutputNamer(out).folder_for(_series())
