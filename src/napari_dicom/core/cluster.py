"""``napari-dicom export --scheduler``: the batch export on a Dask ``distributed`` cluster.

Dask schedules, retries and reports; nothing here is a queue, a retry loop or an RPC of
our own. :func:`~napari_dicom.core.batch.export_all` stays the one export path: it walks
the folders, names every output folder (in scan order, so names never depend on timing),
counts progress and writes the run manifest on this machine, and hands two kinds of work
to a :class:`DaskRunner`:

* **header reads**: the file list, split by folder into chunks (about four a worker,
  :data:`FILES_PER_TASK` to :data:`MAX_FILES_PER_TASK` files: :func:`chunk_size`; a
  folder is usually one series: its files stay on one worker), each chunk
  :func:`~napari_dicom.core.scan.read_headers` on a worker;
* **series exports**: the series is the unit of work,
  :func:`~napari_dicom.core.batch.export_one` on a worker with the folder named here;
  small series are grouped, a few per task, up to :data:`PLANES_PER_TASK` planes and
  :data:`PIXELS_PER_TASK` pixels (:func:`task_groups`);
* **long series split by plane ranges**: a series of more than :data:`SPLIT_PLANES`
  planes (``NAPARI_DICOM_SPLIT_PLANES`` in the environment changes it) is three kinds
  of task: one :func:`~napari_dicom.core.batch.shared_prepare` (the display of the
  whole series, a min-max window over all its planes included, decided once; the
  metadata; a staging folder whose name is made here, so a task run again opens the
  same one), range tasks :func:`~napari_dicom.core.batch.shared_range` writing planes
  ``a:b`` into it on any worker (each PNG through a temporary name of its process and
  a rename: a range run again after its worker died rewrites the same bytes and never
  meets a dead attempt's file), and :func:`~napari_dicom.core.batch.shared_finish`,
  once every range is in, which removes dead attempts' temporary files, writes the
  manifest and swaps the stack in as the one-task export does. A plane that cannot be
  decoded sends the series back to one task (:func:`~napari_dicom.core.batch.export_one`,
  which leaves out and reports damaged planes as the local run does).

Results stream back as they finish (``distributed.wait``, the results of all that
finished fetched in one request) into the same progress bar and the same run manifest;
each task is let go (its future released) as soon as its result is here, so a worker
that dies later does not have finished work run again behind the run's back. The PNG
encoder is deterministic, so the files are byte for byte those of a local run whatever
the number of workers or the order of completion.

Faults: a worker that dies has its tasks run again by the scheduler (its half-done stack
was in a staging folder, never under the final names: :mod:`~napari_dicom.core.output`);
a scheduler that goes away ends the run with :class:`ClusterError` (one line naming the
scheduler), the series already exported staying in place; ``--skip-existing`` resumes.

Every worker writes into ``OUT`` itself: ``OUT`` (and the sources) must be the same path
on every worker, i.e. a shared file system. That is the user's to provide.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .batch import ExportOptions, SeriesResult
    from .series import Series

__all__ = [
    "CLUSTER_MISSING",
    "ClusterError",
    "DaskRunner",
    "chunk_by_folder",
    "parse_scheduler",
]

CLUSTER_MISSING = (
    "--scheduler needs Dask's distributed package: pip install 'napari-dicom[cluster]'"
)

#: header reads per task at least: ~30 ms of work for small files, well above Dask's
#: overhead per task (~1 ms), and enough tasks to spread over a few dozen workers for
#: 10^4 files
FILES_PER_TASK = 256
#: header reads per task at most: a few workers are given about four chunks each (fewer
#: results to send back, unpickle and route through Dask) and a large tree still makes
#: hundreds of tasks for hundreds of workers
MAX_FILES_PER_TASK = 2048

#: planes exported per task at most when series are grouped (small series: one task
#: each would cost more in scheduling and messages than the export itself)...
PLANES_PER_TASK = 1024
#: ... and pixels (planes x rows x columns) at most: 256 CT planes of 512 x 512, a few
#: seconds of work; small images are grouped by the plane count above
PIXELS_PER_TASK = 256 * 512 * 512

#: a series with more planes than this is written by several tasks, in plane ranges:
#: 256 CT planes of 512 x 512 is what grouping puts in a task at most
#: (:data:`PIXELS_PER_TASK`), so below that splitting adds tasks without adding
#: parallelism; above it, a few long
#: series no longer hold a few workers busy while the others wait
SPLIT_PLANES = 256
#: the environment variable that sets :data:`SPLIT_PLANES` (tests lower it)
SPLIT_ENV = "NAPARI_DICOM_SPLIT_PLANES"
#: planes of a range task at least (unless :data:`SPLIT_PLANES` is lower): ~0.3 s of
#: work for 512 x 512 CT planes, well above Dask's cost per task (a few ms, more on a
#: loaded machine: with ranges of 32 planes of 256 x 256, ~25 ms each, a split series
#: was slower than one task), while a 1000-plane series still spreads over 15 workers
MIN_RANGE = 64

#: seconds to wait for a scheduler to answer when connecting (and, once connected, for
#: it to come back before the run is given up)
CONNECT_TIMEOUT = 10.0
#: how often the client's connection is looked at while waiting for results (s)
POLL_SECONDS = 0.5


class ClusterError(ConnectionError):
    """The Dask scheduler could not be reached or went away; the message names it."""


def parse_scheduler(text: str) -> tuple[str, int | str]:
    """``("local", N)`` for ``local`` / ``local:N`` (N worker processes here, default the
    number of cores), ``("address", text)`` for a scheduler address (``tcp://host:port``,
    ``host:port``, ``tls://...``).

    Raises
    ------
    ValueError
        For ``local:`` with anything but a positive whole number, or an empty text.
    """
    t = text.strip()
    m = re.fullmatch(r"local(?::(.*))?", t, flags=re.IGNORECASE)
    if m is not None:
        if m.group(1) is None:
            return "local", os.cpu_count() or 1
        try:
            n = int(m.group(1))
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--scheduler local:N needs a positive number of workers, got {t!r}")
        return "local", n
    if not t:
        raise ValueError("--scheduler needs an address (tcp://host:8786) or local[:N]")
    return "address", t


def chunk_size(n_files: int, workers: int) -> int:
    """Header reads per task: about four tasks per worker, within
    :data:`FILES_PER_TASK` .. :data:`MAX_FILES_PER_TASK`."""
    return max(FILES_PER_TASK, min(MAX_FILES_PER_TASK, -(-n_files // (4 * max(1, workers)))))


def chunk_by_folder(files: Sequence[str], size: int = FILES_PER_TASK) -> list[list[int]]:
    """Indices of ``files`` in chunks of about ``size``, a folder's files kept together
    (a folder larger than ``size`` is cut in pieces of ``size``); in file order."""
    chunks: list[list[int]] = []
    current: list[int] = []
    folder = None
    for i, f in enumerate(files):
        here = os.path.dirname(f)
        if current and (len(current) >= size or (here != folder and len(current) >= size // 2)):
            chunks.append(current)
            current = []
        folder = here
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


def _export_task(work: list[tuple[Series, str]], options: ExportOptions) -> list[SeriesResult]:
    """A few series on a worker, one after the other (a module-level function: workers
    import it by name). The results travel back without their series (the caller puts
    its own object back): only what happened is sent."""
    from .batch import export_one

    out = []
    for series, folder in work:
        result = export_one(series, Path(folder), options)
        result.series = cast(Any, None)
        out.append(result)
    return out


def _finish_task(series: Series, folder: Path, options: ExportOptions, shared: Any,
                 outcomes: list[Exception | None]) -> SeriesResult:
    """:func:`~napari_dicom.core.batch.shared_finish` on a worker; as :func:`_export_task`,
    the result travels back without its series."""
    from .batch import shared_finish

    result = shared_finish(series, folder, options, shared, outcomes)
    result.series = cast(Any, None)
    return result


def plane_ranges(n: int, length: int) -> list[tuple[int, int]]:
    """``n`` planes in ranges ``(a, b)`` of about equal size, ``length`` at most."""
    k = max(1, -(-n // max(1, length)))
    return [(n * i // k, n * (i + 1) // k) for i in range(k)]


def split_planes() -> int:
    """:data:`SPLIT_PLANES`, or the whole number in ``$NAPARI_DICOM_SPLIT_PLANES``.

    Raises
    ------
    ValueError
        When that variable holds anything but a positive whole number."""
    text = os.environ.get(SPLIT_ENV, "").strip()
    if not text:
        return SPLIT_PLANES
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{SPLIT_ENV} must be a positive number of planes, got {text!r}")
    return n


def task_groups(sizes: Sequence[int], workers: int,
                pixels: Sequence[int] | None = None) -> list[list[int]]:
    """Indices of series (``sizes``: their planes; ``pixels``: pixels of a plane, rows x
    columns) grouped into export tasks: consecutive series up to about
    :data:`PLANES_PER_TASK` planes and :data:`PIXELS_PER_TASK` pixels (fewer planes when
    that would leave under eight tasks per worker); a larger series is a task of its
    own."""
    target = max(1, min(PLANES_PER_TASK, sum(sizes) // (8 * max(1, workers))))
    per = pixels if pixels is not None else [0] * len(sizes)
    groups: list[list[int]] = []
    current: list[int] = []
    n = px = 0
    for i, (k, p) in enumerate(zip(sizes, per, strict=True)):
        if current and (n + k > target or px + k * p > PIXELS_PER_TASK):
            groups.append(current)
            current, n, px = [], 0, 0
        current.append(i)
        n += k
        px += k * p
    if current:
        groups.append(current)
    return groups


class DaskRunner:
    """A connection to a Dask scheduler (or a :class:`distributed.LocalCluster` started
    here) doing :func:`~napari_dicom.core.batch.export_all`'s work; a context manager.

    Parameters
    ----------
    scheduler
        ``local``, ``local:N`` or an address (:func:`parse_scheduler`).
    threads
        Threads each series export uses on its worker (``--jobs``); 1 by default, the
        workers being the parallelism.
    """

    def __init__(self, scheduler: str, threads: int = 1) -> None:
        self.kind, self.target = parse_scheduler(scheduler)
        self.threads = max(1, threads)
        #: series of more planes than this are split in plane ranges
        self.split = split_planes()
        #: series split so far, and the range tasks they made (for the summary)
        self.split_series = self.range_tasks = 0
        self.client: Any = None
        self.cluster: Any = None
        self.workers = 0
        self._log_levels: dict[str, int] = {}
        #: the scheduler's address (for messages), known once connected
        self.address = str(self.target) if self.kind == "address" else f"local:{self.target}"

    def describe(self) -> str:
        if self.kind == "local":
            who = f"{self.workers} local worker process(es), scheduler {self.address}"
        else:
            who = f"{self.workers} worker(s) of the scheduler {self.address}"
        if self.split_series:
            who += (f"; {self.split_series} series of more than {self.split} planes "
                    f"written in {self.range_tasks} plane ranges")
        return who

    # -- lifetime ----------------------------------------------------------------------

    def __enter__(self) -> DaskRunner:
        try:
            distributed = _distributed()
        except ImportError as exc:
            raise ImportError(CLUSTER_MISSING) from exc
        # Dask's own log lines (reconnect attempts, a restarted worker, with tracebacks)
        # would bury the command's one-line messages: only its own errors are reported
        self._log_levels = {}
        for name in ["distributed", *logging.root.manager.loggerDict]:
            if name == "distributed" or name.startswith("distributed."):
                log = logging.getLogger(name)
                self._log_levels[name] = log.level
                log.setLevel(logging.CRITICAL + 1)
        if self.kind == "local":
            n = int(self.target)
            self.cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=self.threads, processes=True,
                # its HTTP server on a free loopback port: 8787 may be taken
                dashboard_address="127.0.0.1:0", host="127.0.0.1", silence_logs=logging.CRITICAL,
            )
            self.client = distributed.Client(self.cluster)
        else:
            try:
                self.client = distributed.Client(str(self.target), timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"cannot reach the Dask scheduler {self.target}: {_why(exc)}"
                ) from None
        try:
            info = self.client.scheduler_info()
            self.address = str(info.get("address") or self.address)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"the Dask scheduler {self.address} does not answer: "
                               f"{_why(exc)}") from None
        self.workers = len(info.get("workers", {}))
        if self.workers == 0:
            try:
                self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                self.close()
                raise ClusterError(f"the Dask scheduler {self.target} has no worker") from None
            self.workers = len(self.client.scheduler_info().get("workers", {}))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with _quiet():
            if self.client is not None:
                self.client.close(timeout=5)
            if self.cluster is not None:
                self.cluster.close(timeout=10)
        self.client = self.cluster = None
        for name, level in self._log_levels.items():
            logging.getLogger(name).setLevel(level)
        self._log_levels = {}

    # -- work --------------------------------------------------------------------------

    def _stream(self, futures: list[Any],
                behind: dict[str, list[Any]] | None = None) -> Iterator[tuple[str, Any]]:
        """``(key, result)`` of each future as it finishes.

        The futures are taken over (``futures`` is emptied), and each is released as
        soon as its result is in, with the futures it waited for (``behind[key]``): a
        result this machine holds is never asked of Dask again, so a worker that dies
        later does not have its finished tasks run again (a series exported again
        behind the run's back, or a split series' staging folder opened again with no
        task left to install it).

        A scheduler that goes away becomes :class:`ClusterError` once the client has
        given up reconnecting (it tries for :data:`CONNECT_TIMEOUT` s); the futures not
        finished are cancelled, so Dask drops their tasks (and those they wait for). A
        task's own error (a full disk) is raised as it is."""
        distributed = _distributed()
        pending = set(futures)
        futures.clear()
        waits = behind if behind is not None else {}
        try:
            while pending:
                try:
                    done, pending = distributed.wait(pending, timeout=POLL_SECONDS,
                                                     return_when="FIRST_COMPLETED")
                except TimeoutError:
                    if self.client.status in ("closing", "closed", "failed"):
                        raise ClusterError(self._lost("the connection was closed")) from None
                    continue
                except CancelledError:  # Dask cancels every future of a lost scheduler
                    raise ClusterError(self._lost("connection lost")) from None
                ready = list(done)
                del done
                try:  # the results of all that finished in one request, not one each
                    values = self.client.gather(ready)
                except Exception:  # not swallowed: raised again below
                    # one of them failed (its task's error, or the connection): asked
                    # one by one, the first that fails raises what it is
                    values = [self._result(fut) for fut in ready]
                keys = [fut.key for fut in ready]
                for fut in ready:
                    for dep in waits.pop(fut.key, ()):
                        dep.release()
                    fut.release()
                del ready
                yield from zip(keys, values, strict=True)
        finally:
            with _quiet():
                self.client.cancel([f for f in [*pending, *(d for ds in waits.values()
                                                            for d in ds)] if not f.done()])

    def _result(self, fut: Any) -> Any:
        try:
            return fut.result()
        except (CancelledError, OSError) as exc:
            if isinstance(exc, OSError) and not _is_comm_error(exc):
                raise
            raise ClusterError(self._lost(_why(exc))) from None

    def _lost(self, why: str) -> str:
        return (f"lost the Dask scheduler {self.address} ({why}); run again with "
                "--skip-existing to resume")

    def read_headers(self, files: list[str],
                     progress: Callable[[int, int], None] | None) -> list[Any]:
        """:func:`~napari_dicom.core.scan.read_headers` of ``files`` on the workers."""
        from .scan import read_headers

        chunks = chunk_by_folder(files, chunk_size(len(files), self.workers))
        out: list[Any] = [None] * len(files)
        futures = self.client.map(read_headers, [[files[i] for i in c] for c in chunks],
                                  pure=False)
        where = {f.key: c for f, c in zip(futures, chunks, strict=True)}
        done = 0
        for key, part in self._stream(futures):
            for i, r in zip(where.pop(key), part, strict=True):
                out[i] = r
            done += len(part)
            if progress is not None:
                progress(done, len(files))
        return out

    def export_series(
        self, work: Sequence[tuple[int, Series, Path]], options: ExportOptions
    ) -> Iterator[tuple[int, SeriesResult]]:
        """Each series exported by one task (small ones a few per task), a long one by
        range tasks (see the module docstring); yielded as each series finishes."""
        from .batch import selected_planes, shared_prepare, shared_range, splittable
        from .output import stage_tag

        opts = replace(options, jobs=self.threads)
        # the largest series first: they decide when the run ends (and Dask runs what was
        # submitted first first)
        order = sorted(work, key=lambda w: -len(w[1].planes))
        sizes = [len(selected_planes(s, opts.frames)) for _i, s, _f in order]
        length = min(self.split, max(MIN_RANGE, sum(sizes) // (8 * max(1, self.workers))))
        split = [k > self.split and splittable(w[1], opts)
                 for w, k in zip(order, sizes, strict=True)]
        futures: list[Any] = []
        behind: dict[str, list[Any]] = {}  # a finish's key: the futures it waits for
        index: dict[str, list[int]] = {}
        for (i, s, f), k, cut in zip(order, sizes, split, strict=True):
            if not cut:
                continue
            prep = self.client.submit(shared_prepare, s, f, opts, stage_tag(), pure=False)
            parts = [self.client.submit(shared_range, prep, part, opts, pure=False)
                     for part in plane_ranges(k, length)]
            fin = self.client.submit(_finish_task, s, f, opts, prep, parts, pure=False)
            behind[fin.key] = [prep, *parts]
            self.split_series += 1
            self.range_tasks += len(parts)
            futures.append(fin)
            index[fin.key] = [i]
        whole = [w for w, cut in zip(order, split, strict=True) if not cut]
        groups = [[whole[j] for j in g]
                  for g in task_groups([len(w[1].planes) for w in whole], self.workers,
                                       [w[1].rows * w[1].columns for w in whole])]
        for g in groups:
            fut = self.client.submit(_export_task, [(s, os.fspath(f)) for _i, s, f in g],
                                     opts, pure=False)
            futures.append(fut)
            index[fut.key] = [i for i, _s, _f in g]
        for key, results in self._stream(futures, behind):
            if not isinstance(results, list):  # a split series' finish: one result
                results = [results]
            yield from zip(index.pop(key), results, strict=True)


def _distributed() -> Any:
    """The ``distributed`` module (untyped: its calls are checked by the tests)."""
    import importlib

    return importlib.import_module("distributed")


def _is_comm_error(exc: BaseException) -> bool:
    from distributed.comm.core import CommClosedError

    return isinstance(exc, (CommClosedError, ConnectionError, TimeoutError))


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


class _quiet:
    """Suppress the errors closing a connection to a scheduler that is gone can raise."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is not None and issubclass(kind, (OSError, TimeoutError, RuntimeError))
