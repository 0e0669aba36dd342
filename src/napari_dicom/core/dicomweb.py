"""DICOMweb as a source of series: QIDO-RS search, WADO-RS metadata and frames.

A series on a DICOMweb server becomes the same :class:`~napari_dicom.core.series.Series`
a folder gives (``core.scan`` builds both from pydicom data sets); only how its bytes
arrive differs. :class:`Server` is that source: ``read_header(ref)`` gives an instance's
header (from the series metadata endpoint, one request per series, PS3.18 10.4.1.1.2)
and ``read_frame(ref, frame)`` one frame's pixel bytes (frame retrieval, PS3.18
10.4.1.1.5), which ``core.pixels`` decodes locally as it decodes a file's.

* Frames are fetched on demand over several connections: the frame asked for first, the
  rest of its series behind it (so the first slice shows at once and the others stream
  in), kept for the session (a second open does not download again).
* Compressed frames are asked for in their stored transfer syntax when a local decoder
  takes it (JPEG Lossless, JPEG-LS, JPEG 2000, RLE...), else as Explicit VR Little Endian
  (the server transcodes). The stored syntax comes from the metadata when the server
  gives it (Available Transfer Syntax UID), else from the first frame, asked for with
  ``transfer-syntax=*``.
* Credentials (HTTP basic or a bearer token) come from the caller (the widget), the URL's
  user info, the environment (:data:`ENV_TOKEN`, :data:`ENV_USER` + :data:`ENV_PASSWORD`)
  or a netrc file (``NETRC`` or ``~/.netrc``); they live only in the HTTP session, never
  in a reference, a message or a log line. HTTPS certificates are verified.
* A fault (server down, refused credentials, unknown UID, timeout, dropped connection,
  non-image object, a syntax neither side can handle) raises :class:`DicomWebError`, a
  one-line message naming the server and the problem; a frame that failed is fetched
  again the next time it is asked for.

The HTTP work is done by ``dicomweb-client`` (the reference Python client, also used by
3D Slicer), except two replies read here: the first-frame probe (the client returns
frame bytes without the transfer syntax the server chose) and the series stream
(:func:`_iter_parts`: each instance read from the socket straight into its own buffer,
its native frames views of it; the client's ``iter_series`` copies every byte several
times and parses every instance whole, pixels included).

URL form (reader, CLI): ``dicomweb+http://HOST:PORT/ROOT/studies/<StudyUID>`` and
``.../studies/<StudyUID>/series/<SeriesUID>`` (``dicomweb+https://`` likewise).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import netrc
import os
import re
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian

from .pixels import SourceError, missing_decoder_message

if TYPE_CHECKING:
    import requests

    from .scan import ScanResult

__all__ = [
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_USER",
    "Credentials",
    "DicomWebError",
    "Location",
    "SeriesRow",
    "Server",
    "StudyRow",
    "find_credentials",
    "forget_credentials",
    "is_dicomweb_url",
    "parse_url",
    "remember_credentials",
    "scan_urls",
    "server_for",
]

log = logging.getLogger(__name__)

SCHEMES = ("dicomweb+http", "dicomweb+https")
#: a bearer token for every DICOMweb server (wins over user and password)
ENV_TOKEN = "NAPARI_DICOM_DICOMWEB_TOKEN"
#: HTTP basic user name and password for every DICOMweb server
ENV_USER = "NAPARI_DICOM_DICOMWEB_USER"
ENV_PASSWORD = "NAPARI_DICOM_DICOMWEB_PASSWORD"
#: parallel connections per server
CONNECTIONS = 8
#: seconds to connect, and to wait for each reply
TIMEOUT = (5.0, 60.0)
#: a series whose stream is expected to take longer has its metadata asked for beside it
#: (0: every series)
STREAM_HEADERS_WITHIN = 2.0
#: seconds between two looks at a frame's wait for the series stream
STREAM_WAIT = 0.25
#: frames kept for the session, bytes (the oldest go first)
CACHE_BYTES = 2 << 30

#: the media type of a frame in each transfer syntax (PS3.18 8.7.3.5.2, Table 8.7.3-5)
_FRAME_MEDIA = {
    "1.2.840.10008.1.2.1": "application/octet-stream",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
}
#: native syntaxes: their frames come as Explicit VR Little Endian bytes
_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
#: bulk data the display needs: LUT Data (Modality/VOI LUT items) and palette tables
_BULK_NEEDED = frozenset({"00283006", "00281201", "00281202", "00281203", "00281221",
                          "00281222", "00281223"})


class DicomWebError(SourceError):
    """A DICOMweb request failed; the message names the server and the problem."""


# --------------------------------------------------------------------------------------
# URLs and credentials
# --------------------------------------------------------------------------------------


def is_dicomweb_url(text: object) -> bool:
    """Whether ``text`` is a ``dicomweb+http(s)://`` URL (never raises)."""
    return isinstance(text, str) and text.lower().startswith(tuple(s + "://" for s in SCHEMES))


@dataclass(frozen=True)
class Location:
    """A DICOMweb service root and, optionally, a study and a series in it."""

    #: ``http(s)://host[:port]/root``, without user info and without a trailing slash
    base: str
    study: str | None = None
    series: str | None = None

    def url(self) -> str:
        """The ``dicomweb+...`` URL of this location (no credentials)."""
        out = "dicomweb+" + self.base
        if self.study:
            out += f"/studies/{self.study}"
            if self.series:
                out += f"/series/{self.series}"
        return out

    def instance(self, sop: str) -> str:
        """The reference of one instance of :attr:`series` (plane ``path`` in a Series)."""
        return f"{self.url()}/instances/{sop}"


_UID = re.compile(r"^[0-9.]{1,64}$")


def parse_url(url: str) -> tuple[Location, Credentials | None]:
    """Split a ``dicomweb+http(s)://`` URL into its location and any user info in it.

    ``http(s)://HOST:PORT/ROOT`` alone is a server root (for searching). Raises
    ``ValueError`` with a one-line message for anything else.
    """
    text = url.strip()
    low = text.lower()
    if low.startswith("dicomweb+"):
        text = text[len("dicomweb+"):]
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{_safe(url)}: not a DICOMweb URL (expected dicomweb+http://HOST:PORT/ROOT/"
            "studies/<StudyUID>[/series/<SeriesUID>])")
    creds = None
    if parts.username is not None:
        creds = Credentials(username=unquote(parts.username),
                            password=unquote(parts.password or ""))
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    path = parts.path.rstrip("/")
    study = series = None
    m = re.search(r"/studies/([^/]+)(?:/series/([^/]+))?(/.*)?$", path)
    if m:
        if m.group(3):
            raise ValueError(f"{_safe(url)}: a DICOMweb URL ends at a study or a series "
                             f"(found {m.group(3)!r} after it)")
        study, series = m.group(1), m.group(2)
        path = path[: m.start()]
        for what, uid in (("Study", study), ("Series", series)):
            if uid is not None and not _UID.match(uid):
                raise ValueError(f"{_safe(url)}: {uid!r} is not a {what} Instance UID")
    base = urlunsplit((parts.scheme.lower(), netloc, path, "", ""))
    return Location(base, study, series), creds


def _safe(url: str) -> str:
    """``url`` without user info, for messages."""
    try:
        parts = urlsplit(url[len("dicomweb+"):] if url.lower().startswith("dicomweb+") else url)
    except ValueError:
        return "<URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    prefix = "dicomweb+" if url.lower().startswith("dicomweb+") else ""
    return prefix + urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


