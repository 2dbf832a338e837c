"""Computes reductions with xarray from the original files and compares them
with shoal's results (.npy files): rtol 1e-9, NaNs equal. Inputs are reduced
in float64 (float32 inputs are compared in float64, as the issue asks).

usage: xr_check.py CASES.json
  CASES.json: a list of {"path", "array", "op", "dims": [..] (empty = all),
  "sel": {"dim": [start, stop]}, "ddof", "raw", "got": "result.npy"}.
"""
import json
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
    da = da.astype("f8")
    dim = c["dims"] or None
    op = c["op"]
    if op in ("var", "std"):
        want = getattr(da, op)(dim=dim, skipna=True, ddof=c["ddof"])
    elif op == "count":
        want = da.count(dim=dim)
    else:
        want = getattr(da, op)(dim=dim, skipna=True)
    want = np.asarray(want.values, dtype="f8")
    got = np.load(c["got"])
    label = f'{c["path"].rsplit("/", 1)[-1]}:{c["array"]} {op} dims={c["dims"]} sel={c["sel"]} ddof={c["ddof"]} raw={c["raw"]}'
    assert got.shape == want.shape, (label, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0, equal_nan=True, err_msg=label)
print(f"ok {len(cases)} cases")
