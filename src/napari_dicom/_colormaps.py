"""napari colormaps for VOI steps that napari's linear contrast limits cannot show alone.

A SIGMOID window (PS3.3 C.11.2.1.3.1) or a VOI LUT Sequence (C.11.2.1.1) is shown exactly
by a grey colormap whose curve is the VOI function, over the contrast limits of
``core.meta.step_limits``. The curve itself comes from ``core.render.display_curve``.
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import Colormap

from .core.adjust import showable_limits
from .core.meta import curve_colormap_name, needs_curve, step_limits
from .core.render import Display, display_curve


def curve_colormap(display: Display, inverted: bool, n: int = 256) -> Colormap:
    """A grey napari Colormap that follows ``display``'s VOI curve (reversed if inverted)."""
    _, ys = display_curve(display, n)
    if inverted:
        ys = 1.0 - ys
    colors = np.stack([ys, ys, ys, np.ones_like(ys)], axis=1)
    controls = np.linspace(0.0, 1.0, n)
    return Colormap(
        colors=colors,
        controls=controls,
        name=curve_colormap_name(display, inverted),
        interpolation="linear",
    )


def layer_display_kwargs(display: Display, inverted: bool) -> dict[str, object]:
    """``contrast_limits`` and ``colormap`` for an image layer that shows ``display``.

    The limits are never equal (napari refuses those): a LINEAR window of width 1 is shown
    through :func:`core.adjust.showable_limits`."""
    if needs_curve(display):
        return {
            "contrast_limits": list(showable_limits(*step_limits(display))),
            "colormap": curve_colormap(display, inverted),
        }
    return {
        "contrast_limits": list(showable_limits(*display.window.limits())),
        "colormap": "gray_r" if inverted else "gray",
    }
