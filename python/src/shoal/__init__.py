"""shoal from Python: datasets of a shoal daemon in xarray, zarr-python and
fsspec (``shoal://NAME``), reductions pushed down to the daemon, the rest of
the daemon's API as ``shoal.Client``.

    import xarray as xr, shoal
    ds = xr.open_zarr("shoal://sst")                       # read, verified
    clim = shoal.query("sst", "sst", op="mean", dim="time", groupby="time.month")
    ds.to_zarr("shoal://sst-copy")                          # one new version
"""

from __future__ import annotations

from contextlib import contextmanager

from .client import AddResult, Client, Key, PinResult, Version
from .errors import BadRequest, Conflict, DaemonNotRunning, NotFound, ShoalError
from .query import Report, query

__all__ = [
    "AddResult",
    "BadRequest",
    "Client",
    "Conflict",
    "DaemonNotRunning",
    "Key",
    "NotFound",
    "PinResult",
    "Report",
    "ShoalError",
    "Version",
    "open_dataset",
    "query",
    "writing",
]


def open_dataset(target: str, **kwargs):
    """``xr.open_zarr("shoal://TARGET")``, remembering the target so
    ``ds.shoal.mean(...)`` runs on the daemon."""
    import xarray as xr

    ds = xr.open_zarr(f"shoal://{target}", **kwargs)
    ds.encoding["shoal_target"] = target
    return ds


@contextmanager
def writing(name: str, keep: int | None = None, **storage_options):
    """An explicit write: yields a zarr-ready fsspec mapper over ``name``;
    every key written in the block becomes one version when it ends
    without an exception, none otherwise.

        with shoal.writing("sst") as store:
            ds.to_zarr(store, mode="w")
    """
    import fsspec

    fs = fsspec.filesystem("shoal", **storage_options)
    mapper = fs.get_mapper(name)
    fs.explicit.add(name)
    try:
        yield mapper
    except BaseException:
        fs.abort_write(name)
        raise
    else:
        mapper.result = fs.commit_write(name, keep=keep)
    finally:
        fs.explicit.discard(name)


try:  # the accessor, when xarray is there
    from .query import _register_accessor

    _register_accessor()
except ImportError:  # pragma: no cover - xarray is optional
    pass
