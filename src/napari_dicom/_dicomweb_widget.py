"""The DICOMweb dock widget: search a server, list studies and their series, open one.

Layout and signal wiring only. Searching is :class:`~napari_dicom.core.dicomweb.Server`
(QIDO-RS); opening a series is ``viewer.open(url, plugin="napari-dicom")``, the same door
a script or the CLI uses, so the layer is the one the same files give from disk.
Credentials typed here are handed to the core for the session (in memory only) and
never put in a URL, a layer or a message.

Every request runs on a worker thread (napari's ``create_worker``): a search, a study's
series, and an open's network part (the series' headers, its SEG / RTSTRUCT objects and
its first plane, kept in the session's cache), after which ``viewer.open`` on the GUI
thread finds them there; the rest of a series streams in behind the shown plane. The
widget stays responsive meanwhile (one request at a time: Search and Open wait), and a
failed request leaves one line in the widget and a notification.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .core import dicomweb
from .core.dicomweb import Credentials, DicomWebError, SeriesRow, StudyRow

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

DEFAULT_URL = "http://localhost:8042/dicom-web"
AUTH_KINDS = ("None", "Basic (user + password)", "Bearer token")
_ROW = Qt.ItemDataRole.UserRole


class DicomWebWidget(QWidget):
    """Server URL, credentials, search fields, a tree of studies -> series, Open."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.server_url = QLineEdit(DEFAULT_URL)
        self.server_url.setToolTip("The server's DICOMweb root, e.g. "
                                   "http://pacs:8042/dicom-web (Orthanc) or https://...")
        self.auth = QComboBox()
        self.auth.addItems(AUTH_KINDS)
        self.user = QLineEdit()
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.patient_name = QLineEdit()
        self.patient_name.setPlaceholderText("e.g. DOE^J*")
        self.patient_id = QLineEdit()
        self.date_from = QLineEdit()
        self.date_from.setPlaceholderText("YYYYMMDD")
        self.date_to = QLineEdit()
        self.date_to.setPlaceholderText("YYYYMMDD")
        self.modality = QLineEdit()
        self.modality.setPlaceholderText("e.g. CT")
        self.accession = QLineEdit()
        self.description = QLineEdit()
        self.search_button = QPushButton("Search")
        self.open_button = QPushButton("Open")
        self.open_button.setEnabled(False)
        self.results = QTreeWidget()
        self.results.setColumnCount(4)
        self.results.setHeaderLabels(["Patient / #", "Date / Modality", "Description",
                                      "Images"])
        header = self.results.header()
        if header is not None:
            header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.results.setMinimumHeight(200)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        form = QFormLayout()
        form.addRow("Server", self.server_url)
        form.addRow("Credentials", self.auth)
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        form.addRow("Token", self.token)
        form.addRow("Patient name", self.patient_name)
        form.addRow("Patient ID", self.patient_id)
        dates = QHBoxLayout()
        dates.addWidget(self.date_from)
        dates.addWidget(QLabel("to"))
        dates.addWidget(self.date_to)
        form.addRow("Study date", dates)
        form.addRow("Modality", self.modality)
        form.addRow("Accession", self.accession)
        form.addRow("Description", self.description)
        buttons = QHBoxLayout()
        buttons.addWidget(self.search_button)
        buttons.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.results, 1)
        layout.addWidget(self.status)

        self.auth.currentIndexChanged.connect(self._show_auth_fields)
        self.search_button.clicked.connect(self.search)
        self.open_button.clicked.connect(self.open_selected)
        self.results.itemExpanded.connect(self._expand)
        self.results.itemSelectionChanged.connect(self._selection_changed)
        self.results.itemDoubleClicked.connect(lambda *_: self.open_selected())
        self._show_auth_fields()
        self.setMinimumWidth(520)
        #: the request running on a worker thread, if any
        self.worker: Any = None

    # ------------------------------------------------------------------ state

    def _show_auth_fields(self) -> None:
        kind = self.auth.currentIndex()
        for w in (self.user, self.password):
            w.setEnabled(kind == 1)
        self.token.setEnabled(kind == 2)

    def credentials(self) -> Credentials | None:
        """What the credential fields hold (``None`` for "None": the environment or a
        netrc file may still give some, see :func:`~.core.dicomweb.find_credentials`)."""
        kind = self.auth.currentIndex()
        if kind == 1 and self.user.text():
            return Credentials(self.user.text(), self.password.text(), origin="widget")
        if kind == 2 and self.token.text():
            return Credentials(token=self.token.text(), origin="widget")
        return None

    def _server(self) -> dicomweb.Server:
        text = self.server_url.text().strip()
        loc, given = dicomweb.parse_url(text if "://" in text else f"http://{text}")
        creds = self.credentials() or given
        # the reader finds them for this server for the rest of the session
        dicomweb.remember_credentials(loc.base, creds)
        return dicomweb.server_for(loc.base, creds)

    def filters(self) -> dict[str, str]:
        return {
            "patient_name": self.patient_name.text(),
            "patient_id": self.patient_id.text(),
            "study_date": dicomweb.date_range(self.date_from.text(), self.date_to.text()),
            "modality": self.modality.text(),
            "accession": self.accession.text(),
            "description": self.description.text(),
        }

    def _say(self, text: str, problem: bool = False) -> None:
        self.status.setText(text)
        if problem:
            from napari.utils.notifications import show_warning

            show_warning(text)

    # ------------------------------------------------------------------ actions

    def _server_or_say(self) -> dicomweb.Server | None:
        """The server of the fields, or ``None`` with the reason said (a bad URL or
        credentials: one line, no request made)."""
        try:
            return self._server()
        except ValueError as exc:
            text, why = self.server_url.text().strip(), str(exc)
            self._say(why if text in why else f"server {text}: {why}", problem=True)
            return None

    @property
    def busy(self) -> bool:
        """Whether a request is running (Search and Open wait for it)."""
        return self.worker is not None

    def _run(self, what: str, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``job`` on a worker thread, saying ``what`` meanwhile; ``done(result)``
        on the GUI thread after it; a failure becomes one line and a notification."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        self.search_button.setEnabled(False)
        self.open_button.setEnabled(False)
        self._say(what + " ...")
        # errors go to _failed (one line), not re-raised into a traceback dialog
        worker = create_worker(job, _start_thread=False, _connect={
            "returned": done, "errored": self._failed, "finished": self._idle})
        self.worker = worker
        worker.start()

    def _failed(self, exc: BaseException) -> None:
        from napari.errors import ReaderPluginError

        from .core.pixels import DicomLoadError

        if isinstance(exc, ReaderPluginError) and isinstance(exc.__cause__, DicomLoadError):
            exc = exc.__cause__
        if isinstance(exc, DicomWebError | DicomLoadError | ValueError):
            self._say(str(exc), problem=True)
        else:  # not foreseen: one line still, the traceback in the log
            log.error("DICOMweb widget: %s", exc, exc_info=exc)
            self._say(f"{type(exc).__name__}: {exc}", problem=True)

    def _idle(self) -> None:
        self.worker = None
        self.search_button.setEnabled(True)
        self._selection_changed()

    def search(self) -> None:
        """Search the server with the fields (on a worker thread); list the studies
        (their series on expanding one)."""
        if self.busy:
            return
        server = self._server_or_say()
        if server is None:
            return
        self.results.clear()
        filters = self.filters()
        self._run(f"searching {server.name}", lambda: server.search_studies(filters),
                  lambda studies: self._list_studies(server, studies))

    def _list_studies(self, server: dicomweb.Server, studies: list[StudyRow]) -> None:
        self.results.clear()
        for study in studies:
            item = QTreeWidgetItem([
                f"{study.patient_name} ({study.patient_id})".strip(),
                study.date, study.description,
                "" if study.n_instances is None else str(study.n_instances)])
            item.setData(0, _ROW, study)
            item.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator)
            self.results.addTopLevelItem(item)
        self._say(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} on "
                  f"{server.name}" + (" (expand one for its series)" if studies else ""))

    def _expand(self, item: QTreeWidgetItem) -> None:
        study = item.data(0, _ROW)
        if not isinstance(study, StudyRow) or item.childCount():
            return
        self.list_series(item)

    def list_series(self, item: QTreeWidgetItem) -> None:
        """Fill a study's item with its series (on a worker thread)."""
        study = item.data(0, _ROW)
        if self.busy:
            item.setExpanded(False)  # expanding it again asks again
            return
        server = self._server_or_say()
        if server is None:
            return
        self._run(f"listing the series of {study.description or study.uid}",
                  lambda: server.search_series(study.uid),
                  lambda rows: self._add_series(item, rows))

    def _add_series(self, item: QTreeWidgetItem, rows: list[SeriesRow]) -> None:
        if item.childCount():
            return
        for row in rows:
            child = QTreeWidgetItem([
                "" if row.number is None else str(row.number), row.modality,
                row.description, "" if row.n_instances is None else str(row.n_instances)])
            child.setData(0, _ROW, row)
            item.addChild(child)
        item.setExpanded(True)
        self._say(f"{len(rows)} series in {item.text(2) or 'the study'}")

    def _selection_changed(self) -> None:
        self.open_button.setEnabled(bool(self.results.selectedItems()) and not self.busy)

    def open_selected(self) -> None:
        """Open the selected series (a selected study: each of its series) as layers,
        through the reader, as ``viewer.open(url, plugin="napari-dicom")``: the network
        part on a worker thread, the layers made on the GUI thread."""
        if self.busy:
            return
        server = self._server_or_say()
        if server is None:
            return
        rows = [item.data(0, _ROW) for item in self.results.selectedItems()]
        if not rows:
            return

        urls = [row.url if isinstance(row, SeriesRow) else
                dicomweb.Location(server.base, row.uid).url() for row in rows
                if isinstance(row, SeriesRow | StudyRow)]

        def fetch() -> list[str]:
            """The headers and objects of the URLs' series, and each first plane (then
            in the session's cache: the reader finds them there)."""
            from .core.volume import SeriesVolume

            for series in dicomweb.scan_urls(urls).series:
                SeriesVolume(series, budget=0, background=False)[0]  # decodes plane 0
            return urls

        self._run(f"opening from {server.name}", fetch, self._open_urls)

    def _open_urls(self, urls: list[str]) -> None:
        """Make the layers (GUI thread; the headers and first planes are in the cache)."""
        from napari.errors import ReaderPluginError

        from .core.pixels import DicomLoadError

        layers: list[Any] = []
        for url in urls:
            try:
                layers.extend(self.viewer.open(url, plugin="napari-dicom"))
            except (ReaderPluginError, DicomLoadError) as exc:
                self._failed(exc)
                return
        if layers:
            self._say(f"opened {', '.join(layer.name for layer in layers)}")
