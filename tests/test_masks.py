"""Label maps saved as PNG stacks (File > Save of a Labels layer): values as written in
the SEG, planes named and ordered like the image's PNG stack, labels.csv with the names."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_dicom.core.labels import Segment
from napari_dicom.core.masks import export_label_stack
from segdata import write_ct, write_seg

PLUGIN = "napari-dicom"
N, SIZE = 6, 32


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_save_labels_layer_like_the_image_stack(make_napari_viewer, tmp_path: Path) -> None:
    ct = write_ct(tmp_path / "in" / "ct", n=N, size=SIZE)
    lab = np.zeros((N, SIZE, SIZE), np.uint8)
    lab[1:3, 2:10, 2:10] = 1
    lab[3:5, 12:20, 12:20] = 3
    lab[2, 20:25, 20:25] = 2
    write_seg(tmp_path / "in" / "lm.dcm", ct[::-1], lab[::-1], "LABELMAP", n_segments=3)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "in"), plugin=PLUGIN)
    image = next(ly for ly in viewer.layers if type(ly).__name__ == "Image")
    labels = next(ly for ly in viewer.layers if type(ly).__name__ == "Labels")
    viewer.layers.selection = {image}
    viewer.layers.save(str(tmp_path / "out" / "ct.png"), selected=True, plugin=PLUGIN)
    viewer.layers.selection = {labels}
    viewer.layers.save(str(tmp_path / "masks" / "ct.png"), selected=True, plugin=PLUGIN)
    img_names = sorted(p.name for p in (tmp_path / "out" / "ct").glob("*.png"))
    mask_names = sorted(p.name for p in (tmp_path / "masks" / "ct").glob("*.png"))
    assert mask_names == img_names and len(mask_names) == N
    # plane for plane: the image manifest's SOP Instance UID of a file is the mask
    # manifest's, and the mask PNG holds the label map written for that CT slice
    img_rows = {r["file"]: r for r in _rows(tmp_path / "out" / "ct" / "manifest.csv")}
    mask_rows = _rows(tmp_path / "masks" / "ct" / "manifest.csv")
    import pydicom

    uid_to_slice = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: k
                    for k, p in enumerate(ct)}
    for row in mask_rows:
        assert row["sop_instance_uid"] == img_rows[row["file"]]["sop_instance_uid"]
        png = _png(tmp_path / "masks" / "ct" / row["file"])
        assert png.dtype == np.uint8
        np.testing.assert_array_equal(png, lab[uid_to_slice[row["sop_instance_uid"]]])
    names = _rows(tmp_path / "masks" / "ct" / "labels.csv")
    assert [(r["value"], r["label"]) for r in names] == [("1", "Liver"), ("2", "Tumour"),
                                                         ("3", "Vessel")]
    assert names[0]["colour"].startswith("#") and names[0]["source"].endswith("lm.dcm")


def test_more_than_255_labels_are_16_bit(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    data = np.zeros((3, 20, 30), np.uint16)
    data[1, 2:5, 3:9] = 300
    data[2, 10:12, 1:4] = 7
    viewer.add_labels(data, name="painted")
    viewer.layers.save(str(tmp_path / "p.png"), selected=True, plugin=PLUGIN)
    out = sorted((tmp_path / "p").glob("*.png"))
    assert [p.name for p in out] == ["p_0001.png", "p_0002.png", "p_0003.png"]
    for k, p in enumerate(out):
        png = _png(p)
        assert png.dtype == np.uint16
        np.testing.assert_array_equal(png, data[k])
    assert [(r["value"], r["label"]) for r in _rows(tmp_path / "p" / "labels.csv")] == [
        ("7", "label 7"), ("300", "label 300")]


def test_export_label_stack_refuses_non_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="integer"):
        export_label_stack(np.zeros((2, 4, 4), np.float32), tmp_path / "x", [])
    with pytest.raises(ValueError, match="16-bit"):
        export_label_stack(np.full((4, 4), 70000, np.int32), tmp_path / "x", [])
    single = export_label_stack(np.eye(4, dtype=np.uint8) * 2, tmp_path / "one.png",
                                [Segment(2, "diag")])
    assert [p.name for p in single] == ["one.png", "one.labels.csv"]
    np.testing.assert_array_equal(_png(tmp_path / "one.png"), np.eye(4) * 2)


def test_label_stack_follows_the_export_file_rules(tmp_path: Path) -> None:
    """Re-exporting its own mask stack replaces it; a file napari-dicom did not write is
    refused, untouched, unless overwrite."""
    from napari_dicom.core.output import ExportRefused

    lab = np.zeros((3, 8, 8), np.uint8)
    lab[1, 2:4, 2:4] = 5
    segs = [Segment(5, "lesion")]
    first = export_label_stack(lab, tmp_path / "m", segs, stem="ct")
    assert [p.name for p in first][:3] == ["ct_0001.png", "ct_0002.png", "ct_0003.png"]
    lab[2, 0, 0] = 5
    export_label_stack(lab, tmp_path / "m", segs, stem="ct")  # its own: replaced
    np.testing.assert_array_equal(_png(tmp_path / "m" / "ct_0003.png"), lab[2])
    other = tmp_path / "o"
    other.mkdir()
    (other / "ct_0002.png").write_bytes(b"the user's own file")
    with pytest.raises(ExportRefused, match=r"ct_0002\.png"):
        export_label_stack(lab, other, segs, stem="ct")
    assert (other / "ct_0002.png").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in other.iterdir()) == ["ct_0002.png"]
    export_label_stack(lab, other, segs, stem="ct", overwrite=True)
    np.testing.assert_array_equal(_png(other / "ct_0002.png"), lab[1])
