"""DICOMweb: series opened from a real Orthanc (with its DICOMweb plugin) are the series
the same files give from disk, through the core, the napari reader and the CLI; faults
on the same real server give one-line messages naming the server and the problem."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLosslessSV1

from _orthanc import Orthanc, skip_without_orthanc
from napari_dicom.cli import main
from napari_dicom.core import dicomweb
from napari_dicom.core.dicomweb import Credentials, DicomWebError, parse_url, server_for
from napari_dicom.core.phantom import write_ct_phantom, write_text_sr
from napari_dicom.core.pixels import load_series
from napari_dicom.core.scan import scan, scan_datasets

CT_SMALL = get_testdata_file("CT_small.dcm")  # CT, Explicit VR Little Endian
MR_J2K = get_testdata_file("MR_small_jp2klossless.dcm")  # MR, JPEG 2000 Lossless
RGB_RLE = get_testdata_file("SC_rgb_rle.dcm")  # RGB, RLE Lossless
PLUGIN = "napari-dicom"


def _uids(path: str | Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


class Data:
    """What the module's server holds, and the same files on disk."""

    def __init__(self, root: Path) -> None:
        self.native = root / "native"
        self.ljpeg = root / "ljpeg"
        study = pydicom.uid.generate_uid()
        write_ct_phantom(self.native, n_slices=12, size=64, series_number=1, study_uid=study,
                         series_description="Native", seed=1)
        write_ct_phantom(self.ljpeg, n_slices=12, size=64, series_number=2, study_uid=study,
                         series_description="Lossless", seed=2,
                         transfer_syntax=JPEGLosslessSV1)
        self.study = study
        self.sr = write_text_sr(root / "report.dcm")
        self.files = [*sorted(self.native.iterdir()), *sorted(self.ljpeg.iterdir()),
                      CT_SMALL, MR_J2K, RGB_RLE, self.sr]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    return Data(tmp_path_factory.mktemp("dicomweb-data"))


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Any:
    skip_without_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        server.upload(data.files)
        yield server
    finally:
        server.stop()


def _series_url(server: Orthanc, path: str | Path) -> str:
    return server.dicomweb(*_uids(path))


def _no_credentials_around(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An authenticated Orthanc is started: no credentials from the environment or a
    netrc file unless the test sets them."""
    skip_without_orthanc()
    for var in (dicomweb.ENV_TOKEN, dicomweb.ENV_USER, dicomweb.ENV_PASSWORD):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def _count_frames(server: dicomweb.Server) -> list[str]:
    """Frame requests made through ``server``'s pixel session from now on."""
    seen: list[str] = []

    def hook(r: requests.Response, *args: Any, **kw: Any) -> requests.Response:
        if "/frames/" in r.url:
            seen.append(r.url)
        return r

    server.pixel_session.hooks["response"].append(hook)
    return seen


# --------------------------------------------------------------------------------------
# URLs and credentials (no server)
# --------------------------------------------------------------------------------------


def test_parse_url_forms() -> None:
    loc, creds = parse_url("dicomweb+http://pacs:8042/dicom-web/studies/1.2.3/series/4.5")
    assert (loc.base, loc.study, loc.series, creds) == (
        "http://pacs:8042/dicom-web", "1.2.3", "4.5", None)
    assert loc.url() == "dicomweb+http://pacs:8042/dicom-web/studies/1.2.3/series/4.5"
    loc, creds = parse_url("dicomweb+https://bob:s3cret@pacs.example/wado/rs/studies/1.2/")
    assert (loc.base, loc.study, loc.series) == ("https://pacs.example/wado/rs", "1.2", None)
    assert creds == Credentials("bob", "s3cret")
    assert "s3cret" not in repr(creds) and "s3cret" not in loc.url()
    with pytest.raises(ValueError, match="not a Series Instance UID"):
        parse_url("dicomweb+http://pacs/dicom-web/studies/1.2/series/abc")
    with pytest.raises(ValueError, match="ends at a study or a series"):
        parse_url("dicomweb+http://pacs/dicom-web/studies/1.2/series/3.4/instances/5.6")
    with pytest.raises(ValueError) as exc:
        parse_url("dicomweb+ftp://u:pw@pacs/x")
    assert "pw" not in str(exc.value)


def test_credentials_from_env_and_netrc(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    base = "http://pacs.example:8042/dicom-web"
    for var in (dicomweb.ENV_TOKEN, dicomweb.ENV_USER, dicomweb.ENV_PASSWORD):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert dicomweb.find_credentials(base) is None
    rc = tmp_path / "netrc"
    rc.write_text("machine pacs.example login carol password fromnetrc\n")
    rc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(rc))
    assert dicomweb.find_credentials(base) == Credentials("carol", "fromnetrc")
    monkeypatch.setenv(dicomweb.ENV_USER, "dave")
    monkeypatch.setenv(dicomweb.ENV_PASSWORD, "fromenv")
    assert dicomweb.find_credentials(base) == Credentials("dave", "fromenv")
    monkeypatch.setenv(dicomweb.ENV_TOKEN, "tok")
    assert dicomweb.find_credentials(base) == Credentials(token="tok")
    given = Credentials("erin", "given")
    assert dicomweb.find_credentials(base, given) is given


# --------------------------------------------------------------------------------------
# the same series as from disk
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["native", "ljpeg", "ct_small", "mr_j2k", "rgb_rle"])
def test_series_from_server_equals_files(orthanc: Orthanc, data: Data, which: str) -> None:
    src = {"native": data.native, "ljpeg": data.ljpeg, "ct_small": CT_SMALL,
           "mr_j2k": MR_J2K, "rgb_rle": RGB_RLE}[which]
    first = sorted(Path(src).iterdir())[0] if Path(src).is_dir() else src
    local = scan([str(src)]).series
    remote = scan([_series_url(orthanc, first)]).series
    assert len(local) == len(remote) == 1
    a, b = local[0], remote[0]
    for attr in ("uid", "shape", "scale", "translate", "units", "axis_labels", "windows",
                 "photometric", "modality", "description", "number", "padding",
                 "value_unit", "bits_stored", "pixel_representation", "voi_function"):
        assert getattr(a, attr) == getattr(b, attr), attr
    assert [p.sop_instance_uid for p in a.planes] == [p.sop_instance_uid for p in b.planes]
    # compressed frames come in their stored syntax and are decoded here
    assert b.transfer_syntax == a.transfer_syntax
    assert all(p.path.startswith("dicomweb+http://127.0.0.1:") for p in b.planes)
    for lazy in (False, True):
        want = np.asarray(load_series(a, lazy=lazy))
        got = np.asarray(load_series(b, lazy=lazy))
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_study_url_gives_each_series_and_names_non_images(orthanc: Orthanc,
                                                          data: Data) -> None:
    result = scan([orthanc.dicomweb(data.study)])
    assert [s.description for s in result.series] == ["Native", "Lossless"]
    sr_study, sr_series = _uids(data.sr)
    sr = scan([orthanc.dicomweb(sr_study, sr_series)])
    assert sr.series == [] and len(sr.non_image) == 1
    assert "Basic Text SR" in sr.non_image[0].reason


