"""Pushdown: the daemon's distributed reductions as xarray objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .client import Client


@dataclass
class Report:
    """Where a query ran and what it moved."""

    root: str
    chunks: int
    chunks_local: int
    chunks_remote: list
    chunks_fetched: int
    network_bytes: int
    seconds: float
    raw: list = field(default_factory=list, repr=False)


def _as_list(v) -> list:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return list(v)


def _sel(sel: dict | None) -> list[str]:
    """``{"time": slice("2020-01", "2020-03"), "lat": 10}`` as the CLI's
    ``DIM=A:B`` / ``DIM=V`` text."""
    out = []
    for dim, v in (sel or {}).items():
        if isinstance(v, slice):
            if v.step is not None:
                raise ValueError(f"sel {dim}: a step is not supported")
            lo = "" if v.start is None else str(v.start)
            hi = "" if v.stop is None else str(v.stop)
            out.append(f"{dim}={lo}:{hi}")
        else:
            out.append(f"{dim}={v}")
    return out


def _isel(isel: dict | None) -> list:
    out = []
    for dim, v in (isel or {}).items():
        if not isinstance(v, slice) or v.step not in (None, 1):
            raise ValueError(f"isel {dim}: only slice(START, STOP) is supported")
        out.append([dim, v.start or 0, v.stop])
    return out


def query(
    target: str,
    array: str | Iterable[str] | None = None,
    op: str = "mean",
    dim: str | Iterable[str] | None = None,
    *,
    groupby: str | None = None,
    resample: dict | str | None = None,
    sel: dict | None = None,
    isel: dict | None = None,
    weights: str | None = None,
    ddof: int = 0,
    client: Client | None = None,
    report: bool = False,
):
    """Runs ``op`` over ``dim`` on the daemon (and its peers, next to the
    chunks) and returns an ``xarray.Dataset`` like xarray's own reduction:
    ``shoal.query("sst", "sst", op="mean", dim="time", groupby="time.month")``.
    ``array=None``: every data variable with the reduced dimensions.
    ``resample``: ``{"time": "1MS"}`` or ``"time=1MS"``. With ``report=True``
    returns ``(dataset, Report)``.
    """
    import xarray as xr

    client = client or Client()
    if isinstance(resample, dict):
        ((d, freq),) = resample.items()
        resample = f"{d}={freq}"
    arrays = _as_list(array)
    request: dict[str, Any] = {
        "target": target,
        "op": op,
        "dims": _as_list(dim),
        "sel": _sel(sel),
        "isel": _isel(isel),
        "groupby": groupby,
        "resample": resample,
        "weights": weights,
        "ddof": ddof,
        "raw": False,
        "coords": True,
    }
    if arrays:
        request["array"] = ",".join(arrays)
    else:
        request["all"] = True
    results = client.query(**request)
    data_vars, coords = {}, {}
    for r in results:
        values = np.array([np.nan if v is None else v for v in r["values"]], dtype="float64")
        name = r["array"].rsplit("/", 1)[-1]
        data_vars[name] = xr.Variable(tuple(r["dims"]), values.reshape(r["shape"]), attrs=r.get("attrs") or {})
        for c in r.get("coords", []):
            if c["dim"] in coords:
                continue
            if c.get("labels"):
                vals = np.array(c["labels"], dtype=object)
            elif c.get("int"):
                vals = np.array(c["values"], dtype="int64")
            else:
                vals = np.array(c["values"], dtype="float64")
            coords[c["dim"]] = xr.Variable((c["dim"],), vals, attrs=c.get("attrs") or {})
    ds = xr.Dataset(data_vars, coords=coords)
    ds = xr.decode_cf(ds) if any("units" in v.attrs and "since" in str(v.attrs["units"]) for v in coords.values()) else ds
    if not report:
        return ds
    first = results[0] if results else {}
    rep = Report(
        root=first.get("root", ""),
        chunks=sum(r["chunks"] for r in results),
        chunks_local=sum(r["chunks_local"] for r in results),
        chunks_remote=[p for r in results for p in r["chunks_remote"]],
        chunks_fetched=sum(r["chunks_fetched"] for r in results),
        network_bytes=sum(r["network_bytes"] for r in results),
        seconds=max((r["seconds"] for r in results), default=0.0),
        raw=results,
    )
    return ds, rep


def _register_accessor() -> None:
    import xarray as xr

    if "shoal" in getattr(xr.Dataset, "__dict__", {}):
        return

    @xr.register_dataset_accessor("shoal")
    class ShoalAccessor:
        """``ds.shoal.mean("time")``: the reduction run by the daemon on
        the dataset this one was opened from (``shoal://TARGET``)."""

        def __init__(self, ds):
            self._ds = ds

        @property
        def target(self) -> str:
            t = self._ds.encoding.get("shoal_target") or self._ds.attrs.get("_shoal_target")
            if t is None:
                src = str(self._ds.encoding.get("source", ""))
                if src.startswith("shoal://"):
                    t = src[len("shoal://") :].strip("/")
            if t is None:
                raise ValueError(
                    "this dataset was not opened from shoal://; open it with shoal.open_dataset(NAME) "
                    "or call shoal.query(NAME, ...)"
                )
            return t

        def _run(self, op, dim=None, **kw):
            names = kw.pop("array", None)
            if names is None:
                names = [v for v in self._ds.data_vars if set(_as_list(dim)) <= set(self._ds[v].dims)] or None
            return query(self.target, names, op=op, dim=dim, **kw)

    def _reduction(op):
        def run(self, dim=None, **kw):
            return self._run(op, dim, **kw)

        run.__name__ = op
        run.__doc__ = f"``{op}`` over ``dim`` on the daemon (keywords as for ``shoal.query``)."
        return run

    for op in ("mean", "sum", "min", "max", "std", "var", "count"):
        setattr(ShoalAccessor, op, _reduction(op))
