"""Who wrote what is already in an output folder, and how a new export replaces it.

The rules every export door follows (the napari writer, the widget's export button and
``napari-dicom export`` all reach them through :func:`~napari_dicom.core.export.export_stack`
and :mod:`~napari_dicom.core.batch`):

* **Never overwrite a file napari-dicom did not write** unless told to (``overwrite``,
  the CLI's ``--overwrite``). napari-dicom's own earlier output is recognised by its
  manifest: a ``manifest.csv`` whose header is one napari-dicom writes, and the PNG names
  it lists that follow the export's naming pattern. A single PNG (2-D export) is
  recognised by its ``Software`` text chunk (``napari-dicom <version>``).
* **A stack is replaced as a whole, once the new one is complete.** Planes are written
  into a hidden folder beside the target (:func:`staging_folder`), then
  :meth:`StackPlan.install` swaps it in with renames: a half-written PNG never carries a
  final name, and an export that fails or is interrupted leaves the earlier one as it was.
  Planes of the earlier export that the new one does not have (a series that now has
  fewer planes) go with it.
* When the target folder also holds files that are not napari-dicom's (that the new
  export does not collide with, or that ``overwrite`` allows it to replace), is a
  symbolic link, or its parent folder cannot take the staging folder, the stack is
  staged in a hidden folder inside the target instead, then its files are moved in one
  by one (each rename is atomic; the manifest last) and the earlier export's stale
  planes are removed; the other files stay (and a link stays a link).
* Staging folders left behind by a process that was killed (SIGKILL, power loss) are
  removed by the next export of the same target once their process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import shutil
import signal
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal

__all__ = [
    "DISK_FULL",
    "ExportError",
    "ExportRefused",
    "StackPlan",
    "check_interrupt",
    "interrupts_deferred",
    "is_complete_own_png",
    "is_disk_full",
    "is_own_png",
    "kept_on_resume",
    "manifest_header",
    "plan_stack",
    "stage_tag",
    "watch_interrupts",
]

#: errno values that mean "the disk (or the user's quota) is full"
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

_TAG = "napari-dicom"
_counter = itertools.count()
_STAGE_RE = re.compile(r"\.napari-dicom-(\d+)-\d+\.(partial|old)$")


class ExportError(OSError):
    """A PNG export that could not be written; the message names the file or folder.

    ``str()`` is the message alone, also when ``errno`` / ``filename`` are set (the
    message already says both, in one line)."""

    def __str__(self) -> str:
        if len(self.args) in (1, 2) and isinstance(self.args[-1], str):
            return self.args[-1]
        return super().__str__()


class ExportRefused(ExportError):
    """An export that would overwrite files napari-dicom did not write; nothing was
    written. ``names`` lists (some of) those files."""

    def __init__(self, message: str, names: Sequence[str] = ()) -> None:
        super().__init__(errno.EEXIST, message)
        self.names = list(names)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an :class:`OSError` saying the disk or the quota is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


# --------------------------------------------------------------------------------------
# Recognising our own files
# --------------------------------------------------------------------------------------


def manifest_header(path: str | os.PathLike[str]) -> str | None:
    """The first line of a CSV file (without its line end), or None when the file is
    missing, not a regular file or not UTF-8 text."""
    try:
        with open(path, "rb") as f:
            if not os.path.isfile(path):
                return None
            line = f.readline(4096)
    except OSError:
        return None
    try:
        return line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return None


def is_own_png(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a PNG napari-dicom wrote: its ``Software`` text chunk (before
    the image data, where :func:`~napari_dicom.core.export.encode_png` puts it) starts
    with ``napari-dicom``."""
    try:
        with open(path, "rb") as f:
            if not os.path.isfile(path):
                return False
            head = f.read(1 << 16)
    except OSError:
        return False
    return _software_is_ours(head)


