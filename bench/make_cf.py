"""Writes a CF dataset the way xarray users do: Zarr v2 from
`Dataset.to_zarr` (consolidated=False, so a reader that wants consolidated
metadata gets it from the gateway's synthesis or not at all), daily time,
lat/lon coordinates, a float32 `sst` of a smooth field plus noise (it
compresses, unlike make_big.py's noise), chunks of (8, 180, 360) -> about
1 MB per object: many more, smaller requests than make_big.py makes.

usage: make_cf.py OUTDIR [GIB]
"""
import sys
import warnings

import numpy as np
import pandas as pd
import xarray as xr

warnings.filterwarnings("ignore")
out = sys.argv[1]
gib = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
ny, nx = 720, 1440
nt = max(8, int(gib * (1 << 30) / (4 * ny * nx)))
lat = np.linspace(-89.875, 89.875, ny, dtype="f4")
lon = np.linspace(0.125, 359.875, nx, dtype="f4")
rng = np.random.default_rng(1)
base = (28 - 30 * np.abs(np.sin(np.deg2rad(lat)))[:, None] + 0 * lon[None, :]).astype("f4")
sst = np.empty((nt, ny, nx), dtype="f4")
for t in range(nt):
    sst[t] = base + np.float32(np.sin(t / 58.0)) + rng.standard_normal((ny, nx), dtype="f4") * 0.3
ds = xr.Dataset(
    {"sst": (("time", "lat", "lon"), sst, {"units": "degC", "long_name": "sea surface temperature"})},
    coords={"time": pd.date_range("2000-01-01", periods=nt, freq="D"), "lat": lat, "lon": lon},
    attrs={"title": "synthetic SST"},
)
ds.chunk({"time": 8, "lat": 180, "lon": 360}).to_zarr(out, zarr_format=2, consolidated=False, mode="w")
print(out, nt, "time steps")
