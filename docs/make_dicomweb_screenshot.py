"""Regenerate docs/dicomweb_widget.png: a study (a CT phantom and a highdicom SEG over
it) uploaded to an Orthanc started for the run, found with the DICOMweb widget, its series
listed, the study opened (the CT and the SEG's label layers).

Run under a screen: ``xvfb-run -a -s "-screen 0 1600x1000x24" python
docs/make_dicomweb_screenshot.py`` (needs the Debian packages orthanc, orthanc-dicomweb).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from _orthanc import Orthanc  # noqa: E402
from segdata import write_ct, write_seg  # noqa: E402


def wait(widget: Any, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while widget.busy and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)
    for _ in range(10):
        QApplication.processEvents()


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="napari-dicom-shot-"))
    ct = write_ct(root / "ct", n=40, size=256, series_description="Chest phantom")
    masks = np.zeros((40, 256, 256, 2), bool)
    yy, xx = np.mgrid[:256, :256]
    for k in range(8, 32):
        masks[k, ..., 0] = (yy - 128) ** 2 / 60**2 + (xx - 100) ** 2 / 40**2 < 1
        masks[k, ..., 1] = (yy - 120) ** 2 + (xx - 170) ** 2 < (14 - abs(k - 20) / 2) ** 2
    write_seg(root / "seg.dcm", ct, masks, description="AI organs")
    server = Orthanc(root / "orthanc")
    try:
        server.upload([*ct, root / "seg.dcm"])
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1500, 950)
        _, widget = viewer.window.add_plugin_dock_widget("napari-dicom", "DICOMweb")
        widget.server_url.setText(server.base)
        widget.patient_id.setText("PHANTOM")
        widget.search()
        wait(widget)
        study = widget.results.topLevelItem(0)
        study.setExpanded(True)
        wait(widget)
        widget.results.setCurrentItem(study)
        widget.open_selected()
        wait(widget)
        viewer.dims.set_current_step(0, 20)
        for _ in range(20):
            QApplication.processEvents()
        im = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).convert("RGB")
        out = HERE / "dicomweb_widget.png"
        im.save(out, optimize=True)
        if out.stat().st_size > 300_000:
            im.quantize(colors=128).save(out, optimize=True)
        print(out, im.size, out.stat().st_size, [ly.name for ly in viewer.layers],
              widget.status.text())
        viewer.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
