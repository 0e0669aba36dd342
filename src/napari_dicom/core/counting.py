"""Counting 8- and 16-bit values, compiled when it can be: the exact histograms' inner loop.

``np.bincount`` casts every value to a 64-bit index before it counts and holds the GIL
for most of its work: 0.25-0.36 s for 1000 planes of 512 x 512 int16 on this project's
2-core machine, however many threads share it. The same loop compiled by numba, with
the GIL released, counts them in 0.085-0.092 s on 2 threads (``benchmarks/bench_load.py
--counting``). That is the difference between the Window / Level widget showing a
1000-slice series' histogram 0.3-0.5 s after the volume is in memory and within 0.15 s.

Numba costs time once per process: its import and the load of the compiled loops from
numba's cache take 0.5-0.9 s (about 1 s more the very first time, when they are
compiled and cached). So nothing here imports numba by itself: :func:`warm_up` loads it
on a background thread, asked for by whoever will want a large histogram soon (the
Window / Level widget, 0.5 s after it is created; the loader of a series of
:data:`~.volume.COMPILED_FROM` bytes or more, as it starts); until it is ready, and where
numba is not installed or cannot compile, :func:`count_into` uses ``np.bincount``. Both
give the same counts.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["compiled", "count_into", "warm_up"]

_Kernel = Callable[[npt.NDArray[Any], npt.NDArray[np.int64]], None]

#: the compiled loops once loaded: itemsize (1 or 2) -> kernel; empty until then
_KERNELS: dict[int, _Kernel] = {}
_WARM: Future[bool] | None = None
_WARM_LOCK = threading.Lock()


def _load() -> bool:
    """Import numba and load (or compile and cache) the loops; ``False`` when it cannot."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba's deprecation notices
            from . import _kernels
    except Exception:  # numba missing or unable to compile: bincount stays
        return False
    _KERNELS[1], _KERNELS[2] = _kernels.count8, _kernels.count16
    return True


def warm_up() -> Future[bool]:
    """Load the compiled loops on a background thread (once per process); the future
    says whether they are in use. Cheap to call again."""
    global _WARM
    with _WARM_LOCK:
        if _WARM is None:
            fut: Future[bool] = Future()
            _WARM = fut

            def run() -> None:
                fut.set_result(_load())

            threading.Thread(target=run, daemon=True, name="dicom-counting").start()
        return _WARM


def compiled() -> bool:
    """Whether the compiled loops are loaded (never waits, never loads them)."""
    return bool(_KERNELS)


def count_into(values: npt.NDArray[Any], counts: npt.NDArray[np.int64]) -> None:
    """Add to ``counts[v]`` one for every value ``v`` of ``values`` (uint8 with 256
    counts, or uint16 with 65536), compiled when :func:`warm_up` has loaded it, else
    with ``np.bincount``."""
    kernel = _KERNELS.get(values.dtype.itemsize)
    if kernel is not None and values.dtype.kind == "u" and counts.dtype == np.int64:
        kernel(np.ascontiguousarray(values).reshape(-1), counts)
    else:
        counts += np.bincount(values.reshape(-1), minlength=counts.size)
