"""numba-compiled loops for :mod:`.counting`; imported only by :func:`.counting.warm_up`
(on a background thread), as importing it imports numba and loads or compiles them."""

from __future__ import annotations

from typing import Any

import numba


def _count(a: Any, out: Any) -> None:  # pragma: no cover - runs compiled
    for i in range(a.size):
        out[a[i]] += 1


def _jit(sig: str) -> Any:
    """``_count`` compiled now for ``sig``, GIL released, kept in numba's cache where it
    has a writable place (else compiled again in each process)."""
    try:
        return numba.njit(sig, nogil=True, cache=True)(_count)
    except Exception:  # no cache location numba can write
        return numba.njit(sig, nogil=True)(_count)


count8 = _jit("void(uint8[::1], int64[::1])")
count16 = _jit("void(uint16[::1], int64[::1])")