#: the last 12 bytes of every complete PNG: the empty IEND chunk and its CRC (PNG 11.2.5)
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def is_complete_own_png(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a whole PNG napari-dicom wrote: :func:`is_own_png`, and it
    ends with the IEND chunk (a file cut short by a copy, a full disk or a crash on a
    file system without atomic renames does not). ``--skip-existing`` keeps only these."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not os.path.isfile(path) or st.st_size < 8 + 25 + 12:
                return False
            head = f.read(1 << 16)
            f.seek(st.st_size - len(_IEND))
            tail = f.read(len(_IEND))
    except OSError:
        return False
    return tail == _IEND and _software_is_ours(head)


def kept_on_resume(path: str | os.PathLike[str]) -> bool:
    """Whether ``--skip-existing`` keeps the PNG at ``path``: a file is there and it is
    not one of napari-dicom's cut short (:func:`is_complete_own_png`); such a file is
    written anew. A file napari-dicom did not write is left as it is."""
    if not os.path.isfile(path):
        return False
    return is_complete_own_png(path) or not is_own_png(path)


def _software_is_ours(head: bytes) -> bool:
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    pos = 8
    while pos + 8 <= len(head):
        length = int.from_bytes(head[pos : pos + 4], "big")
        kind = head[pos + 4 : pos + 8]
        body = head[pos + 8 : pos + 8 + length]
        if kind in (b"IDAT", b"IEND"):
            return False
        if kind == b"tEXt" and body.startswith(b"Software\0"):
            return body[len(b"Software\0") :].startswith(_TAG.encode())
        pos += 12 + length
    return False


def _own_names(folder: Path, headers: Collection[str], pattern: re.Pattern[str]) -> set[str]:
    """Names of ``folder/manifest.csv`` and the files it lists when the manifest's header
    is one of ``headers`` (napari-dicom's); only listed names matching ``pattern`` count.
    Empty when the manifest is missing or someone else's."""
    manifest = folder / "manifest.csv"
    if manifest_header(manifest) not in headers:
        return set()
    import csv

    names = {"manifest.csv"}
    try:
        with manifest.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                name = row.get("file") or ""
                if pattern.fullmatch(name):
                    names.add(name)
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()
    return names


# --------------------------------------------------------------------------------------
# Staging and replacing a stack
# --------------------------------------------------------------------------------------


def stage_tag() -> str:
    """``<pid>-<n>``: a name for staging folders that no other call of this process (and
    no other process alive on this machine) is given."""
    return f"{os.getpid()}-{next(_counter)}"


def staging_folder(folder: Path, kind: Literal["partial", "old"], inside: bool = False,
                   tag: str | None = None) -> Path:
    """A hidden name beside ``folder``, ``.<name>.napari-dicom-<tag>.<kind>``, or inside
    it, ``.napari-dicom-<tag>.<kind>``; ``tag`` is a new :func:`stage_tag` unless given
    (a stack written by several tasks: each finds the folder by the tag it was sent)."""
    tail = f"{_TAG}-{tag or stage_tag()}.{kind}"
    return folder / f".{tail}" if inside else folder.with_name(f".{folder.name}.{tail}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_leftovers(folder: Path, keep: str | None = None) -> None:
    """Remove staging folders beside and inside ``folder`` left by napari-dicom processes
    that are gone (killed mid-export); those of running processes are left alone, and
    those named by the tag ``keep`` (a stack several tasks write: the process that made
    its tag may run on another machine, where its pid means nothing here)."""
    for where, prefix in ((folder.parent, f".{folder.name}.{_TAG}-"), (folder, f".{_TAG}-")):
        try:
            entries = os.listdir(where)
        except OSError:
            continue
        for entry in entries:
            if not entry.startswith(prefix) or (keep and f"{_TAG}-{keep}." in entry):
                continue
            m = _STAGE_RE.search(entry)
            if m is None or _pid_alive(int(m.group(1))):
                continue
            path = where / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)


def interrupts_to_main_thread() -> None:
    """Initializer of the worker threads: SIGINT is blocked in them, so the kernel hands a
    Ctrl-C to the main thread and interrupts its blocking wait at once. Caught by a worker
    thread instead, the signal only sets a flag that the main thread, blocked until the
    work is done, could look at too late: an export stopped by SIGINT then finished and
    exited 0 (seen about once in 30 runs of the SIGINT test under load)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


_wakeup_fd: int | None = None


def watch_interrupts() -> None:
    """Record SIGINT in a pipe (``signal.set_wakeup_fd``) that :func:`check_interrupt`
    reads: the command line's export calls it once, on the main thread.

    The C-level handler writes the signal number there whatever happens to the Python-level
    handler; a KeyboardInterrupt alone was lost now and then (an export stopped by SIGINT
    finished and exited 0, about once in 20-40 runs of the SIGINT test, cause not found),
    so the export also looks here between planes and before it swaps a folder in.
    """
    global _wakeup_fd
    if _wakeup_fd is not None or threading.current_thread() is not threading.main_thread():
        return
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    _wakeup_fd = r


def check_interrupt() -> None:
    """Raise KeyboardInterrupt when :func:`watch_interrupts` has seen a SIGINT."""
    if _wakeup_fd is None:
        return
    try:
        got = os.read(_wakeup_fd, 512)
    except BlockingIOError:
        return
    if signal.SIGINT in got:
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block is done.

    A swap is two renames; an interrupt between them would leave the target missing.
    Only the main thread receives KeyboardInterrupt, and only while Python's default
    handler is installed is it touched here (napari's event loop installs its own).
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@dataclass
class StackPlan:
    """How one stack export goes into ``folder``.

    ``mode``:

    * ``swap``: ``folder`` is missing, empty or holds only napari-dicom's earlier export;
      the new stack is written into :attr:`staging` and replaces the folder as a whole;
    * ``merge``: ``folder`` also holds other files (or is a symbolic link, or its parent
      takes no staging folder); the new files are moved in one by one from
      :attr:`staging` (inside ``folder``), then the earlier export's stale planes are
      removed;
    * ``resume``: ``skip_existing``: complete napari-dicom PNGs already present under
      their final name are kept (:func:`is_complete_own_png`), the missing or incomplete
      ones are written in place (each atomically).
    """

    folder: Path
    names: list[str]
    mode: Literal["swap", "merge", "resume"]
    #: files of napari-dicom's earlier export in ``folder`` (its manifest included)
    previous: set[str] = field(default_factory=set)
    staging: Path | None = None

    def open_staging(self, tag: str | None = None) -> Path:
        """Create :attr:`staging` (``swap``: beside the folder, whose parent must exist;
        ``merge``: inside it). A swap whose staging folder cannot be made beside an
        existing folder (a parent the user may not write) becomes a merge.

        ``tag`` (:func:`stage_tag`): the staging folder's name is the tag's, and it may
        exist already (a task run again after its worker died opens the same folder)."""
        if self.mode == "swap":
            self.staging = staging_folder(self.folder, "partial", tag=tag)
            try:
                self.staging.mkdir(exist_ok=tag is not None)
                return self.staging
            except PermissionError:
                if not self.folder.is_dir():
                    raise
                self.mode = "merge"
        self.staging = staging_folder(self.folder, "partial", inside=True, tag=tag)
        self.staging.mkdir(exist_ok=tag is not None)
        return self.staging

    @property
    def write_folder(self) -> Path:
        """Where the planes are written now."""
        return self.staging if self.staging is not None else self.folder

    def install(self) -> None:
        """Put the complete stack in :attr:`staging` in place (see the module docstring).

        Raises OSError when a rename fails; the earlier export is then as it was
        (``swap``) or holds some new files beside the old ones (``merge``)."""
        stale = self.previous - set(self.names) - {"manifest.csv"}
        if self.mode == "resume":
            self._remove(stale)
            return
        assert self.staging is not None
        check_interrupt()
        with interrupts_deferred():
            if self.mode == "swap":
                self._swap()
            else:
                for name in [*self.names, "manifest.csv"]:
                    os.replace(self.staging / name, self.folder / name)
                self._remove(stale)
                with contextlib.suppress(OSError):
                    self.staging.rmdir()

    def _swap(self) -> None:
        assert self.staging is not None
        try:
            os.rename(self.staging, self.folder)  # no folder yet (or an empty one)
            return
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.EPERM,
                               errno.EACCES):
                raise
        old = staging_folder(self.folder, "old")
        os.rename(self.folder, old)
        try:
            os.rename(self.staging, self.folder)
        except BaseException:
            os.rename(old, self.folder)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def _remove(self, names: set[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()

    def discard(self) -> None:
        """Remove the staging folder (a failed or interrupted export)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def plan_stack(
    folder: Path,
    names: Sequence[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    manifest_headers: Collection[str],
    stem: str | None = None,
) -> StackPlan:
    """Decide how a stack of ``names`` (+ ``manifest.csv``) goes into ``folder``.

    ``stem``: the planes' name stem when it is not the folder's name (mask stacks are
    named like their image's planes, in a folder of their own).

    Raises
    ------
    ExportRefused
        ``folder`` holds files napari-dicom did not write under names the export needs
        (and ``overwrite`` is false); nothing is written.
    """
    pattern = re.compile(rf"{re.escape(stem or folder.name)}(_\d{{4,}})+\.png")
    if not folder.is_dir():
        return StackPlan(folder, list(names), "resume" if resume else "swap")
    previous = _own_names(folder, manifest_headers, pattern)
    try:
        present = set(os.listdir(folder))
    except OSError:
        present = set()
    previous &= present
    foreign = present - previous
    wanted = {"manifest.csv"} if resume else {*names, "manifest.csv"}
    clash = sorted(foreign & wanted)
    if clash and not overwrite:
        shown = ", ".join(clash[:3]) + (f" and {len(clash) - 3} more" if len(clash) > 3 else "")
        raise ExportRefused(
            f"{folder} holds {shown}, not written by napari-dicom: not overwritten", clash
        )
    if resume:
        return StackPlan(folder, list(names), "resume", previous)
    mode: Literal["swap", "merge"] = "merge" if foreign or folder.is_symlink() else "swap"
    return StackPlan(folder, list(names), mode, previous)
