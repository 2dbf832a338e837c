"""Prints {relative path: size} of every file under DIR as JSON (hidden
files included), using stat only: never reads file contents.

usage: tree_sizes.py DIR
"""
import json
import os
import sys

root = sys.argv[1]
out = {}
for d, _, files in os.walk(root):
    for f in files:
        p = os.path.join(d, f)
        out[os.path.relpath(p, root)] = os.stat(p).st_size
print(json.dumps(out, sort_keys=True))
