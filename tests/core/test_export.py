"""core/export.py: PNG bytes, atomic files, names, and whole-stack exports (no Qt)."""

from __future__ import annotations

import csv
import os
import stat
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_dicom import __version__
from napari_dicom.core.export import (
    MANIFEST,
    ExportError,
    encode_png,
    export_stack,
    plane_file_names,
    write_atomic,
)
from napari_dicom.core.phantom import ct_phantom_volume
from napari_dicom.core.render import Display, Window, render_uint8

SOFT_TISSUE = Display(Window(40, 400))


def read_png(path: Path) -> tuple[np.ndarray, dict[str, str], str]:
    with Image.open(path) as im:
        im.load()
        return np.asarray(im), dict(im.text), im.mode


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return ct_phantom_volume(12, 64)


# --------------------------------------------------------------------------------------
# encode_png
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "mode"),
    [((37, 53), "L"), ((20, 31, 3), "RGB"), ((9, 8, 4), "RGBA"), ((1, 1), "L"), ((6, 1), "L"),
     ((1, 7, 3), "RGB")],
    ids=str,
)
def test_encode_png_round_trips_through_pillow(shape: tuple[int, ...], mode: str,
                                               tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    data = encode_png(img, {"WindowCenter": "40", "Software": "x"})
    (tmp_path / "a.png").write_bytes(data)
    got, text, got_mode = read_png(tmp_path / "a.png")
    assert got_mode == mode
    np.testing.assert_array_equal(got, img)
    assert text == {"WindowCenter": "40", "Software": "x"}


def test_encode_png_is_deterministic_and_has_no_time_chunk() -> None:
    img = ct_phantom_volume(1, 64)[0]
    a = encode_png(render_uint8(img, SOFT_TISSUE), {"k": "v"})
    b = encode_png(render_uint8(img, SOFT_TISSUE), {"k": "v"})
    assert a == b
    assert b"tIME" not in a
    assert a.startswith(b"\x89PNG\r\n\x1a\n") and a.endswith(b"IEND\xaeB`\x82")


def test_encode_png_rows_use_the_sub_filter() -> None:
    """Filter type 1 (Sub) on every row: the row's first pixel as is, then differences
    from the pixel to the left modulo 256 (bytes of the same channel)."""
    img = np.random.default_rng(1).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    data = encode_png(img)
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    raw = np.frombuffer(zlib.decompress(data[start : start + length]), np.uint8).reshape(5, 19)
    assert (raw[:, 0] == 1).all()
    row = img.reshape(5, 18)
    np.testing.assert_array_equal(raw[:, 1:4], row[:, :3])
    np.testing.assert_array_equal(raw[:, 4:], (row[:, 3:].astype(int) - row[:, :-3]) % 256)


def test_encode_png_chunks_have_valid_crcs() -> None:
    data = encode_png(np.zeros((4, 4), np.uint8), {"a": "b"})
    pos = 8
    kinds = []
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        crc = int.from_bytes(data[pos + 8 + n : pos + 12 + n], "big")
        assert zlib.crc32(data[pos + 4 : pos + 8 + n]) == crc, kind
        kinds.append(kind)
        pos += 12 + n
    assert kinds == [b"IHDR", b"tEXt", b"IDAT", b"IEND"]


def test_encode_png_non_latin1_text_uses_itxt(tmp_path: Path) -> None:
    data = encode_png(np.zeros((2, 2), np.uint8), {"Explanation": "Fenêtre → poumon"})
    assert b"iTXt" in data
    (tmp_path / "t.png").write_bytes(data)
    assert read_png(tmp_path / "t.png")[1] == {"Explanation": "Fenêtre → poumon"}


def test_encode_png_16_bit_grey(tmp_path: Path) -> None:
    """A 2-D uint16 array (a label map past 255 labels) is a 16-bit grey PNG that Pillow
    reads back value for value."""
    from PIL import Image

    img = np.arange(0, 65536, 97, dtype=np.uint16)[:600].reshape(20, 30)
    (tmp_path / "m.png").write_bytes(encode_png(img))
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode in ("I;16", "I;16B", "I")
        np.testing.assert_array_equal(np.asarray(im), img)


@pytest.mark.parametrize(
    ("img", "text", "error"),
    [
        (np.zeros((4, 4, 3), np.uint16), {}, TypeError),
        (np.zeros((4, 4, 2), np.uint8), {}, ValueError),
        (np.zeros((0, 4), np.uint8), {}, ValueError),
        (np.zeros((4, 4), np.uint8), {"": "x"}, ValueError),
        (np.zeros((4, 4), np.uint8), {"k" * 80: "x"}, ValueError),
    ],
    ids=["uint16-rgb", "two-channels", "empty", "empty-key", "long-key"],
)
def test_encode_png_refuses_bad_input(img: np.ndarray, text: dict[str, str],
                                      error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_png(img, text)


# --------------------------------------------------------------------------------------
# write_atomic, plane_file_names
# --------------------------------------------------------------------------------------


def test_write_atomic_replaces_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    write_atomic(target, b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]  # fails mid-write
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # temp file removed
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"


def test_write_atomic_gives_normal_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "p.png", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.png").stat().st_mode) == 0o644


def test_plane_file_names_sort_in_array_order() -> None:
    assert plane_file_names((3,), "scan") == ["scan_0001.png", "scan_0002.png", "scan_0003.png"]
    four = plane_file_names((2, 11), "scan")
    assert four[:2] == ["scan_0001_0001.png", "scan_0001_0002.png"]
    assert four[11] == "scan_0002_0001.png"
    assert sorted(four) == four and len(set(four)) == 22
    big = plane_file_names((12000,), "s")
    assert big[0] == "s_00001.png" and sorted(big) == big
    assert plane_file_names((), "one") == ["one.png"]


# --------------------------------------------------------------------------------------
# export_stack
# --------------------------------------------------------------------------------------


def test_3d_export_writes_sorted_planes_and_manifest(volume: np.ndarray, tmp_path: Path) -> None:
    n = volume.shape[0]
    meta = {
        "series_instance_uid": "1.2.826.0.1.3680043.8.498.1",
        "locations": [-100.0 + 2.5 * i for i in range(n)],
        "sop_instance_uids": [f"1.2.3.{i}" for i in range(n)],
        "files": [f"/data/ct/{i:03d}.dcm" for i in range(n)],
        "frames": [None] * n,
    }
    paths = export_stack(volume, SOFT_TISSUE, tmp_path / "scan.png", meta=meta, jobs=2)
    folder = tmp_path / "scan"
    assert paths[-1] == folder / MANIFEST
    assert [p.name for p in paths[:-1]] == [f"scan_{i + 1:04d}.png" for i in range(n)]
    assert not (tmp_path / "scan.png").exists()
    for i in (0, 5, n - 1):
        px, text, mode = read_png(paths[i])
        assert mode == "L"
        np.testing.assert_array_equal(px, render_uint8(volume[i], SOFT_TISSUE))
        assert text["WindowCenter"] == "40" and text["WindowWidth"] == "400"
        assert text["VOILUTFunction"] == "LINEAR" and text["Invert"] == "no"
        assert text["SeriesInstanceUID"] == meta["series_instance_uid"]
        assert text["SOPInstanceUID"] == f"1.2.3.{i}"
        assert text["Software"] == f"napari-dicom {__version__}"
    with open(paths[-1], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    assert rows[3] == {
        "file": "scan_0004.png",
        "index": "3",
        "location_mm": "-92.5",
        "sop_instance_uid": "1.2.3.3",
        "source_file": "/data/ct/003.dcm",
        "frame": "",
        "window_center": "40",
        "window_width": "400",
        "voi_function": "LINEAR",
        "invert": "no",
        "gamma": "1",
    }
    # nothing else left in the folder (no temporary files)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)


def test_2d_export_writes_the_file_itself(volume: np.ndarray, tmp_path: Path) -> None:
    display = Display(Window(-600, 1500), invert=True)
    paths = export_stack(volume[4], display, tmp_path / "slice.png")
    assert paths == [tmp_path / "slice.png"]
    px, text, _ = read_png(paths[0])
    np.testing.assert_array_equal(px, render_uint8(volume[4], display))
    assert text["Invert"] == "yes"
    # no .png suffix: appended
    assert export_stack(volume[4], display, tmp_path / "bare") == [tmp_path / "bare.png"]


def test_4d_export_names_and_manifest_columns(tmp_path: Path) -> None:
    data = ct_phantom_volume(6, 32).reshape(2, 3, 32, 32)
    paths = export_stack(data, SOFT_TISSUE, tmp_path / "cine.png", jobs=2)
    names = [p.name for p in paths[:-1]]
    assert names == sorted(names) and names[3] == "cine_0002_0001.png"
    np.testing.assert_array_equal(read_png(paths[4])[0], render_uint8(data[1, 1], SOFT_TISSUE))
    with open(paths[-1], newline="") as f:
        rows = list(csv.DictReader(f))
    assert (rows[4]["index0"], rows[4]["index1"]) == ("1", "1")


def test_same_bytes_whatever_the_threads_or_array_type(volume: np.ndarray,
                                                        tmp_path: Path) -> None:
    da = pytest.importorskip("dask.array")
    one = export_stack(volume, SOFT_TISSUE, tmp_path / "a" / "s.png", jobs=1)
    two = export_stack(volume, SOFT_TISSUE, tmp_path / "b" / "s.png", jobs=2)
    lazy = export_stack(da.from_array(volume, chunks=(1, 64, 64)), SOFT_TISSUE,
                        tmp_path / "c" / "s.png", jobs=2)
    for p, q, r in zip(one, two, lazy, strict=True):
        assert p.read_bytes() == q.read_bytes() == r.read_bytes()


def test_rgb_data_is_written_as_is(tmp_path: Path) -> None:
    rgb8 = np.random.default_rng(1).integers(0, 256, (2, 8, 9, 3)).astype(np.uint8)
    paths = export_stack(rgb8, None, tmp_path / "us.png", rgb=True)
    px, text, mode = read_png(paths[1])
    assert mode == "RGB"
    np.testing.assert_array_equal(px, rgb8[1])
    assert text["Photometric"] == "RGB as stored"
    # 16-bit colour: scaled from the Bits Stored range with rounding
    rgb16 = np.array([[[0, 4095, 2048], [1000, 16, 17]]], np.uint16)
    (p16,) = export_stack(rgb16, None, tmp_path / "c16.png", rgb=True,
                          meta={"header": {"BitsStored": 12}})
    assert read_png(p16)[0].tolist() == [[[0, 255, 128], [62, 1, 1]]]


def test_palette_gives_rgb_and_grey_palette_gives_grey(volume: np.ndarray,
                                                       tmp_path: Path) -> None:
    ramp = np.arange(256, dtype=np.uint8)
    hot = np.stack([ramp, ramp // 2, 255 - ramp], axis=1)
    (p,) = export_stack(volume[3], Display(Window(40, 400), palette=hot), tmp_path / "hot.png")
    px, _, mode = read_png(p)
    assert mode == "RGB"
    idx = render_uint8(volume[3], SOFT_TISSUE)
    np.testing.assert_array_equal(px, hot[idx])
    # a grey curve (e.g. a SIGMOID shown through a colormap) stays a grey PNG
    curve = (np.sqrt(ramp / 255.0) * 255).astype(np.uint8)
    grey = np.stack([curve] * 3, axis=1)
    (g,) = export_stack(volume[3], Display(Window(40, 400), palette=grey), tmp_path / "g.png")
    gpx, gtext, gmode = read_png(g)
    assert gmode == "L" and gtext["Colormap"] == "grey curve"
    np.testing.assert_array_equal(gpx, curve[idx])


def test_nan_and_constant_images(tmp_path: Path) -> None:
    f = np.full((2, 8, 8), 40.0, np.float32)
    f[0, 0, 0] = np.nan
    paths = export_stack(f, SOFT_TISSUE, tmp_path / "f.png")
    first = read_png(paths[0])[0]
    assert first[0, 0] == 0 and (first.ravel()[1:] == 128).all()
    assert (read_png(paths[1])[0] == 128).all()
    # a window far wider than the data
    c = np.full((5, 5), 3, np.int16)
    (p,) = export_stack(c, Display(Window(0, 100000)), tmp_path / "c.png")
    assert (read_png(p)[0] == 128).all()


def test_unwritable_target_is_a_clear_error(volume: np.ndarray, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the export wants a folder")
    with pytest.raises(ExportError, match="not_a_folder") as info:
        export_stack(volume, SOFT_TISSUE, blocker / "scan.png")
    assert isinstance(info.value, OSError)
    assert blocker.read_text() == "a file where the export wants a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder"]


def test_failure_midway_removes_only_what_this_export_wrote(volume: np.ndarray,
                                                            tmp_path: Path) -> None:
    folder = tmp_path / "scan"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "scan_0007.png").mkdir()  # plane 7 cannot be written
    with pytest.raises(ExportError, match=r"scan_0007\.png"):
        export_stack(volume, SOFT_TISSUE, tmp_path / "scan.png", jobs=2)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "scan_0007.png"]
    assert (folder / "notes.txt").read_text() == "mine"


def test_created_folders_are_removed_on_failure(volume: np.ndarray, tmp_path: Path) -> None:
    def cancel(done: int, total: int) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_stack(volume, SOFT_TISSUE, tmp_path / "new" / "deep" / "scan.png",
                     progress=cancel, jobs=1)
    assert list(tmp_path.iterdir()) == []


def test_progress_and_skip_existing(volume: np.ndarray, tmp_path: Path) -> None:
    folder = tmp_path / "scan"
    folder.mkdir()
    (folder / "scan_0002.png").write_bytes(b"kept")
    seen: list[tuple[int, int]] = []
    paths = export_stack(volume, SOFT_TISSUE, tmp_path / "scan.png", skip_existing=True,
                         progress=lambda d, t: seen.append((d, t)), jobs=2)
    n = volume.shape[0]
    assert (folder / "scan_0002.png").read_bytes() == b"kept"
    assert len(paths) == n + 1
    np.testing.assert_array_equal(read_png(paths[2])[0], render_uint8(volume[2], SOFT_TISSUE))
    assert seen[-1] == (n, n) and all(t == n for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def _export_peak(vol: np.ndarray, out: Path) -> int:
    tracemalloc.start()
    try:
        export_stack(vol, SOFT_TISSUE, out, jobs=2)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_volume(tmp_path: Path) -> None:
    """Planes are rendered a batch at a time: eight times the planes, about the same peak
    (a fixed few MB for the 64 Ki-entry lookup tables), never a copy of the volume."""
    # planes big enough that a copy of the volume (25 MB) dwarfs the thread-timing noise
    # of the bounded encode queue (a few MB)
    small = ct_phantom_volume(24, 256)
    big = np.concatenate([small] * 8)
    peak_small = _export_peak(small, tmp_path / "s.png")
    peak_big = _export_peak(big, tmp_path / "b.png")
    assert peak_big - peak_small < 0.25 * (big.nbytes - small.nbytes), (peak_small, peak_big)


def test_grey_data_without_display_is_refused(volume: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Display"):
        export_stack(volume, None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="shape"):
        export_stack(np.zeros(5, np.int16), SOFT_TISSUE, tmp_path / "x.png")