def test_frames_are_fetched_once_per_session(orthanc: Orthanc, data: Data) -> None:
    url = _series_url(orthanc, CT_SMALL)
    series = scan([url]).series[0]
    assert series.source is server_for(orthanc.base)
    frames = _count_frames(series.source)  # type: ignore[arg-type]
    first = np.asarray(load_series(series, lazy=False))
    again = np.asarray(load_series(scan([url]).series[0], lazy=False))
    np.testing.assert_array_equal(first, again)
    assert len(frames) <= 1  # at most once (the first frame may have come with the headers)


def test_pixels_come_uncompressed_frame_by_frame(orthanc: Orthanc, data: Data) -> None:
    """Frames are asked for without HTTP compression (Orthanc gzips an answer when the
    client offers it, as requests does by default: ~10x its time per frame), searches
    and metadata with it; the values are the files' either way."""
    server = dicomweb.Server(orthanc.base, stream=False)  # frame by frame, fresh cache
    answers: dict[str, list[str]] = {"pixels": [], "json": []}
    server.pixel_session.hooks["response"].append(
        lambda r, *a, **kw: answers["pixels"].append(r.headers.get("content-encoding", "")))
    server.session.hooks["response"].append(
        lambda r, *a, **kw: answers["json"].append(r.headers.get("content-encoding", "")))
    items = server.series_datasets(*_uids(next(iter(sorted(data.native.iterdir())))))
    remote = np.asarray(load_series(scan_datasets(items, source=server).series[0],
                                    lazy=False))
    local = np.asarray(load_series(scan([str(data.native)]).series[0], lazy=False))
    np.testing.assert_array_equal(remote, local)
    assert len(answers["pixels"]) >= 12 and set(answers["pixels"]) == {""}
    assert "gzip" in answers["json"]  # the metadata: the server compressed it
    server.close()


def test_first_plane_first_then_the_rest_streams(orthanc: Orthanc, data: Data) -> None:
    server = dicomweb.Server(orthanc.base, connections=3)  # a fresh cache
    items = server.series_datasets(*_uids(next(iter(sorted(data.native.iterdir())))))
    series = scan_datasets(items, source=server).series[0]
    lazy = load_series(series, lazy=True)
    assert not isinstance(lazy, np.ndarray)
    middle = np.asarray(lazy[6])
    np.testing.assert_array_equal(middle, np.asarray(load_series(
        scan([str(data.native)]).series[0], lazy=False))[6])
    # the other frames arrive behind it without being asked for
    keys = server._series_keys(server._series[(series.study_uid, series.uid)])
    pause = threading.Event()
    for _ in range(200):
        if all(k in server._cache for k in keys):
            break
        pause.wait(0.05)
    assert len(keys) == 12 and all(k in server._cache for k in keys)


