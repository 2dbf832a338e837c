"""HTTP to the daemon: its API on the Unix socket, its gateway over TCP.

One keep-alive connection per thread and endpoint (``http.client`` is not
thread-safe; dask and zarr read from many threads). No dependencies beyond
the standard library.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

from .errors import DaemonNotRunning, ShoalError

#: Seconds a call may wait for the daemon's answer to start.
TIMEOUT = float(os.environ.get("SHOAL_TIMEOUT", "300"))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def default_home() -> Path:
    """``SHOAL_HOME``, else ``~/.shoal`` (as the CLI finds its repo)."""
    home = os.environ.get("SHOAL_HOME")
    return Path(home) if home else Path.home() / ".shoal"


class Endpoint:
    """One HTTP endpoint, a connection per thread, reconnecting once when
    a kept-alive connection was closed by the other side."""

    def __init__(self, make, describe: str):
        self._make = make
        self._local = threading.local()
        self.describe = describe

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._make()
            self._local.conn = c
        return c

    def _drop(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> http.client.HTTPResponse:
        headers = dict(headers or {})
        for attempt in (0, 1):
            conn = self._conn()
            try:
                try:
                    conn.request(method, path, body=body, headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    # The daemon may answer (a refusal) and close before it
                    # took the whole body: its answer is still there to read.
                    if body is None:
                        raise
                return conn.getresponse()
            except ConnectionError as e:  # a kept-alive connection closed: once more
                self._drop()
                if attempt == 1:
                    raise self._unreachable(e) from e
            except PermissionError as e:
                self._drop()
                raise ShoalError(
                    f"cannot use the daemon's API socket {self.describe}: permission denied (a daemon run as a "
                    "service lets the members of its [api] group in; ask its admin to add you)",
                    "permission",
                ) from e
            except OSError as e:  # no socket, refused, timed out
                self._drop()
                raise self._unreachable(e) from e
        raise AssertionError("unreachable")

    def _unreachable(self, e: Exception) -> Exception:
        return DaemonNotRunning(
            f"cannot reach the shoal daemon at {self.describe} ({e}); start it with `shoal daemon` "
            "(SHOAL_HOME picks its repo), or pass gateway= / set SHOAL_GATEWAY"
        )


def raise_for(resp: http.client.HTTPResponse, what: str) -> None:
    """Reads an error answer and raises it as the right exception."""
    body = resp.read()
    message, kind = body.decode("utf-8", "replace").strip(), None
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "error" in doc:
            message, kind = doc["error"], doc.get("kind")
    except ValueError:
        pass
    raise ShoalError.of(resp.status, kind, f"{what}: {message}" if what else message)


class Api:
    """The daemon's local API (the Unix socket in its repo)."""

    def __init__(self, home: str | os.PathLike | None = None, timeout: float = TIMEOUT):
        self.home = Path(home) if home else default_home()
        self.socket = str(self.home / "api.sock")
        self.endpoint = Endpoint(lambda: _UnixConnection(self.socket, timeout), self.socket)

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        """A JSON call: the decoded answer, or the daemon's error raised."""
        resp = self._send(method, path, body, query)
        if resp.status >= 400:
            raise_for(resp, "")
        data = resp.read()
        return json.loads(data) if data else None

    def stream(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Iterator[dict]:
        """An NDJSON call (progress lines, then the result or the error)."""
        resp = self._send(method, path, body, query)
        if resp.status >= 400:
            raise_for(resp, "")
        try:
            for line in resp:
                line = line.strip()
                if line:
                    yield json.loads(line)
        finally:
            resp.close()

    def raw(self, method: str, path: str, data: bytes | None = None, what: str = "") -> bytes:
        """A call whose body and answer are bytes; the daemon's error raised."""
        resp = self.endpoint.request(method, path, body=data, headers={"Content-Type": "application/octet-stream"})
        if resp.status >= 400:
            raise_for(resp, what)
        return resp.read()

    def _send(self, method, path, body, query) -> http.client.HTTPResponse:
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return self.endpoint.request(method, path, body=data, headers=headers)


def result_of(lines: Iterator[dict], progress=None) -> Any:
    """The one result of a streamed call; progress lines go to `progress`."""
    for line in lines:
        if "progress" in line:
            if progress is not None:
                progress(line["progress"])
        elif "done" in line:
            return line["done"]
        elif "error" in line:
            err = line["error"]
            raise ShoalError.of(None, err.get("kind"), err.get("error", str(err)))
    raise ShoalError("the daemon ended the answer without a result (did it stop?)")


class Gateway:
    """The daemon's read-only HTTP gateway."""

    def __init__(self, url: str, timeout: float = TIMEOUT):
        u = urllib.parse.urlsplit(url.rstrip("/"))
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"gateway URL must be http://HOST:PORT, not {url!r}")
        self.url = f"http://{u.netloc}"
        host, port = u.hostname, u.port or 80
        self.endpoint = Endpoint(lambda: http.client.HTTPConnection(host, port, timeout=timeout), self.url)

    def get(self, path: str, headers: dict | None = None, method: str = "GET") -> http.client.HTTPResponse:
        return self.endpoint.request(method, path, headers=headers)
