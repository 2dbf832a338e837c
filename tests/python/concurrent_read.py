"""16 threads read random chunk files (whole files and random ranges) from
MOUNTED and compare them with ORIG. Exits non-zero on any difference.

usage: concurrent_read.py ORIG MOUNTED [READS_PER_THREAD]
"""
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor

orig, mounted = sys.argv[1], sys.argv[2]
per = int(sys.argv[3]) if len(sys.argv) > 3 else 30
files = []
for d, _, fs in os.walk(orig):
    for f in fs:
        files.append(os.path.relpath(os.path.join(d, f), orig))


def worker(seed):
    rng = random.Random(seed)
    for _ in range(per):
        rel = rng.choice(files)
        want = open(os.path.join(orig, rel), "rb").read()
        with open(os.path.join(mounted, rel), "rb") as f:
            if rng.random() < 0.5:
                got = f.read()
                assert got == want, f"{rel} differs"
            else:
                off = rng.randrange(0, max(1, len(want)))
                n = rng.randrange(1, 65536)
                f.seek(off)
                got = f.read(n)
                assert got == want[off:off + n], f"{rel}@{off}+{n} differs"
    return per


with ThreadPoolExecutor(16) as ex:
    total = sum(ex.map(worker, range(16)))
print(f"ok {total} reads")