def test_metadata_beside_a_slow_stream_gives_the_same_series(
        orthanc: Orthanc, data: Data, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream judged slow (here: any) has the metadata asked for beside it; whichever
    ends first gives the headers, and the series is the files' series either way."""
    monkeypatch.setattr(dicomweb, "STREAM_HEADERS_WITHIN", 0.0)
    server = dicomweb.Server(orthanc.base)  # a fresh cache
    asked: list[str] = []
    server.session.hooks["response"].append(
        lambda r, *a, **kw: asked.append(r.url.rsplit("/", 1)[-1]))
    items = server.series_datasets(*_uids(next(iter(sorted(data.ljpeg.iterdir())))))
    pause = threading.Event()
    for _ in range(200):  # asked for beside the stream (its answer may come after)
        if "metadata" in asked:
            break
        pause.wait(0.05)
    assert "metadata" in asked
    remote = scan_datasets(items, source=server).series[0]
    local = scan([str(data.ljpeg)]).series[0]
    for attr in ("shape", "scale", "translate", "windows", "transfer_syntax"):
        assert getattr(remote, attr) == getattr(local, attr), attr
    np.testing.assert_array_equal(np.asarray(load_series(remote, lazy=False)),
                                  np.asarray(load_series(local, lazy=False)))
    server.close()


# --------------------------------------------------------------------------------------
# the napari reader and the CLI
# --------------------------------------------------------------------------------------


def test_viewer_open_url_gives_the_layer_the_files_give(make_napari_viewer, orthanc: Orthanc,
                                                        data: Data) -> None:
    [local] = make_napari_viewer().open(str(data.ljpeg), plugin=PLUGIN)
    url = _series_url(orthanc, next(iter(sorted(data.ljpeg.iterdir()))))
    [remote] = make_napari_viewer().open(url, plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(remote.data), np.asarray(local.data))
    assert remote.name == local.name
    for attr in ("scale", "translate", "contrast_limits"):
        np.testing.assert_allclose(getattr(remote, attr), getattr(local, attr))
    assert remote.colormap.name == local.colormap.name
    a, b = local.metadata["dicom"], remote.metadata["dicom"]
    assert a.keys() == b.keys()
    for key in a:
        if key not in ("files", "header"):
            assert a[key] == b[key], key
    assert all(f.startswith("dicomweb+http://127.0.0.1") for f in b["files"])


def test_cli_export_url_writes_the_same_pngs(orthanc: Orthanc, data: Data,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(data.native), str(data.ljpeg), "-o",
                 str(tmp_path / "disk")]) == 0
    assert main(["export", orthanc.dicomweb(data.study), "-o", str(tmp_path / "web")]) == 0
    disk = sorted(p.relative_to(tmp_path / "disk") for p in (tmp_path / "disk").rglob("*.png"))
    web = sorted(p.relative_to(tmp_path / "web") for p in (tmp_path / "web").rglob("*.png"))
    assert len(disk) == 24 and web == disk
    for rel in disk:
        assert (tmp_path / "web" / rel).read_bytes() == (tmp_path / "disk" / rel).read_bytes()
    capsys.readouterr()
    assert main(["info", "--json", _series_url(orthanc, CT_SMALL)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["series"][0]["modality"] == "CT"
    assert info["series"][0]["transfer_syntax"] == "1.2.840.10008.1.2.1"


# --------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------


def test_wrong_url_and_unknown_uid(orthanc: Orthanc, data: Data,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from _orthanc import free_port

    dead = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web/studies/1.2.3"
    with pytest.raises(DicomWebError, match=r"127\.0\.0\.1:\d+/dicom-web.*connection refused"):
        scan([dead])
    assert main(["info", dead]) == 1
    err = capsys.readouterr().err
    assert "connection refused" in err and "Traceback" not in err
    with pytest.raises(DicomWebError, match=f"{orthanc.base}.*series 1.2.3.*not found"):
        scan([orthanc.dicomweb(data.study, "1.2.3")])
    with pytest.raises(DicomWebError, match=r"study 9\.9\.9: not found or holds no series"):
        scan([orthanc.dicomweb("9.9.9")])
    wrong_root = f"dicomweb+{orthanc.url}/no-such-root/studies/{data.study}"
    with pytest.raises(DicomWebError, match=r"not found \(HTTP 404"):
        scan([wrong_root])


def test_timeout_names_the_server() -> None:
    import socket

    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        base = f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
        server = dicomweb.Server(base, timeout=(1.0, 0.3))
        with pytest.raises(DicomWebError, match=r"dicom-web: .*no answer within 0.3 s"):
            server.search_studies()


def test_server_stopped_mid_series_fails_then_completes_on_retry(
        tmp_path: Path, data: Data) -> None:
    skip_without_orthanc()
    server = Orthanc(tmp_path / "orthanc")
    try:
        server.upload(sorted(data.native.iterdir()))
        # frame by frame (the series stream, started with the headers, may bring it all)
        source = dicomweb.Server(server.base, stream=False)
        items = source.series_datasets(*_uids(next(iter(sorted(data.native.iterdir())))))
        series = scan_datasets(items, source=source).series[0]
        stopped = threading.Event()

        def stop_after_two(r: requests.Response, *a: Any, **kw: Any) -> requests.Response:
            if "/frames/" in r.url and not stopped.is_set() and len(got) >= 2:
                stopped.set()
                server.stop()
            got.append(r.url)
            return r

        got: list[str] = []
        source.pixel_session.hooks["response"].append(stop_after_two)
        source._fetcher._workers = 1  # one connection: the stop falls between two frames
        with pytest.raises(DicomWebError) as exc:
            load_series(series, lazy=False)
        msg = str(exc.value)
        assert msg.startswith(f"DICOMweb server {server.base}: frame ")
        assert "connection refused" in msg or "dropped" in msg
        assert stopped.is_set()
        fetched = sum(k in source._cache for k in source._series_keys(
            source._series[(series.study_uid, series.uid)]))
        assert 0 < fetched < 12  # some frames came, the volume was not made of them
        # the server back: the same load completes, equal to the files
        source.pixel_session.hooks["response"].remove(stop_after_two)
        server.start()
        got_back = np.asarray(load_series(series, lazy=False))
        want = np.asarray(load_series(scan([str(data.native)]).series[0], lazy=False))
        np.testing.assert_array_equal(got_back, want)
    finally:
        server.stop()


def test_credentials_basic_wrong_and_right(tmp_path: Path, data: Data,
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    _no_credentials_around(monkeypatch, tmp_path)
    server = Orthanc(tmp_path / "orthanc", users={"alice": "wonderland-7"})
    try:
        server.upload([CT_SMALL])
        url = server.dicomweb(*_uids(CT_SMALL))
        with pytest.raises(DicomWebError, match=r"asks for credentials \(HTTP 401"):
            scan([url])
        monkeypatch.setenv(dicomweb.ENV_USER, "alice")
        monkeypatch.setenv(dicomweb.ENV_PASSWORD, "not-the-password")
        with pytest.raises(DicomWebError) as exc:
            scan([url])
        assert "refused the credentials (user name and password from the environment)" in str(
            exc.value)
        assert "not-the-password" not in str(exc.value)
        monkeypatch.setenv(dicomweb.ENV_PASSWORD, "wonderland-7")
        caplog.set_level("DEBUG")
        series = scan([url]).series[0]
        values = np.asarray(load_series(series, lazy=False))
        np.testing.assert_array_equal(values, load_series(scan([CT_SMALL]).series[0]))
        from napari_dicom.core.pixels import series_metadata

        meta = json.dumps(series_metadata(series), default=str)
        assert "wonderland-7" not in meta and "alice" not in meta
        assert "wonderland-7" not in caplog.text
        # the same in a netrc file (user info in the URL works too)
        monkeypatch.delenv(dicomweb.ENV_USER)
        monkeypatch.delenv(dicomweb.ENV_PASSWORD)
        rc = tmp_path / "netrc"
        rc.write_text("machine 127.0.0.1 login alice password wonderland-7\n")
        rc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(rc))
        assert len(scan([url]).series) == 1
    finally:
        server.stop()


# --------------------------------------------------------------------------------------
# the DICOMweb dock widget
# --------------------------------------------------------------------------------------


def _wait_idle(qtbot: Any, widget: Any, timeout: int = 30000) -> None:
    """Wait (the Qt event loop running) until the widget's request is over."""
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def _acquire_action(viewer: Any, text: str) -> Any:
    for action in viewer.window.file_menu.actions():
        if action.text() == "Acquire" and action.menu() is not None:
            for sub in action.menu().actions():
                if sub.text() == text:
                    return sub
    return None


def test_widget_searches_lists_series_and_opens_one(make_napari_viewer, qtbot: Any,
                                                    orthanc: Orthanc, data: Data,
                                                    tmp_path: Path) -> None:
    from napari.utils.notifications import notification_manager
    from qtpy.QtCore import Qt

    from _orthanc import free_port

    viewer = make_napari_viewer()
    # File > Acquire > DICOMweb docks the widget (as Plugins > napari-dicom > DICOMweb)
    action = _acquire_action(viewer, "DICOMweb (napari-dicom)")
    assert action is not None
    action.trigger()
    widget = viewer.window.dock_widgets["DICOMweb (napari-dicom)"]
    widget.server_url.setText(orthanc.base)
    widget.patient_id.setText("PHANTOM")
    widget.modality.setText("CT")
    qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert widget.results.topLevelItemCount() == 1
    study = widget.results.topLevelItem(0)
    assert study.text(0) == "Phantom^CT (PHANTOM)"
    assert "1 study on http://127.0.0.1:" in widget.status.text()
    study.setExpanded(True)  # lists the study's series
    _wait_idle(qtbot, widget)
    assert study.childCount() == 2
    rows = [(study.child(i).text(0), study.child(i).text(1), study.child(i).text(2),
             study.child(i).text(3)) for i in range(2)]
    assert rows == [("1", "CT", "Native", "12"), ("2", "CT", "Lossless", "12")]
    widget.results.setCurrentItem(study.child(1))
    assert widget.open_button.isEnabled()
    qtbot.mouseClick(widget.open_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["2 CT Lossless"]
    assert widget.status.text() == "opened 2 CT Lossless"
    layer = viewer.layers[0]
    [local] = make_napari_viewer().open(str(data.ljpeg), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(layer.data), np.asarray(local.data))
    np.testing.assert_allclose(layer.contrast_limits, local.contrast_limits)
    viewer.dims.set_current_step(0, 6)
    viewer.window.resize(1500, 900)
    shot = viewer.screenshot(str(tmp_path / "dicomweb_widget.png"), canvas_only=False)
    assert shot.shape[1] >= 1200 and shot[..., :3].std() > 10  # the viewer and the widget
    # a server that is not there: one line naming it, the widget stays usable
    n = len(notification_manager.records)
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    widget.server_url.setText(dead)
    qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert widget.results.topLevelItemCount() == 0
    assert widget.status.text().startswith(f"DICOMweb server {dead}: study search: cannot "
                                           "connect (connection refused")
    assert any("connection refused" in str(r.message)
               for r in notification_manager.records[n:])
    widget.server_url.setText(orthanc.base)
    qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert widget.results.topLevelItemCount() == 1


def test_widget_credentials_reach_the_reader_and_stay_out_of_layers(
        make_napari_viewer, qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qtpy.QtCore import Qt

    _no_credentials_around(monkeypatch, tmp_path)
    server = Orthanc(tmp_path / "orthanc", users={"bob": "builder-42"})
    try:
        server.upload([CT_SMALL])
        viewer = make_napari_viewer()
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DICOMweb")
        widget.server_url.setText(server.base)
        qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
        _wait_idle(qtbot, widget)
        assert "asks for credentials (HTTP 401" in widget.status.text()
        widget.auth.setCurrentIndex(1)
        widget.user.setText("bob")
        widget.password.setText("wrong")
        qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
        _wait_idle(qtbot, widget)
        assert ("refused the credentials (user name and password from the widget)"
                in widget.status.text())
        assert "wrong" not in widget.status.text()
        widget.password.setText("builder-42")
        qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
        _wait_idle(qtbot, widget)
        assert widget.results.topLevelItemCount() == 1
        study = widget.results.topLevelItem(0)
        widget.list_series(study)
        _wait_idle(qtbot, widget)
        widget.results.setCurrentItem(study.child(0))
        widget.open_selected()
        _wait_idle(qtbot, widget)
        [layer] = viewer.layers
        [local] = make_napari_viewer().open(CT_SMALL, plugin=PLUGIN)
        np.testing.assert_array_equal(np.asarray(layer.data), np.asarray(local.data))
        assert "builder-42" not in json.dumps(layer.metadata, default=str)
    finally:
        dicomweb.forget_credentials()
        server.stop()


# --------------------------------------------------------------------------------------
# segmentations and structure sets in a study
# --------------------------------------------------------------------------------------


def _same_layers(remote: list[Any], local: list[Any]) -> None:
    """The layers a URL gave are the layers the files gave: kind, name, values, place,
    display and metadata (a segmentation's source is its URL instead of its file). The
    objects come in the server's series order, from files in the folder's file order."""
    remote = sorted(remote, key=lambda ly: ly.name)
    local = sorted(local, key=lambda ly: ly.name)
    assert [(type(a).__name__, a.name) for a in remote] == [
        (type(b).__name__, b.name) for b in local]
    for a, b in zip(remote, local, strict=True):
        if type(a).__name__ == "Shapes":
            assert len(a.data) == len(b.data) > 0
            for pa, pb in zip(a.data, b.data, strict=True):
                np.testing.assert_array_equal(pa, pb)
            assert a.features["roi"].tolist() == b.features["roi"].tolist()
        else:
            np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
        for attr in ("scale", "translate"):
            np.testing.assert_allclose(getattr(a, attr), getattr(b, attr))
        assert a.visible == b.visible
        if "segmentation" in b.metadata:
            ma, mb = dict(a.metadata["segmentation"]), dict(b.metadata["segmentation"])
            assert ma.pop("source").startswith("dicomweb+http://127.0.0.1:")
            assert Path(mb.pop("source")).suffix == ".dcm"
            pa, pb = dict(ma.pop("planes")), dict(mb.pop("planes"))
            assert all(f.startswith("dicomweb+http://") for f in pa.pop("files"))
            assert all(Path(f).is_file() for f in pb.pop("files"))
            assert ma == mb and pa == pb
            if type(a).__name__ == "Labels":
                for v in (1, 2, 3):
                    np.testing.assert_allclose(a.colormap.map(np.array([v])),
                                               b.colormap.map(np.array([v])))
        else:
            np.testing.assert_allclose(a.contrast_limits, b.contrast_limits)


def test_study_with_seg_and_rtstruct_gives_the_layers_the_files_give(
        make_napari_viewer, tmp_path: Path) -> None:
    from segdata import write_ct, write_rtstruct, write_seg

    skip_without_orthanc()
    folder = tmp_path / "study"
    ct = write_ct(folder / "ct", n=8, size=40)
    masks = np.zeros((8, 40, 40, 3), bool)
    masks[1:5, 5:20, 5:20, 0] = True  # Liver
    masks[3:7, 15:30, 15:30, 1] = True  # Tumour, overlapping Liver: two label layers
    masks[6:8, 30:36, 2:8, 2] = True  # Vessel
    order = [5, 2, 7, 0, 3, 1, 6, 4]  # SEG frames not in slice order
    write_seg(folder / "seg.dcm", [ct[i] for i in order], masks[order])
    square = [np.array([[-8.0, -6.0, z], [8.0, -6.0, z], [8.0, 7.0, z], [-8.0, 7.0, z]])
              for z in (2.5, 5.0, 7.5)]
    write_rtstruct(folder / "rs.dcm", ct, [("Body", (255, 0, 0), square)])
    server = Orthanc(tmp_path / "orthanc")
    try:
        server.upload([*ct, folder / "seg.dcm", folder / "rs.dcm"])
        local = make_napari_viewer().open(str(folder), plugin=PLUGIN)
        assert sorted(type(ly).__name__ for ly in local) == [
            "Image", "Labels", "Labels", "Labels", "Shapes"]
        study, _ = _uids(ct[0])
        remote = make_napari_viewer().open(server.dicomweb(study), plugin=PLUGIN)
        _same_layers(remote, local)
        # the SEG's series URL alone: its CT comes from the same study, as a SEG file
        # opened alone finds its CT in its folder
        seg_series = _uids(folder / "seg.dcm")[1]
        alone = make_napari_viewer().open(server.dicomweb(study, seg_series), plugin=PLUGIN)
        seg_local = make_napari_viewer().open(str(folder / "seg.dcm"), plugin=PLUGIN)
        _same_layers(alone, seg_local)
    finally:
        server.stop()


def test_seg_alone_is_fetched_once_and_named_by_its_url(
        make_napari_viewer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SEG whose CT is not on the server, opened by its series URL (File > Open): its
    warnings name its URL (never the downloaded copy), its bytes come once (with the
    series stream, not again for its file), and closing the server frees the session's
    frames and downloads at once."""
    from napari.utils.notifications import notification_manager

    from segdata import write_ct, write_seg

    skip_without_orthanc()
    _no_credentials_around(monkeypatch, tmp_path)
    folder = tmp_path / "study"
    ct = write_ct(folder / "ct", n=8, size=40)
    masks = np.zeros((8, 40, 40, 3), bool)
    masks[1:5, 5:20, 5:20, 0] = True
    masks[3:7, 15:30, 15:30, 1] = True
    masks[6:8, 30:36, 2:8, 2] = True
    write_seg(folder / "seg.dcm", ct, masks)
    server = Orthanc(tmp_path / "orthanc")
    try:
        server.upload([folder / "seg.dcm", ct[0]])  # one CT instance, not its series
        study, seg_series = _uids(folder / "seg.dcm")
        sop = str(pydicom.dcmread(folder / "seg.dcm", stop_before_pixels=True)
                  .SOPInstanceUID)
        source = server_for(server.base)
        asked: list[str] = []
        source.pixel_session.hooks["response"].append(
            lambda r, *a, **kw: asked.append(r.url))
        n = len(notification_manager.records)
        url = server.dicomweb(study, seg_series)
        layers = make_napari_viewer().open(url, plugin=PLUGIN)
        said = [str(r.message) for r in notification_manager.records[n:]]
        assert sorted(type(ly).__name__ for ly in layers) == ["Image", "Labels", "Labels"]
        assert any(f"{url}/instances/{sop}" in w and "shown on its own geometry" in w
                   for w in said), said
        assert not any(".dcm" in w or "napari-dicom-dicomweb-" in w for w in said), said
        # the SEG's series streamed once (then its CT's), the SEG not asked for again
        assert asked.count(f"{server.base}/studies/{study}/series/{seg_series}") == 1
        assert not any(sop in u for u in asked), asked
        [copy] = source._files.values()
        assert Path(copy).is_file() and source._cache.size > 0
        source.close()
        assert not Path(copy).parent.exists() and source._cache.size == 0
        assert server_for(server.base) is not source
    finally:
        server.stop()


def test_widget_stays_responsive_while_a_server_is_silent(make_napari_viewer, qtbot: Any,
                                                          orthanc: Orthanc) -> None:
    """A search runs on a worker thread: while a server that accepts the connection never
    answers, the widget repaints and takes typing; when the server goes, one line names
    it, and the next search (on the real server) works."""
    import socket

    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DICOMweb")
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        silent = f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
        widget.server_url.setText(silent)
        qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
        assert widget.busy and not widget.search_button.isEnabled()
        assert widget.status.text() == f"searching {silent} ..."
        qtbot.keyClicks(widget.patient_name, "DOE*")  # the GUI thread is free
        qtbot.wait(300)
        assert widget.patient_name.text() == "DOE*" and widget.busy
        qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)  # waits
    _wait_idle(qtbot, widget)  # the listener closed: the request fails
    assert widget.status.text().startswith(f"DICOMweb server {silent}: study search: ")
    assert widget.search_button.isEnabled()
    widget.server_url.setText(orthanc.base)
    widget.patient_name.setText("")
    widget.patient_id.setText("PHANTOM")
    widget.modality.setText("CT")
    qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert widget.results.topLevelItemCount() == 1
    # a study selected: Open gives each of its series (fetched on the worker thread)
    widget.results.setCurrentItem(widget.results.topLevelItem(0))
    qtbot.mouseClick(widget.open_button, Qt.MouseButton.LeftButton)
    assert widget.busy
    _wait_idle(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["1 CT Native", "2 CT Lossless"]


# --------------------------------------------------------------------------------------
# more faults: 403, a bearer token, a syntax neither side can decode, 406
# --------------------------------------------------------------------------------------

#: Orthanc takes bearer tokens only through a plugin or a Lua filter: this one lets a
#: request through with the token and answers 403 to any other (Orthanc's answer to a
#: filtered request); the tests' helper uploads and polls /system without one
_TOKEN = "tok-5e3b1f-napari"
_BEARER_LUA = f"""
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if uri == '/system' or uri == '/instances' then
    return true
  end
  return httpHeaders['authorization'] == 'Bearer {_TOKEN}'
end
"""


def test_bearer_token_reaches_the_server_and_403_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    _no_credentials_around(monkeypatch, tmp_path)
    server = Orthanc(tmp_path / "orthanc", lua=_BEARER_LUA)
    try:
        server.upload([CT_SMALL])
        url = server.dicomweb(*_uids(CT_SMALL))
        with pytest.raises(DicomWebError) as exc:
            scan([url])
        assert str(exc.value).startswith(f"DICOMweb server {server.base}: ")
        assert str(exc.value).endswith("access denied without credentials (HTTP 403 Forbidden)")
        monkeypatch.setenv(dicomweb.ENV_TOKEN, "tok-wrong-one")
        with pytest.raises(DicomWebError) as exc:
            scan([url])
        msg = str(exc.value)
        assert "access denied for the bearer token from the environment (HTTP 403" in msg
        assert "tok-wrong-one" not in msg and "\n" not in msg
        assert main(["info", url]) == 1
        err = capsys.readouterr().err
        assert "HTTP 403" in err and "tok-wrong-one" not in err and "Traceback" not in err
        # the right token: the series, value for value, and the token nowhere
        monkeypatch.setenv(dicomweb.ENV_TOKEN, _TOKEN)
        caplog.set_level("DEBUG")
        series = scan([url]).series[0]
        np.testing.assert_array_equal(np.asarray(load_series(series, lazy=False)),
                                      load_series(scan([CT_SMALL]).series[0]))
        from napari_dicom.core.pixels import series_metadata

        assert _TOKEN not in json.dumps(series_metadata(series), default=str)
        assert _TOKEN not in caplog.text and _TOKEN not in repr(series.source.credentials)
    finally:
        server.stop()


def _mpeg2_instance(path: Path) -> Path:
    """CT_small's header over an MPEG2 frame (no decoder here; Orthanc stores it but
    cannot transcode it), in a study of its own."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG2MPML, generate_uid

    ds = pydicom.dcmread(CT_SMALL)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID = "MPEG2"
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(996)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_syntax_neither_side_decodes_is_one_line(orthanc: Orthanc, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = _mpeg2_instance(tmp_path / "mpeg2.dcm")
    orthanc.upload([path])
    url = _series_url(orthanc, path)
    series = scan([url]).series[0]  # the headers are fine
    with pytest.raises(DicomWebError) as exc:
        load_series(series, lazy=False)
    msg = str(exc.value)
    assert msg.startswith(f"DICOMweb server {orthanc.base}: frame 1 of instance ")
    # Orthanc answers 500 (not 406) when it cannot transcode
    assert ("stored as MPEG2 Main Profile / Main Level, which cannot be decoded here, and "
            "the server did not send it uncompressed: the server answered with an error "
            "(HTTP 500") in msg
    assert main(["export", url, "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "MPEG2 Main Profile" in err and "Traceback" not in err
    assert not list((tmp_path / "out").rglob("*.png"))


def test_406_is_named(tmp_path: Path) -> None:
    """A real HTTP server on loopback that answers 406 Not Acceptable to everything."""
    import http.server

    class NotAcceptable(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(406, "Not Acceptable")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotAcceptable)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
        with pytest.raises(DicomWebError) as exc:
            dicomweb.Server(base).search_studies()
        assert str(exc.value) == (f"DICOMweb server {base}: study search: the server cannot "
                                  "send it in the form asked for (HTTP 406 Not Acceptable)")
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("form", ["content-length", "no-length-chunked", "gzip", "cut"])
def test_multipart_reader_gives_each_instance_byte_for_byte(form: str) -> None:
    """A real HTTP server on loopback sends three real files as a WADO-RS multipart reply:
    parts with Content-Length (read straight into their buffers), parts without it
    (found by their delimiter, sent in 1000-byte chunks so that delimiters straddle the
    reads), gzip-encoded, and cut inside the second part (an error, never a short part)."""
    import gzip
    import http.server

    files = [Path(p).read_bytes() for p in (CT_SMALL, MR_J2K, RGB_RLE)]
    boundary = "b0undary-1234"
    body = b""
    for f in files:
        length = b"" if form == "no-length-chunked" else f"Content-Length: {len(f)}\r\n".encode()
        body += (f"--{boundary}\r\nContent-Type: application/dicom\r\n".encode() + length
                 + b"\r\n" + f + b"\r\n")
    body += f"--{boundary}--\r\n".encode()
    if form == "cut":
        body = body[:len(files[0]) + 2000]

    class Multipart(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", 'multipart/related; type="application/dicom"; '
                             f"boundary={boundary}")
            if form == "no-length-chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(body), 1000):
                    piece = body[i:i + 1000]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            data = gzip.compress(body) if form == "gzip" else body
            if form == "gzip":
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Connection", "close")
            if form != "cut":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Multipart)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/series"
        with requests.get(url, stream=True, timeout=10) as r:
            if form == "cut":
                with pytest.raises(EOFError, match="ended inside a part"):
                    list(dicomweb._iter_parts(r))
                return
            parts = [bytes(p) for p in dicomweb._iter_parts(r)]
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert parts == files
    ds, syntax, frames = dicomweb._split_instance(bytearray(parts[0]))
    assert syntax == pydicom.dcmread(CT_SMALL).file_meta.TransferSyntaxUID
    assert [bytes(f) for f in frames] == [pydicom.dcmread(CT_SMALL).PixelData]
    assert "PixelData" not in ds and ds.SOPInstanceUID == pydicom.dcmread(CT_SMALL).SOPInstanceUID


def test_series_stream_splits_each_instance_as_it_comes(data: Data) -> None:
    """A real HTTP server on loopback sends a series' 12 files as a WADO-RS multipart
    reply and holds the connection open after the first 5 (and the start of the 6th):
    those 5 are already split
    (header and frames) while the reply is still coming, so the series' headers are ready
    when its last instance is; the rest follow, and every instance's header and frame are
    the file's."""
    import http.server

    files = sorted(data.native.iterdir())
    study, series = _uids(files[0])
    boundary = "b0undary-5678"
    parts = [f"--{boundary}\r\nContent-Type: application/dicom\r\nContent-Length: "
             f"{len(b)}\r\n\r\n".encode() + b + b"\r\n"
             for b in (f.read_bytes() for f in files)]
    hold, first = 5, threading.Event()
    go_on = threading.Event()

    class Series(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not self.path.endswith(f"/studies/{study}/series/{series}"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", 'multipart/related; type="application/dicom"; '
                             f"boundary={boundary}")
            self.send_header("Connection", "close")
            self.end_headers()
            for i, part in enumerate(parts):
                if i == hold:  # the next part begun (the reader reads ahead in pieces)
                    self.wfile.write(part[:1 << 16])
                    self.wfile.flush()
                    first.set()
                    go_on.wait(30)
                    part = part[1 << 16:]
                self.wfile.write(part)
            self.wfile.write(f"--{boundary}--\r\n".encode())

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Series)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = dicomweb.Server(f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web")
    try:
        stream = server._start_stream(study, series)
        assert stream is not None
        assert first.wait(30)
        pause = threading.Event()
        for _ in range(600):  # the 5 sent reach the client and are split
            with server._lock:
                if len(stream.arrived) >= hold:
                    break
            pause.wait(0.05)
        with server._lock:
            arrived = dict(stream.arrived)
        assert not stream.result.done() and stream.thread.is_alive()  # the reply goes on
        want = [pydicom.dcmread(f) for f in files]
        assert sorted(arrived) == sorted(str(ds.SOPInstanceUID) for ds in want[:hold])
        go_on.set()
        got = stream.result.result(timeout=30)
    finally:
        go_on.set()
        server.close()
        httpd.shutdown()
        httpd.server_close()
    assert [sop for sop, _, _ in got] == [str(ds.SOPInstanceUID) for ds in want]
    for (sop, syntax, header), ds in zip(got, want, strict=True):
        assert syntax == ds.file_meta.TransferSyntaxUID
        assert "PixelData" not in header and header.ImagePositionPatient == ds.ImagePositionPatient
        ts, frames = stream.arrived[sop]
        assert ts == syntax and [bytes(f) for f in frames] == [ds.PixelData]


@pytest.mark.parametrize("url, said", [
    ("ftp://pacs/dicom-web", "ftp://pacs/dicom-web: not a DICOMweb URL"),
    ("http://pacs:99999999/dicom-web", "server http://pacs:99999999/dicom-web: Port out of range"),
])
def test_widget_names_a_server_url_it_cannot_use(make_napari_viewer, qtbot: Any, url: str,
                                                 said: str) -> None:
    """A mistyped server field: one line naming it (status and a warning), no request, no
    error dialog, and the widget stays usable."""
    from napari.utils.notifications import NotificationSeverity, notification_manager
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "DICOMweb")
    n = len(notification_manager.records)
    widget.server_url.setText(url)
    qtbot.mouseClick(widget.search_button, Qt.MouseButton.LeftButton)
    assert widget.status.text().startswith(said)
    assert not widget.busy and widget.search_button.isEnabled()
    records = notification_manager.records[n:]
    assert [r.severity for r in records] == [NotificationSeverity.WARNING]
    assert str(records[0].message).startswith(said)
