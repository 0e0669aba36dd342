"""core.counting: the compiled counting loop gives exactly np.bincount's counts, the
exact histograms built on it give np.percentile's values, and without numba (or before
it is loaded) everything still counts, with np.bincount."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from napari_dicom.core import counting
from napari_dicom.core.render import IntHistogram
from napari_dicom.core.volume import histogram_of


def _ct_volume() -> np.ndarray:
    """A 40-slice stack of CT_small's signed values (negative HU included) shifted per
    slice, so the volume has values the one plane does not."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.int16)
    return np.stack([ct - 40 * k for k in range(40)])


@pytest.fixture(scope="module")
def loaded() -> None:
    if not counting.warm_up().result(timeout=120):
        pytest.fail("numba is a dependency: its compiled loops must load")
    assert counting.compiled()


@pytest.mark.parametrize("name, dtype", [("CT_small.dcm", np.uint16),
                                         ("OBXXXX1A.dcm", np.uint8)])
def test_compiled_counts_equal_bincount(loaded: None, name: str, dtype: type) -> None:
    arr = pydicom.dcmread(get_testdata_file(name)).pixel_array
    same_size = arr.dtype.itemsize == np.dtype(dtype).itemsize
    values = np.ascontiguousarray(arr).view(dtype) if same_size else arr.astype(dtype)
    counts = np.zeros(1 << (8 * values.dtype.itemsize), np.int64)
    counting.count_into(values, counts)
    counting.count_into(values, counts)  # adds, as the series sum needs
    expected = 2 * np.bincount(values.ravel(), minlength=counts.size)
    np.testing.assert_array_equal(counts, expected)


def test_histograms_on_the_compiled_loop_are_exact(loaded: None) -> None:
    vol = _ct_volume()
    assert vol.min() < 0
    h = histogram_of(vol, jobs=2)
    assert h.offset == vol.min() and h.counts.sum() == vol.size
    for q in (0, 0.5, 1, 37, 99, 99.5, 100):
        assert h.percentile(q) == np.percentile(vol, q)
    # a non-contiguous view (napari's transposed dims) counts the same values
    t = vol.transpose(1, 0, 2)
    assert not t.flags.c_contiguous
    th = IntHistogram.of(t)
    np.testing.assert_array_equal(th.counts, h.counts)
    # 8-bit data, and a range excluded (Pixel Padding Value)
    u8 = (vol.astype(np.int64) % 251).astype(np.uint8)
    h8 = IntHistogram.of(u8, exclude=[(0, 9)])
    kept = u8[u8 > 9]
    assert h8.counts.sum() == kept.size
    assert h8.percentile(50) == np.percentile(kept, 50)


@pytest.mark.parametrize("block", [False, True], ids=["not loaded yet", "numba missing"])
def test_without_the_compiled_loop_counts_are_the_same(block: bool) -> None:
    """A fresh process: before warm_up nothing is compiled or imported; with numba
    unimportable, warm_up says so and np.bincount counts the same histogram."""
    code = textwrap.dedent(f"""
        import sys
        if {block}:
            sys.modules["numba"] = None  # import numba raises ImportError
        import numpy as np, pydicom
        from pydicom.data import get_testdata_file
        from napari_dicom.core import counting
        from napari_dicom.core.volume import histogram_of
        ct = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.int16)
        vol = np.stack([ct - 40 * k for k in range(40)])
        assert not counting.compiled() and "numba" not in sys.modules or {block}
        before = histogram_of(vol, 2)
        ok = counting.warm_up().result(timeout=120)
        assert ok is (not {block}), ok
        after = histogram_of(vol, 2)
        assert np.array_equal(before.counts, after.counts) and before.offset == after.offset
        assert before.percentile(99) == np.percentile(vol, 99)
        print("ok", ok)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", str(not block)]
