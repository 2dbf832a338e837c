"""Writes a Zarr v2 array with N chunk keys directly (tiny chunks), for the
`ls -lR` benchmark: what matters is the key count, not the bytes.

usage: make_many_keys.py OUTDIR [N]
"""
import json
import os
import sys

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
side = 1000
os.makedirs(f"{out}/x", exist_ok=True)
json.dump({"zarr_format": 2}, open(f"{out}/.zgroup", "w"))
json.dump({"zarr_format": 2, "shape": [n // side, side], "chunks": [1, 1], "dtype": "<i2",
           "compressor": None, "fill_value": 0, "filters": None, "order": "C",
           "dimension_separator": "/"}, open(f"{out}/x/.zarray", "w"))
for i in range(n // side):
    os.makedirs(f"{out}/x/{i}", exist_ok=True)
    for j in range(side):
        with open(f"{out}/x/{i}/{j}", "wb") as f:
            f.write(((i * side + j) % 32768).to_bytes(2, "little"))
print(out, n, "keys")
