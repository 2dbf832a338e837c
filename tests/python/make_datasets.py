"""Writes the test datasets with zarr-python and xarray, as users do.

usage: make_datasets.py OUTDIR

Creates, under OUTDIR:
  v2_blosc/     zarr v2 group, blosc-compressed float64 array with NaNs
  v3_zstd/      zarr v3 group, zstd-compressed float32 array with NaNs
  v3_sharded/   zarr v3 sharded int32 array
  ints_v2/      zarr v2 int16/uint8/int64 arrays
  xr_v2/        xarray Dataset (several variables + coordinates), v2, consolidated
  xr_v3/        the same Dataset, v3
"""
import sys
import warnings

import numpy as np
import xarray as xr
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, ZstdCodec

warnings.filterwarnings("ignore")
out = sys.argv[1]
rng = np.random.default_rng(42)

g = zarr.open_group(f"{out}/v2_blosc", mode="w", zarr_format=2)
a = rng.standard_normal((60, 50, 40))
a[rng.random(a.shape) < 0.05] = np.nan
arr = g.create_array("temp", shape=a.shape, chunks=(10, 25, 20), dtype="f8",
                     compressors=Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE), fill_value=np.nan)
arr[:] = a
arr.attrs["units"] = "K"

g = zarr.open_group(f"{out}/v3_zstd", mode="w", zarr_format=3)
b = rng.standard_normal((40, 64, 32)).astype("f4")
b[:3, :, :5] = np.nan
arr = g.create_array("ocean/sst", shape=b.shape, chunks=(8, 32, 16), dtype="f4",
                     compressors=ZstdCodec(level=3), fill_value=np.nan, dimension_names=["time", "y", "x"])
arr[:] = b

g = zarr.open_group(f"{out}/v3_sharded", mode="w", zarr_format=3)
c = rng.integers(-1000, 1000, size=(64, 64), dtype="i4")
arr = g.create_array("sharded", shape=c.shape, shards=(32, 32), chunks=(8, 8), dtype="i4",
                     compressors=BloscCodec(cname="zstd", clevel=3), fill_value=0, dimension_names=["y", "x"])
arr[:] = c

g = zarr.open_group(f"{out}/ints_v2", mode="w", zarr_format=2)
for name, dt in [("i16", "i2"), ("u8", "u1"), ("i64", "i8")]:
    info = np.iinfo(dt)
    d = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), size=(30, 30), dtype=dt)
    arr = g.create_array(name, shape=d.shape, chunks=(7, 11), dtype=dt, fill_value=0)
    arr[:] = d

t = np.arange(24)
lat = np.linspace(-60, 60, 25)
lon = np.linspace(0, 350, 36)
sst = 15 + 10 * np.cos(np.deg2rad(lat))[None, :, None] + rng.standard_normal((24, 25, 36))
sst[:, :2, :] = np.nan
ds = xr.Dataset(
    {"sst": (("time", "lat", "lon"), sst.astype("f4"), {"units": "degC"}),
     "mask": (("lat", "lon"), (rng.random((25, 36)) > 0.3).astype("i1"))},
    coords={"time": t, "lat": lat, "lon": lon},
    attrs={"title": "shoal test"},
)
ds.chunk({"time": 6, "lat": 13, "lon": 18}).to_zarr(f"{out}/xr_v2", zarr_format=2, consolidated=True, mode="w")
ds.chunk({"time": 6, "lat": 13, "lon": 18}).to_zarr(f"{out}/xr_v3", zarr_format=3, mode="w")
# CF-packed int16 (scale_factor/add_offset/_FillValue), v2 and v3.
temp = 15 + 8 * rng.standard_normal((30, 20, 16))
temp[rng.random(temp.shape) < 0.1] = np.nan
packed = xr.Dataset({"temp": (("time", "lat", "lon"), temp, {"units": "degC"})},
                    coords={"time": np.arange(30), "lat": np.arange(20.0), "lon": np.arange(16.0)})
enc = {"temp": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 15.0, "_FillValue": -32768,
                "chunks": (7, 8, 5)}}
packed.to_zarr(f"{out}/packed_v2", zarr_format=2, encoding=enc, mode="w")
packed.to_zarr(f"{out}/packed_v3", zarr_format=3, encoding=enc, mode="w")

# Absent chunks: only some chunks are ever written.
# v2: the fill_value (-999) acts as _FillValue, so absent chunks are missing.
g = zarr.open_group(f"{out}/sparse_v2", mode="w", zarr_format=2)
a = g.create_array("x", shape=(40, 30), chunks=(10, 10), dtype="f8", fill_value=-999.0,
                   attributes={"_ARRAY_DIMENSIONS": ["y", "x"]})