@dataclass(frozen=True)
class Credentials:
    """HTTP basic (``username`` + ``password``) or bearer (``token``) credentials.

    Their ``repr`` shows neither the password nor the token.
    """

    username: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    #: where they came from ("widget", "URL", "environment", "netrc"), for messages
    origin: str = field(default="", compare=False)

    @property
    def kind(self) -> str:
        return "bearer token" if self.token else "user name and password"

    def __bool__(self) -> bool:
        return bool(self.token or self.username)


#: credentials given in this session (the widget), by server base URL
_REMEMBERED: dict[str, Credentials] = {}


def remember_credentials(base: str, credentials: Credentials | None) -> None:
    """Use ``credentials`` for ``base`` for the rest of the session (``None``: forget)."""
    if credentials:
        _REMEMBERED[base] = credentials
    else:
        _REMEMBERED.pop(base, None)


def forget_credentials() -> None:
    _REMEMBERED.clear()


def find_credentials(base: str, given: Credentials | None = None) -> Credentials | None:
    """Credentials for ``base``: ``given`` (URL user info), the ones the widget gave this
    session, :data:`ENV_TOKEN` / :data:`ENV_USER` + :data:`ENV_PASSWORD`, then a netrc
    file (``NETRC`` or ``~/.netrc``) entry for the host; ``None`` when none applies."""
    if given:
        return given
    if base in _REMEMBERED:
        return _REMEMBERED[base]
    token = os.environ.get(ENV_TOKEN, "")
    if token:
        return Credentials(token=token, origin="environment")
    user = os.environ.get(ENV_USER, "")
    if user:
        return Credentials(user, os.environ.get(ENV_PASSWORD, ""), origin="environment")
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    if os.path.isfile(path):
        try:
            entry = netrc.netrc(path).authenticators(urlsplit(base).hostname or "")
        except (netrc.NetrcParseError, OSError) as exc:
            log.warning("netrc file %s not used: %s", path, getattr(exc, "msg", exc))
            return None
        if entry is not None and entry[0]:
            return Credentials(entry[0], entry[2] or "", origin="netrc")
    return None


# --------------------------------------------------------------------------------------
# search results
# --------------------------------------------------------------------------------------


@dataclass
class StudyRow:
    """One study of a QIDO-RS search."""

    uid: str
    patient_name: str = ""
    patient_id: str = ""
    date: str = ""
    description: str = ""
    accession: str = ""
    modalities: str = ""
    n_series: int | None = None
    n_instances: int | None = None


@dataclass
class SeriesRow:
    """One series of a study (QIDO-RS); :attr:`url` opens it."""

    study_uid: str
    uid: str
    url: str
    number: int | None = None
    modality: str = ""
    description: str = ""
    n_instances: int | None = None


def _value(item: Mapping[str, Any], tag: str) -> Any:
    el = item.get(tag)
    if not isinstance(el, Mapping):
        return None
    vals = el.get("Value")
    if not vals:
        return None
    v = vals[0]
    if isinstance(v, Mapping):  # PN
        return str(v.get("Alphabetic", ""))
    return v


def _text(item: Mapping[str, Any], tag: str, join: bool = False) -> str:
    el = item.get(tag)
    if join and isinstance(el, Mapping) and el.get("Value"):
        return "\\".join(str(v) for v in el["Value"])
    v = _value(item, tag)
    return "" if v is None else str(v)


def _int(item: Mapping[str, Any], tag: str) -> int | None:
    v = _value(item, tag)
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


