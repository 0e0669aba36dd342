"""A real Orthanc DICOMweb server for the tests (Debian packages orthanc, orthanc-dicomweb).

``Orthanc(folder)`` writes a config.json in ``folder`` (HTTP on a free loopback port,
remote access off, no DICOM port, storage in ``folder``, the DICOMweb plugin), starts
the server, waits for ``GET /system`` and stops it on :meth:`stop` (always call it; the
fixtures do at teardown).
"""

from __future__ import annotations

import glob
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import requests

ORTHANC = shutil.which("Orthanc")
_PLUGIN_PATHS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                 "/usr/lib/orthanc/libOrthancDicomWeb.so*")


def dicomweb_plugin() -> str | None:
    """Where Debian's orthanc-dicomweb put the plugin (``dpkg -L orthanc-dicomweb``)."""
    for pattern in _PLUGIN_PATHS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    try:
        out = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True,
                             text=True, check=False).stdout
    except OSError:
        return None
    return next((line for line in out.splitlines() if "DicomWeb.so" in line), None)


def skip_without_orthanc() -> None:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian packages orthanc and orthanc-dicomweb; "
                    "scripts/setup-debian.sh installs them)")
    if dicomweb_plugin() is None:
        pytest.skip("Orthanc's DICOMweb plugin is not installed (Debian package "
                    "orthanc-dicomweb; scripts/setup-debian.sh installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Orthanc:
    """One Orthanc process with its DICOMweb plugin on 127.0.0.1."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None,
                 port: int | None = None, lua: str | None = None) -> None:
        assert ORTHANC is not None
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.users = users or {}
        config = {
            "Name": "napari-dicom-tests",
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "DicomServerEnabled": False,
            "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"),
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "HttpThreadsCount": 16,
            "StorageCompression": False,
        }
        if lua:  # e.g. an IncomingHttpRequestFilter (Orthanc Book, "Lua scripting")
            (folder / "filter.lua").write_text(lua)
            config["LuaScripts"] = [str(folder / "filter.lua")]
        self.config = folder / "config.json"
        self.config.write_text(json.dumps(config, indent=1))
        self.process: subprocess.Popen[bytes] | None = None
        self.auth = next(iter(self.users.items()), None)
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        """The DICOMweb root, as ``core.dicomweb`` names the server."""
        return f"{self.url}/dicom-web"

    def dicomweb(self, study: str, series: str | None = None) -> str:
        out = f"dicomweb+{self.base}/studies/{study}"
        return out + (f"/series/{series}" if series else "")

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.folder / "orthanc.log", "ab")  # closed by stop()
        self._log = log
        self.process = subprocess.Popen([str(ORTHANC), str(self.config)], stdout=log,
                                        stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                text = (self.folder / "orthanc.log").read_text(errors="replace")
                raise RuntimeError(f"Orthanc exited: {text[-2000:]}")
            try:
                r = requests.get(f"{self.url}/system", auth=self.auth, timeout=1)
                if r.status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("Orthanc did not answer GET /system within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def upload(self, paths: Iterable[str | Path]) -> int:
        n = 0
        with requests.Session() as s:
            for p in paths:
                r = s.post(f"{self.url}/instances", data=Path(p).read_bytes(), auth=self.auth,
                           timeout=30)
                r.raise_for_status()
                n += 1
        return n
