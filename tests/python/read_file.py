"""Reads PATH fully; prints "ok <sha256>" or "errno <n>" (exit 0 either way,
so the caller decides what it expected).

usage: read_file.py PATH
"""
import hashlib
import sys

try:
    with open(sys.argv[1], "rb") as f:
        print("ok", hashlib.sha256(f.read()).hexdigest())
except OSError as e:
    print("errno", e.errno)
