"""On-image information without Qt: orientation letters, window, slice, value and unit,
patient text (core.onimage)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from napari_dicom.core.onimage import (
    EdgeLetters,
    direction_letters,
    edge_letters,
    patient_lines,
    slice_text,
    value_text,
    value_unit,
    window_text,
)
from napari_dicom.core.presets import CT_PRESETS

CT_SMALL = get_testdata_file("CT_small.dcm")


@pytest.mark.parametrize(
    ("lps", "letters"),
    [
        ((1, 0, 0), "L"), ((-1, 0, 0), "R"), ((0, 1, 0), "P"), ((0, -1, 0), "A"),
        ((0, 0, 1), "S"), ((0, 0, -1), "I"),
        # oblique: the larger component first (Clunie's rule)
        ((0.6, -0.8, 0), "AL"), ((0.8, 0.6, 0), "LP"), ((-0.5, 0.5, -0.7071), "IRP"),
        ((1, 0.00005, 0), "L"),  # below the 1e-4 tolerance: no second letter
        ((0, 0, 0), ""),
    ],
)
def test_direction_letters(lps: tuple[float, float, float], letters: str) -> None:
    assert direction_letters(lps) == letters


def test_edge_letters_of_the_three_planes_in_napari_default_camera() -> None:
    # napari world axes (I, P, L); 2-D camera ('down', 'right'): the first displayed axis
    # grows downwards, the second to the right
    axial = edge_letters((1, 2))  # P vertical, L horizontal: radiological convention
    assert axial == EdgeLetters(top="A", bottom="P", left="R", right="L")
    coronal = edge_letters((0, 2))  # I vertical, L horizontal
    assert coronal == EdgeLetters(top="S", bottom="I", left="R", right="L")
    sagittal = edge_letters((0, 1))  # I vertical, P horizontal
    assert sagittal == EdgeLetters(top="S", bottom="I", left="A", right="P")
    transposed = edge_letters((2, 1))  # axes swapped (napari's "transpose")
    assert transposed == EdgeLetters(top="R", bottom="L", left="A", right="P")


def test_edge_letters_follow_a_flipped_camera() -> None:
    flipped = edge_letters((1, 2), ("up", "left"))
    assert flipped == EdgeLetters(top="P", bottom="A", left="L", right="R")


def test_edge_letters_need_two_patient_axes() -> None:
    assert edge_letters((-1, 2)) is None  # a time axis displayed
    assert edge_letters((0, 1, 2)) is None  # a 3-D view


def test_window_text_names_the_stored_step_and_reads_other_limits() -> None:
    brain = CT_PRESETS["brain"]
    meta = {"dicom": {"value_unit": "HU", "display": {"window": brain.to_dict(),
                                                      "voi_lut": None}}}
    assert window_text(meta, brain.limits(), "HU") == "W 80 / L 40 HU\nBrain"
    # limits moved by the user: the LINEAR window napari shows, w = hi - lo + 1,
    # c = (lo + hi) / 2 + 0.5 (PS3.3 C.11.2.1.2.1)
    assert window_text(meta, (-160.0, 239.0), "HU") == "W 400 / L 40 HU"
    assert window_text(None, (0.0, 99.0)) == "W 100 / L 50"
    sigmoid = {"dicom": {"display": {"window": {"center": 40, "width": 400,
                                                "function": "SIGMOID", "explanation": ""},
                                     "voi_lut": None}}}
    from napari_dicom.core.render import window_to_limits

    assert window_text(sigmoid, window_to_limits(40, 400, "SIGMOID"), "HU") == (
        "W 400 / L 40 HU\nSIGMOID")


def test_slice_text() -> None:
    # world axis I (0) measures -z: a slider at I = 45 mm is z = -45 mm
    assert slice_text(11, 40, 0, 45.0) == "Slice 12 / 40\nz -45.0 mm"
    assert slice_text(0, 128, 1, -0.7) == "Slice 1 / 128\ny -0.7 mm"
    assert slice_text(0, 1, 2, -0.0) == "Slice 1 / 1\nx 0.0 mm"
    assert slice_text(3, 10, None, None) == "Slice 4 / 10"


def test_value_text_and_unit() -> None:
    assert value_text(np.int16(-1000), "HU") == "-1000 HU"
    assert value_text(12.5, "") == "12.5"
    assert value_text(np.float32(1234.5678), "BQML") == "1234.57 BQML"
    assert value_text(None, "HU") == ""
    assert value_text(np.array([1, 2, 3], dtype=np.uint8)) == "R 1, G 2, B 3"
    ds = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    assert value_unit({"value_unit": "HU", "modality": ds.Modality}) == "HU"
    assert value_unit({"value_unit": "", "header": {"Units": "BQML"}}) == "BQML"
    assert value_unit({"value_unit": "", "header": {"Modality": "MR"}}) == ""


def test_patient_lines_from_a_real_header() -> None:
    ds = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    header = {"PatientName": str(ds.PatientName), "PatientID": ds.PatientID,
              "PatientSex": ds.get("PatientSex", ""), "StudyDate": ds.StudyDate,
              "Modality": ds.Modality, "SeriesDescription": ds.get("SeriesDescription", "")}
    lines = patient_lines(header)
    name = " ".join(p for p in str(ds.PatientName).split("^") if p)
    assert lines[0] == f"{name} ({ds.PatientID})"
    date = ds.StudyDate
    assert any(line.startswith(f"{date[:4]}-{date[4:6]}-{date[6:]}") for line in lines)
    assert patient_lines({}) == []
