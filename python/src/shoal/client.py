"""``shoal.Client``: the daemon's local API from Python."""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from ._http import Api, Gateway, result_of
from .errors import NotFound, ShoalError


def _typed(cls, doc: dict):
    names = {f.name for f in fields(cls)}
    known = {k: v for k, v in doc.items() if k in names}
    obj = cls(**known)
    obj.raw = doc
    return obj


@dataclass
class AddResult:
    root: str
    name: str | None = None
    zarr_format: int = 0
    keys: int = 0
    bytes: int = 0
    new_blocks: int = 0
    new_bytes: int = 0
    version: int | None = None
    unixfs: str = ""
    seconds: float = 0.0
    raw: dict = field(default_factory=dict, repr=False)


@dataclass
class PinResult:
    root: str
    name: str | None = None
    changed: bool = False
    #: What the pin fetched from peers (blocks, bytes, peers, seconds).
    fetched: dict | None = None
    replicas: int | None = None
    #: Set when the pin fetched a UnixFS directory over bitswap: its CID
    #: (``root`` is the dataset it became).
    unixfs: str | None = None
    raw: dict = field(default_factory=dict, repr=False)


@dataclass
class Version:
    version: int
    root: str
    parent: str | None = None
    time: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    new_bytes: int = 0
    raw: dict = field(default_factory=dict, repr=False)


@dataclass
class Key:
    key: str
    size: int
    inline: bool = False
    cids: list = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False)


def _bar(description: str, show: bool | None):
    """A tqdm progress callback (a widget in a notebook), or None."""
    if show is False:
        return None, lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None, lambda: None
    bar = tqdm(total=0, unit="B", unit_scale=True, desc=description, leave=False)

    def update(p: dict) -> None:
        if p.get("bytes_total"):
            bar.total = p["bytes_total"]
        bar.n = p.get("bytes_done", 0)
        bar.refresh()

    return update, bar.close


