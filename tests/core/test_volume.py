"""core.volume on series written with pydicom: dtype from the decoded values, widening,
each plane decoded once, background load, memory budget."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

from napari_dicom.core import pixels, volume
from napari_dicom.core.phantom import ct_phantom_volume, write_ct_phantom
from napari_dicom.core.scan import scan
from napari_dicom.core.series import Series
from napari_dicom.core.stats import LayerStats, known_histogram
from napari_dicom.core.volume import SeriesVolume, load_now, open_series

N, SIZE = 8, 48
SYNTAXES = {"raw": ExplicitVRLittleEndian, "jpegll": JPEGLosslessSV1}


def one_series(folder: Path) -> Series:
    result = scan([folder])
    assert len(result.series) == 1, result.summary()
    return result.series[0]


def expected_hu(style: str) -> np.ndarray:
    """HU as written: the phantom, floored at -1024 where the stored values are unsigned."""
    hu = ct_phantom_volume(N, SIZE).astype(np.int32)
    return hu if style == "ge" else np.maximum(hu, -1024)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    made: dict[tuple[str, str], Path] = {}

    def get(style: str, syntax: str = "raw") -> Path:
        if (style, syntax) not in made:
            folder = tmp_path_factory.mktemp(f"{style}_{syntax}")
            write_ct_phantom(folder, n_slices=N, size=SIZE, header_style=style,
                             transfer_syntax=SYNTAXES[syntax],
                             shuffle_instance_numbers=False)
            made[style, syntax] = folder
        return made[style, syntax]

    return get


@pytest.mark.parametrize("syntax", ["raw", "jpegll"])
@pytest.mark.parametrize("style", ["ge", "siemens", "philips"])
def test_int16_from_the_decoded_values(written: Callable[[str, str], Path], style: str,
                                       syntax: str) -> None:
    s = one_series(written(style, syntax))
    header = pixels.value_dtype(s)
    # GE (signed 16 bits) and Philips-style (unsigned 16 bits) allow values past int16 by
    # their header; Siemens' 12 bits do not
    assert header == (np.int16 if style == "siemens" else np.int32)
    ref = expected_hu(style)
    eager = load_now(s)
    vol = SeriesVolume(one_series(written(style, syntax)), background=False)
    assert eager.dtype == vol.dtype == np.int16
    np.testing.assert_array_equal(eager, ref)
    np.testing.assert_array_equal(vol[3], ref[3])
    np.testing.assert_array_equal(np.asarray(vol), ref)
    assert vol.result().dtype == np.int16


def _with_wide_plane(folder: Path, k: int) -> np.ndarray:
    """Store -32768 (HU -33792, below int16) in one pixel of slice ``k`` (GE style)."""
    ref = expected_hu("ge")
    s = one_series(folder)
    path = s.planes[k].path
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.copy()
    stored[5, 7] = -32768
    ds.PixelData = stored.tobytes()
    ds.save_as(path)
    ref[k, 5, 7] = -32768 - 1024
    return ref


def test_one_plane_past_int16_widens_never_wraps(tmp_path: Path) -> None:
    write_ct_phantom(tmp_path, n_slices=N, size=SIZE, shuffle_instance_numbers=False)
    ref = _with_wide_plane(tmp_path, 6)
    eager = load_now(one_series(tmp_path), jobs=2)
    assert eager.dtype == np.int32
    np.testing.assert_array_equal(eager, ref)
    # on demand: planes 0-2 land as int16, plane 6 widens the half-filled array
    vol = SeriesVolume(one_series(tmp_path), background=False)
    first = vol[0:3]
    assert first.dtype == np.int16 and vol.dtype == np.int16
    assert vol[6].dtype == np.int32 and vol.dtype == np.int32
    assert vol[6][5, 7] == -33792
    np.testing.assert_array_equal(first, ref[0:3])
    full = vol.result()
    assert full.dtype == np.int32
    np.testing.assert_array_equal(full, ref)


def test_background_load_equals_lazy_reads(written: Callable[[str, str], Path]) -> None:
    s = one_series(written("ge", "jpegll"))
    vol = SeriesVolume(s, jobs=2)
    lazy = np.stack([vol[k] for k in range(N)])  # while the background threads run
    got: list[np.ndarray] = []
    called = threading.Event()
    vol.when_loaded(lambda arr: (got.append(arr), called.set()))
    full = vol.result(timeout=60)
    assert vol.loaded
    assert called.wait(60) and got[0] is full  # at once, the histogram summed after
    assert known_histogram(full) is not None
    np.testing.assert_array_equal(full, lazy)
    np.testing.assert_array_equal(full, expected_hu("ge"))


@pytest.mark.parametrize("syntax", ["raw", "jpegll"])
def test_each_plane_decoded_once(written: Callable[[str, str], Path], syntax: str,
                                 decodes: Counter[tuple[str, Any, Any]]) -> None:
    s = one_series(written("ge", syntax))
    vol = SeriesVolume(s, jobs=2)
    for k in (N // 2, 0, N - 1, N // 2):  # what napari shows, while the threads decode
        vol[k]
    full = vol.result(timeout=60)
    # whole-series statistics, 3-D and np.asarray after the load read no file again
    stats = LayerStats(full, padding=[[-3024, -3024]])
    lo, hi = stats.percentile_limits(1, 99, scope="series")
    np.asarray(vol)
    vol[:, 10:20, 10:20]
    fast = pixels._fast_kind(s)
    assert fast is not None
    by_fast = Counter({key[:2]: n for key, n in decodes.items() if key[2] == fast})
    assert sorted(by_fast) == sorted((p.path, p.frame) for p in s.planes)
    assert set(by_fast.values()) == {1}
    # besides: the check of the fast decode against a second decoder, plane 0 once
    others = {key: n for key, n in decodes.items() if key[2] != fast}
    assert set(others) <= {(s.planes[0].path, None, None)} and sum(others.values()) <= 1
    values = full[full != -3024]
    assert (lo, hi) == (np.percentile(values, 1), np.percentile(values, 99))


def test_series_histogram_kept_with_the_array(written: Callable[[str, str], Path]) -> None:
    vol = SeriesVolume(one_series(written("siemens")), jobs=2)
    full = vol.result(timeout=60)
    h = known_histogram(full)  # summed by the background thread once the volume loaded
    assert h is not None
    values, counts = np.unique(full, return_counts=True)
    np.testing.assert_array_equal(h.counts[values - h.offset], counts)
    assert h.total == full.size == h.counts.sum()
    got = LayerStats(full).series_histogram()
    assert got.offset == h.offset and np.array_equal(got.counts, h.counts)
    assert known_histogram(full.copy()) is None  # not what the loader filled


def test_over_budget_stays_lazy_with_a_cache(written: Callable[[str, str], Path],
                                             decodes: Counter[tuple[str, Any, Any]]) -> None:
    s = one_series(written("philips"))
    plane_bytes = SIZE * SIZE * 2
    budget = N * plane_bytes - 1  # one byte short of the int16 array
    data = open_series(s, budget=budget)
    assert isinstance(data, SeriesVolume) and not data.in_memory
    assert data.dtype == np.int16
    ref = expected_hu("philips")
    np.testing.assert_array_equal(data[2], ref[2])
    np.testing.assert_array_equal(data[2], ref[2])  # from the cache
    np.testing.assert_array_equal(data[1:4, :5], ref[1:4, :5])
    with pytest.raises(MemoryError, match="stays lazy"):
        data.result()
    fast = pixels._fast_kind(s)
    assert decodes[s.planes[2].path, None, fast] == 1
    # the whole-series histogram decodes each plane not seen yet, once
    h = LayerStats(data).series_histogram()
    assert h.total == ref.size
    assert all(decodes[p.path, None, fast] == 1 for p in s.planes)
    # in budget: the same series loads in memory
    assert isinstance(open_series(s, budget=N * plane_bytes, background_from=0),
                      SeriesVolume)
    assert isinstance(open_series(s, budget=N * plane_bytes), np.ndarray)


def test_lazy_choice_reads_the_memory_available(written: Callable[[str, str], Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    s = one_series(written("ge"))
    assert volume.memory_available() > 0
    monkeypatch.setattr(volume, "memory_available", lambda: 2 * N * SIZE * SIZE * 2)
    assert isinstance(open_series(s), np.ndarray)  # needs half of what is available
    monkeypatch.setattr(volume, "memory_available", lambda: N * SIZE * SIZE * 2)
    lazy = open_series(s)
    assert isinstance(lazy, SeriesVolume) and not lazy.in_memory


@pytest.mark.parametrize("in_memory", [True, False])
def test_views_index_as_numpy(written: Callable[[str, str], Path], in_memory: bool) -> None:
    """The patient-space placement's ``data[np.newaxis]`` and ``transpose`` stay lazy and
    index as the same numpy views do."""
    s = one_series(written("ge"))
    ref = expected_hu("ge")
    budget = None if in_memory else 1
    vol = SeriesVolume(s, budget=budget, background=False)
    view = vol.transpose(2, 0, 1)
    assert view.shape == ref.transpose(2, 0, 1).shape
    for key in [5, (slice(2, 9), 3), (Ellipsis, 4), (1, slice(None), slice(0, 6)),
                (slice(None), 2, slice(None, None, 2))]:
        np.testing.assert_array_equal(view[key], ref.transpose(2, 0, 1)[key])
    back = view.transpose(1, 2, 0)
    np.testing.assert_array_equal(back[3, 4:9], ref[3, 4:9])
    slab = vol[np.newaxis]
    assert slab.shape == (1, *ref.shape)
    np.testing.assert_array_equal(slab[0, 2], ref[2])
    np.testing.assert_array_equal(slab.transpose(0, 3, 1, 2)[:, 7], ref[None].transpose(
        0, 3, 1, 2)[:, 7])
    if in_memory:
        full = vol.finished(view)
        np.testing.assert_array_equal(full, ref.transpose(2, 0, 1))
        assert LayerStats(full).series_histogram().total == ref.size


def test_histogram_behind_sums_once_and_keeps_it(written: Callable[[str, str], Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    arr = np.asarray(load_now(one_series(written("ge"))))
    assert volume.histogram_behind(arr) is None  # under BEHIND_BYTES: counted where needed
    monkeypatch.setattr(volume, "BEHIND_BYTES", 1)
    fut = volume.histogram_behind(arr)
    assert fut is not None
    h = fut.result(timeout=30)
    ref = np.unique(arr, return_counts=True)
    assert h.offset == ref[0][0] and h.total == arr.size
    np.testing.assert_array_equal(h.counts[ref[0] - h.offset], ref[1])
    assert known_histogram(arr) is h
    assert volume.histogram_behind(arr) is None  # kept: not summed again
    assert volume.histogram_behind(arr.astype(np.float32)) is None  # integers only
    assert volume.histogram_behind(arr[0].ravel()) is None  # 1-D: no planes
