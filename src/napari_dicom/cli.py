"""The ``napari-dicom`` command: ``export``, ``info`` and ``view``.

``main(argv)`` is a plain function returning an exit code (0 everything converted, 1 some
input skipped or failed, or the disk full, 2 usage error or a refusal to overwrite files
napari-dicom did not write, 130 interrupted), so it is tested as ``main([...])``. It
holds no state between calls. napari is imported only by ``view``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from . import __version__
from .core.render import VOI_FUNCTIONS, WindowError

PROG = "napari-dicom"

EXPORT_EPILOG = """\
window choice (one of; default --window file):
  --window file        the file's first stored window (or VOI LUT); without one, the
                       min-max of the data leaving out Pixel Padding
  --window C,W         centre,width in modality units (HU for CT), e.g. 40,400;
                       write a negative centre as --window=-600,1500
  --preset NAME        a CT preset (see below)
  --minmax             min-max of the data, padding left out
  --percentile LO HI   the LO and HI percentiles of the data (padding left out);
                       --ignore-extremes first leaves out the minimum and maximum values

output layout (names made portable, unique on collision, always inside OUT):
  OUT/manifest.csv                                   one row per series
  OUT/<PatientID>/<StudyDate>_<StudyDescription>/<SeriesNumber>_<SeriesDescription>/
      <PNG stack>, manifest.csv                      one row per image
  .../<SeriesNumber>_<SeriesDescription>_masks/<SEG or RTSTRUCT layer>/   (--masks)
      label-map PNGs named like the series' PNGs (8-bit, 16-bit past 255 labels),
      manifest.csv, labels.csv (value -> segment / ROI name, colour, source file)

de-identified output (--deidentify; PS3.15 Annex E basic profile in spirit):
  OUT/P_<hash>/ST_<hash>/SE_<hash>/SE_<hash>_0001.png ...   hash: HMAC-SHA256 of the
      Patient ID / Study / Series Instance UID with a key (--deid-key, --deid-key-file,
      the key of an existing mapping file, else a new random one)
  replaced: Series and SOP Instance UIDs in manifests and PNG text (2.25.<hash>)
  left out: patient name, ID, birth date, all dates, study/series descriptions,
      accession number, institution, source file paths, failure messages
  kept: modality, series number, window (centre, width, function, polarity, VOI LUT
      explanation), slice location (mm), image size and count, status
  the key and pseudonym -> original table: OUT.deid-mapping.json beside OUT (or
      --deid-mapping FILE, outside OUT); keep it private
  pixels are NOT scrubbed: a series that may carry burned-in annotation (Burned In
      Annotation = YES, US, SC / Secondary Capture) gets a warning line

existing files: napari-dicom's own earlier export of a series (known by its
manifest.csv) is replaced as a whole once the new one is complete (PNGs the new one
does not have are removed); an interrupted or failed export leaves it as it was.
Files it did not write are never overwritten unless --overwrite is given.

on a Dask cluster (--scheduler): the headers are read and the series exported by the
workers (a task per folder chunk, a task per series; a series of more than 256 planes,
or $NAPARI_DICOM_SPLIT_PLANES, is written by several tasks in plane ranges); names,
progress, manifests and PNGs are the same bytes as a local run. SRC and OUT must be the
same paths on every worker (a shared file system: yours to provide). A worker that
dies has its tasks run again; a scheduler that goes away stops the run (what was
exported stays): rerun with --skip-existing to resume.

exit status: 0 all converted, 1 some files or series skipped or refused (listed) or
the disk full, 2 usage error or OUT/manifest.csv not napari-dicom's, 130 interrupted

examples:
  napari-dicom export /data/CT -o png
  napari-dicom export scan1/ scan2/DICOMDIR -o png --preset lung
  napari-dicom export study/ -o png --window=-600,1500 --voi-function sigmoid
  napari-dicom export cr.dcm -o png --percentile 1 99 --ignore-extremes --invert auto
  napari-dicom export big/ -o png --jobs 4 --skip-existing     # resume a run
  napari-dicom export /shared/dicom -o /shared/png --scheduler tcp://head:8786
  napari-dicom export big/ -o png --scheduler local:4    # 4 worker processes here
  napari-dicom export study/ -o png --masks        # CT PNGs + SEG/RTSTRUCT label maps
"""

INFO_EPILOG = """\
examples:
  napari-dicom info /data/CT
  napari-dicom info study/DICOMDIR --json > series.json
"""

VIEW_EPILOG = """\
examples:
  napari-dicom view /data/CT/series1
  napari-dicom view                 # the bundled phantom CT series
