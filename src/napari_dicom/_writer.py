"""npe2 writer: an image layer -> 8-bit PNG (stack), exactly as the layer shows it.

Thin adapter over :func:`napari_dicom.core.export.export_stack` (the CLI and the widget's
export button go through the same function, so the files are byte-identical).

What is written is what napari shows:

* ``gray`` / ``gray_r`` (and ``grey``): a grey PNG of the LINEAR ramp of the contrast
  limits (``gray_r`` inverted), or of the layer's non-LINEAR VOI step stored in
  ``metadata["dicom"]["display"]`` (LINEAR_EXACT) while the limits still equal its limits
  (:func:`napari_dicom.core.meta.display_for_layer`).
* a curve colormap made by :mod:`napari_dicom._colormaps` (SIGMOID window or VOI LUT): the
  exact VOI step from the metadata while the contrast limits still match; after the user
  moved them, the curve colormap over the new limits, as napari then shows it (grey PNG).
* any other colormap: an RGB PNG through the colormap sampled at 256 points.
* ``rgb`` layers: an RGB PNG of the data as stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from napari.utils.colormaps import Colormap, ensure_colormap

from .core.export import Progress, export_stack
from .core.geometry import restore_layer_data
from .core.meta import (
    GREY,
    GREY_R,
    dicom_meta,
    display_for_layer,
)
from .core.render import Display

__all__ = ["colormap_palette", "export_layer", "layer_display", "write_label_png",
           "write_png"]


def _as_colormap(colormap: Any) -> Colormap:
    """A napari Colormap from what a layer or its layer-data tuple holds: a Colormap, the
    ``model_dump()`` dict napari 0.5+ puts in ``as_layer_data_tuple()``, or a name."""
    if isinstance(colormap, Colormap):
        return colormap
    if isinstance(colormap, Mapping) and "colors" in colormap:
        return Colormap(**dict(colormap))
    return ensure_colormap(colormap)


def colormap_palette(colormap: Any) -> npt.NDArray[np.uint8]:
    """The colormap sampled at 256 evenly spaced points of ``[0, 1]``: ``(256, 3)`` uint8
    (rounded to nearest; alpha dropped)."""
    rgba = np.asarray(_as_colormap(colormap).map(np.linspace(0.0, 1.0, 256)), np.float64)
    return np.clip(np.floor(rgba[:, :3] * 255.0 + 0.5), 0, 255).astype(np.uint8)


def layer_display(
    metadata: Mapping[str, Any] | None,
    contrast_limits: Any,
    gamma: float,
    colormap: Any,
) -> Display:
    """The :class:`~napari_dicom.core.render.Display` that reproduces what the layer shows
    (the rule lives in :func:`napari_dicom.core.meta.display_for_layer`)."""
    cmap = _as_colormap(colormap)
    name = str(cmap.name)
    limits = (float(contrast_limits[0]), float(contrast_limits[1]))
    palette = None if name.lower() in GREY + GREY_R else colormap_palette(cmap)
    return display_for_layer(metadata, limits, float(gamma), name, palette)


def _export(
    path: str,
    data: Any,
    attributes: Mapping[str, Any],
    progress: Progress | None = None,
) -> list[str]:
    if attributes.get("multiscale") or isinstance(data, (list, tuple)):
        data = data[0]  # full resolution
    rgb = bool(attributes.get("rgb", False))
    metadata = attributes.get("metadata") or {}
    # planes as the files hold them (the layer may show them transposed into patient space)
    data = restore_layer_data(data, dicom_meta(metadata).get("placement"), rgb)
    display = None
    if not rgb:
        display = layer_display(
            metadata,
            attributes["contrast_limits"],
            attributes.get("gamma", 1.0),
            attributes.get("colormap", "gray"),
        )
    paths = export_stack(
        data, display, path, meta=dicom_meta(metadata), rgb=rgb, progress=progress
    )
    return [str(p) for p in paths]


def write_png(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: write an image layer as 8-bit PNG(s), as displayed.

    A 2-D layer gives ``path``; an N-D layer gives the folder ``path`` without ``.png``,
    holding one PNG per plane and ``manifest.csv``. Returns every path written.
    """
    return _export(path, data, attributes)


def export_layer(layer: Any, path: str, progress: Progress | None = None) -> list[str]:
    """Export a live napari image layer (the widget's "Export PNG stack..." button)."""
    attributes = {
        "multiscale": layer.multiscale,
        "rgb": layer.rgb,
        "metadata": layer.metadata,
        "contrast_limits": layer.contrast_limits,
        "gamma": layer.gamma,
        "colormap": layer.colormap,
    }
    return _export(path, layer.data, attributes, progress)


def write_label_png(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: a Labels layer as label-map PNG(s), values as stored.

    8-bit grey PNGs, or 16-bit when a value exceeds 255; planes in the order and with
    the names of the image's PNG stack (the label layer lies on its image's grid and is
    put back in acquisition order like the image), ``manifest.csv`` (planes) and
    ``labels.csv`` (value -> segment / ROI name, colour, source file): see
    :mod:`napari_dicom.core.masks`. A layer painted in napari (no DICOM metadata) gets
    one row per value it holds.
    """
    import numpy as np

    from .core.geometry import restore_layer_data
    from .core.labels import Segment
    from .core.masks import export_label_stack
    from .core.objects import segments_from_metadata

    if attributes.get("multiscale") or isinstance(data, (list, tuple)):
        data = data[0]
    meta = (attributes.get("metadata") or {}).get("segmentation") or {}
    arr = np.asarray(restore_layer_data(data, meta.get("placement")))
    segments = segments_from_metadata(meta)
    known = {s.value for s in segments}
    extra = [int(v) for v in np.unique(arr) if v != 0 and int(v) not in known]
    segments += [Segment(v, f"label {v}") for v in extra]
    paths = export_label_stack(arr, path, segments, planes=meta.get("planes"),
                               source=str(meta.get("source", "")),
                               object_type=str(meta.get("object_type", "")))
    return [str(p) for p in paths]
