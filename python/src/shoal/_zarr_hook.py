"""Commit on close: zarr-python's FsspecStore does not tell its filesystem
when a writer is done, and xarray's ``to_zarr`` ends by closing the store
(also when the write failed: it closes in a ``finally``). This hook makes
that close commit the staged write to the store's name, or drop it when an
exception is on its way out, so ``ds.to_zarr("shoal://NAME")`` makes one
version or none.
"""

from __future__ import annotations

import sys
import threading

_installed = False
_lock = threading.Lock()


def _shoal_fs(store):
    from .fs import ShoalFileSystem

    fs = getattr(store, "fs", None)
    fs = getattr(fs, "sync_fs", fs)  # zarr wraps a sync filesystem
    return fs if isinstance(fs, ShoalFileSystem) else None


def install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        try:
            from zarr.storage import FsspecStore
        except ImportError:
            return
        original = FsspecStore.close

        def close(self):
            original(self)
            fs = _shoal_fs(self)
            if fs is None or getattr(self, "read_only", False):
                return
            if self.path.strip("/").split("/")[0] in fs.explicit:
                return  # shoal.writing commits when its block ends
            if sys.exc_info()[0] is not None:
                fs.abort_write(self.path)
            else:
                fs.commit_write(self.path)

        FsspecStore.close = close
        _installed = True
