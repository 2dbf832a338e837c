"""Computes reductions with xarray from the original files and compares them
with shoal's results (.npy files): rtol 1e-9, NaNs equal. Inputs are reduced
in float64 (float32 inputs are compared in float64, as the issue asks).

usage: xr_check.py CASES.json
  CASES.json: a list of {"path", "array", "op", "dims": [..] (empty = all),
  "sel": {"dim": [start, stop]}, "ddof", "raw", "got": "result.npy"},
  optionally "groupby": "time.month", "resample": ["time", "MS"],
  "weights": "coslat" | ARRAY.
"""
import json
import os
import sys
import warnings

import numpy as np
import xarray as xr

warnings.filterwarnings("ignore")
cases = json.load(open(sys.argv[1]))
for c in cases:
    group, _, name = c["array"].rpartition("/")
    ds = xr.open_zarr(c["path"], group=group or None, decode_cf=not c["raw"], consolidated=None)
    da = ds[name]
    if c["sel"]:
        da = da.isel({d: slice(a, b) for d, (a, b) in c["sel"].items()})
    for d, l in c.get("labels", {}).items():
        is_time = da[d].dtype.kind == "M" or da[d].dtype == object
        val = (lambda x: x) if is_time else (lambda x: None if x is None else float(x))
        if l["exact"]:
            # A date covers its period (a slice); a number keeps its dimension.
            da = da.sel({d: slice(l["lo"], l["lo"])}) if is_time else da.sel({d: [val(l["lo"])]})
        else:
            da = da.sel({d: slice(val(l["lo"]), val(l["hi"]))})
    da = da.astype("f8")
    dim = c["dims"] or None
    op = c["op"]
    src = da
    if c.get("weights"):
        w = np.cos(np.deg2rad(da.lat)) if c["weights"] == "coslat" else ds[c["weights"]]
        src = da.weighted(w)
    elif c.get("groupby"):
        src = da.groupby(c["groupby"])
        dim = [c["groupby"].split(".")[0]] + (c["dims"] or [])
    elif c.get("resample"):
        d, freq = c["resample"]
        src = da.resample({d: freq})
        dim = [d] + (c["dims"] or [])
    if c.get("weights"):
        want = getattr(src, op)(dim=dim, skipna=True)
    elif op in ("var", "std"):
        want = getattr(src, op)(dim=dim, skipna=True, ddof=c["ddof"])
    elif op == "count":
        want = src.count(dim=dim)
    else:
        want = getattr(src, op)(dim=dim, skipna=True)
    if os.path.isdir(c["got"]):
        # A result dataset: the values under the array's name, and the
        # coordinates of every remaining dimension equal to xarray's.
        res = xr.open_zarr(c["got"])
        for d in want.dims:
            np.testing.assert_array_equal(res[d].values, want[d].values, err_msg=f"coordinate {d}")
        assert res[name].dims == want.dims, (res[name].dims, want.dims)
        assert "cell_methods" in res[name].attrs and res.attrs["source"], res[name].attrs
        got = res[name].values
    else:
        got = np.load(c["got"])
    want = np.asarray(want.values, dtype="f8")
    label = f'{c["path"].rsplit("/", 1)[-1]}:{c["array"]} {op} dims={c["dims"]} sel={c["sel"]} labels={c.get("labels")} group={c.get("groupby") or c.get("resample")} weights={c.get("weights")} ddof={c["ddof"]} raw={c["raw"]}'
    assert got.shape == want.shape, (label, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0, equal_nan=True, err_msg=label)
print(f"ok {len(cases)} cases")
