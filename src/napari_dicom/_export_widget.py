"""File > IO Utilities > "Export PNG (as displayed)": a small form over the PNG writer.

napari's File > Save Selected Layers offers the writer too, but only by its file
extension; this entry names the plugin's export in napari's ``napari/file/io_utilities``
menu (where napari puts plugin file tools) and picks the layer explicitly. It holds no
logic: it saves through napari's own door, ``napari.save_layers(..., plugin=
"napari-dicom")``, which runs the npe2 writer :func:`napari_dicom._writer.write_png`
(so the files are the ones File > Save and the CLI write).
"""

# no ``from __future__ import annotations``: magicgui resolves the annotations

from pathlib import Path

import napari
import napari.layers
from magicgui import magic_factory
from napari.utils.notifications import show_info, show_warning


@magic_factory(
    call_button="Export PNG",
    path={"mode": "w", "filter": "*.png", "label": "PNG file (a folder for a stack)"},
)
def export_png(layer: napari.layers.Image, path: Path = Path("export.png")) -> list[str]:
    """Write ``layer`` as 8-bit PNG(s) exactly as displayed; a stack becomes a folder
    named like ``path`` without ``.png`` holding one PNG per plane and manifest.csv."""
    if layer is None:
        show_warning("napari-dicom export: no image layer to export")
        return []
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    written = napari.save_layers(str(path), [layer], plugin="napari-dicom")
    if written:
        show_info(f"napari-dicom: exported {layer.name!r} to {len(written)} file(s) at {path}")
    return [str(p) for p in written]