class Client:
    """A shoal daemon. ``home``: its repo (else ``SHOAL_HOME``, else
    ``~/.shoal``); ``gateway``: its HTTP gateway URL (else
    ``SHOAL_GATEWAY``, else what the daemon reports)."""

    def __init__(self, home: str | os.PathLike | None = None, gateway: str | None = None):
        self.api = Api(home)
        self._gateway_url = gateway or os.environ.get("SHOAL_GATEWAY")
        self._gateway: Gateway | None = None

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            url = self._gateway_url or self.id().get("gateway")
            if not url:
                raise NotFound(
                    "the daemon runs without its HTTP gateway ([gateway] listen in config.toml); "
                    "shoal:// reads through it",
                    "not_found",
                )
            self._gateway = Gateway(url)
        return self._gateway

    # ---- the node ----------------------------------------------------

    def id(self) -> dict:
        return self.api.call("GET", "/v1/id")

    def stats(self) -> dict:
        return self.api.call("GET", "/v1/stats")

    def peers(self) -> list[dict]:
        return self.api.call("GET", "/v1/peers")

    def connect(self, addr: str) -> str:
        return self.api.call("POST", "/v1/connect", {"addr": addr})["peer_id"]

    def providers(self, cid: str) -> list[str]:
        return self.api.call("GET", "/v1/providers", query={"cid": cid})["providers"]

    # ---- datasets ----------------------------------------------------

    def add(self, path: str | os.PathLike, name: str | None = None, keep: int | None = None, progress=None) -> AddResult:
        """Adds a Zarr directory (or .car file) the daemon can read."""
        body = {"path": str(Path(path).resolve()), "name": name, "keep": keep}
        update, done = _bar(f"add {name or path}", progress)
        try:
            return _typed(AddResult, result_of(self.api.stream("POST", "/v1/add", body), update))
        finally:
            done()

    def pin(
        self,
        target: str,
        name: str | None = None,
        replicas: int | None = None,
        progress=None,
        from_: list[str] | None = None,
    ) -> PinResult:
        """Pins a dataset, fetching what is missing from peers (a tqdm bar
        shows the bytes fetched when tqdm is installed; ``progress=False``
        hides it). The CID of a UnixFS directory that IPFS nodes hold is
        fetched over bitswap from ``from_`` (multiaddrs) and connected
        peers, and becomes a dataset."""
        body = {"target": target, "name": name, "replicas": replicas, "from": from_ or []}
        update, done = _bar(f"pin {target}", progress)
        try:
            return _typed(PinResult, result_of(self.api.stream("POST", "/v1/pin", body), update))
        finally:
            done()

    def unpin(self, target: str) -> dict:
        return self.api.call("POST", "/v1/unpin", {"target": target})

    def pins(self, page: int = 20000) -> list[dict]:
        """Pinned and named datasets, by name then root (asked for in pages,
        so a store of 100,000 datasets is never one response)."""
        out: list[dict] = []
        query: dict = {"limit": str(page)}
        while True:
            got = self.api.call("GET", "/v1/pins", query=query)
            out.extend(got)
            if len(got) < page:
                return out
            query["after"] = got[-1]["root"]

    def ls(self, target: str) -> Iterator[dict]:
        """A dataset's keys (streamed: a million keys are never all held)."""
        for line in self.api.stream("GET", "/v1/ls", query={"target": target}):
            if "entry" in line:
                yield line["entry"]
            elif "error" in line:
                err = line["error"]
                raise ShoalError.of(None, err.get("kind"), err.get("error"))

    def keys(self, target: str) -> list[Key]:
        return [_typed(Key, e) for e in self.ls(target)]

    def log(self, name: str) -> list[Version]:
        return [_typed(Version, v) for v in self.api.call("GET", "/v1/log", query={"name": name})]

    def cat(self, target: str) -> bytes:
        return self.api.raw("GET", f"/v1/cat?{urllib.parse.urlencode({'target': target})}")

    # ---- names -------------------------------------------------------

    def publish(self, name: str) -> dict:
        return self.api.call("POST", "/v1/publish", {"name": name})

    def follow(self, target: str, local: str | None = None, keep: int | None = None) -> dict:
        """Follows ``PEER/NAME``: its versions are pinned here as they come."""
        return self.api.call("POST", "/v1/follow", {"target": target, "local": local, "keep": keep})

    def follows(self) -> list[dict]:
        return self.api.call("GET", "/v1/follows")

    # ---- queries -----------------------------------------------------

    def query(self, **request: Any) -> list[dict]:
        """The raw query call (see ``shoal.query`` for an xarray result)."""
        return self.api.call("POST", "/v1/query", request)

    # ---- staged writes (the Unix socket only) ------------------------

    def stage_open(self, name: str, overwrite: bool = False) -> dict:
        return self.api.call("POST", "/v1/stage", {"name": name, "overwrite": overwrite})

    def _stage_key(self, id: str, key: str) -> str:
        return f"/v1/stage/{id}/key/{urllib.parse.quote(key, safe='/')}"

    def stage_put(self, id: str, key: str, data: bytes) -> int:
        return json.loads(self.api.raw("PUT", self._stage_key(id, key), data, f"writing {key!r}"))["size"]

    def stage_read(self, id: str, key: str) -> bytes:
        return self.api.raw("GET", self._stage_key(id, key), what=f"reading staged {key!r}")

    def stage_remove(self, id: str, key: str) -> None:
        self.api.call("POST", f"/v1/stage/{id}/remove", {"key": key})

    def stage_abort(self, id: str) -> None:
        self.api.call("POST", f"/v1/stage/{id}/abort")

    def stage_commit(self, id: str, keep: int | None = None, progress: Callable | None = None) -> AddResult:
        lines = self.api.stream("POST", f"/v1/stage/{id}/commit", {"keep": keep})
        return _typed(AddResult, result_of(lines, progress))