#: search fields (:meth:`Server.search_studies`) -> QIDO-RS attribute keywords
SEARCH_FIELDS = {
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "study_date": "StudyDate",
    "modality": "ModalitiesInStudy",
    "accession": "AccessionNumber",
    "description": "StudyDescription",
}
_STUDY_FIELDS = ["PatientName", "PatientID", "StudyDate", "StudyDescription",
                 "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                 "NumberOfStudyRelatedInstances"]
_SERIES_FIELDS = ["SeriesNumber", "Modality", "SeriesDescription",
                  "NumberOfSeriesRelatedInstances"]


def date_range(start: str = "", end: str = "") -> str:
    """A QIDO-RS date range (PS3.18 8.3.4.1, PS3.4 C.2.2.2.5): ``"20240101-20241231"``,
    ``"20240101-"`` or ``"-20241231"``; ``""`` when both ends are empty."""
    start, end = start.replace("-", "").strip(), end.replace("-", "").strip()
    if not start and not end:
        return ""
    if start == end:
        return start
    return f"{start}-{end}"


# --------------------------------------------------------------------------------------
# the server (the source)
# --------------------------------------------------------------------------------------

_FrameKey = tuple[str, str, str, int]  # study, series, sop, 1-based frame number
#: a frame's bytes: native frames of a streamed instance are read-only views of it
_Frame = bytes | memoryview


class _FrameCache:
    """Frame bytes for the session, least recently used out first beyond ``budget``."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._items: OrderedDict[_FrameKey, _Frame] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _FrameKey) -> _Frame | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: _FrameKey, data: _Frame) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self.size += len(data)
            while self.size > self.budget and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self.size -= len(old)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.size = 0


class _Fetcher:
    """Fetch frames on up to ``workers`` threads: asked-for frames first, prefetches
    after them. Threads exist only while there is work (none is left idle)."""

    def __init__(self, fetch: Callable[[_FrameKey], _Frame], cache: _FrameCache,
                 workers: int) -> None:
        self._fetch = fetch
        self._cache = cache
        self._workers = max(1, workers)
        self._lock = threading.Lock()
        self._queue: list[tuple[int, int, _FrameKey]] = []
        self._pending: dict[_FrameKey, Future[_Frame]] = {}
        self._started: set[_FrameKey] = set()
        self._running = 0
        self._seq = itertools.count()

    def get(self, key: _FrameKey, then: Callable[[], Iterable[_FrameKey]] | None = None,
            streaming: Callable[[], bool] | None = None) -> _Frame:
        """The frame ``key``: from the cache; from the series stream while it runs
        (``streaming()``); else fetched now on its own, with ``then()`` behind it."""
        data = self._cache.get(key)
        if data is not None:
            return data
        with self._lock:
            fut = self._pending.get(key)
            if fut is None:
                fut = self._pending[key] = Future()
        while streaming is not None and streaming():
            try:
                return fut.result(timeout=STREAM_WAIT)
            except TimeoutError:
                continue  # still streaming: wait on, unless the stream stalls
        with self._lock:
            if key not in self._started and not fut.done():
                heapq.heappush(self._queue, (0, next(self._seq), key))
        if then is not None:
            self._prefetch(then())
        self._spawn()
        return fut.result()

    def deliver(self, key: _FrameKey, data: _Frame) -> None:
        """A frame that came another way (the series stream)."""
        self._cache.put(key, data)
        with self._lock:
            fut = self._pending.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(data)

    def _prefetch(self, keys: Iterable[_FrameKey]) -> None:
        added = False
        with self._lock:
            for k in keys:
                if k in self._pending or k in self._cache:
                    continue
                self._pending[k] = Future()
                heapq.heappush(self._queue, (1, next(self._seq), k))
                added = True
        if added:
            self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            n = min(self._workers - self._running, len(self._queue))
            self._running += max(0, n)
        for _ in range(max(0, n)):
            threading.Thread(target=self._work, name="napari-dicom-dicomweb",
                             daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                key = None
                while self._queue:
                    _, _, k = heapq.heappop(self._queue)
                    if k not in self._started and k in self._pending:
                        key = k
                        self._started.add(k)
                        break
                if key is None:
                    self._running -= 1
                    return
                fut = self._pending[key]
            try:
                data = self._fetch(key)
            except BaseException as exc:  # handed to the waiting caller, re-raised there
                with self._lock:
                    self._pending.pop(key, None)
                    self._started.discard(key)
                if not fut.done():
                    fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            self._cache.put(key, data)
            with self._lock:
                self._pending.pop(key, None)
                self._started.discard(key)
            if not fut.done():  # the stream may have brought it first
                fut.set_result(data)


@dataclass
class _SeriesInfo:
    study: str
    series: str
    refs: list[str]
    #: transfer syntax frames are asked for in, and its media type
    syntax: str
    media: str
    #: the syntax the series is stored in (frames are asked for in it when it decodes here)
    stored: str = ""


@dataclass
class _Stream:
    """A series retrieved in one streamed request."""

    thread: threading.Thread
    #: ``(sop, stored syntax, header)`` of every instance, once the stream has ended
    result: Future[list[tuple[str, str, Dataset]]] = field(default_factory=Future)
    #: frames (with their syntax) that came before the series' headers were settled
    arrived: dict[str, tuple[str, list[_Frame]]] = field(default_factory=dict)
    #: instances received so far, and when the request was sent (``time.monotonic``)
    count: int = 0
    started: float = field(default_factory=time.monotonic)
    #: when the first instance came
    first_at: float = 0.0


class Server:
    """One DICOMweb service (a source of series); see the module docstring.

    Use :func:`server_for` to get the session's instance for a root URL.
    """

    def __init__(
        self, base: str, credentials: Credentials | None = None, *,
        connections: int = CONNECTIONS, timeout: tuple[float, float] = TIMEOUT,
        cache_bytes: int = CACHE_BYTES, stream: bool = True,
    ) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.base = base
        #: what messages call the server: the root URL, never credentials
        self.name = base
        self.timeout = timeout
        self.credentials = credentials
        #: searches and metadata (JSON: compressed by the server when it offers to)
        self.session: requests.Session = self._new_session(connections)
        #: pixel data (frames, instances, the series stream), asked for uncompressed
        #: (``Accept-Encoding: identity``): requests offers gzip by default and a server
        #: may take it (Orthanc 1.10 gzips each instance or frame answer: 40 ms of its
        #: time for a 512 KB CT slice, 3 ms without; compressed syntaxes gain nothing)
        self.pixel_session: requests.Session = self._new_session(connections)
        self.pixel_session.headers["Accept-Encoding"] = "identity"
        self.client = DICOMwebClient(base, session=self.session, timeout=timeout)
        self.pixel_client = DICOMwebClient(base, session=self.pixel_session,
                                           timeout=timeout)
        for client in (self.client, self.pixel_client):
            # retry busy answers (429, 503...) briefly, not for seconds
            client.set_http_retry_params(retry=True, max_attempts=3,
                                         wait_exponential_multiplier=100)
        self._cache = _FrameCache(cache_bytes)
        self._fetcher = _Fetcher(self._fetch_frame, self._cache, connections)
        self._series: dict[tuple[str, str], _SeriesInfo] = {}
        #: fetch a series' frames in one streamed request behind the first one asked for
        self.stream = stream
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._prefetched: set[tuple[str, str]] = set()
        self._asked: set[tuple[str, str]] = set()
        self._closed = False
        self._instances: dict[str, tuple[_SeriesInfo, str, Dataset]] = {}
        #: SEG / RTSTRUCT instances fetched whole: reference -> file, and back
        self._files: dict[str, str] = {}
        self._file_refs: dict[str, str] = {}
        self._folder: str | None = None
        self._remove_folder: Callable[[], Any] | None = None
        #: SEG / RTSTRUCT instances that came whole with the series stream, by reference
        #: (:meth:`object_file` writes them without asking again)
        self._streamed_objects: dict[str, bytes | bytearray] = {}
        #: each study's series list, with when it was asked for
        self._series_lists: dict[str, tuple[float, list[SeriesRow]]] = {}
        self._lock = threading.Lock()

    def _new_session(self, connections: int) -> requests.Session:
        """An HTTP session with the server's credentials and a pool of ``connections``."""
        import requests

        session = requests.Session()
        session.trust_env = False  # no implicit netrc: find_credentials decides
        adapter = requests.adapters.HTTPAdapter(pool_connections=1,
                                                pool_maxsize=max(connections, 4))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.verify = True
        credentials = self.credentials
        if credentials and credentials.token:
            session.headers["Authorization"] = f"Bearer {credentials.token}"
        elif credentials:
            session.auth = (credentials.username, credentials.password)
        return session

    # ---- errors ---------------------------------------------------------------------

    def _error(self, exc: BaseException, what: str) -> DicomWebError:
        """A one-line :class:`DicomWebError` for ``exc`` raised while doing ``what``."""
        import requests

        if isinstance(exc, DicomWebError):
            return exc
        why: str
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            code = exc.response.status_code
            reason = exc.response.reason or ""
            if code == 401:
                why = ("the server refused the credentials"
                       + (f" ({self.credentials.kind} from the {self.credentials.origin})"
                          if self.credentials and self.credentials.origin else "")
                       if self.credentials else "the server asks for credentials")
            elif code == 403:
                why = "access denied" + (
                    f" for the {self.credentials.kind}"
                    + (f" from the {self.credentials.origin}" if self.credentials.origin else "")
                    if self.credentials else " without credentials")
            elif code == 404:
                why = "not found"
            elif code == 406:
                why = "the server cannot send it in the form asked for"
            else:
                why = "the server answered with an error"
            why += f" (HTTP {code}{' ' + reason if reason else ''})"
        elif isinstance(exc, requests.exceptions.SSLError):
            why = f"the HTTPS certificate could not be verified ({_short(exc)})"
        elif isinstance(exc, requests.Timeout):
            why = f"no answer within {self.timeout[1]:g} s (timeout)"
        elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
            why = "the connection dropped during the transfer"
        elif isinstance(exc, requests.ConnectionError):
            text = str(exc)
            if "refused" in text.lower():
                why = "cannot connect (connection refused: is the server running?)"
            elif "RemoteDisconnected" in text or "reset" in text.lower():
                why = "the connection dropped during the transfer"
            elif "Name or service not known" in text or "getaddrinfo" in text:
                why = "unknown host name"
            else:
                why = f"cannot connect ({_short(exc)})"
        elif isinstance(exc, ValueError | KeyError):
            why = f"unexpected answer ({exc})"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return DicomWebError(f"DICOMweb server {self.name}: {what}: {why}")

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        import requests

        for attempt in (1, 2):
            try:
                return fn(*args, **kw)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                # a pooled keep-alive connection the server closed fails once: try again
                if attempt == 2 or "refused" in str(exc).lower():
                    raise self._error(exc, what) from None
            except (requests.RequestException, ValueError, KeyError) as exc:
                raise self._error(exc, what) from None
        raise AssertionError("unreachable")

    # ---- search ---------------------------------------------------------------------

    def search_studies(self, filters: Mapping[str, str] | None = None,
                       limit: int = 200) -> list[StudyRow]:
        """Studies matching ``filters`` (keys of :data:`SEARCH_FIELDS`; ``*`` and ``?``
        are wildcards, a date is ``YYYYMMDD`` or a range ``A-B``)."""
        query = {SEARCH_FIELDS[k]: v.strip() for k, v in (filters or {}).items()
                 if v and v.strip() and k in SEARCH_FIELDS}
        found = self._call("study search", self.client.search_for_studies,
                           search_filters=query, fields=_STUDY_FIELDS, limit=limit)
        rows = [StudyRow(
            uid=_text(d, "0020000D"), patient_name=_text(d, "00100010"),
            patient_id=_text(d, "00100020"), date=_text(d, "00080020"),
            description=_text(d, "00081030"), accession=_text(d, "00080050"),
            modalities=_text(d, "00080061", join=True),
            n_series=_int(d, "00201206"), n_instances=_int(d, "00201208"),
        ) for d in found]
        return [r for r in rows if r.uid]

    def search_series(self, study: str, max_age: float = 0.0) -> list[SeriesRow]:
        """The series of ``study``, by Series Number; the answer of the last
        ``max_age`` seconds when there is one (the widget fetches a study on a worker
        thread, then the reader opens its URL on the GUI thread without asking again)."""
        with self._lock:
            last = self._series_lists.get(study)
        if last is not None and time.monotonic() - last[0] <= max_age:
            return list(last[1])
        found = self._call(f"series of study {study}", self.client.search_for_series,
                           study_instance_uid=study, fields=_SERIES_FIELDS)
        rows = [SeriesRow(
            study_uid=study, uid=_text(d, "0020000E"),
            url=Location(self.base, study, _text(d, "0020000E")).url(),
            number=_int(d, "00200011"), modality=_text(d, "00080060"),
            description=_text(d, "0008103E"), n_instances=_int(d, "00201209"),
        ) for d in found]
        rows = [r for r in rows if r.uid]
        rows.sort(key=lambda r: (r.number if r.number is not None else 1 << 30, r.uid))
        with self._lock:
            self._series_lists[study] = (time.monotonic(), list(rows))
        return rows

    # ---- headers --------------------------------------------------------------------

    def series_datasets(self, study: str, series: str) -> list[tuple[str, Dataset]]:
        """``(reference, header)`` per instance of the series, from its metadata (one
        request; cached for the session). Each header's file meta names the transfer
        syntax its frames will be sent in."""
        key = (study, series)
        with self._lock:
            info = self._series.get(key)
        if info is None:
            info = self._load_series(study, series)
        return [(ref, self._instances[ref][2]) for ref in info.refs]

    def _load_series(self, study: str, series: str) -> _SeriesInfo:
        """Read the series' headers, from the series itself or from its metadata.

        The series is asked for in one streamed request (WADO-RS retrieve series, stored
        syntax); its instances bring their headers and frames. When the stream will not
        be over within :data:`STREAM_HEADERS_WITHIN` seconds (estimated from its pace and
        the series' instance count, QIDO-RS), the metadata request (PS3.18 10.4.1.1.2)
        starts beside it and the first to finish gives the headers; the stream goes on
        filling the frame cache. A series that streams quickly thus opens in one request
        (a server such as Orthanc reads every whole file to build the metadata, as much
        work as sending the series), a big one or a slow line opens from its metadata."""
        sid = (study, series)
        where = f"series {series}"
        stream = self._start_stream(study, series)
        meta: Future[list[dict[str, Any]]] = Future()

        def metadata() -> None:
            try:
                meta.set_result(self._call(f"metadata of {where}",
                                           self.client.retrieve_series_metadata,
                                           study, series))
            except BaseException as exc:  # handed to the waiting caller, raised there
                meta.set_exception(exc)

        def start_metadata() -> None:
            threading.Thread(target=metadata, name="napari-dicom-dicomweb-metadata",
                             daemon=True).start()

        if stream is None or STREAM_HEADERS_WITHIN <= 0:  # 0: always both
            start_metadata()
        else:
            total = self._instance_count(study, series)
            while not stream.result.done():
                if total is None or self._stream_is_slow(stream, total):
                    break
                try:
                    stream.result.result(timeout=0.02)
                except TimeoutError:
                    pass
                except Exception:  # the stream failed: the metadata says why
                    break
            if not stream.result.done() or stream.result.exception() is not None:
                start_metadata()
        pending: set[Future[Any]] = {meta} | ({stream.result} if stream else set())
        winner: Future[Any] | None = None
        while pending and winner is None:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            # the stream first: its headers are whole and its frames already here
            order = [f for f in (stream.result if stream else None, meta) if f in done]
            winner = next((f for f in order if f is not None and f.exception() is None),
                          None)
        if winner is None:  # the stream failed, and so did the metadata (which says why)
            exc = meta.exception()
            assert exc is not None
            raise exc
        loc = Location(self.base, study, series)
        probe = None
        if winner is meta:
            items = meta.result()
            if not items:
                raise DicomWebError(f"DICOMweb server {self.name}: {where} of study {study}:"
                                    " no instances (is the UID right?)")
            datasets: list[tuple[str, Dataset]] = []
            for item in items:
                sop = _text(item, "00080018")
                if not sop:
                    continue
                try:
                    ds = dataset_from_json(item, self._bulk_handler(where))
                except (ValueError, KeyError, TypeError, struct.error) as exc:
                    raise DicomWebError(f"DICOMweb server {self.name}: metadata of instance "
                                        f"{sop} cannot be read ({exc})") from None
                datasets.append((loc.instance(sop), ds))
            stored, probe = self._stored_syntax(items, study, series, datasets, stream)
        else:
            assert stream is not None
            got: list[tuple[str, str, Dataset]] = winner.result()
            if not got:
                raise DicomWebError(f"DICOMweb server {self.name}: {where} of study {study}:"
                                    " no instances (is the UID right?)")
            datasets = [(loc.instance(sop), ds) for sop, _, ds in got]
            stored = next((ts for _, ts, ds in got if "Rows" in ds), got[0][1])
        if stored in _NATIVE:
            stored = str(ExplicitVRLittleEndian)
        syntax = stored if stored in _FRAME_MEDIA and not missing_decoder_message(
            stored) else str(ExplicitVRLittleEndian)
        info = _SeriesInfo(study, series, [r for r, _ in datasets], syntax, _FRAME_MEDIA[syntax],
                           stored)
        for ref, ds in datasets:
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = UID(syntax)
            self._instances[ref] = (info, _sop_of(ref), ds)
        with self._lock:
            self._series[sid] = info
            arrived = stream.arrived if stream else {}
            if stream:
                stream.arrived = {}
        if probe is not None and probe[0] == syntax:  # the first frame, already here
            self._cache.put(probe[1], probe[2])
        for sop, (ts, frames) in arrived.items():  # what streamed in before the headers
            self._deliver(info, sop, ts, frames)
        return info

    def object_file(self, ref: str) -> str:
        """The instance ``ref`` whole (WADO-RS retrieve instance, stored syntax) in a file
        of the session's download folder (removed at exit), for the SEG and RTSTRUCT
        readers; fetched once per session. Its URL: :meth:`object_url`."""
        with self._lock:
            path = self._files.get(ref)
        if path is not None:
            return path
        info, sop, _ = self._instances[ref]
        url = f"{self.base}/studies/{info.study}/series/{info.series}/instances/{sop}"
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        what = f"instance {sop}"

        def get() -> bytes | bytearray:
            with self.pixel_session.get(url, headers={"Accept": accept}, stream=True,
                                        timeout=self.timeout) as r:
                r.raise_for_status()
                return next(iter(_iter_parts(r)), b"")

        with self._lock:  # the series stream brought it: not asked for again
            data = self._streamed_objects.pop(ref, None)
        if data is None:
            data = self._call(what, get)
        if not data:
            raise DicomWebError(f"DICOMweb server {self.name}: {what}: empty answer")
        with self._lock:
            if self._folder is None:
                import shutil
                import tempfile
                import weakref

                self._folder = tempfile.mkdtemp(prefix="napari-dicom-dicomweb-")
                self._remove_folder = weakref.finalize(self, shutil.rmtree, self._folder,
                                                       True)
            path = os.path.join(self._folder, f"{sop}.dcm")
        with open(path, "wb") as f:
            f.write(data)
        with self._lock:
            self._files[ref] = path
            self._file_refs[path] = ref
        return path

    def object_url(self, path: str) -> str:
        """The ``dicomweb+...`` URL of a file :meth:`object_file` wrote (else ``path``)."""
        with self._lock:
            return self._file_refs.get(path, path)

    @staticmethod
    def _stream_is_slow(stream: _Stream, total: int) -> bool:
        """Whether the stream will take longer than :data:`STREAM_HEADERS_WITHIN`: its
        wait for the first instance plus the pace since then (looked at after 0.1 s,
        so that a connection's start is not taken for its pace). Asking for the metadata
        too is not free: a server such as Orthanc then reads every file twice, and goes
        on building the metadata after the stream has won."""
        now = time.monotonic()
        spent, came = now - stream.started, stream.count
        if spent < min(0.1, STREAM_HEADERS_WITHIN / 5):
            return False
        if came < 2:
            return spent > STREAM_HEADERS_WITHIN / 2
        first = stream.first_at - stream.started
        pace = (now - stream.first_at) / (came - 1)
        return first + pace * (total - 1) > STREAM_HEADERS_WITHIN

    def _instance_count(self, study: str, series: str) -> int | None:
        """The series' Number of Series Related Instances (QIDO-RS); ``None`` when the
        server does not say."""
        import requests

        try:
            found = self.client.search_for_series(
                study_instance_uid=study, search_filters={"SeriesInstanceUID": series},
                fields=["NumberOfSeriesRelatedInstances"])
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            log.debug("DICOMweb server %s: no instance count (%s)", self.name,
                      type(exc).__name__)
            return None
        return _int(found[0], "00201209") if found else None

    def _bulk_handler(self, where: str) -> Callable[[str, str, str], bytes | None]:
        def handler(tag: str, vr: str, uri: str) -> bytes | None:
            if tag.upper() not in _BULK_NEEDED:
                return None  # pixels come frame by frame; other bulk data are not used
            parts = self._call(f"bulk data {tag} of {where}", self.client.retrieve_bulkdata,
                               self._here(uri))
            return b"".join(parts)
        return handler

    def _here(self, uri: str) -> str:
        """``uri`` on the server as this client reaches it (a server may name itself
        ``localhost`` or an inside name in the URIs it writes)."""
        ours, theirs = urlsplit(self.base), urlsplit(uri)
        if not theirs.scheme:
            return self.base.rstrip("/") + "/" + uri.lstrip("/")
        return urlunsplit((ours.scheme, ours.netloc, theirs.path, theirs.query, ""))

    def _stored_syntax(self, items: Sequence[Mapping[str, Any]], study: str, series: str,
                       datasets: Sequence[tuple[str, Dataset]],
                       stream: _Stream | None = None,
                       ) -> tuple[str, tuple[str, _FrameKey, bytes] | None]:
        """The series' stored transfer syntax: from the metadata (0002,0010) or (0008,3002)
        when the server gives it, else from a first frame asked for with
        ``transfer-syntax=*`` (kept to seed the cache) unless the series stream has
        already brought an image."""
        for tag in ("00020010", "00083002"):
            v = _text(items[0], tag)
            if v:
                return v, None
        if stream is not None:
            with self._lock:
                seen = next((ts for ts, frames in stream.arrived.values() if frames), "")
            if seen:
                return seen, None
        image = next((ds for _, ds in datasets if "Rows" in ds), None)
        if image is None:
            return str(ExplicitVRLittleEndian), None
        sop = str(image.SOPInstanceUID)
        url = (f"{self.base}/studies/{study}/series/{series}/instances/{sop}/frames/1")
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        try:
            r = self._call("first frame", self.pixel_session.get, url,
                           headers={"Accept": accept}, timeout=self.timeout)
            r.raise_for_status()
        except DicomWebError:
            raise
        except Exception as exc:  # requests.HTTPError: a server without transfer-syntax=*
            import requests

            if isinstance(exc, requests.HTTPError) and exc.response is not None and (
                    exc.response.status_code in (400, 406)):
                return str(ExplicitVRLittleEndian), None
            raise self._error(exc, f"first frame of series {series}") from None
        ctype, body = _first_part(r)
        media, params = _media(ctype)
        syntax = params.get("transfer-syntax", "")
        if not syntax:
            syntax = str(ExplicitVRLittleEndian) if media == "application/octet-stream" else ""
        if syntax in _NATIVE:
            syntax = str(ExplicitVRLittleEndian)
        probe = (syntax, (study, series, sop, 1), body) if syntax and body is not None else None
        return syntax or "unknown", probe

    def read_header(self, ref: str) -> Dataset:
        """The header of the instance ``ref`` (a reference from :meth:`series_datasets`)."""
        return self._instances[ref][2]

    def frame_syntax(self, ref: str) -> str:
        return self._instances[ref][0].syntax

    # ---- frames ---------------------------------------------------------------------

    def read_frame(self, ref: str, frame: int | None) -> bytes | memoryview:
        """Pixel bytes of one frame (0-based ``frame``; ``None`` for a single-frame
        instance), in the syntax :meth:`frame_syntax` names: native bytes or one
        compressed frame. The rest of its series is fetched behind it."""
        info, sop, _ = self._instances[ref]
        key = (info.study, info.series, sop, (frame or 0) + 1)
        streaming = self._stream(info)
        sid = (info.study, info.series)

        def then() -> list[_FrameKey]:  # once per series: the rest behind this frame
            with self._lock:
                if sid in self._prefetched or streaming():  # the stream brings them
                    return []
                self._prefetched.add(sid)
            return self._series_keys(info)

        with self._lock:  # the series' first frame asked for: fetched now, beside the stream
            first = sid not in self._asked
            self._asked.add(sid)
        return self._fetcher.get(key, then, None if first else streaming)

    def _stream(self, info: _SeriesInfo) -> Callable[[], bool]:
        """Whether the series stream (started with the headers) is still running."""
        with self._lock:
            stream = self._streams.get((info.study, info.series))
        if stream is None:
            return lambda: False
        return stream.thread.is_alive

    def _start_stream(self, study: str, series: str) -> _Stream | None:
        """Start (once per session) the series in one streamed request (WADO-RS retrieve
        series, stored syntax): on Orthanc one request per frame costs ~20 ms of server
        time, the whole series streams at well under 1 ms per instance. Each instance's
        header goes to :attr:`_Stream.result` (the headers, if the stream ends before the
        metadata comes), its frames to the cache."""
        sid = (study, series)
        with self._lock:
            if not self.stream or self._closed or sid in self._streams:
                return None
            stream = _Stream(threading.Thread(target=self._stream_series, args=(study, series),
                                              name="napari-dicom-dicomweb-series",
                                              daemon=True))
            self._streams[sid] = stream
        stream.thread.start()
        return stream

    def close(self) -> None:
        """Stop the series streams (each ends after its current instance) and wait, then
        free what the session kept: the frames, the downloaded SEG / RTSTRUCT files and
        the connections. The session's next :func:`server_for` gives a new server."""
        self._closed = True
        with _SERVERS_LOCK:
            for key in [k for k, v in _SERVERS.items() if v is self]:
                del _SERVERS[key]
        with self._lock:
            threads = [s.thread for s in self._streams.values()]
        for t in threads:
            t.join()
        self._cache.clear()
        with self._lock:
            self._streamed_objects.clear()
            self._files.clear()
            self._file_refs.clear()
            remove, self._remove_folder = self._remove_folder, None
        if remove is not None:
            remove()  # the download folder, now (else at exit)
        self.session.close()
        self.pixel_session.close()

    def _deliver(self, info: _SeriesInfo, sop: str, ts: str, frames: list[_Frame]) -> None:
        """Streamed frames of one instance to the cache, when they are in the syntax the
        series' frames are asked for (else they are fetched on their own)."""
        native = info.syntax == str(ExplicitVRLittleEndian)
        if ts != info.syntax and not (native and ts in _NATIVE[:2]):
            return
        for i, data in enumerate(frames):
            self._fetcher.deliver((info.study, info.series, sop, i + 1), data)

    def _stream_series(self, study: str, series: str) -> None:
        """The series stream's thread: read the instances and split each (header,
        frames) as it comes, so that the series' headers are ready when its last
        instance is (a series that streams quickly opens from its stream: its first
        slice waits for them).

        Splitting as they come stretches the stream by part of the split's time, but
        less than splitting after the last one adds: 300 CT slices of 512 x 512 from
        Orthanc on loopback, headers ready 0.21-0.28 s after the request against
        0.29-0.32 s (read whole, 0.06-0.09 s of splitting after it); a second thread
        splitting beside the reading one gained less (0.25 s: the two take turns
        holding the GIL)."""
        import requests
        from pydicom.errors import InvalidDicomError

        from .scan import OBJECT_CLASSES, _str

        sid = (study, series)
        loc = Location(self.base, study, series)
        with self._lock:
            stream = self._streams[sid]
        got: list[tuple[str, str, Dataset]] = []

        def split(part: bytes | bytearray) -> None:
            ds, ts, frames = _split_instance(part)
            sop = _str(ds, 0x00080018) or ""
            got.append((sop, ts, ds))
            if (_str(ds, 0x00080016) or "") in OBJECT_CLASSES:  # its file, for later
                ref = loc.instance(sop)
                with self._lock:
                    if ref not in self._files:
                        self._streamed_objects[ref] = part
            with self._lock:
                info = self._series.get(sid)
                if info is None:
                    stream.arrived[sop] = (ts, frames)
            if info is not None:
                self._deliver(info, sop, ts, frames)

        url = f"{self.base}/studies/{study}/series/{series}"
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        failed: BaseException | None = None
        try:
            with self.pixel_session.get(url, headers={"Accept": accept}, stream=True,
                                        timeout=self.timeout) as response:
                response.raise_for_status()
                parts = [] if response.status_code == 204 else _iter_parts(response)
                for part in parts:
                    if not stream.count:
                        stream.first_at = time.monotonic()
                    stream.count += 1
                    if self._closed:
                        raise EOFError("closed")
                    split(part)
        except (requests.RequestException, InvalidDicomError, ValueError, KeyError,
                AttributeError, EOFError, OSError) as exc:
            failed = exc  # the instances that came whole still bring their frames
        except BaseException as exc:
            stream.result.set_exception(exc)
            raise
        if failed is not None:  # frames not streamed are fetched alone
            log.debug("DICOMweb server %s: series stream stopped: %s", self.name,
                      type(failed).__name__)
            stream.result.set_exception(failed)
            return
        stream.result.set_result(got)

    def _series_keys(self, info: _SeriesInfo) -> list[_FrameKey]:
        keys: list[_FrameKey] = []
        for ref in info.refs:
            _, sop, ds = self._instances[ref]
            if "Rows" not in ds:
                continue
            n = int(ds.get("NumberOfFrames", 1) or 1)
            keys.extend((info.study, info.series, sop, i + 1) for i in range(n))
        return keys

    def _fetch_frame(self, key: _FrameKey) -> _Frame:
        study, series, sop, number = key
        info = self._series[(study, series)]
        what = f"frame {number} of instance {sop}"
        try:
            frames = self._call(what, self.pixel_client.retrieve_instance_frames, study, series,
                                sop, [number], media_types=((info.media, info.syntax),))
        except DicomWebError as exc:
            if info.stored in ("", info.syntax) or "(HTTP " not in str(exc):
                raise
            # stored in a syntax no local decoder takes, and not transcoded by the server
            why = str(exc).split(f"{what}: ", 1)[-1]
            name = UID(info.stored).name if UID(info.stored).is_transfer_syntax else info.stored
            raise DicomWebError(
                f"DICOMweb server {self.name}: {what}: stored as {name}, which cannot be "
                f"decoded here, and the server did not send it uncompressed: {why}") from None
        if len(frames) != 1:
            raise DicomWebError(f"DICOMweb server {self.name}: {what}: {len(frames)} frames "
                                "in the answer instead of 1")
        data: bytes = bytes(frames[0])
        return data


#: VRs whose JSON values become raw element bytes directly (ASCII text, binary numbers)
_ASCII_VRS = frozenset("AE AS CS DA DS DT IS TM UI UR".split())
_NUMBER_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d",
               "UV": "Q", "SV": "q"}
