"""Writes a >= 1 GiB Zarr v3 dataset with zarr-python: float32 noise (which
barely compresses), zstd level 1, 4 MiB chunks -> ~1 MiB..4 MiB objects,
and a daily CF time coordinate (days since 2000-01-01) for climatologies.

usage: make_big.py OUTDIR [GIB] [SEED]  (datasets of different seeds share no chunk)
"""
import sys
import warnings

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

warnings.filterwarnings("ignore")
out = sys.argv[1]
gib = float(sys.argv[2]) if len(sys.argv) > 2 else 1.1
nt = int(gib * (1 << 30) / (4 * 512 * 512))
g = zarr.open_group(out, mode="w", zarr_format=3)
a = g.create_array("sst", shape=(nt, 512, 512), chunks=(4, 512, 512), dtype="f4",
                   compressors=ZstdCodec(level=1), fill_value=np.nan, dimension_names=["time", "y", "x"])
rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
for t in range(0, nt, 64):
    n = min(64, nt - t)
    a[t:t + n] = rng.standard_normal((n, 512, 512), dtype="f4")
t = g.create_array("time", shape=(nt,), chunks=(nt,), dtype="i8", fill_value=None,
                   dimension_names=["time"],
                   attributes={"units": "days since 2000-01-01", "calendar": "standard"})
t[:] = np.arange(nt)
print(out, nt, "time steps")
