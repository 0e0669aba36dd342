"""Regenerate the README screenshots: the bundled CT phantom opened through the reader,
the Window / Level widget docked, windowed for lung and for bone.

Run under a screen (or ``xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_dicom._widget import WindowLevelWidget
from napari_dicom.core.phantom import write_ct_phantom

HERE = Path(__file__).resolve().parent


def main() -> None:
    folder = Path(tempfile.mkdtemp()) / "ct"
    write_ct_phantom(folder, n_slices=40, size=256)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    widget = WindowLevelWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Window / Level", area="right")
    viewer.open(str(folder), plugin="napari-dicom")
    viewer.dims.set_current_step(0, 20)
    for name, preset in [("lung", "LUNG (file)"), ("bone", "CT Bone: W 2500 / L 480")]:
        widget._preset.value = preset
        for _ in range(5):
            QApplication.processEvents()
        im = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).convert("RGB")
        out = HERE / f"widget_{name}.png"
        im.save(out, optimize=True)
        if out.stat().st_size > 300_000:
            im.quantize(colors=128).save(out, optimize=True)
        print(out, im.size, out.stat().st_size)
    viewer.close()


if __name__ == "__main__":
    main()
