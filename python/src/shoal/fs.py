"""``shoal://`` for fsspec (and so for zarr-python and xarray).

Paths: ``shoal://NAME/key``, ``shoal://CID/key``, ``shoal://NAME@N/key``
(version N of a name). Reads go to the daemon's gateway, which verifies
every block against its CID before answering; ranges are single HTTP byte
ranges. Writes (``to_zarr("shoal://NAME")``) go over the daemon's Unix
socket only: keys are staged, and the stage is committed as the name's next
version when the zarr store is closed, or dropped if the write failed. See
``shoal.writing`` for an explicit transaction.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from .client import Client
from .errors import NotFound, ShoalError


def _quote(path: str) -> str:
    return urllib.parse.quote(path, safe="/@")


def _split(path: str) -> tuple[str, str]:
    head, _, key = path.strip("/").partition("/")
    return head, key.strip("/")


class _Stage:
    """A write under way to one name: what was staged and removed."""

    def __init__(self, info: dict):
        self.id: str = info["id"]
        self.name: str = info["name"]
        self.base: str | None = info.get("base")
        self.staged: dict[str, int] = {}
        self.removed: list[str] = []
        self.lock = threading.Lock()

    def removes(self, key: str) -> bool:
        return any(r == "" or key == r or key.startswith(r + "/") for r in self.removed)


class ShoalFileSystem(AbstractFileSystem):
    """Datasets of a shoal daemon as an fsspec filesystem.

    ``gateway``: the gateway's URL (else ``SHOAL_GATEWAY``, else what the
    daemon at ``home``, ``SHOAL_HOME`` or ``~/.shoal`` reports).
    """

    protocol = ("shoal",)
    root_marker = ""

    def __init__(self, gateway: str | None = None, home: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.client = Client(home=home, gateway=gateway)
        self._stages: dict[str, _Stage] = {}
        self._stages_lock = threading.Lock()
        #: Names written inside ``shoal.writing``: committed when it ends,
        #: not when a zarr store over them closes.
        self.explicit: set[str] = set()
        from . import _zarr_hook

        _zarr_hook.install()

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("shoal://"):
            path = path[len("shoal://") :]
        return path.strip("/")

    def unstrip_protocol(self, name: str) -> str:
        return f"shoal://{name}"

    # ---- reads -------------------------------------------------------

    def _where(self, path: str) -> tuple[str, str, _Stage | None]:
        head, key = _split(self._strip_protocol(path))
        return head, key, self._stages.get(head)

    def _gw(self, method: str, head: str, key: str, headers: dict | None = None, listing: bool = False):
        """A gateway request for a key, or (``listing``) for the JSON index
        of the directory ``key`` (a trailing slash: never a key's bytes)."""
        p = f"/zarr/{_quote(head)}" + (f"/{_quote(key)}" if key else "")
        return self.client.gateway.get(p + "/?format=json" if listing else p, headers, method)

    def cat_file(self, path, start=None, end=None, **kwargs):
        head, key, st = self._where(path)
        if st is not None:
            if key in st.staged:
                data = self.client.stage_read(st.id, key)
                return data[start:end] if (start is not None or end is not None) else data
            if st.base is None or st.removes(key):
                raise NotFound(f"{path}: not in the write under way", "not_found", 404)
            head = st.base
        headers = {}
        if start is not None or end is not None:
            rng = self._range(head, key, start, end)
            if rng is None:
                return b""
            headers["Range"] = rng
        resp = self._gw("GET", head, key, headers)
        if resp.status == 416:
            resp.read()
            return b""
        if resp.status >= 400:
            self._fail(resp, path)
        return resp.read()

    def _range(self, head, key, start, end) -> str | None:
        if start is not None and start < 0 and end is None:
            return f"bytes={start}"
        if (end is not None and end < 0) or (start is not None and start < 0):
            size = self.info(f"{head}/{key}")["size"]
            start = max(size + start, 0) if start is not None and start < 0 else (start or 0)
            end = size + end if end is not None and end < 0 else end
        start = start or 0
        if end is None:
            return f"bytes={start}-"
        if end <= start:
            return None
        return f"bytes={start}-{end - 1}"

    def _fail(self, resp, path):
        body = resp.read().decode("utf-8", "replace").strip()
        raise ShoalError.of(resp.status, None, f"{path}: {body}")

    def info(self, path, **kwargs):
        head, key, st = self._where(path)
        name = f"{head}/{key}" if key else head
        if st is not None:
            if key in st.staged:
                return {"name": name, "size": st.staged[key], "type": "file"}
            if any(k.startswith(key + "/") or not key for k in st.staged):
                return {"name": name, "size": 0, "type": "directory"}
            if st.base is None or st.removes(key):
                raise NotFound(f"{path}: not in the write under way", "not_found", 404)
            head = st.base
        if not head:
            return {"name": "", "size": 0, "type": "directory"}
        resp = self._gw("HEAD", head, key)
        resp.read()
        if resp.status >= 400:
            raise ShoalError.of(resp.status, None, f"{path}: no such dataset, key or directory")
        if resp.getheader("Content-Type", "").startswith("text/html"):
            return {"name": name, "size": 0, "type": "directory"}
        return {"name": name, "size": int(resp.getheader("Content-Length", "0")), "type": "file"}

    def ls(self, path, detail=True, **kwargs):
        head, key, st = self._where(path)
        prefix = f"{head}/{key}" if key else head
        entries: dict[str, dict] = {}
        source = head if st is None else (st.base if st.base and not st.removes(key) else None)
        listed = False
        if source is not None:
            resp = self._gw("GET", source, key, listing=True) if head else self.client.gateway.get("/zarr/?format=json")
            if resp.status == 404:
                resp.read()
            elif resp.status >= 400:
                self._fail(resp, path)
            else:
                doc = json.loads(resp.read())
                listed = True
                children = doc.get("entries", [])
                if doc.get("truncated"):
                    children = self._children_from_api(source, key)
                for c in children:
                    full = f"{prefix}/{c['name']}" if prefix else c["name"]
                    kind = "directory" if c.get("type") == "directory" else "file"
                    entries[full] = {"name": full, "size": c.get("size", 0), "type": kind}
        if st is not None:
            for k in [k for k in entries if st.removes(_split(k)[1])]:
                del entries[k]
            with st.lock:
                staged = dict(st.staged)
            for k, size in staged.items():
                rest = k[len(key) + 1 :] if key else k
                if key and not k.startswith(key + "/"):
                    continue
                first, _, more = rest.partition("/")
                full = f"{prefix}/{first}"
                if more:
                    entries.setdefault(full, {"name": full, "size": 0, "type": "directory"})
                else:
                    entries[full] = {"name": full, "size": size, "type": "file"}
                listed = True
        if not listed:
            info = self.info(path)
            if info["type"] == "file":
                return [info] if detail else [info["name"]]
            raise NotFound(f"{path}: no such directory", "not_found", 404)
        out = sorted(entries.values(), key=lambda e: e["name"])
        return out if detail else [e["name"] for e in out]

    def _children_from_api(self, head: str, key: str) -> list[dict]:
        """A directory's children from the daemon's full key listing (the
        gateway's is capped)."""
        children: dict[str, dict] = {}
        for e in self.client.ls(f"{head}/{key}" if key else head):
            rest = e["key"][len(key) + 1 :] if key else e["key"]
            first, _, more = rest.partition("/")
            if more:
                children.setdefault(first, {"name": first, "type": "directory", "size": 0})
            else:
                children[first] = {"name": first, "type": "file", "size": e["size"]}
        return list(children.values())

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if "r" in mode:
            return ShoalFile(self, path, mode, block_size or 4 << 20, cache_options=cache_options, **kwargs)
        return _WriteFile(self, self._strip_protocol(path))

    # ---- writes ------------------------------------------------------

    def _stage(self, head: str) -> _Stage:
        with self._stages_lock:
            st = self._stages.get(head)
            if st is None:
                st = _Stage(self.client.stage_open(head))
                self._stages[head] = st
            return st

    def pipe_file(self, path, value, **kwargs):
        head, key = _split(self._strip_protocol(path))
        if not key:
            raise ShoalError(f"{path}: a write needs NAME/KEY", "bad_request")
        st = self._stage(head)
        size = self.client.stage_put(st.id, key, bytes(value))
        with st.lock:
            st.staged[key] = size

    def rm(self, path, recursive=False, maxdepth=None):
        for p in [path] if isinstance(path, str) else path:
            head, key = _split(self._strip_protocol(p))
            st = self._stage(head)
            self.client.stage_remove(st.id, key)
            with st.lock:
                for k in [k for k in st.staged if not key or k == key or k.startswith(key + "/")]:
                    del st.staged[k]
                if key == "":
                    st.removed = [""]
                    st.base = None
                elif key not in st.removed:
                    st.removed.append(key)

    def rm_file(self, path):
        self.rm(path)

    def mkdir(self, path, create_parents=True, **kwargs):
        pass  # directories are implied by keys

    def makedirs(self, path, exist_ok=False):
        pass

    def commit_write(self, name: str, keep: int | None = None, progress=None) -> dict | None:
        """Commits the write under way to ``name`` as its next version;
        ``None`` if nothing was written to it."""
        name = _split(self._strip_protocol(name))[0]
        with self._stages_lock:
            st = self._stages.pop(name, None)
        if st is None:
            return None
        self.invalidate_cache()
        return self.client.stage_commit(st.id, keep=keep, progress=progress)

    def abort_write(self, name: str) -> None:
        """Drops the write under way to ``name``; the name stays as it was."""
        name = _split(self._strip_protocol(name))[0]
        with self._stages_lock:
            st = self._stages.pop(name, None)
        if st is not None:
            try:
                self.client.stage_abort(st.id)
            except ShoalError:
                pass  # already gone (idle, daemon restarted)


class ShoalFile(AbstractBufferedFile):
    """A key read in ranges."""

    def _fetch_range(self, start, end):
        return self.fs.cat_file(self.path, start=start, end=end)


class _WriteFile(io.BytesIO):
    """A key written whole: staged when closed."""

    def __init__(self, fs: ShoalFileSystem, path: str):
        super().__init__()
        self._fs, self._path = fs, path

    def close(self):
        if not self.closed:
            self._fs.pipe_file(self._path, self.getvalue())
        super().close()
