"""Datasets for the catalogue tests, written by xarray as publishers write
them: CF attributes, latitude/longitude coordinates, CF time.

usage: make_catalogue_datasets.py DIR
  DIR/atlantic.zarr: North Atlantic SST, 80W-0 x 0-60N, daily 2000-01-01
      .. 2000-01-20, standard calendar, Zarr v2
  DIR/arctic.zarr: Arctic sea ice, 180W-180E x 60-90N, 2010 in a 360-day
      calendar (ends on 2010-12-30), Zarr v3, HTML in its description
"""
import sys
import warnings

import cftime
import numpy as np
import pandas as pd
import xarray as xr

warnings.filterwarnings("ignore")
out = sys.argv[1]

lat = np.arange(0.5, 60, 1.0)
lon = np.arange(-79.5, 0, 1.0)
t = pd.date_range("2000-01-01", periods=20, freq="D")
sst = (
    280.0
    + np.arange(20, dtype="f4")[:, None, None]
    + np.linspace(0, 10, lat.size, dtype="f4")[None, :, None]
    + np.zeros((1, 1, lon.size), dtype="f4")
)
atl = xr.Dataset(
    {
        "sst": (
            ("time", "lat", "lon"),
            sst.astype("f4"),
            {"units": "K", "long_name": "Sea Surface Temperature", "standard_name": "sea_surface_temperature"},
        )
    },
    coords={
        "time": t,
        "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
        "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
    },
    attrs={
        "title": "North Atlantic sea surface temperature",
        "summary": "Daily mean SST on a 1 degree grid.",
        "institution": "Example Ocean Institute",
        "source": "synthetic",
    },
)
atl.chunk({"time": 5}).to_zarr(f"{out}/atlantic.zarr", zarr_format=2, consolidated=True, mode="w")

lat = np.arange(60.5, 90, 1.0)
lon = np.arange(-179, 180, 2.0)
times = [cftime.Datetime360Day(2010, m, d) for m in (1, 6, 12) for d in (1, 30)]
ice = np.clip(
    np.linspace(0.2, 1.0, lat.size, dtype="f4")[None, :, None] + np.zeros((len(times), 1, lon.size), dtype="f4"),
    0,
    1,
)
arc = xr.Dataset(
    {
        "siconc": (
            ("time", "lat", "lon"),
            ice,
            {"units": "1", "long_name": "Sea Ice Area Fraction", "standard_name": "sea_ice_area_fraction"},
        )
    },
    coords={
        "time": ("time", times),
        "lat": ("lat", lat, {"units": "degrees_north"}),
        "lon": ("lon", lon, {"units": "degrees_east"}),
    },
    attrs={
        "title": "Arctic sea ice concentration",
        "summary": "Ice <b>concentration</b> & <script>alert('x')</script> from a model.",
        "institution": "Polar <i>Lab</i>",
    },
)
arc.to_zarr(f"{out}/arctic.zarr", zarr_format=3, consolidated=False, mode="w")
print("ok")