a[0:10, 0:10] = rng.standard_normal((10, 10))
a[20:30, 10:30] = rng.standard_normal((10, 20))
# v3 without a _FillValue attribute: absent chunks read as 7.5 and count.
g = zarr.open_group(f"{out}/sparse_v3", mode="w", zarr_format=3)
a = g.create_array("x", shape=(40, 30), chunks=(10, 10), dtype="f8", fill_value=7.5, dimension_names=["y", "x"])
a[0:10, 0:10] = rng.standard_normal((10, 10))
a[30:40, 0:30] = rng.standard_normal((10, 30))
# A larger dataset for distributed queries: 16 chunks of 512 KiB (zstd).
g = zarr.open_group(f"{out}/dist_v3", mode="w", zarr_format=3)
a = g.create_array("sst", shape=(64, 128, 128), chunks=(4, 128, 128), dtype="f8",
                   compressors=ZstdCodec(level=1), fill_value=np.nan, dimension_names=["time", "y", "x"])
a[:] = rng.standard_normal((64, 128, 128))
# CF time axes for label selection: daily, standard calendar (datetime64),
# descending latitude, v3; and 6-hourly in the noleap calendar (cftime), v2.
days = xr.date_range("2019-12-01", periods=120, freq="D")
lat_d = np.linspace(60, -60, 13)
ds = xr.Dataset(
    {"tas": (("time", "lat", "lon"), rng.standard_normal((120, 13, 8)).astype("f4"), {"units": "K"})},
    coords={"time": days, "lat": lat_d, "lon": np.arange(8) * 45.0},
)
ds.chunk({"time": 30, "lat": 13, "lon": 8}).to_zarr(f"{out}/time_std", zarr_format=3, mode="w")
steps = xr.date_range("2001-02-20", periods=60, freq="6h", calendar="noleap", use_cftime=True)
ds = xr.Dataset(
    {"pr": (("time", "x"), rng.random((60, 5)), {"units": "mm"})},
    coords={"time": steps, "x": np.arange(5.0)},
)
ds.chunk({"time": 16, "x": 5}).to_zarr(f"{out}/time_noleap", zarr_format=2, consolidated=True, mode="w")
# Climatologies, resampling and weights: two years of daily data in the
# standard calendar (v2, with cell area and CF-packed int16), and two years
# of 6-hourly data in the noleap calendar (v3).
days = xr.date_range("2000-01-15", periods=731, freq="D")
lat_c = np.linspace(-80, 80, 9)
lon_c = np.arange(6) * 60.0
tas = 280 + 20 * np.cos(np.deg2rad(lat_c))[None, :, None] + rng.standard_normal((731, 9, 6))
tas[rng.random(tas.shape) < 0.05] = np.nan
area = np.cos(np.deg2rad(lat_c))[:, None] * (1 + rng.random((9, 6)))
ds = xr.Dataset(
    {"tas": (("time", "lat", "lon"), tas.astype("f4"), {"units": "K", "long_name": "air temperature"}),
     "tpk": (("time", "lat", "lon"), tas - 270),
     "area": (("lat", "lon"), area, {"units": "m2"})},
    coords={"time": days, "lat": lat_c, "lon": lon_c},
)
enc = {"tpk": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 10.0, "_FillValue": -32768}}
ds.chunk({"time": 50, "lat": 9, "lon": 3}).to_zarr(f"{out}/clim_v2", zarr_format=2, consolidated=True,
                                                   encoding=enc, mode="w")
steps = xr.date_range("2001-01-01", periods=4 * 730, freq="6h", calendar="noleap", use_cftime=True)
ds = xr.Dataset(
    {"pr": (("time", "x"), rng.random((4 * 730, 4)), {"units": "mm"})},
    coords={"time": steps, "x": np.arange(4.0)},
)
ds.chunk({"time": 97, "x": 4}).to_zarr(f"{out}/clim_noleap", zarr_format=3, mode="w")
# 10,000 chunk files in one directory (v2, "." separator, consolidated):
# its UnixFS view directory is a HAMT shard.
g = zarr.open_group(f"{out}/many_v2", mode="w", zarr_format=2)
a = g.create_array("x", shape=(100, 100), chunks=(1, 1), dtype="i2", fill_value=-1,
                   attributes={"_ARRAY_DIMENSIONS": ["y", "x"]})
a[:] = np.arange(10_000, dtype="i2").reshape(100, 100)
zarr.consolidate_metadata(f"{out}/many_v2")
print("ok")