"""


class UsageError(Exception):
    """A mistake in the command line found after parsing (exit status 2), or an input
    that ends the command with a message (``status``)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` can return 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs needs a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--jobs needs at least 1, got {n}")
    return n


def _wrap(text: str) -> str:
    return textwrap.fill(text, 78)


def build_parser() -> argparse.ArgumentParser:
    from .core.presets import preset_names

    parser = _Parser(
        prog=PROG,
        description=_wrap("Convert, inspect and view DICOM with the correct picture: "
                          "Modality LUT (HU), VOI window, MONOCHROME1 polarity, as DICOM "
                          "PS3.3 C.11 defines them."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  napari-dicom info /data/CT\n  napari-dicom export /data/CT -o png"
        "\n  napari-dicom view /data/CT\n\n"
        "Run 'napari-dicom COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # export ---------------------------------------------------------------------------
    ex = sub.add_parser(
        "export",
        help="write every series as an 8-bit PNG stack, as displayed",
        description=_wrap("Write every DICOM series found in SRC as 8-bit PNGs exactly as "
                          "the napari-dicom viewer shows them (same function as the napari "
                          "writer). Files that cannot be read are reported and skipped."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXPORT_EPILOG + "\npresets: " + ", ".join(preset_names()),
    )
    ex.add_argument("src", nargs="+", metavar="SRC",
                    help="DICOM files, folders (searched recursively), DICOMDIR files or "
                    "DICOMweb URLs (dicomweb+http://HOST:PORT/ROOT/studies/UID[/series/UID])")
    ex.add_argument("-o", "--output", required=True, metavar="OUT", type=Path,
                    help="output folder (created)")
    win = ex.add_argument_group("window")
    choice = win.add_mutually_exclusive_group()
    choice.add_argument("--window", metavar="file|C,W", default=None,
                        help="'file' (default): first stored window, else min-max without "
                        "padding; or centre,width, e.g. 40,400")
    choice.add_argument("--preset", metavar="NAME",
                        help="CT window preset: " + ", ".join(preset_names()))
    choice.add_argument("--minmax", action="store_true",
                        help="min-max window of the data, Pixel Padding left out")
    choice.add_argument("--percentile", nargs=2, type=float, metavar=("LO", "HI"),
                        help="window from the LO and HI percentiles of the data (e.g. 1 99)")
    win.add_argument("--ignore-extremes", action="store_true",
                     help="with --percentile: leave out the minimum and maximum values first "
                     "(black margins, burned-in labels)")
    win.add_argument("--voi-function", type=str.lower,
                     choices=[f.lower() for f in VOI_FUNCTIONS],
                     help="VOI LUT Function of the window (PS3.3 C.11.2.1.2/3); default the "
                     "file's (LINEAR when absent)")
    win.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                     help="polarity: auto follows MONOCHROME1 / Presentation LUT Shape "
                     "(default), yes/no force it")
    ex.add_argument("--frames", choices=("all", "first"), default="all",
                    help="multi-frame files: all frames (default) or the first frame only")
    ex.add_argument("--clahe", action="store_true",
                    help="contrast-limited adaptive histogram equalisation of the 8-bit "
                    "result (needs opencv-python-headless: the 'clahe' extra)")
    ex.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N",
                    help="parallel decode/encode workers (default: all cores)")
    ex.add_argument("--skip-existing", action="store_true",
                    help="resume: complete PNGs already present are not rewritten (one of "
                    "napari-dicom's cut short is written anew)")
    ex.add_argument("--scheduler", metavar="ADDRESS|local[:N]",
                    help="run on a Dask cluster: the address of a running dask.distributed "
                    "scheduler (tcp://host:8786), or local[:N] for N worker processes here "
                    "(default N: the cores); needs the 'cluster' extra. Workers read SRC and "
                    "write OUT themselves: both must be the same path on every worker (a "
                    "shared file system, yours to provide)")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace files in OUT that napari-dicom did not write (a "
                    "manifest.csv, PNGs under the names it writes); without it they make "
                    "the export refuse")
    deid = ex.add_argument_group("de-identification (see below)")
    deid.add_argument("--deidentify", action="store_true",
                      help="pseudonymous folder and file names (keyed hash of the UIDs); no "
                      "patient name, ID, dates or descriptions in names, manifests or PNG "
                      "text; pixels are not scrubbed")
    key = deid.add_mutually_exclusive_group()
    key.add_argument("--deid-key", metavar="KEY",
                     help="the secret of the keyed hash (same key: same names)")
    key.add_argument("--deid-key-file", metavar="FILE", type=Path,
                     help="read the secret from FILE (its first line)")
    deid.add_argument("--deid-mapping", metavar="FILE", type=Path,
                      help="where the key and the pseudonym -> original table go (default "
                      "OUT.deid-mapping.json beside OUT; never inside OUT)")
    ex.add_argument("--masks", action="store_true",
                    help="also write the label maps of the SEG and RTSTRUCT objects found "
                    "with a series, beside its PNGs: SERIES_masks/LAYER/, planes named like "
                    "the series' PNGs, with manifest.csv and labels.csv (value -> name)")
    ex.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bar (it is off anyway when stderr is not a terminal)")

    # info -----------------------------------------------------------------------------
    info = sub.add_parser(
        "info",
        help="list the series found, without decoding pixels",
        description=_wrap("List the DICOM series in SRC (headers only, no pixel decoding): "
                          "patient, study, series, modality, images, size, spacing, stored "
                          "windows, transfer syntax."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=INFO_EPILOG,
    )
    info.add_argument("src", nargs="+", metavar="SRC",
                      help="DICOM files, folders (recursive) or DICOMDIR files")
    info.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")

    # view -----------------------------------------------------------------------------
    view = sub.add_parser(
        "view",
        help="open napari with the files and the Window / Level widget",
        description=_wrap("Open napari with SRC read by napari-dicom and the Window / Level "
                          "widget docked; without SRC, the bundled phantom CT series."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=VIEW_EPILOG,
    )
    view.add_argument("src", nargs="*", metavar="SRC",
                      help="DICOM files, folders or DICOMDIR files (default: sample series)")
    view.add_argument("--screenshot", type=Path, metavar="PATH",
                      help="for testing: save a screenshot of the window to PATH and exit "
                      "instead of starting the event loop")

    # set-reader -----------------------------------------------------------------------
    pref = sub.add_parser(
        "set-reader",
        help="make napari open DICOM folders and .dcm files with napari-dicom",
        description=_wrap("Write napari's reader preferences so that napari opens every "
                          "folder and *.dcm/*.dicom/*.ima file with napari-dicom, without "
                          "asking (File > Preferences > Plugins shows them; File > IO "
                          "Utilities in napari does the same). A folder napari-dicom cannot "
                          "read is then offered to the other readers."),
    )
    pref.add_argument("--undo", action="store_true",
                      help="remove the preferences this command wrote")
    return parser


# --------------------------------------------------------------------------------------
# Progress on stderr
# --------------------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """One ``\\r``-updated status line: series, images, rate, time left.

    Disabled (prints nothing) unless ``enabled``; thread-safe, at most 10 updates a second.
    """

    def __init__(self, stream: IO[str], enabled: bool, n_series: int = 0) -> None:
        self.stream = stream
        self.enabled = enabled
        self.n_series = n_series
        self.series_index = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._lock = threading.Lock()
        self._shown = False

    def series(self, index: int, n_series: int) -> None:
        self.series_index, self.n_series = index, n_series

    def __call__(self, steps: int, total_steps: int, label: str = "") -> None:
        """Show the batch's progress: ``steps`` of ``total_steps``, two per image (decoded,
        written; ``core.batch.BatchProgress``), shown as images."""
        if not self.enabled:
            return
        done, total = steps // 2, total_steps // 2
        now = time.perf_counter()
        with self._lock:
            if done < total and now - self._last < 0.1:
                return
            self._last = now
            elapsed = now - self.start
            rate = done / elapsed if elapsed > 0 else 0.0
            left = (total - done) / rate if rate > 0 else math.inf
            pct = 100.0 * done / total if total else 100.0
            width = shutil.get_terminal_size((100, 20)).columns
            bar_w = 20
            fill = int(bar_w * done / total) if total else bar_w
            text = (
                f"[{'#' * fill}{'.' * (bar_w - fill)}] {pct:5.1f}% "
                f"series {self.series_index}/{self.n_series}  images {done}/{total}  "
                f"{rate:6.1f} img/s  left {_fmt_time(left)}  {label}"
            )
            self.stream.write("\r" + text[: max(width - 1, 20)].ljust(max(width - 1, 20)))
            self.stream.flush()
            self._shown = True

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------


def _is_url(source: str) -> bool:
    return source.lower().startswith(("dicomweb+http://", "dicomweb+https://"))


def _check_sources(sources: Sequence[str]) -> list[Path | str]:
    """Files and folders that exist, and DICOMweb URLs (kept as text)."""
    missing = [s for s in sources if not _is_url(s) and not Path(s).exists()]
    if missing:
        raise UsageError(
            f"{PROG}: error: no such file or folder: {', '.join(missing)}"
        )
    return [s if _is_url(s) else Path(s) for s in sources]


@contextlib.contextmanager
def _source_faults(command: str, sources: Sequence[Path | str]) -> Iterator[None]:
    """A DICOMweb fault (server down, refused credentials, unknown UID...) ends the
    command with its one-line message, not a traceback."""
    if not any(isinstance(s, str) for s in sources):
        yield
        return
    from .core.pixels import SourceError

    try:
        yield
    except SourceError as exc:
        raise UsageError(f"{PROG} {command}: error: {exc}", status=1) from None


def _window_request(args: argparse.Namespace) -> Any:
    from .core.batch import WindowRequest, parse_window, preset_window

    fn = args.voi_function.upper() if args.voi_function else None
    if args.ignore_extremes and args.percentile is None:
        raise UsageError(f"{PROG} export: error: --ignore-extremes goes with --percentile LO HI")
    try:
        if args.preset is not None:
            return WindowRequest("preset", preset_window(args.preset, fn), function=fn,
                                 invert=args.invert)
        if args.minmax:
            return WindowRequest("minmax", function=fn, invert=args.invert)
        if args.percentile is not None:
            lo, hi = args.percentile
            from .core.render import check_percentiles

            check_percentiles(lo, hi)
            return WindowRequest("percentile", percentiles=(lo, hi),
                                 ignore_extremes=args.ignore_extremes, function=fn,
                                 invert=args.invert)
        if args.window is None or args.window.strip().lower() == "file":
            return WindowRequest("file", function=fn, invert=args.invert)
        return WindowRequest("explicit", parse_window(args.window, fn), function=fn,
                             invert=args.invert)
    except WindowError as exc:
        raise UsageError(f"{PROG} export: error: {exc}") from None


def _reason(item: Any) -> str:
    """A skipped file's reason without the file name the scanner may put in front."""
    reason = str(item.reason).strip()
    name = Path(str(item.path)).name
    if reason.startswith(name + ":"):
        reason = reason[len(name) + 1 :].strip()
    return reason


def _reason_kind(reason: str) -> str:
    """The reason up to its details, to count skipped files by kind."""
    kind = re.split(r"[(:;,]", reason, maxsplit=1)[0].strip()
    if len(kind) > 80:
        kind = kind[:80].rsplit(" ", 1)[0] + " ..."
    return kind or "unreadable"


def _summary_skipped(scanned: Any, damaged: Sequence[str], out: IO[str]) -> None:
    skipped = [_reason(s) for s in scanned.skipped] + list(damaged)
    if skipped:
        kinds = Counter(_reason_kind(r) for r in skipped)
        print(f"files skipped: {len(skipped)} ("
              + "; ".join(f"{n} x {k}" for k, n in kinds.most_common()) + ")", file=out)


def _scan_warnings(scanned: Any) -> list[str]:
    """Scan warnings, less those that only repeat a skipped file's reason."""
    reasons = [_reason(s) for s in scanned.skipped]
    return [str(w) for w in getattr(scanned, "warnings", []) or []
            if not any(r and r in str(w) for r in reasons)]


def _nothing_found(scanned: Any, sources: Sequence[Path | str]) -> str:
    """Why no image was found, on one line naming the sources and what they held."""
    why = [str(s.reason) for s in list(getattr(scanned, "non_image", []) or [])[:2]]
    n_other = int(getattr(scanned, "non_dicom", 0) or 0)
    if n_other:
        why.append(f"{n_other} file(s) that are not DICOM" if n_other > 1 or len(sources) > 1
                   else f"{Path(sources[0]).name if Path(sources[0]).is_file() else '1 file'}"
                   " is not DICOM")
    return (f"no DICOM images found in {', '.join(map(str, sources))}"
            + (f" ({'; '.join(why)})" if why else ""))


def _cluster_runner(args: argparse.Namespace) -> Any:
    """The :class:`~napari_dicom.core.cluster.DaskRunner` of ``--scheduler`` (not yet
    connected), or None."""
    if args.scheduler is None:
        return None
    from .core.cluster import CLUSTER_MISSING, DaskRunner

    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"{PROG} export: error: {CLUSTER_MISSING}") from None
    try:
        return DaskRunner(args.scheduler, threads=args.jobs or 1)
    except ValueError as exc:
        raise UsageError(f"{PROG} export: error: {exc}") from None


class _Redactor:
    """What ``export --deidentify`` prints on stderr: source files by their path relative
    to the SRC they were found under, series by their pseudonymous output folder, and the
    header values it leaves out of the output (patient, dates, descriptions, UIDs) replaced
    in every message. Without ``--deidentify`` everything is printed as it is.

    The relative path keeps the folder names under SRC: a tree whose folders are named
    after patients still shows them (said in ``--help`` and the README)."""

    #: header keywords whose values are left out of messages (PS3.15 Annex E in spirit)
    KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs",
                "AccessionNumber", "InstitutionName", "ReferringPhysicianName", "StudyID",
                "StudyDescription", "SeriesDescription", "StudyDate", "SeriesDate",
                "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime")

    def __init__(self, pseud: Any, sources: Sequence[Path | str], batch: Any) -> None:
        self.on = pseud is not None
        if not self.on:
            return
        self.roots = sorted((Path(s).resolve() for s in sources if isinstance(s, Path)),
                            key=lambda p: -len(str(p)))
        values: dict[str, str] = {}
        for r in batch.results:
            se = r.series
            for uid in (se.uid, se.study_uid):
                if uid:
                    values[uid] = pseud.uid(uid)
            header = se.header or {}
            texts = [se.patient_id, se.study_date, se.study_description, se.description,
                     *(str(header.get(k) or "") for k in self.KEYWORDS)]
            for t in texts:
                for form in {t, t.replace("^", " ")}:
                    if len(form.strip()) >= 3 and form not in values:
                        values[form] = "[removed]"
        self.values = sorted(values.items(), key=lambda kv: -len(kv[0]))

    def path(self, path: str | os.PathLike[str]) -> str:
        """A source file as printed."""
        if not self.on:
            return str(path)
        p = Path(path).resolve()
        for root in self.roots:
            if p == root:
                return self.text(p.name)
            if p.is_relative_to(root):
                return self.text(str(p.relative_to(root)))
        return self.text(p.name)

    def text(self, text: str) -> str:
        """A message as printed: source paths relative, identifying values removed."""
        if not self.on:
            return text
        for root in self.roots:
            text = text.replace(str(root) + os.sep, "").replace(str(root), root.name)
        for value, repl in self.values:
            text = text.replace(value, repl)
        return text


def cmd_export(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    from .core.batch import ExportOptions, MissingDependencyError, export_all, require_cv2
    from .core.output import ExportRefused

    sources = _check_sources(args.src)
    request = _window_request(args)
    if args.clahe:
        try:
            require_cv2()
        except MissingDependencyError as exc:
            raise UsageError(f"{PROG} export: error: {exc}") from None
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{PROG} export: error: output {out} exists and is not a folder")
    jobs = args.jobs or os.cpu_count() or 1
    runner = _cluster_runner(args)
    pseud, mapping = _deid_setup(args, out)
    options = ExportOptions(request, args.frames, args.clahe, jobs, args.skip_existing,
                            args.overwrite, pseud)
    show = not args.quiet and stderr.isatty()
    bar = ProgressBar(stderr, show)
    # the loader logs damaged images; this command reports them itself (below)
    quiet_log = logging.NullHandler()
    logger = logging.getLogger("napari_dicom")
    logger.addHandler(quiet_log)
    try:
        with _source_faults("export", sources), \
                (runner if runner is not None else contextlib.nullcontext()):
            batch = export_all(sources, out, options, progress=bar,
                               series_progress=bar.series, runner=runner)
    except ExportRefused as exc:
        raise UsageError(f"{PROG} export: error: {exc}; choose another output folder or "
                         "pass --overwrite") from None
    except ConnectionError as exc:  # core.cluster.ClusterError: no scheduler (any more)
        raise UsageError(f"{PROG} export: error: {exc}", status=1) from None
    finally:
        logger.removeHandler(quiet_log)
        bar.close()
    scanned = batch.scan
    red = _Redactor(pseud, sources, batch)
    for s in scanned.skipped:
        print(f"skipped: {red.path(s.path)}: {red.text(_reason(s))}", file=stderr)
    for r in batch.results:
        for i, reason in sorted(r.damaged.items()):
            print(f"skipped: {red.path(r.series.planes[i].path)}: {red.text(reason)}",
                  file=stderr)
        if r.status in ("failed", "refused"):
            hint = "; pass --overwrite to replace them" if r.status == "refused" else ""
            if red.on:
                where = (str(r.folder.relative_to(batch.out)) if r.folder is not None
                         else f"series {pseud.uid(r.series.uid)}")
                print(f"{r.status}: series {where}: {red.text(r.message)}{hint}",
                      file=stderr)
                continue
            src = r.series.planes[0].path if r.series.planes else r.series.uid
            print(f"{r.status}: series {r.series.name} ({src}): {r.message}{hint}",
                  file=stderr)
    burned = _burned_in_warnings(batch, stderr) if pseud is not None else 0
    for w in _scan_warnings(scanned):
        print(f"warning: {red.text(w)}", file=stderr)
    if args.masks:
        _export_masks(batch, args.overwrite, stdout, stderr)
    if batch.error:
        print(f"{PROG} export: error: {red.text(batch.error)}", file=stderr)
    _export_summary(args, batch, runner, bar.start, stdout)
    manifest = batch.manifest if batch.manifest is not None else "not written"
    print(f"output: {batch.out}  (run manifest: {manifest})", file=stdout)
    if pseud is not None and mapping is not None:
        _deid_summary(pseud, mapping, burned, stdout, stderr)
    if not batch.results and not batch.error:
        print(f"{PROG} export: {red.text(_nothing_found(scanned, sources))}", file=stderr)
        return 1
    return 0 if batch.complete and batch.results else 1


def _export_summary(args: argparse.Namespace, batch: Any, runner: Any, start: float,
                    stdout: IO[str]) -> None:
    """The closing lines of ``export``: series, images, files/s per phase, who worked, what
    was skipped and why."""
    scanned = batch.scan
    ok = [r for r in batch.results if r.ok]
    elapsed = time.perf_counter() - start
    rate = batch.written / elapsed if elapsed > 0 else 0.0
    partial = [r for r in batch.results if r.status == "partial"]
    failed = len(batch.failed) - len(partial)
    line = f"series: {len(ok) + len(partial)} exported, {failed} failed"
    if partial:
        line += f" ({len(partial)} with damaged images left out)"
    print(line, file=stdout)
    kept = batch.images - batch.written
    line = f"images: {batch.written} written"
    if kept:
        line += f", {kept} already present (--skip-existing)"
    print(f"{line} in {elapsed:.1f} s ({rate:.1f} images/s)", file=stdout)
    n_read = len({p.path for se in scanned.series for p in se.planes}) + len(scanned.skipped)
    n_done = len({p.path for r in batch.results for p in r.series.planes})
    scan_rate = n_read / batch.scan_seconds if batch.scan_seconds > 0 else 0.0
    export_rate = n_done / batch.export_seconds if batch.export_seconds > 0 else 0.0
    print(f"files: {n_read} read in {batch.scan_seconds:.1f} s ({scan_rate:.0f} files/s, "
          f"scan), {n_done} exported in {batch.export_seconds:.1f} s ({export_rate:.0f} "
          "files/s)", file=stdout)
    who = (runner.describe() if runner is not None
           else f"this process, {args.jobs or os.cpu_count() or 1} thread(s)")
    print(f"workers: {batch.workers} ({who})", file=stdout)
    if args.skip_existing:
        done = [r for r in batch.results if r.status == "skipped-existing"]
        resumed = [r for r in batch.results if r.status == "ok (resumed)"]
        cut = sum(r.incomplete for r in batch.results)
        line = (f"resume: {len(done)} series complete already (all PNGs present and whole), "
                f"{len(resumed)} completed, {kept} PNGs kept")
        if cut:
            line += f", {cut} PNGs present but cut short written anew"
        print(line, file=stdout)
    _summary_skipped(scanned, [m for r in batch.results for m in r.damaged.values()], stdout)
    non_dicom = int(getattr(scanned, "non_dicom", 0) or 0)
    non_image = getattr(scanned, "non_image", 0)
    n_non_image = non_image if isinstance(non_image, int) else len(non_image)
    if non_dicom or n_non_image:
        print(f"ignored: {non_dicom} non-DICOM files, {n_non_image} DICOM files without an "
              "image", file=stdout)
    not_walked = int(getattr(scanned, "not_walked", 0) or 0)
    if not_walked:
        print(f"not opened: {not_walked} (named pipes, devices, link loops; see the warnings)",
              file=stdout)


def _deid_setup(args: argparse.Namespace, out: Path) -> tuple[Any, Path | None]:
    """The pseudonymizer and mapping file of ``--deidentify`` (None, None without it)."""
    given = args.deid_key is not None or args.deid_key_file is not None
    if args.deidentify and getattr(args, "masks", False):
        raise UsageError(f"{PROG} export: error: --masks cannot be de-identified yet "
                         "(segment and ROI names, source paths); leave out one of them")
    if not args.deidentify:
        if given or args.deid_mapping is not None:
            raise UsageError(f"{PROG} export: error: --deid-key, --deid-key-file and "
                             "--deid-mapping go with --deidentify")
        return None, None
    from .core.deid import (
        DeidError,
        Pseudonymizer,
        default_mapping_path,
        read_mapping_key,
        write_mapping,
    )

    mapping = (args.deid_mapping.resolve() if args.deid_mapping is not None
               else default_mapping_path(out))
    root = out.resolve()
    if mapping == root or mapping.is_relative_to(root):
        raise UsageError(f"{PROG} export: error: the mapping file {mapping} would be inside "
                         f"the output folder {root}; it holds the key: put it elsewhere")
    try:
        if args.deid_key is not None:
            key: str | None = args.deid_key
        elif args.deid_key_file is not None:
            try:
                lines = args.deid_key_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise DeidError(f"cannot read the key file {args.deid_key_file}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
            key = lines[0].strip() if lines else ""
            if not key:
                raise DeidError(f"the key file {args.deid_key_file} is empty")
        else:
            key = read_mapping_key(mapping)
        pseud = Pseudonymizer(key) if key else Pseudonymizer.generate()
        if given:  # a mapping file of another key would mix two keys: refuse it now
            stored = read_mapping_key(mapping)
            if stored is not None and stored != pseud.key:
                raise DeidError(f"{mapping} holds another key; pass --deid-mapping with "
                                "another file")
        # the key is saved before anything is written: an interrupted run can be resumed
        # with the same names
        write_mapping(mapping, pseud)
    except DeidError as exc:
        raise UsageError(f"{PROG} export: error: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{PROG} export: error: cannot write the mapping file {mapping}: "
                         f"{exc.strerror or exc}") from None
    return pseud, mapping


def _burned_in_warnings(batch: Any, stderr: IO[str]) -> int:
    """One warning line per exported series that may carry burned-in annotation."""
    from .core.deid import burned_in_reason

    n = 0
    for r in batch.results:
        reason = burned_in_reason(r.series)
        if reason is None or r.folder is None:
            continue
        n += 1
        where = r.folder.relative_to(batch.out) if r.folder.is_relative_to(batch.out) \
            else r.folder.name
        print(f"warning: {where}: may carry burned-in annotation ({reason}): pixels are "
              "not scrubbed; check these images before sharing", file=stderr)
    return n


def _deid_summary(pseud: Any, mapping: Path, burned: int, stdout: IO[str],
                  stderr: IO[str]) -> None:
    from .core.deid import DeidError, write_mapping

    try:
        write_mapping(mapping, pseud)
        where = f"key and mapping: {mapping} (keep it private, not with the output)"
    except (DeidError, OSError) as exc:
        where = f"mapping NOT written: {exc}"
        print(f"{PROG} export: error: de-identification {where}", file=stderr)
    line = f"de-identified: names, manifests and PNG text; {where}"
    print(line, file=stdout)
    if burned:
        print(f"burned-in annotation possible in {burned} series (pixels are not "
              "scrubbed; see the warnings)", file=stdout)
def _export_masks(batch: Any, overwrite: bool, stdout: IO[str], stderr: IO[str]) -> None:
    """``export --masks``: the label maps of the scan's SEG / RTSTRUCT objects beside
    the PNGs of the series they lie on."""
    from .core.masks import MANIFEST_CSV, export_series_masks

    objects = list(getattr(batch.scan, "objects", []) or [])
    exported = [(r.series, r.folder, r.images) for r in batch.results
                if r.ok and r.folder is not None]
    written, warns = export_series_masks(objects, exported, batch.scan.series,
                                         overwrite=overwrite)
    for w in dict.fromkeys(warns):
        print(f"warning: {w}", file=stderr)
    stacks = sum(1 for p in written if p.name == MANIFEST_CSV)
    pngs = sum(1 for p in written if p.suffix == ".png")
    print(f"masks: {stacks} label stack(s), {pngs} PNGs from {len(objects)} "
          "segmentation / structure set file(s)", file=stdout)


def _objects_info(scanned: Any) -> list[dict[str, Any]]:
    """Segments and ROIs of the SEG / RTSTRUCT files the scan found (headers only)."""
    from .core.objects import read_summary

    out: list[dict[str, Any]] = []
    for path in getattr(scanned, "objects", []) or []:
        try:
            o = read_summary(path)
        except ValueError as exc:
            out.append({"path": str(path), "error": str(exc)})
            continue
        out.append({
            "path": str(path), "type": o.object_type, "name": o.name, "detail": o.detail,
            "referenced_series": o.referenced_series,
            "frame_of_reference": o.frame_of_reference,
            "segments": [{"value": g.value, "label": g.label, "description": g.description}
                         for g in o.segments],
            "warnings": o.warnings,
        })
    return out


def _series_info(s: Any) -> dict[str, Any]:
    spacing = [round(float(v), 6) for v in s.scale]
    return {
        "patient_id": s.patient_id,
        "study_instance_uid": s.study_uid,
        "study_date": s.study_date,
        "study_description": s.study_description,
        "series_instance_uid": s.uid,
        "series_number": s.number,
        "series_description": s.description,
        "modality": s.modality,
        "images": len(s.planes),
        "shape": list(s.shape),
        "rows": s.rows,
        "columns": s.columns,
        "axes": list(s.axis_labels),
        "spacing": spacing,
        "units": list(s.units),
        "photometric": s.photometric,
        "invert": s.invert,
        "bits_stored": s.bits_stored,
        "value_unit": s.value_unit,
        "windows": [w.to_dict() for w in s.windows],
        "voi_luts": [lut.explanation or f"LUT {i + 1}" for i, lut in enumerate(s.voi_luts)],
        "transfer_syntax": s.transfer_syntax,
        "transfer_syntax_name": _ts_name(s.transfer_syntax),
        "files": len({p.path for p in s.planes}),
        "warnings": list(s.warnings),
    }


def _ts_name(uid: str) -> str:
    from pydicom.uid import UID

    if not uid:
        return ""
    name = UID(uid).name
    return "" if name == uid else name


def cmd_info(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    from .core.scan import scan

    sources = _check_sources(args.src)
    with _source_faults("info", sources):
        scanned = scan(sources, processes=os.cpu_count() or 1)
    series = [_series_info(s) for s in scanned.series]
    objects = _objects_info(scanned)
    for d in series:  # each series lists the segmentations / structure sets on it
        d["objects"] = [o["path"] for o in objects
                        if d["series_instance_uid"] in o.get("referenced_series", [])]
    skipped = [{"path": str(s.path), "reason": s.reason} for s in scanned.skipped]
    if args.json:
        doc = {
            "series": series,
            "objects": objects,
            "skipped": skipped,
            "non_dicom": int(getattr(scanned, "non_dicom", 0) or 0),
            "warnings": list(getattr(scanned, "warnings", []) or []),
        }
        json.dump(doc, stdout, indent=2, default=str)
        stdout.write("\n")
    else:
        for i, d in enumerate(series, start=1):
            number = "" if d["series_number"] is None else d["series_number"]
            print(f"[{i}] {number} {d['series_description']}".rstrip(), file=stdout)
            print(f"    patient   {d['patient_id']}", file=stdout)
            print(f"    study     {d['study_date']} {d['study_description']}".rstrip(),
                  file=stdout)
            print(f"    modality  {d['modality']}  ({d['photometric']}"
                  f"{', shown inverted' if d['invert'] else ''})", file=stdout)
            print(f"    images    {d['images']} in {d['files']} file(s), "
                  f"size {d['columns']} x {d['rows']}, shape {tuple(d['shape'])}", file=stdout)
            sp = " x ".join(f"{v:g}" for v in d["spacing"])
            print(f"    spacing   {sp} {d['units'][0] if d['units'] else ''} "
                  f"({', '.join(d['axes'])})", file=stdout)
            wins = "; ".join(
                f"C {w['center']:g} W {w['width']:g}"
                + (f" {w['function']}" if w["function"] != "LINEAR" else "")
                + (f" ({w['explanation']})" if w["explanation"] else "")
                for w in d["windows"]
            )
            if d["voi_luts"]:
                wins = "; ".join(filter(None, [wins, *(f"VOI LUT {n}" for n in d["voi_luts"])]))
            print(f"    windows   {wins or 'none stored'}", file=stdout)
            ts = d["transfer_syntax"]
            print(f"    transfer  {d['transfer_syntax_name'] or ts} ({ts})", file=stdout)
            for w in d["warnings"]:
                print(f"    warning   {w}", file=stdout)
            for o in objects:
                if o["path"] in d["objects"]:
                    _print_object(o, stdout, "    ")
        listed = {p for d in series for p in d["objects"]}
        alone = [o for o in objects if o["path"] not in listed]
        if alone:
            print("segmentations / structure sets without their series here:", file=stdout)
            for o in alone:
                _print_object(o, stdout, "  ")
        print(f"{len(series)} series" + (f", {len(objects)} segmentation / structure set "
                                         "file(s)" if objects else ""), file=stdout)
        for item in scanned.skipped:
            print(f"skipped: {item.path}: {_reason(item)}", file=stderr)
        shown = {w for d in series for w in d["warnings"]}
        for w in _scan_warnings(scanned):
            if w not in shown:
                print(f"warning: {w}", file=stderr)
    if not series and not objects:
        print(f"{PROG} info: {_nothing_found(scanned, sources)}", file=stderr)
        return 1
    return 1 if skipped else 0


def _print_object(o: dict[str, Any], out: IO[str], indent: str) -> None:
    if "error" in o:
        print(f"{indent}object    {o['error']}", file=out)
        return
    kind = "segments" if o["type"] == "SEG" else "ROIs"
    print(f"{indent}{o['type']:<9} {o['name']} ({o['detail']}), "
          f"{Path(o['path']).name}: {len(o['segments'])} {kind}", file=out)
    for g in o["segments"]:
        desc = f" - {g['description']}" if g["description"] else ""
        print(f"{indent}  {g['value']:>4}  {g['label']}{desc}", file=out)
    for w in o["warnings"]:
        print(f"{indent}  warning {w}", file=out)


def cmd_view(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    sources = _check_sources(args.src) if args.src else None
    import napari
    from napari.errors import ReaderPluginError

    if sources is None:
        from ._sample_data import sample_series_folder

        sources = [sample_series_folder()]
    viewer = napari.Viewer(title=f"napari-dicom {__version__}")
    for src in sources:
        try:
            viewer.open(str(src), plugin="napari-dicom")
        except ReaderPluginError as exc:  # e.g. a DICOMweb server that does not answer
            viewer.close()
            cause = exc.__cause__ or exc
            raise UsageError(f"{PROG} view: error: {cause}", status=1) from None
    dock, _widget = viewer.window.add_plugin_dock_widget("napari-dicom", "Window / Level")
    if args.screenshot is not None:
        shot = Path(args.screenshot)
        shot.parent.mkdir(parents=True, exist_ok=True)
        try:
            from napari.qt import get_qapp

            viewer.window.resize(1400, 900)
            get_qapp().processEvents()  # lay the dock widget out before the grab
            viewer.screenshot(str(shot), canvas_only=False)
            layers = ", ".join(layer.name for layer in viewer.layers)
            print(f"screenshot: {shot}", file=stdout)
            print(f"layers: {layers}", file=stdout)
            print(f"docked: {dock.name}", file=stdout)
        finally:
            viewer.close()
        return 0
    napari.run()
    return 0


def cmd_set_reader(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    from napari.settings import get_settings

    from ._prefs import PLUGIN, READER_PATTERNS, set_reader_preferences

    changed = set_reader_preferences(undo=args.undo)
    where = get_settings().config_path
    if args.undo:
        print(f"napari reader preferences removed: {', '.join(changed) or 'none were set'}"
              f" ({where})", file=stdout)
    else:
        print(f"napari opens {', '.join(READER_PATTERNS)} with {PLUGIN} ({where}); "
              f"undo: {PROG} set-reader --undo", file=stdout)
    return 0


COMMANDS = {"export": cmd_export, "info": cmd_info, "view": cmd_view,
            "set-reader": cmd_set_reader}


def _tune_allocator() -> None:
    """glibc only: keep freed memory for reuse instead of handing it back to the kernel.

    An export allocates and frees a few MB per plane (decoded values, rendered planes,
    PNG buffers); with glibc's defaults much of it goes back to the kernel and returns as
    fresh zeroed pages, about 50 000 page faults for 600 planes. Raising the mmap and
    trim thresholds cut the faults by a third and the run by ~3-5 % (median of 8 runs
    each, ``benchmarks/bench_cli.py``'s data). Done for ``export`` in the command's own
    process only: not for ``view`` (napari), never when :func:`main` is called from
    other code.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the defaults
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 256 << 20)


#: optional packages pydicom imports only for :mod:`pydicom.data`'s downloads of its test
#: files (an HTTP client and a progress bar), with a fallback for each when missing
_DOWNLOAD_ONLY = ("requests", "tqdm")


def _import_pydicom_without_download_extras() -> None:
    """Import pydicom as it is when ``requests`` and ``tqdm`` are not installed.

    pydicom imports them (with urllib3, idna, charset_normalizer: ~65 ms, 4-5 % of a
    600-image export) only for its test-file downloader, which the command line never
    uses; without them the downloader uses ``urllib`` and no progress bar (pydicom's
    documented fallbacks). A ``None`` entry in ``sys.modules`` makes just those imports
    fail; the entries are removed afterwards, so a later ``import requests`` works.
    """
    if "pydicom" in sys.modules or any(m in sys.modules for m in _DOWNLOAD_ONLY):
        return
    for m in _DOWNLOAD_ONLY:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        import pydicom.pixels  # noqa: F401
    finally:
        for m in _DOWNLOAD_ONLY:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]


def run() -> NoReturn:
    """Entry point of the ``napari-dicom`` program (and ``python -m napari_dicom``).

    ``export`` stops on SIGINT (exit status 130) also when started with SIGINT ignored,
    as a non-interactive shell starts a background job (``napari-dicom export ... &``):
    Python then installs no handler, and ``kill -INT`` would be ignored. A stopped
    export loses nothing already written (:mod:`napari_dicom.core.output`).
    """
    try:
        if sys.argv[1:2] == ["export"]:
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            from .core.output import watch_interrupts

            watch_interrupts()
            _tune_allocator()
        if sys.argv[1:2] in (["export"], ["info"]):
            _import_pydicom_without_download_extras()
        code = main()
    except KeyboardInterrupt:  # during the imports, before main() catches it
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 inputs skipped, 2 usage)."""
    stdout, stderr = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(list(argv) if argv is not None else None)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        return COMMANDS[args.command](args, stdout, stderr)
    except UsageError as exc:
        print(str(exc), file=stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=stderr)
        return 130
