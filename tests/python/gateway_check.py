"""Real-client checks of shoal's HTTP gateway (xarray, zarr-python and
fsspec over aiohttp; requests; prometheus_client).

usage:
  gateway_check.py xr URL ORIG              xr.open_zarr(URL) equals ORIG
  gateway_check.py zarr URL ORIG ARRAY      zarr.open_group(URL)[ARRAY] equals ORIG's
  gateway_check.py dask URL ORIG VAR        a 16-thread dask mean of VAR equals ORIG's
  gateway_check.py http BASE KEY FILE       Range/HEAD/ETag/404/405/416 on BASE/KEY (bytes of FILE)
  gateway_check.py chunks BASE ORIG ARRAY ORDER
                                            GETs every chunk of a v2 ARRAY one at a time (one
                                            keep-alive connection) in ORDER (c, reverse,
                                            shuffled or pairs), each equal to ORIG's file; prints
                                            the count
  gateway_check.py metrics URL              parses /metrics; prints the samples as JSON
  gateway_check.py get URL                  prints "status N" or "error ..." (a hang guard wraps it)
  gateway_check.py stream URL SIZE          reads URL in pieces; prints "started" once the
                                            head is in, then "complete"/"short N"/"error ..."
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")
cmd = sys.argv[1]


def fail(msg):
    print(msg)
    sys.exit(1)


if cmd == "xr":
    import xarray as xr
    url, orig = sys.argv[2:4]
    got = xr.open_zarr(url).load()
    want = xr.open_zarr(orig).load()
    if not got.data_vars:
        fail(f"{url} opened as an empty dataset")
    xr.testing.assert_identical(got, want)
    print("ok", sorted(got.data_vars))

elif cmd == "zarr":
    import numpy as np
    import zarr
    url, orig, array = sys.argv[2:5]
    got = zarr.open_group(url, mode="r")[array][:]
    want = zarr.open_group(orig, mode="r")[array][:]
    np.testing.assert_array_equal(got, want)
    print("ok", got.shape)

elif cmd == "dask":
    import dask
    import numpy as np
    import xarray as xr
    url, orig, var = sys.argv[2:5]
    with dask.config.set(scheduler="threads", num_workers=16):
        ds = xr.open_zarr(url, chunks={})
        got = ds[var].mean().compute().values
    want = xr.open_zarr(orig)[var].mean().compute().values
    np.testing.assert_allclose(got, want)
    print("ok", float(got))

elif cmd == "chunks":
    import os
    import random
    import re
    import requests
    base, orig, array, order = sys.argv[2:6]
    keys = [k for k in os.listdir(f"{orig}/{array}") if re.fullmatch(r"[0-9]+(\.[0-9]+)*", k)]
    keys.sort(key=lambda k: tuple(int(i) for i in k.split(".")))
    if order == "reverse":
        keys.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(keys)
    elif order == "pairs":
        # Neighbours along the last dimension two by two (the second, then
        # the first: dask's order within a block), the pairs in a jumping
        # order: no pair starts next to the one before it.
        pairs = [keys[i:i + 2][::-1] for i in range(0, len(keys) - 1, 2)]
        keys = [k for p in pairs[0::2] + pairs[1::2] for k in p]
    with requests.Session() as s:
        for k in keys:
            r = s.get(f"{base}/{array}/{k}", timeout=60)
            if r.status_code != 200:
                fail(f"{k}: status {r.status_code}")
            with open(f"{orig}/{array}/{k}", "rb") as f:
                if r.content != f.read():
                    fail(f"{k}: the bytes differ")
    print(len(keys))

elif cmd == "http":
    import requests
    base, key, path = sys.argv[2:5]
    data = open(path, "rb").read()
    n = len(data)
    url = f"{base}/{key}"
    r = requests.get(url, timeout=60)
    if r.status_code != 200 or r.content != data:
        fail(f"GET {url}: {r.status_code}, {len(r.content)} bytes of {n}")
    for h in ["ETag", "Cache-Control", "Accept-Ranges", "Content-Length"]:
        if h not in r.headers:
            fail(f"GET {url}: no {h} header: {dict(r.headers)}")
    if r.headers["Accept-Ranges"] != "bytes" or int(r.headers["Content-Length"]) != n:
        fail(f"GET {url}: headers {dict(r.headers)}")
    etag = r.headers["ETag"]
    for rng, lo, hi in [(f"bytes=1-{n // 2}", 1, n // 2 + 1), (f"bytes={n // 3}-", n // 3, n), ("bytes=-7", n - 7, n),
                        (f"bytes=0-{n + 100}", 0, n)]:
        r = requests.get(url, headers={"Range": rng}, timeout=60)
        if r.status_code != 206 or r.content != data[lo:hi]:
            fail(f"{rng}: {r.status_code}, {len(r.content)} bytes, want {hi - lo}")
        if r.headers.get("Content-Range") != f"bytes {lo}-{hi - 1}/{n}":
            fail(f"{rng}: Content-Range {r.headers.get('Content-Range')}")
    r = requests.get(url, headers={"Range": f"bytes={n}-"}, timeout=60)
    if r.status_code != 416 or r.headers.get("Content-Range") != f"bytes */{n}":
        fail(f"unsatisfiable range: {r.status_code} {dict(r.headers)}")
    r = requests.head(url, timeout=60)
    if r.status_code != 200 or int(r.headers["Content-Length"]) != n or r.content:
        fail(f"HEAD: {r.status_code} {dict(r.headers)}")
    r = requests.get(url, headers={"If-None-Match": etag}, timeout=60)
    if r.status_code != 304:
        fail(f"If-None-Match: {r.status_code}")
    for missing in [f"{base}/no/such/key", f"{base}/.zmissing", base.rsplit("/", 1)[0] + "/nosuchdataset/x"]:
        r = requests.get(missing, timeout=60)
        if r.status_code != 404:
            fail(f"{missing}: {r.status_code}, want 404")
    for method in ["PUT", "POST", "DELETE", "PATCH"]:
        r = requests.request(method, url, data=b"x" * 1000, timeout=60)
        if r.status_code != 405:
            fail(f"{method}: {r.status_code}, want 405")
    r = requests.get(f"{base}/?format=json", timeout=60)
    listing = r.json()
    if r.status_code != 200 or not listing["entries"]:
        fail(f"JSON listing: {r.status_code} {r.text[:200]}")
    r = requests.get(base + "/", timeout=60)
    if r.status_code != 200 or "<a href=" not in r.text:
        fail(f"HTML listing: {r.status_code} {r.text[:200]}")
    print("ok", etag, r.headers.get("Cache-Control"))

elif cmd == "metrics":
    import requests
    from prometheus_client.parser import text_string_to_metric_families
    r = requests.get(sys.argv[2], timeout=60)
    if r.status_code != 200:
        fail(f"/metrics: {r.status_code}")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + ("{" + labels + "}" if labels else "")] = s.value
    print(json.dumps(out))

elif cmd == "get":
    import requests
    try:
        r = requests.get(sys.argv[2], timeout=120)
        print("status", r.status_code, len(r.content))
    except Exception as e:  # noqa: BLE001 - the outcome is what is checked
        print("error", type(e).__name__)

elif cmd == "stream":
    import requests
    url, size = sys.argv[2], int(sys.argv[3])
    try:
        r = requests.get(url, stream=True, timeout=60)
        print("started", r.status_code, flush=True)
        got = 0
        for piece in r.iter_content(1 << 16):
            got += len(piece)
        print("complete" if got == size and r.status_code == 200 else f"short {got} status {r.status_code}", flush=True)
    except Exception as e:  # noqa: BLE001
        print("error", type(e).__name__, flush=True)

else:
    fail(f"unknown command {cmd}")