_TEXT_VRS = frozenset("LO SH ST LT UT UC".split())


def dataset_from_json(item: Mapping[str, Any],
                      handler: Callable[[str, str, str], bytes | None] | None = None,
                      ) -> Dataset:
    """A DICOM JSON data set (PS3.18 F.2) as a pydicom :class:`Dataset`, as
    ``Dataset.from_json`` gives it, about 10x faster: ASCII and binary-number values
    become raw elements (converted when read, as a file's are), text values plain
    elements; sequences, person names with several groups, inline binary and bulk data
    go through ``Dataset.from_json`` (``handler`` fetches the bulk data it needs; other
    bulk data, such as Pixel Data, are left out)."""
    ds = Dataset()
    slow: dict[str, Any] = {}
    elements = ds._dict
    for key, el in item.items():
        vr = el.get("vr", "")
        tag = BaseTag(int(key, 16))
        if "BulkDataURI" in el:
            if key.upper() in _BULK_NEEDED:
                slow[key] = el
            continue
        vals = el.get("Value")
        if vr in _ASCII_VRS:
            text = "" if not vals else "\\".join(
                "" if v is None else (repr(v) if isinstance(v, float) else str(v))
                for v in vals)
            raw = text.encode("ascii", "replace")
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
            elements[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True, True,
                                           False)
        elif vr in _NUMBER_VRS and all(isinstance(v, int | float) for v in vals or []):
            raw = struct.pack(f"<{len(vals or [])}{_NUMBER_VRS[vr]}", *(vals or []))
            elements[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True, True,
                                           False)
        elif vr in _TEXT_VRS and all(isinstance(v, str) for v in vals or []):
            value: Any = "" if not vals else vals[0] if len(vals) == 1 else list(vals)
            elements[tag] = DataElement(tag, vr, value, validation_mode=0)
        elif vr == "PN" and all(isinstance(v, Mapping) and set(v) <= {"Alphabetic"}
                                for v in vals or []):
            names = [str(v.get("Alphabetic", "")) for v in vals or []]
            elements[tag] = DataElement(tag, vr, "" if not names else names[0]
                                        if len(names) == 1 else names, validation_mode=0)
        else:
            slow[key] = el
    if slow:
        needs = any("BulkDataURI" in str(v) for v in slow.values())
        rest = Dataset.from_json(slow, bulk_data_uri_handler=handler if needs else None)
        for elem in rest:
            elements[elem.tag] = elem
    return ds


