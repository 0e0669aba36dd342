"""core.tags without Qt: which file a displayed plane came from, in every arrangement."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_dicom.core.geometry import Placement
from napari_dicom.core.tags import plane_file


@pytest.mark.parametrize("axes", list(itertools.permutations(range(3))), ids=str)
@pytest.mark.parametrize("lead", [0, 1])
def test_plane_file_undoes_the_layer_arrangement(axes: tuple[int, int, int], lead: int) -> None:
    # acquisition: (echo,) slice, row, column; each voxel holds its plane's C-order number
    acq_shape = (2,) * lead + (3, 4, 5)
    n_planes = int(np.prod(acq_shape[:-2]))
    numbers = np.broadcast_to(
        np.arange(n_planes).reshape((*acq_shape[:-2], 1, 1)), acq_shape)
    shown = Placement("aligned", np.eye(4), axes=axes).arrange(numbers, lead=lead)
    meta = {"files": [f"f{i}" for i in range(n_planes)], "frames": [None] * n_planes,
            "placement": {"kind": "aligned", "axes": list(axes), "lead": lead}}
    for point in itertools.product(*(range(s) for s in shown.shape)):
        assert plane_file(meta, shown.shape, point) == (
            f"f{shown[point]}", None, int(shown[point]))
    assert plane_file(meta, shown.shape, [-1] * shown.ndim) is None  # outside the layer


def test_plane_file_frames_and_added_axis() -> None:
    meta = {"files": ["enh.dcm"] * 3, "frames": [0, 1, 2]}
    assert plane_file(meta, (3, 8, 8), (2.2, 0, 0)) == ("enh.dcm", 2, 2)
    single = {"files": ["one.dcm"], "frames": [None],
              "placement": {"kind": "index", "added_axis": True}}
    assert plane_file(single, (1, 8, 8), (0, 3, 3)) == ("one.dcm", None, 0)
    assert plane_file({}, (3, 8, 8), (0, 0, 0)) is None
