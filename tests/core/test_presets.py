"""CT presets and stored-window labels (no Qt)."""

from __future__ import annotations

import pytest

from napari_dicom.core.presets import (
    CT_PRESETS,
    KEYED_PRESETS,
    file_presets,
    get_preset,
    is_ct_like,
    numbered,
    preset_names,
)
from napari_dicom.core.render import Window, WindowError, window_to_limits


def test_preset_names_cover_the_usual_ct_windows() -> None:
    assert preset_names() == [
        "brain", "subdural", "stroke", "lung", "mediastinum", "abdomen", "liver", "bone"
    ]


@pytest.mark.parametrize(
    ("name", "center", "width"),
    [
        ("brain", 40, 80),  # OHIF and Radiopaedia agree
        ("lung", -600, 1500),  # OHIF and Radiopaedia agree
        ("bone", 480, 2500),  # OHIF
        ("liver", 90, 150),  # OHIF
        ("abdomen", 40, 400),  # OHIF "Soft tissue"
        ("mediastinum", 50, 350),  # Radiopaedia
        ("stroke", 40, 40),  # Radiopaedia / Turner & Holdsworth
    ],
)
def test_preset_values(name: str, center: float, width: float) -> None:
    w = get_preset(name)
    assert (w.center, w.width, w.function) == (center, width, "LINEAR")


def test_lung_limits_are_the_dicom_linear_ramp() -> None:
    # PS3.3 C.11.2.1.2.1: black at <= c - 0.5 - (w-1)/2, white above c - 0.5 + (w-1)/2
    assert get_preset("lung").limits() == (-1350.0, 149.0)
    assert window_to_limits(480, 2500) == (-770.0, 1729.0)


def test_get_preset_is_case_insensitive_and_knows_soft_tissue() -> None:
    assert get_preset("  LuNg ") is CT_PRESETS["lung"]
    assert get_preset("Soft Tissue") is CT_PRESETS["abdomen"]


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(WindowError, match=r"unknown window preset 'lungg'.*brain.*bone"):
        get_preset("lungg")


def test_every_preset_is_labelled() -> None:
    for w in CT_PRESETS.values():
        assert w.explanation
        assert w.label().startswith("W ")


def test_file_presets_use_explanation_or_number() -> None:
    meta = {
        "windows": [
            Window(40, 400, "LINEAR", "SOFT TISSUE").to_dict(),
            Window(-600, 1500, "LINEAR", "").to_dict(),
            Window(300, 1500, "SIGMOID", "SOFT TISSUE").to_dict(),
        ]
    }
    got = file_presets(meta)
    assert [label for label, _ in got] == [
        "SOFT TISSUE (file)",
        "Window 2 (file)",
        "SOFT TISSUE #3 (file)",
    ]
    assert got[1][1].center == -600 and got[1][1].width == 1500
    assert got[2][1].function == "SIGMOID"


def test_file_presets_empty_for_non_dicom() -> None:
    assert file_presets({}) == []


def test_ct_like() -> None:
    assert is_ct_like({"modality": "CT"})
    assert is_ct_like({"modality": "OT", "value_unit": "HU"})
    assert not is_ct_like({"modality": "MR"})
    assert not is_ct_like({})


def test_number_keys_go_to_the_first_nine_entries_in_list_order() -> None:
    entries = [f"entry {i}" for i in range(12)]
    keyed = numbered(entries)
    assert list(keyed) == list(range(1, KEYED_PRESETS + 1)) and KEYED_PRESETS == 9
    assert keyed[1] == "entry 0" and keyed[9] == "entry 8"
    assert numbered(["only"]) == {1: "only"}
