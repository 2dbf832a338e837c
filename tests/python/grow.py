"""A dataset that grows a few days at a time, written by xarray as a
publisher would: `to_zarr` to create it, `to_zarr(append_dim="time")` to
extend it. Values are a function of the day, so any copy can be checked.

usage: grow.py create PATH DAYS | append PATH DAYS | check PATH DAYS
  check: opens PATH with xarray and compares every value with what
  DAYS days of this dataset must hold.
"""
import sys
import warnings

import numpy as np
import pandas as pd
import xarray as xr

warnings.filterwarnings("ignore")
LAT, LON = 90, 180


def days(start, n):
    t = pd.date_range("2020-01-01", periods=start + n, freq="D")[start:]
    day = np.arange(start, start + n, dtype="f4")[:, None, None]
    sst = day + np.linspace(0, 1, LAT * LON, dtype="f4").reshape(1, LAT, LON)
    return xr.Dataset(
        {"sst": (("time", "lat", "lon"), sst, {"units": "degC"})},
        coords={"time": t, "lat": np.linspace(-89, 89, LAT), "lon": np.arange(LON) * 2.0},
    )


cmd, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if cmd == "create":
    days(0, n).chunk({"time": 5}).to_zarr(path, zarr_format=2, consolidated=True, mode="w")
elif cmd == "append":
    have = xr.open_zarr(path).sizes["time"]
    days(have, n).chunk({"time": 5}).to_zarr(path, append_dim="time", consolidated=True)
elif cmd == "check":
    got = xr.open_zarr(path)
    xr.testing.assert_equal(got.load(), days(0, n))
else:
    sys.exit(f"unknown command {cmd}")
print("ok")
