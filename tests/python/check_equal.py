"""Checks that zarr-python reads COPY exactly as ORIG: every array equal
(NaNs equal), every attribute equal. For xarray datasets also compares
xarray's view. Exits non-zero with a message on the first difference.

usage: check_equal.py ORIG COPY
"""
import sys
import warnings

import numpy as np
import zarr

warnings.filterwarnings("ignore")
orig, copy = sys.argv[1], sys.argv[2]


def arrays(group, prefix=""):
    for name, node in group.members():
        path = f"{prefix}{name}"
        if isinstance(node, zarr.Array):
            yield path, node
        else:
            yield from arrays(node, path + "/")


go = zarr.open_group(orig, mode="r")
gc = zarr.open_group(copy, mode="r")
a_orig = dict(arrays(go))
a_copy = dict(arrays(gc))
assert sorted(a_orig) == sorted(a_copy), (sorted(a_orig), sorted(a_copy))
assert dict(go.attrs) == dict(gc.attrs)
for path, a in a_orig.items():
    b = a_copy[path]
    x, y = a[...], b[...]
    assert x.dtype == y.dtype and x.shape == y.shape, path
    eq_nan = x.dtype.kind == "f"
    assert np.array_equal(x, y, equal_nan=eq_nan), f"array {path} differs"
    assert dict(a.attrs) == dict(b.attrs), f"attrs of {path} differ"
if "xr_" in orig:
    import xarray as xr
    xr.testing.assert_identical(xr.open_zarr(orig).load(), xr.open_zarr(copy).load())
    # dask through the copy (threaded scheduler) vs numpy on the original.
    got = float(xr.open_zarr(copy)["sst"].mean().compute(scheduler="threads"))
    want = float(np.nanmean(go["sst"][...].astype("f8")))
    assert abs(got - want) <= 1e-5 * abs(want), (got, want)
print(f"ok {len(a_orig)} arrays")
