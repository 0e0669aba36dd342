"""Named CT windows (presets) and the windows stored in a file, as :class:`Window` objects.

Viewers disagree on the numbers; each preset says where it was taken from. Values are
centre (level) / width in Hounsfield units, VOI LUT Function LINEAR (PS3.3 C.11.2.1.2.1).

Sources
-------
* OHIF Viewer, ``extensions/cornerstone/src/components/WindowLevelActionMenu/
  defaultWindowLevelPresets.ts`` (OHIF/Viewers, commit 1cd0312): CT "Soft tissue" W 400 L 40,
  "Lung" W 1500 L -600, "Liver" W 150 L 90, "Bone" W 2500 L 480, "Brain" W 80 L 40.
* Radiopaedia, "Windowing (CT)" (https://radiopaedia.org/articles/windowing-ct), "typical
  window width and level values": brain W 80 L 40; subdural W 130-300 L 50-100; stroke
  W 8 L 32 or W 40 L 40; lungs W 1500 L -600; mediastinum W 350 L 50; abdomen soft tissue
  W 400 L 50; liver W 150 L 30; spine bone W 1800 L 400.
* Turner & Holdsworth, "CT stroke window settings: an unfortunate misleading misnomer?",
  Br J Radiol 2011;84:1061-1066 (PMC3473839): stroke window W 40 L 40.

Where OHIF and Radiopaedia differ (liver, bone, abdomen level) OHIF's value is used, since
it is what a user of a web DICOM viewer sees by default; the other value is quoted beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .meta import file_windows
from .render import Window, WindowError

#: CT presets (HU). Keys are lower case; the Window's explanation is the display label.
CT_PRESETS: dict[str, Window] = {
    # OHIF "Brain" W 80 L 40; Radiopaedia brain W:80 L:40 (they agree)
    "brain": Window(40, 80, "LINEAR", "Brain"),
    # Radiopaedia subdural W:130-300 L:50-100 (a range); W 200 L 75 sits inside it
    # (level at the middle of the range). OHIF has no subdural preset.
    "subdural": Window(75, 200, "LINEAR", "Subdural"),
    # Radiopaedia stroke W:40 L:40 (its alternative W:8 L:32 is the MGH soft-copy start
    # point, Radiology 1999;213:150); Turner & Holdsworth BJR 2011 use W 40 L 40.
    "stroke": Window(40, 40, "LINEAR", "Stroke"),
    # OHIF "Lung" W 1500 L -600; Radiopaedia lungs W:1500 L:-600 (they agree)
    "lung": Window(-600, 1500, "LINEAR", "Lung"),
    # Radiopaedia mediastinum W:350 L:50. OHIF has no mediastinum preset.
    "mediastinum": Window(50, 350, "LINEAR", "Mediastinum"),
    # OHIF "Soft tissue" W 400 L 40; Radiopaedia abdomen soft tissues W:400 L:50
    "abdomen": Window(40, 400, "LINEAR", "Abdomen (soft tissue)"),
    # OHIF "Liver" W 150 L 90 (portal-venous phase); Radiopaedia liver W:150 L:30
    "liver": Window(90, 150, "LINEAR", "Liver"),
    # OHIF "Bone" W 2500 L 480; Radiopaedia spine bone W:1800 L:400
    "bone": Window(480, 2500, "LINEAR", "Bone"),
}

#: other spellings accepted by :func:`get_preset`
_ALIASES = {
    "soft tissue": "abdomen",
    "soft_tissue": "abdomen",
    "soft-tissue": "abdomen",
    "softtissue": "abdomen",
    "lungs": "lung",
    "chest": "mediastinum",
}


def preset_names() -> list[str]:
    """Names of the CT presets, in display order."""
    return list(CT_PRESETS)


def get_preset(name: str) -> Window:
    """The CT preset called ``name`` (case-insensitive; ``soft tissue`` means ``abdomen``).

    Raises
    ------
    WindowError
        When there is no such preset; the message lists the valid names.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return CT_PRESETS[key]
    except KeyError:
        raise WindowError(
            f"unknown window preset {name!r}: expected one of {', '.join(CT_PRESETS)}"
        ) from None


def file_presets(meta: Mapping[str, Any]) -> list[tuple[str, Window]]:
    """The windows stored in the file (Window Center / Width, C.11.2.1.2), labelled.

    A window with a Window Center & Width Explanation (0028,1055) is labelled with it,
    e.g. ``"SOFT TISSUE (file)"``; one without is labelled ``"Window 2 (file)"`` (1-based).
    Duplicated labels get their number appended so every label is unique.
    """
    out: list[tuple[str, Window]] = []
    seen: set[str] = set()
    for i, w in enumerate(file_windows(meta), start=1):
        base = w.explanation.strip() or f"Window {i}"
        label = f"{base} (file)"
        if label in seen:
            label = f"{base} #{i} (file)"
        seen.add(label)
        out.append((label, w))
    return out


#: how many entries of the preset list get a number key (1..9; 0 is "reset to file default")
KEYED_PRESETS = 9


def numbered(entries: Sequence[str]) -> dict[int, str]:
    """Number key -> entry for the first :data:`KEYED_PRESETS` entries of a preset list
    (in the order the list shows them: the file's windows, CT presets, VOI LUTs, min-max),
    as PACS viewers put their first presets on the number keys."""
    return {i: e for i, e in enumerate(entries[:KEYED_PRESETS], start=1)}


def is_ct_like(meta: Mapping[str, Any]) -> bool:
    """Whether CT presets make sense: the values are Hounsfield units (modality CT or a
    rescale type of HU). A radiologist does not expect HU windows on MR or CR values."""
    modality = str(meta.get("modality", "") or "").strip().upper()
    unit = str(meta.get("value_unit", "") or "").strip().upper()
    return modality == "CT" or unit == "HU"
