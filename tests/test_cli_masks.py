"""The CLI with segmentations: ``export --masks`` writes label maps beside the image PNGs,
plane for plane; ``info`` lists the segments and ROIs of each series."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from napari_dicom.cli import main
from segdata import write_ct, write_rtstruct, write_seg

N, SIZE = 6, 32
X0 = -SIZE / 2 * 0.7


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, list[Path], np.ndarray]:
    ct = write_ct(tmp_path / "study" / "ct", n=N, size=SIZE)
    m = np.zeros((N, SIZE, SIZE, 2), bool)
    m[1:4, 4:12, 4:12, 0] = True
    m[2:5, 8:20, 8:20, 1] = True  # overlaps segment 1
    write_seg(tmp_path / "study" / "seg.dcm", ct[::-1], m[::-1])
    z = 2 * 2.5
    box = np.array([[X0 + 2.0, X0 + 2.0, z], [X0 + 9.0, X0 + 2.0, z],
                    [X0 + 9.0, X0 + 6.0, z], [X0 + 2.0, X0 + 6.0, z]])
    write_rtstruct(tmp_path / "study" / "rs.dcm", ct, [("Box", (0, 128, 255), [box])])
    return tmp_path / "study", ct, m


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_export_masks_beside_the_image_pngs(study, tmp_path: Path, capsys) -> None:
    folder, ct, m = study
    out = tmp_path / "out"
    assert main(["export", str(folder), "-o", str(out), "--masks", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "masks: 3 label stack(s), 18 PNGs" in printed
    (image_dir,) = {p.parent for p in out.rglob("*.png")
                    if not p.parent.parent.name.endswith("_masks")}
    masks_root = image_dir.with_name(image_dir.name + "_masks")
    stacks = sorted(p.name for p in masks_root.iterdir())
    assert len(stacks) == 3  # two SEG layers (the segments overlap), the filled RTSTRUCT
    image_names = sorted(p.name for p in image_dir.glob("*.png"))
    slice_of = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: k
                for k, p in enumerate(ct)}
    seen = set()
    for stack in masks_root.iterdir():
        assert sorted(p.name for p in stack.glob("*.png")) == image_names
        names = {r["value"]: r["label"] for r in _rows(stack / "labels.csv")}
        for row in _rows(stack / "manifest.csv"):
            with Image.open(stack / row["file"]) as im:
                png = np.asarray(im)
            k = slice_of[row["sop_instance_uid"]]
            seen.add(tuple(sorted(names.values())))
            if names == {"1": "Liver"}:
                np.testing.assert_array_equal(png, m[k, ..., 0] * 1)
            elif names == {"2": "Tumour"}:
                np.testing.assert_array_equal(png, m[k, ..., 1] * 2)
            else:
                assert names == {"1": "Box"}
                want = np.zeros((SIZE, SIZE), np.uint8)
                if k == 2:  # x 2..9 mm, y 2..6 mm from the first pixel; centres inside
                    cc = np.arange(SIZE) * 0.7
                    want[np.ix_((cc >= 2) & (cc < 6), (cc >= 2) & (cc < 9))] = 1
                np.testing.assert_array_equal(png, want)
    assert set(seen) == {("Liver",), ("Tumour",), ("Box",)}


def test_info_lists_segments_and_rois(study, capsys) -> None:
    folder, _ct, _m = study
    assert main(["info", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "SEG       50 SEG AI organs (BINARY), seg.dcm: 2 segments" in text
    assert "1  Liver" in text and "2  Tumour" in text
    assert "RTSTRUCT  60 RTSTRUCT Plan (1 ROIs), rs.dcm: 1 ROIs" in text and "Box" in text
    assert main(["info", str(folder), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (series,) = doc["series"]
    assert sorted(Path(p).name for p in series["objects"]) == ["rs.dcm", "seg.dcm"]
    seg = next(o for o in doc["objects"] if o["type"] == "SEG")
    assert [s["label"] for s in seg["segments"]] == ["Liver", "Tumour"]
