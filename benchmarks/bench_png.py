"""PNG encoding on real images: size and time of ``core.export.encode_png`` against
other settings and Pillow's default, same run.

Images: the first plane of every series in pydicom's and pydicom-data's test files that
loads (grey ones rendered with their default display: stored window, VOI LUT or
min-max; colour as stored), at least 64 x 64 pixels. Encoders, each on every image:

* ``encode_png``: what the export writes (filter Sub on every row, libdeflate level 1);
* ``none, level 2``: no filter, libdeflate level 2 (the export's earlier setting);
* ``none, level 1``: no filter, libdeflate level 1;
* Pillow: ``Image.save(format="png")`` with its defaults (zlib level 6, adaptive filter).

Prints total bytes and time per encoder, best of ``--repeat`` timings, and the
ratios to ``encode_png``.

    python benchmarks/bench_png.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image
from pydicom.data import get_testdata_files

from napari_dicom.core.export import encode_png
from napari_dicom.core.pixels import DicomLoadError, default_display, load_series
from napari_dicom.core.render import render_uint8
from napari_dicom.core.scan import scan


def images() -> list[tuple[str, np.ndarray]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = get_testdata_files("*.dcm")
        found = scan([Path(f) for f in files])
    out = []
    for s in found.series:
        try:
            data = load_series(s, lazy=False)
            if s.rgb:
                img = np.asarray(data)
                if img.dtype != np.uint8:
                    continue
            else:
                display, _ = default_display(s, data)
                img = render_uint8(np.asarray(data), display)
        except (DicomLoadError, ValueError):
            continue
        while img.ndim > (3 if img.shape[-1] in (3, 4) and s.rgb else 2):
            img = img[0]
        if img.shape[0] >= 64 and img.shape[1] >= 64:
            out.append((Path(s.planes[0].path).name, np.ascontiguousarray(img)))
    return out


def _raw(img: np.ndarray, sub: bool) -> np.ndarray:
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    row = img.reshape(h, w * c)
    raw = np.empty((h, w * c + 1), np.uint8)
    raw[:, 0] = 1 if sub else 0
    if sub:
        raw[:, 1 : 1 + c] = row[:, :c]
        np.subtract(row[:, c:], row[:, :-c], out=raw[:, 1 + c :])
    else:
        raw[:, 1:] = row
    return raw


def _pillow(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="png")
    return buf.getvalue()


ENCODERS: dict[str, Callable[[np.ndarray], bytes | bytearray]] = {
    "encode_png (Sub, level 1)": encode_png,
    "none, level 2": lambda img: imagecodecs.deflate_encode(_raw(img, False), level=2),
    "none, level 1": lambda img: imagecodecs.deflate_encode(_raw(img, False), level=1),
    "Pillow default": _pillow,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # test files the loader reports as damaged are left out
    imgs = images()
    pixels = sum(img.size for _, img in imgs)
    print(f"{len(imgs)} images, {pixels / 1e6:.1f} M samples (grey and colour)")
    sizes: dict[str, int] = {}
    times: dict[str, float] = {}
    for name, enc in ENCODERS.items():
        sizes[name] = sum(len(enc(img)) for _, img in imgs)
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for _, img in imgs:
                enc(img)
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    ref = next(iter(ENCODERS))
    print(f"{'encoder':28s} {'bytes':>10s} {'size':>6s} {'time':>9s} {'time':>6s}")
    for name in ENCODERS:
        print(f"{name:28s} {sizes[name]:10d} {sizes[name] / sizes[ref]:5.2f}x "
              f"{times[name] * 1e3:7.1f} ms {times[name] / times[ref]:5.2f}x")
    print(f"(ratios against {ref})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
