"""LayerStats: exact percentiles from cached per-plane histograms (no Qt)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_dicom.core import stats as stats_mod
from napari_dicom.core.phantom import HU_PADDING, ct_phantom_volume
from napari_dicom.core.render import WindowError
from napari_dicom.core.stats import LayerStats, histogram_image

RNG = np.random.default_rng(7)


def _ct_volume() -> np.ndarray:
    v = RNG.normal(0, 300, (6, 40, 50)).astype(np.int16)
    v[:, :4, :] = -3024  # padding rows
    v[:, -2:, -2:] = 3071  # burned-in label at the maximum
    return v


def test_series_percentile_equals_numpy_without_padding() -> None:
    v = _ct_volume()
    st = LayerStats(v, padding=[[-3024, -3024]])
    lo, hi = st.percentile_limits(1, 99, False, "series")
    ref = np.percentile(v[v != -3024], [1, 99])
    assert (lo, hi) == (ref[0], ref[1])
    assert st.method.startswith("exact")


def test_ignore_extremes_equals_numpy_on_values_without_min_and_max() -> None:
    v = _ct_volume()
    st = LayerStats(v)  # no padding: min is -3024, max is 3071
    lo, hi = st.percentile_limits(0.5, 99.5, True, "series")
    inner = v[(v > v.min()) & (v < v.max())]
    assert (lo, hi) == tuple(np.percentile(inner, [0.5, 99.5]))


def test_slice_scope_uses_the_plane_at_index() -> None:
    v = _ct_volume()
    v[3][v[3] != -3024] += 500
    st = LayerStats(v, padding=[[-3024, -3024]])
    lo, hi = st.percentile_limits(1, 99, False, "slice", [3])
    assert (lo, hi) == tuple(np.percentile(v[3][v[3] != -3024], [1, 99]))
    assert lo > st.percentile_limits(1, 99, False, "slice", [2])[0] + 300
    # a 4-D index: only the last leading entries count; out-of-range indices clip
    assert st.plane_number([0, 99]) == 5


def test_dask_is_exact_and_streams_by_slab(monkeypatch: pytest.MonkeyPatch) -> None:
    v = _ct_volume()
    monkeypatch.setattr(stats_mod, "SLAB_BYTES", v[0].nbytes * 2)  # 2 planes per slab
    d = da.from_array(v, chunks=(6, 40, 50))
    st = LayerStats(d, padding=[[-3024, -3024]])
    seen: list[int] = []
    for _k0, slab in st._slabs():
        seen.append(slab.shape[0])
        assert isinstance(slab, np.ndarray)
    assert seen == [2, 2, 2]
    assert st.percentile_limits(1, 99) == LayerStats(v, [[-3024, -3024]]).percentile_limits(1, 99)
    assert st.minmax() == (float(v[v != -3024].min()), 3071.0)


def test_phantom_minmax_excludes_pixel_padding() -> None:
    hu = ct_phantom_volume(n_slices=4, size=64)
    st = LayerStats(hu, padding=[[HU_PADDING, HU_PADDING]])
    lo, hi = st.minmax()
    assert hu.min() == HU_PADDING
    assert lo > HU_PADDING
    assert (lo, hi) == (float(hu[hu != HU_PADDING].min()), float(hu.max()))


def test_float_small_is_exact_and_big_lazy_is_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    f = RNG.normal(0, 1, (8, 32, 32)).astype(np.float32)
    f[0, 0, 0] = np.nan
    st = LayerStats(f)
    assert st.method == "exact"
    assert st.percentile_limits(5, 95) == tuple(np.nanpercentile(f, [5, 95]).astype(float))
    monkeypatch.setattr(stats_mod, "FLOAT_SAMPLE_MAX", 32 * 32 * 4)
    lazy = LayerStats(da.from_array(f, chunks=(1, 32, 32)))
    lo, hi = lazy.percentile_limits(5, 95)
    assert lazy.method == "sampled (one plane in 2)"
    sample = f[::2].ravel()
    assert (lo, hi) == tuple(np.nanpercentile(sample, [5, 95]).astype(float))
    # min/max is exact even for a sampled series
    assert lazy.minmax() == (float(np.nanmin(f)), float(np.nanmax(f)))


def test_histogram_counts_every_value_once() -> None:
    v = _ct_volume()
    st = LayerStats(v, padding=[[-3024, -3024]])
    edges, counts = st.histogram(64)
    assert counts.sum() == np.count_nonzero(v != -3024)
    assert edges[0] == v[v != -3024].min() and edges[-1] == 3071
    ref, _ = np.histogram(v[v != -3024], bins=edges)
    assert np.array_equal(counts, ref)


def test_refusals_have_reasons() -> None:
    st = LayerStats(_ct_volume())
    with pytest.raises(WindowError, match="low percentile"):
        st.percentile_limits(99, 1)
    with pytest.raises(WindowError, match="scope"):
        st.percentile_limits(1, 99, scope="everything")
    pad = LayerStats(np.full((2, 4, 4), -2000, np.int16), padding=[[-2000, -2000]])
    with pytest.raises(WindowError, match="no values"):
        pad.percentile_limits(1, 99)


def test_histogram_image_marks_the_window() -> None:
    edges = np.linspace(-1000, 1000, 257)
    counts = np.ones(256, np.int64)
    img = histogram_image(edges, counts, (-500.0, 500.0), width=200, height=64)
    assert img.shape == (64, 200, 3) and img.dtype == np.uint8
    ramp = img[-1, :, 0]
    assert ramp[0] == 0 and ramp[-1] == 255  # black below the window, white above
    yellow = np.all(img[10] == (255, 210, 0), axis=1)
    assert list(np.flatnonzero(yellow)) == [50, 150]


def test_a_plane_across_any_two_axes() -> None:
    """A full index with None on two axes names the plane napari shows after a dims roll
    (data[:, r, :] or data[:, :, c]), exact and cached like the default planes."""
    v = _ct_volume()
    st = LayerStats(v, padding=[[-3024, -3024]])
    for index, plane in (([None, 7, None], v[:, 7, :]), ([None, None, 9], v[:, :, 9]),
                         ([2, None, None], v[2])):
        inner = plane[plane != -3024]
        assert st.minmax("slice", index) == (float(inner.min()), float(inner.max()))
        assert st.percentile_limits(1, 99, False, "slice", index) == tuple(
            np.percentile(inner, [1, 99]))
    assert st.plane_key([2, None, None]) == st.plane_key([2]) == 2  # the default planes
    assert st.plane_key([None, 999, None]) == (None, v.shape[1] - 1, None)  # clipped
    with pytest.raises(WindowError, match="2 free axes"):
        st.plane_key([None, None, None])
