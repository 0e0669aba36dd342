"""Make napari-dicom napari's reader for DICOM folders and files, once.

napari asks which reader to use when several claim a path (napari's own reader claims
every folder and ``*.dcm``), and its "remember" box stores the exact folder path, so the
next series asks again. napari's reader preferences (File > Preferences > Plugins,
``settings.plugins.extension2reader``) map file-name patterns to a reader and accept
``*/`` for every folder: this module writes those patterns. Offered as File > IO
Utilities > "Use napari-dicom for DICOM folders and files" and as
``napari-dicom set-reader``; ``--undo`` (or the preferences dialog) takes them back.
"""

from __future__ import annotations

PLUGIN = "napari-dicom"
#: napari matches these against the real path (folders end with "/"), case-sensitively
READER_PATTERNS = ("*/", "*.dcm", "*.DCM", "*.dicom", "*.DICOM", "*.ima", "*.IMA")


def set_reader_preferences(undo: bool = False) -> list[str]:
    """Map :data:`READER_PATTERNS` to napari-dicom in napari's settings (saved to the
    user's napari settings file), or with ``undo`` remove those that map to it.

    Returns the patterns changed. Other patterns and other plugins' entries are kept.
    """
    from napari.settings import get_settings

    plugins = get_settings().plugins
    current = dict(plugins.extension2reader)
    if undo:
        changed = [p for p in READER_PATTERNS if current.get(p) == PLUGIN]
        plugins.extension2reader = {k: v for k, v in current.items() if k not in changed}
    else:
        changed = [p for p in READER_PATTERNS if current.get(p) != PLUGIN]
        plugins.extension2reader = {**current, **dict.fromkeys(READER_PATTERNS, PLUGIN)}
    return changed


def use_napari_dicom_for_dicom() -> None:
    """The File > IO Utilities command: set the preferences and say what changed."""
    from napari.utils.notifications import show_info

    set_reader_preferences()
    show_info(
        "napari-dicom now opens folders and .dcm/.dicom/.ima files without asking "
        "(File > Preferences > Plugins lists the patterns; a folder it cannot read is "
        "offered to the other readers)"
    )