class _Body:
    """The body of a streamed reply, read in large pieces: straight from the socket into
    the caller's buffer (``http.client``'s ``readinto``, no intermediate copies) when the
    reply is not content-encoded, else through urllib3's ``read``. Socket faults become
    the ``requests`` exceptions ``iter_content`` raises (a dropped connection, a timeout),
    so that callers name them alike."""

    def __init__(self, response: requests.Response) -> None:
        import http.client

        raw = response.raw
        fp = getattr(raw, "_fp", None)  # urllib3's http.client response (1.x and 2.x)
        coding = response.headers.get("content-encoding", "").strip().lower()
        self._into: Callable[[memoryview], int] | None = None
        if isinstance(fp, http.client.HTTPResponse) and coding in ("", "identity"):
            self._into = fp.readinto
        self._raw = raw
        self._left = memoryview(b"")  # decoded bytes urllib3 gave beyond the last read
        #: bytes read ahead of the caller (a part's headers, a delimiter)
        self._buf = bytearray()
        self._pos = 0

    @staticmethod
    @contextmanager
    def _faults() -> Iterator[None]:
        import http.client

        import requests
        import urllib3.exceptions as u3

        try:
            yield
        except (TimeoutError, u3.ReadTimeoutError) as exc:
            raise requests.exceptions.ReadTimeout(str(exc)) from None
        except u3.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(str(exc)) from None
        except (u3.ProtocolError, u3.SSLError) as exc:
            raise requests.exceptions.ChunkedEncodingError(
                f"connection dropped ({type(exc).__name__})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise requests.exceptions.ChunkedEncodingError(
                f"connection dropped ({type(exc).__name__})") from None

    def _read_into(self, view: memoryview) -> int:
        """Fill ``view`` from the body (fewer bytes only at its end)."""
        into = self._into
        with self._faults():
            done = 0
            if into is None:  # urllib3 decodes (gzip...): its pieces may be any size
                while done < len(view):
                    if not self._left:
                        self._left = memoryview(self._raw.read(1 << 18, decode_content=True))
                        if not self._left:
                            break
                    k = min(len(view) - done, len(self._left))
                    view[done:done + k] = self._left[:k]
                    self._left = self._left[k:]
                    done += k
                return done
            while done < len(view):
                k = into(view[done:])
                if not k:
                    break
                done += k
            return done

    def _fill(self, n: int) -> bool:
        """Read up to ``n`` more bytes ahead; ``False`` at the end of the body."""
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0
        tmp = bytearray(n)
        k = self._read_into(memoryview(tmp))
        if not k:
            return False
        self._buf += memoryview(tmp)[:k]
        return True

    def until(self, marker: bytes, step: int = 8192) -> bytes | None:
        """The bytes before ``marker`` (``marker`` is consumed); ``None`` at the end."""
        ahead = 0  # where to look from, after self._pos (bytes before it were looked at)
        while True:
            i = self._buf.find(marker, self._pos + ahead)
            if i >= 0:
                with memoryview(self._buf) as view:
                    out = bytes(view[self._pos:i])
                self._pos = i + len(marker)
                return out
            ahead = max(0, len(self._buf) - self._pos - len(marker) + 1)
            if not self._fill(step):
                return None

    def peek(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n and self._fill(max(n, 64)):
            pass
        return bytes(self._buf[self._pos:self._pos + n])

    def exactly(self, n: int) -> bytearray:
        """The next ``n`` bytes, in a new buffer read into directly."""
        out = bytearray(n)
        have = min(n, len(self._buf) - self._pos)
        out[:have] = self._buf[self._pos:self._pos + have]
        self._pos += have
        if have < n and self._read_into(memoryview(out)[have:]) < n - have:
            raise EOFError("the reply ended inside a part")
        return out


def _iter_parts(response: requests.Response) -> Iterator[bytes | bytearray]:
    """The bodies of a multipart/related reply (RFC 2387), each as soon as it has come.

    A part with a Content-Length header (Orthanc, dcm4chee and Google's servers send it)
    is read straight from the socket into its own buffer, with no search and no copy;
    a part without one is found by its closing delimiter (``bytes.find`` over large
    reads)."""
    media, params = _media(response.headers.get("content-type", ""))
    boundary = params.get("boundary")
    if media != "multipart/related" or not boundary:
        yield response.content
        return
    body = _Body(response)
    dash = b"--" + boundary.encode("latin-1")
    delim = b"\r\n" + dash
    # the preamble (usually empty) ends with the first delimiter, at the start of a line
    first = body.peek(len(dash))
    if first == dash:
        body.until(dash)
    elif body.until(delim) is None:
        raise EOFError("no part in the reply")
    while True:
        if body.peek(2) in (b"--", b""):  # the close delimiter, or a cut reply
            return
        head = body.until(b"\r\n\r\n")  # rest of the boundary line, then the headers
        if head is None:
            raise EOFError("the reply ended inside a part's headers")
        length = None
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        if length is not None:
            part: bytes | bytearray = body.exactly(length)
            if body.peek(len(delim)) != delim:
                raise ValueError("a part is longer than its Content-Length")
            body.until(delim)
        else:
            found = body.until(delim, step=1 << 20)
            if found is None:
                raise EOFError("the reply ended inside a part")
            part = found
        yield part


#: bytes of a streamed instance its header is looked for in first (a CT slice's is ~1 KB)
_HEAD_BYTES = 1 << 13


def _split_instance(part: bytes | bytearray,
                    ) -> tuple[Dataset, str, list[_Frame]]:
    """A Part 10 instance -> (header without Pixel Data, stored syntax, frames).

    The header is parsed up to Pixel Data and the frames are cut from the bytes after it
    (PS3.5 7.1, A.4), without parsing the pixel data element; native frames are read-only
    views of ``part`` (no copy). Segmentations and structure sets give their header only
    (their readers open the whole instance's file, :meth:`Server.object_file`); anything
    unusual is parsed whole (its frames by :func:`_frames_of`)."""
    from io import BytesIO

    from pydicom import dcmread

    from .scan import _TAG, OBJECT_CLASSES, _fast_header, _str, _uint

    view = memoryview(part).toreadonly()
    fast = None
    for size in (_HEAD_BYTES, len(part)):  # the folder scan's header parse (~3x pydicom's)
        fast = _fast_header(bytes(view[:size]))
        if fast is not None or size >= len(part):
            break
    if fast is not None:
        ds, at = fast
    else:
        fp = BytesIO(part)
        ds = dcmread(fp, stop_before_pixels=True)
        at = fp.tell()
    # values read from the raw elements (pydicom's attribute access converts each value
    # and looks up the character set: it was half the time spent per streamed instance)
    meta = getattr(ds, "file_meta", None)
    ts = (_str(meta, 0x00020010) or "") if meta is not None else ""
    rows = _uint(ds, _TAG["Rows"])
    plain = (at + 12 <= len(part) and rows is not None
             and part[at:at + 4] == b"\xe0\x7f\x10\x00" and ts != "1.2.840.10008.1.2.2")
    if (_str(ds, _TAG["SOPClassUID"]) or "") in OBJECT_CLASSES:
        return ds, ts, []  # a SEG / RTSTRUCT is read whole from its file (object_file)
    if not plain:
        ds = dcmread(BytesIO(part))
        frames: list[_Frame] = list(_frames_of(ds)) if "Rows" in ds else []
        if frames:
            del ds.PixelData  # the header stays; the frames go to the cache
        return ds, ts, frames
    if ts == "1.2.840.10008.1.2":  # implicit VR: tag, 4-byte length
        (length,), start = struct.unpack_from("<I", part, at + 4), at + 8
    elif part[at + 4:at + 6] in (b"OB", b"OW", b"UN"):  # explicit VR, long form
        (length,), start = struct.unpack_from("<I", part, at + 8), at + 12
    else:
        (length,), start = struct.unpack_from("<H", part, at + 6), at + 8
    n = _uint(ds, _TAG["NumberOfFrames"]) or 1
    if length == 0xFFFFFFFF:  # encapsulated (PS3.5 A.4)
        from pydicom.encaps import generate_frames

        return ds, ts, list(generate_frames(bytes(view[start:]), number_of_frames=n))
    bits = _uint(ds, _TAG["BitsAllocated"]) or 0
    columns = _uint(ds, _TAG["Columns"]) or 0
    size = (rows or 0) * columns * (_uint(ds, _TAG["SamplesPerPixel"]) or 1) * bits // 8
    if not size or bits % 8 or size * n > length or start + length > len(part):
        return ds, ts, []
    return ds, ts, [view[start + i * size:start + (i + 1) * size] for i in range(n)]


def _frames_of(ds: Dataset) -> list[bytes]:
    """The frames of an instance's Pixel Data, as frame retrieval sends them."""
    if "PixelData" not in ds:
        return []
    n = int(ds.get("NumberOfFrames", 1) or 1)
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    if syntax.is_encapsulated:
        from pydicom.encaps import generate_frames

        return list(generate_frames(ds.PixelData, number_of_frames=n))
    bits = int(ds.BitsAllocated)
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
    if bits % 8 or size * n > len(ds.PixelData):
        return []
    data = ds.PixelData
    if n == 1:
        return [bytes(data[:size])] if len(data) != size else [data]
    view = memoryview(data)
    return [bytes(view[i * size:(i + 1) * size]) for i in range(n)]


def _sop_of(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _short(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"\(Caused by (\w+)\(.*?:\s*(.*?)\)+\s*$", text)
    if m:
        return m.group(2).strip("'\" ")[:160]
    return text[:160]


def _media(content_type: str) -> tuple[str, dict[str, str]]:
    """``"image/jpeg; transfer-syntax=1.2..."`` -> ``("image/jpeg", {...})``."""
    parts = [p.strip() for p in content_type.split(";")]
    params: dict[str, str] = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        params[k.strip().lower()] = v.strip().strip('"')
    return parts[0].lower(), params


def _first_part(response: requests.Response) -> tuple[str, bytes | None]:
    """Content type and body of the first part of a multipart/related reply."""
    media, params = _media(response.headers.get("content-type", ""))
    body = response.content
    boundary = params.get("boundary")
    if media != "multipart/related" or not boundary:
        return response.headers.get("content-type", ""), body
    # the reply's own "type" parameter names the parts' media type and syntax
    inner = params.get("type", "")
    marker = b"--" + boundary.encode()
    start = body.find(marker)
    if start < 0:
        return inner, None
    head_end = body.find(b"\r\n\r\n", start)
    end = body.find(b"\r\n" + marker, head_end)
    if head_end < 0 or end < 0:
        return inner, None
    ctype = inner
    for line in body[start + len(marker):head_end].split(b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-type":
            ctype = value.strip()
    return ctype, body[head_end + 4:end]


#: the session's servers, by root URL and credentials
_SERVERS: dict[tuple[str, Credentials | None], Server] = {}
_SERVERS_LOCK = threading.Lock()


def object_url(path: str) -> str:
    """The URL a SEG / RTSTRUCT file came from, when a server of the session fetched it
    (:meth:`Server.object_file`); else ``path``."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
    for server in servers:
        url = server.object_url(path)
        if url != path:
            return url
    return path


def server_for(base: str, credentials: Credentials | None = None) -> Server:
    """The session's :class:`Server` for ``base`` with ``credentials`` (found by
    :func:`find_credentials` when not given); its caches last the session."""
    creds = find_credentials(base, credentials)
    with _SERVERS_LOCK:
        server = _SERVERS.get((base, creds))
        if server is None:
            server = _SERVERS[(base, creds)] = Server(base, creds)
        return server


def _add_series(result: ScanResult, server: Server, study: str, series: str,
                objects: bool = True) -> None:
    """The series' images (and, with ``objects``, its SEG / RTSTRUCT instances, fetched
    whole into files the segmentation readers open) into ``result``."""
    from .scan import _TAG, OBJECT_CLASSES, _str, scan_datasets

    items = server.series_datasets(study, series)
    images = []
    for ref, ds in items:
        # the raw value (pydicom's attribute access converts it: 300 CT headers, 10 ms)
        if (_str(ds, _TAG["SOPClassUID"]) or "") in OBJECT_CLASSES:
            if objects:
                result.objects.append(server.object_file(ref))
        else:
            images.append((ref, ds))
    part = scan_datasets(images, source=server)
    result.series.extend(part.series)
    result.non_image.extend(part.non_image)
    result.skipped.extend(part.skipped)
    result.warnings.extend(part.warnings)


def scan_urls(urls: Sequence[str]) -> ScanResult:
    """Headers of the series the URLs name, as the folder scan gives them: one
    :class:`~napari_dicom.core.scan.ScanResult` whose series read their frames from the
    server. A study URL gives each of its series. Faults raise :class:`DicomWebError`."""
    from .objects import _known_as, read_summary
    from .scan import ScanResult

    result = ScanResult()
    for url in urls:
        try:
            loc, given = parse_url(url)
        except ValueError as exc:
            raise DicomWebError(str(exc)) from None
        if not loc.study:
            raise DicomWebError(f"{loc.url()}: name a study or a series "
                                "(.../studies/<StudyUID>[/series/<SeriesUID>])")
        server = server_for(loc.base, given)
        if loc.series:
            series_uids = [loc.series]
        else:
            series_uids = [r.uid for r in server.search_series(loc.study, max_age=60.0)]
            if not series_uids:
                raise DicomWebError(f"DICOMweb server {server.name}: study {loc.study}: "
                                    "not found or holds no series")
        for uid in series_uids:
            _add_series(result, server, loc.study, uid)
        # a SEG / RTSTRUCT opened without its images: the series it refers to, from the
        # same study (as a file opened alone finds them in its folder)
        have = {s.uid for s in result.series}
        for path in result.objects:
            try:
                refs = read_summary(path).referenced_series
            except ValueError as exc:
                result.warnings.append(_known_as(str(exc), path, server.object_url(path)))
                continue
            for uid in refs:
                if uid in have:
                    continue
                have.add(uid)
                try:
                    _add_series(result, server, loc.study, uid, objects=False)
                except DicomWebError as exc:
                    result.warnings.append(f"{exc} (referenced by {server.object_url(path)})")
    result.series.sort(key=lambda s: s.sort_key())
    return result
