"""Rewrites exactly one chunk of v2_blosc/temp in place (a new version of
the dataset that differs in one chunk).

usage: change_one_chunk.py DATASET_DIR
"""
import sys

import zarr

g = zarr.open_group(sys.argv[1], mode="r+")
arr = g["temp"]
arr[0:10, 0:25, 0:20] = 1.0
print("ok")
