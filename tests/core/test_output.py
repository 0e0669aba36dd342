"""Export safety (core/output.py through export_stack): files napari-dicom did not write
are never overwritten, a stack is replaced as a whole once the new one is complete, and
its earlier export's stale planes go with it. No Qt."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_dicom.core.export import MANIFEST, ExportError, ExportRefused, export_stack
from napari_dicom.core.output import is_own_png, manifest_header
from napari_dicom.core.phantom import ct_phantom_volume
from napari_dicom.core.render import Display, Window, render_uint8

SOFT = Display(Window(40, 400))
LUNG = Display(Window(-600, 1500))


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return ct_phantom_volume(12, 48)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _manifest_files(folder: Path) -> list[str]:
    with (folder / MANIFEST).open(newline="", encoding="utf-8") as f:
        return [r["file"] for r in csv.DictReader(f)]


def test_reexport_with_fewer_planes_removes_the_stale_ones(volume: np.ndarray,
                                                           tmp_path: Path) -> None:
    export_stack(volume, SOFT, tmp_path / "scan.png")
    folder = tmp_path / "scan"
    assert len(list(folder.glob("*.png"))) == 12
    export_stack(volume[:5], LUNG, tmp_path / "scan.png")
    names = sorted(folder.iterdir())
    assert [p.name for p in names] == [MANIFEST] + [f"scan_{i:04d}.png" for i in range(1, 6)]
    assert _manifest_files(folder) == [f"scan_{i:04d}.png" for i in range(1, 6)]
    np.testing.assert_array_equal(_png(folder / "scan_0005.png"), render_uint8(volume[4], LUNG))
    assert _hidden(tmp_path) == []  # no staging folder left


def test_the_earlier_export_stays_whole_until_the_new_one_is_complete(
        volume: np.ndarray, tmp_path: Path) -> None:
    """While the new planes are written, the target folder still holds exactly the old
    export (they go to a hidden folder beside it); after, exactly the new one."""
    export_stack(volume, SOFT, tmp_path / "scan.png")
    folder = tmp_path / "scan"
    before = _files(folder)
    seen: list[bool] = []

    def check(done: int, total: int) -> None:
        seen.append(_files(folder) == before)

    export_stack(volume, LUNG, tmp_path / "scan.png", progress=check, jobs=1)
    assert len(seen) >= 2 and all(seen)
    after = _files(folder)
    assert after.keys() == before.keys()
    assert all(after[k] != before[k] for k in after)  # every plane and the manifest new


def test_an_interrupted_export_leaves_the_earlier_one_byte_for_byte(
        volume: np.ndarray, tmp_path: Path) -> None:
    export_stack(volume, SOFT, tmp_path / "scan.png")
    folder = tmp_path / "scan"
    before = _files(folder)

    def interrupt(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_stack(volume, LUNG, tmp_path / "scan.png", progress=interrupt, jobs=2)
    assert _files(folder) == before
    assert _hidden(tmp_path) == []


def test_a_foreign_manifest_is_refused_before_anything_is_written(volume: np.ndarray,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "scan"
    folder.mkdir()
    (folder / MANIFEST).write_text("patient,notes\nP1,my own table\n")
    with pytest.raises(ExportRefused, match=r"manifest\.csv.*not written by napari-dicom"):
        export_stack(volume, SOFT, tmp_path / "scan.png")
    assert _files(folder) == {MANIFEST: b"patient,notes\nP1,my own table\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan"]
    # asked to: replaced, and the stack written
    export_stack(volume, SOFT, tmp_path / "scan.png", overwrite=True)
    assert manifest_header(folder / MANIFEST) == "file,index,location_mm,sop_instance_uid," \
        "source_file,frame,window_center,window_width,voi_function,invert,gamma"
    assert len(list(folder.glob("*.png"))) == 12


def test_a_foreign_png_under_a_plane_name_is_refused(volume: np.ndarray,
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "scan"
    folder.mkdir()
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(folder / "scan_0003.png")
    mine = (folder / "scan_0003.png").read_bytes()
    with pytest.raises(ExportRefused, match=r"scan_0003\.png") as info:
        export_stack(volume, SOFT, tmp_path / "scan.png")
    assert info.value.names == ["scan_0003.png"]
    assert _files(folder) == {"scan_0003.png": mine}
    assert _hidden(tmp_path) == []


def test_other_files_beside_our_export_are_kept(volume: np.ndarray, tmp_path: Path) -> None:
    """The folder holds napari-dicom's export and the user's notes: the export is
    replaced (stale planes removed), the notes stay."""
    export_stack(volume, SOFT, tmp_path / "scan.png")
    folder = tmp_path / "scan"
    (folder / "notes.txt").write_text("mine")
    export_stack(volume[:3], LUNG, tmp_path / "scan.png")
    assert sorted(p.name for p in folder.iterdir()) == [
        MANIFEST, "notes.txt", "scan_0001.png", "scan_0002.png", "scan_0003.png"]
    assert (folder / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(_png(folder / "scan_0003.png"), render_uint8(volume[2], LUNG))
    assert _hidden(tmp_path) == [] and _hidden(folder) == []


def test_a_crafted_manifest_cannot_make_other_files_stale(volume: np.ndarray,
                                                          tmp_path: Path) -> None:
    """Only names of the export's own pattern count as napari-dicom's, whatever a
    manifest with its header lists."""
    export_stack(volume[:2], SOFT, tmp_path / "scan.png")
    folder = tmp_path / "scan"
    rows = (folder / MANIFEST).read_text().splitlines()
    extra = ["thesis.docx", "../outside.png", "scan_0009.png.bak"]
    fields = rows[1].split(",")
    crafted = rows + [",".join([name, *fields[1:]]) for name in extra]
    (folder / MANIFEST).write_text("\n".join(crafted) + "\n")
    (folder / "thesis.docx").write_text("years of work")
    (folder / "scan_0009.png.bak").write_text("backup")
    (tmp_path / "outside.png").write_text("outside")
    export_stack(volume[:1], SOFT, tmp_path / "scan.png")
    assert (folder / "thesis.docx").read_text() == "years of work"
    assert (folder / "scan_0009.png.bak").read_text() == "backup"
    assert (tmp_path / "outside.png").read_text() == "outside"
    assert sorted(p.name for p in folder.glob("*.png")) == ["scan_0001.png"]


def test_a_single_png_is_replaced_only_when_napari_dicom_wrote_it(volume: np.ndarray,
                                                                   tmp_path: Path) -> None:
    target = tmp_path / "slice.png"
    (p,) = export_stack(volume[0], SOFT, target)
    assert is_own_png(p)
    export_stack(volume[0], LUNG, target)  # its own: replaced
    np.testing.assert_array_equal(_png(target), render_uint8(volume[0], LUNG))
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(photo)
    assert not is_own_png(photo)
    kept = photo.read_bytes()
    with pytest.raises(ExportRefused, match=r"photo\.png exists and was not written"):
        export_stack(volume[0], SOFT, photo)
    assert photo.read_bytes() == kept
    export_stack(volume[0], SOFT, photo, overwrite=True)
    assert is_own_png(photo)


def test_staging_left_by_a_killed_export_is_removed(volume: np.ndarray,
                                                    tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    left = tmp_path / f".scan.napari-dicom-{pid}-0.partial"
    left.mkdir()
    (left / "scan_0001.png").write_bytes(b"\x89PNG half")
    (tmp_path / ".scan.napari-dicom-1-0.partial").mkdir()  # pid 1 runs: not ours to take
    export_stack(volume, SOFT, tmp_path / "scan.png")
    assert _hidden(tmp_path) == [".scan.napari-dicom-1-0.partial"]
    # one staged inside the folder (a merge), by the same dead process
    inside = tmp_path / "scan" / f".napari-dicom-{pid}-3.partial"
    inside.mkdir()
    (inside / "scan_0002.png").write_bytes(b"\x89PNG half")
    export_stack(volume, SOFT, tmp_path / "scan.png")
    assert _hidden(tmp_path / "scan") == []


def test_a_linked_folder_stays_a_link_and_gets_the_new_export(volume: np.ndarray,
                                                              tmp_path: Path) -> None:
    """The target folder is a symbolic link (to a bigger disk, say): the export goes
    through it, staged inside the linked folder, and the link stays."""
    real = tmp_path / "elsewhere" / "scan_data"
    real.mkdir(parents=True)
    link = tmp_path / "work" / "scan"
    link.parent.mkdir()
    link.symlink_to(real, target_is_directory=True)
    export_stack(volume, SOFT, link.parent / "scan.png")
    export_stack(volume[:5], LUNG, link.parent / "scan.png")
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert sorted(p.name for p in real.iterdir()) == [MANIFEST] + [
        f"scan_{i:04d}.png" for i in range(1, 6)]
    np.testing.assert_array_equal(_png(real / "scan_0005.png"), render_uint8(volume[4], LUNG))
    assert _hidden(link.parent) == [] and _hidden(real.parent) == []


def test_a_stack_written_in_parts_by_tasks_run_again(volume: np.ndarray,
                                                     tmp_path: Path) -> None:
    """A stack written by several tasks (a long series on a cluster): parts in any
    order, one run twice after its first run died mid-write (its temporary file left
    behind, under a name no retry uses), the install run twice (the first died after
    the swap): the same bytes as one export_stack call, no hidden file left, and an
    earlier export of the stack replaced as a whole."""
    from napari_dicom.core.export import install_shared_stack, open_shared_stack
    from napari_dicom.core.output import stage_tag

    export_stack(volume, SOFT, tmp_path / "one" / "scan.png")
    folder = tmp_path / "tasks" / "scan"
    export_stack(volume[:3], LUNG, folder)  # an earlier export, to be replaced
    earlier = _files(folder)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    tag = stage_tag().replace(f"{os.getpid()}-", f"{int(dead.stdout)}-")  # made elsewhere
    plan = open_shared_stack(folder, len(volume), tag=tag)
    assert plan.staging is not None and plan.staging.is_dir()
    for part in [(8, 12), (0, 4)]:
        paths = export_stack(volume, SOFT, folder, part=part, plan=plan)
        assert [p.name for p in paths] == [f"scan_{i + 1:04d}.png" for i in range(*part)]
    # the first task run again (its result lost with a worker): the same staging folder,
    # kept though the pid in its name is not one of this machine's
    assert open_shared_stack(folder, len(volume), tag=tag).staging == plan.staging
    assert len(list(plan.staging.glob("*.png"))) == 8
    with pytest.raises(ExportError, match=r"4 plane\(s\) were not written, e.g. scan_0005"):
        install_shared_stack(plan, None, SOFT)  # never a stack with holes
    export_stack(volume, SOFT, folder, part=(4, 8), plan=plan)
    # what a task killed while writing plane 6 leaves, then the task run again
    (plan.staging / f".scan_0006.png.{int(dead.stdout)}.0.tmp").write_bytes(b"\x89PNG half")
    export_stack(volume, SOFT, folder, part=(4, 8), plan=plan)
    assert _files(folder) == earlier  # nothing in place before the install
    install_shared_stack(plan, None, SOFT)
    install_shared_stack(plan, None, SOFT)  # run again after the swap: finds it done
    assert _files(folder) == _files(tmp_path / "one" / "scan")
    assert _hidden(folder) == [] and _hidden(folder.parent) == []
