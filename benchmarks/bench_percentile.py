"""Percentile stretch on a 300 x 512 x 512 int16 volume: LayerStats against np.percentile.

Prints the time of the first call (builds the per-plane histogram cache) and of cached
calls, for the current-slice and whole-series scopes, next to ``np.percentile`` on the same
data measured in the same run, and checks that the limits are equal.

Run: ``python benchmarks/bench_percentile.py [n_slices]``
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from napari_dicom.core.stats import LayerStats


def _time(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(n_slices: int = 300) -> None:
    rng = np.random.default_rng(0)
    shape = (n_slices, 512, 512)
    # CT-like: HU values, air outside a disc, padding (-3024) in the corners
    vol = rng.normal(40, 350, shape).astype(np.int16)
    yy, xx = np.mgrid[:512, :512]
    outside = (yy - 256) ** 2 + (xx - 256) ** 2 > 250**2
    vol[:, outside] = -3024
    pad = [(-3024.0, -3024.0)]
    mid = n_slices // 2
    print(f"volume {shape} int16, {vol.nbytes / 2**20:.0f} MiB, padding on "
          f"{outside.mean():.0%} of each plane")

    t_np_series, ref_series = _time(lambda: np.percentile(vol[vol != -3024], [1, 99]))
    t_np_slice, ref_slice = _time(
        lambda: np.percentile(vol[mid][vol[mid] != -3024], [1, 99]), repeat=3
    )

    from napari_dicom.core.render import IntHistogram

    t_hist, _ = _time(lambda: IntHistogram.of(vol, pad))
    st = LayerStats(vol, pad)
    t_first_slice, got_slice = _time(lambda: st.percentile_limits(1, 99, False, "slice", [mid]))
    t_cached_slice, _ = _time(
        lambda: st.percentile_limits(1, 99, False, "slice", [mid]), repeat=5
    )
    st2 = LayerStats(vol, pad)
    t_first_series, got_series = _time(lambda: st2.percentile_limits(1, 99, False, "series"))
    t_cached_series, _ = _time(lambda: st2.percentile_limits(1, 99, False, "series"), repeat=5)
    t_ignore, _ = _time(lambda: st2.percentile_limits(1, 99, True, "series"), repeat=5)

    assert got_series == (float(ref_series[0]), float(ref_series[1])), (got_series, ref_series)
    assert got_slice == (float(ref_slice[0]), float(ref_slice[1])), (got_slice, ref_slice)

    rows = [
        ("slice, first call", t_first_slice, t_np_slice),
        ("slice, cached", t_cached_slice, t_np_slice),
        ("series, first call (builds cache)", t_first_series, t_np_series),
        ("series, cached", t_cached_series, t_np_series),
        ("series, cached, ignore min/max", t_ignore, t_np_series),
    ]
    print(f"{'case':38s} {'LayerStats':>12s} {'np.percentile':>14s} {'speed-up':>9s}")
    for name, t, base in rows:
        print(f"{name:38s} {t * 1e3:10.2f} ms {base * 1e3:12.1f} ms {base / t:8.1f}x")
    print(f"core.render.IntHistogram.of(volume) alone: {t_hist * 1e3:.1f} ms")
    print(f"limits series {got_series}, slice {got_slice} (equal to np.percentile)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
