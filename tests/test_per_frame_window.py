"""Per-frame windows of an Enhanced MR in napari: what the layer shows, what it says,
and what File > Save writes (issue 10, item 6).

napari has one contrast range per layer. The layer shows the first frame's stored window
on every plane and says so in a notification (and in ``metadata["dicom"]``); the PNG
export of that display applies each frame's own window (PS3.3 C.7.6.16.2.10), as the
CLI does. Run under ``xvfb-run -a python -m pytest tests/test_per_frame_window.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import notification_manager
from PIL import Image

from core.test_fidelity import (
    FRAME_WINDOWS,
    assert_frames_windowed_each,
    enhanced_frames,
    linear_window_8bit,
    write_enhanced_mr,
)
from napari_dicom.core.render import Window


def test_layer_of_an_enhanced_mr_with_per_frame_windows(make_napari_viewer: Any,
                                                       tmp_path: Path) -> None:
    frames = enhanced_frames()
    path = tmp_path / "emr.dcm"
    write_enhanced_mr(path, frames)
    viewer = make_napari_viewer()
    notification_manager.records.clear()
    (layer,) = viewer.open(str(path), plugin="napari-dicom")

    # the first frame's stored window, on every plane
    assert tuple(layer.contrast_limits) == Window(*FRAME_WINDOWS[0]).limits()
    windows = layer.metadata["dicom"]["plane_windows"]
    assert [(w["center"], w["width"]) for w in windows] == FRAME_WINDOWS
    msgs = [str(r.message) for r in notification_manager.records]
    said = [m for m in msgs if "carry their own stored windows" in m]
    assert len(said) == 1
    assert "W 400 to 2784 / L 600 to 2400" in said[0]
    assert "shows the first one's (W 2784 / L 1531)" in said[0]

    # File > Save of that display: each frame with its own window
    viewer.layers.selection = {layer}
    written = viewer.layers.save(str(tmp_path / "saved"), selected=True, plugin="napari-dicom")
    pngs = [np.asarray(Image.open(p)) for p in sorted(written) if p.endswith(".png")]
    assert_frames_windowed_each(pngs, frames)

    # after the user sets a window, that window is what every saved plane shows
    layer.contrast_limits = (0, 4095)
    written = viewer.layers.save(str(tmp_path / "mine"), selected=True, plugin="napari-dicom")
    pngs = [np.asarray(Image.open(p)) for p in sorted(written) if p.endswith(".png")]
    for k in range(4):
        want = linear_window_8bit(frames[k], 2048.5, 4096)
        assert np.abs(pngs[k].astype(int) - want).max() <= 1
