"""The Python package against two live daemons, as a scientist uses it.

Env: SHOAL_HOME (daemon A, holding `clim` = DATASETS/clim_v2), SHOAL_HOME_B
(daemon B, connected to A), DATASETS (the zarr-python test datasets).
Every check asserts; the first failure ends the script non-zero.
"""

import os
import signal
import subprocess
import sys
import time

import fsspec
import numpy as np
import xarray as xr

import shoal

A, B, DATA = os.environ["SHOAL_HOME"], os.environ["SHOAL_HOME_B"], os.environ["DATASETS"]
a, b = shoal.Client(), shoal.Client(home=B)
src = xr.open_zarr(f"{DATA}/clim_v2").load()


def step(what):
    print(f"-- {what}", flush=True)


step("fsspec: the entry point, ls, info, cat, ranges, open")
assert fsspec.get_filesystem_class("shoal").__name__ == "ShoalFileSystem"
fs = fsspec.filesystem("shoal")
top = fs.ls("clim", detail=False)
assert "clim/.zgroup" in top and "clim/tas" in top, top
assert fs.info("clim/tas")["type"] == "directory"
raw = open(f"{DATA}/clim_v2/tas/0.0.0", "rb").read()
assert fs.info("clim/tas/0.0.0") == {"name": "clim/tas/0.0.0", "size": len(raw), "type": "file"}
assert fs.cat_file("clim/tas/0.0.0") == raw
assert fs.cat_file("clim/tas/0.0.0", start=3, end=20) == raw[3:20]
assert fs.cat_file("clim/tas/0.0.0", start=-7) == raw[-7:]
with fs.open("clim/tas/0.0.0", "rb") as f:
    f.seek(5)
    assert f.read(10) == raw[5:15]
root = a.log("clim")[0].root
assert fs.cat_file(f"{root}/tas/0.0.0") == raw, "by CID"
assert fs.cat_file("clim@1/tas/0.0.0") == raw, "by version"

step("xarray reads by name, CID and version, equal to the source")
for target in ["clim", root, "clim@1"]:
    xr.testing.assert_identical(xr.open_zarr(f"shoal://{target}").load(), src)
xr.testing.assert_identical(xr.open_dataset("shoal://clim", engine="zarr", chunks=None).load(), src)

step("pushdown: ds.shoal.mean and shoal.query against xarray's own")
ds = xr.open_zarr("shoal://clim")
got = ds.shoal.mean("time")
want = src[list(got.data_vars)].mean("time")
xr.testing.assert_allclose(got, want.astype("float64"), rtol=1e-5)
clim, report = shoal.query("clim", "tas", op="mean", dim="time", groupby="time.month", report=True)
xr.testing.assert_allclose(clim["tas"], src["tas"].groupby("time.month").mean().astype("float64"), rtol=1e-5)
assert report.chunks == report.chunks_local > 0 and report.network_bytes == 0, report
sel = shoal.query("clim", "tas", op="max", dim="time", sel={"time": slice("2000-03", "2000-05")})
xr.testing.assert_allclose(
    sel["tas"], src["tas"].sel(time=slice("2000-03", "2000-05")).max("time").astype("float64"), rtol=1e-5
)
w = shoal.query("clim", "tas", op="mean", dim=["lat", "lon"], weights="area")
xr.testing.assert_allclose(w["tas"], src["tas"].weighted(src["area"]).mean(["lat", "lon"]).astype("float64"), rtol=1e-5)
# From B, which holds nothing: A computes next to its chunks.
remote, rep_b = shoal.query(root, "tas", op="std", dim="time", client=b, report=True)
xr.testing.assert_allclose(remote["tas"], src["tas"].std("time").astype("float64"), rtol=1e-5)
assert rep_b.chunks_remote and rep_b.chunks_local == 0, rep_b

step("pins: the whole list, asked for in pages")
whole = a.pins()
paged = a.pins(page=1)
assert [p["root"] for p in paged] == [p["root"] for p in whole] and len(whole) >= 1, (paged, whole)
assert any("clim" in p["names"] for p in whole), whole

step("errors carry the daemon's kind and message")
try:
    shoal.query("clim", "tas", op="mean", dim="depth")
    raise AssertionError("a query over a missing dimension must fail")
except shoal.BadRequest as e:
    assert "depth" in str(e) and e.kind == "bad_request", e
for bad in ["shoal://no-such-name", "shoal://clim/no-such-group"]:
    try:
        xr.open_zarr(bad).load()
        raise AssertionError(f"{bad} must not open")
    except FileNotFoundError:
        pass
try:
    shoal.Client(home="/nonexistent/shoal").id()
    raise AssertionError("no daemon there")
except shoal.DaemonNotRunning as e:
    assert "shoal daemon" in str(e) and "/nonexistent/shoal/api.sock" in str(e), e

step("writes: to_zarr makes one version, appends move only new chunks")
part = src.drop_encoding()
part.isel(time=slice(0, 400)).to_zarr("shoal://written", mode="w", consolidated=True)
log = a.log("written")
assert [v.version for v in log] == [1], log
xr.testing.assert_identical(xr.open_zarr("shoal://written").load(), part.isel(time=slice(0, 400)))
part.isel(time=slice(400, None)).to_zarr("shoal://written", mode="a", append_dim="time")
log = a.log("written")
assert [v.version for v in log] == [2, 1], log
assert log[0].new_bytes < log[1].new_bytes, "an append stores only the new chunks (and metadata)"
xr.testing.assert_identical(xr.open_zarr("shoal://written").load(), part)

step("a failed write leaves the name at its version")


def explode(block):
    raise RuntimeError("the write broke halfway")


broken = part.chunk({"time": 100})
broken["tas"] = broken["tas"].map_blocks(explode, template=broken["tas"])
try:
    broken.to_zarr("shoal://written", mode="w")
    raise AssertionError("the write must fail")
except RuntimeError:
    pass
assert [v.version for v in a.log("written")] == [2, 1]
xr.testing.assert_identical(xr.open_zarr("shoal://written").load(), part)

step("a writer killed halfway leaves the name at its version, nothing half-visible")
writer = subprocess.Popen(
    [
        sys.executable,
        "-c",
        "import xarray as xr, numpy as np, time, sys\n"
        "ds = xr.Dataset({'v': (('t', 'x'), np.arange(400 * 50.).reshape(400, 50))}).chunk({'t': 1})\n"
        "from shoal.fs import ShoalFileSystem as F\n"
        "orig = F.pipe_file\n"
        "def slow(self, path, value, **kw):\n"
        "    orig(self, path, value, **kw)\n"
        "    print('staged', path, flush=True)\n"
        "    time.sleep(0.05)\n"
        "F.pipe_file = slow\n"
        "ds.to_zarr('shoal://written', mode='w')\n",
    ],
    stdout=subprocess.PIPE,
    text=True,
)
staged = 0
for line in writer.stdout:
    staged += line.startswith("staged")
    if staged >= 20:
        break
writer.send_signal(signal.SIGKILL)
writer.wait(30)
assert staged >= 20, "the writer staged keys before it was killed"
assert [v.version for v in a.log("written")] == [2, 1]
xr.testing.assert_identical(xr.open_zarr("shoal://written").load(), part)

step("an explicit transaction, and a conflicting writer refused")
with shoal.writing("tx") as store:
    part.isel(time=slice(0, 10)).to_zarr(store, mode="w")
    part.isel(time=slice(10, 20)).to_zarr(store, mode="a", append_dim="time")
assert [v.version for v in a.log("tx")] == [1], "one version for the block"
xr.testing.assert_identical(xr.open_zarr("shoal://tx").load(), part.isel(time=slice(0, 20)))
fs2 = fsspec.filesystem("shoal", skip_instance_cache=True)
fs2.pipe_file("tx/late", b"x")
part.isel(time=slice(20, 30)).to_zarr("shoal://tx", mode="a", append_dim="time")  # moves tx to v2
try:
    fs2.commit_write("tx")
    raise AssertionError("a stage over an old version must not commit")
except shoal.Conflict as e:
    assert "moved" in str(e), e
assert [v.version for v in a.log("tx")] == [2, 1]

step("staged writes refuse bad input and leave nothing")
st = a.stage_open("hostile")
for bad_key in ["../escape", "/abs", "a//b", ""]:
    try:
        a.stage_put(st["id"], bad_key, b"x")
        raise AssertionError(f"key {bad_key!r} must be refused")
    except (shoal.BadRequest, shoal.NotFound) as e:
        assert e.status in (400, 404), e
a.stage_put(st["id"], "zarr.json", b'{"zarr_format": 3, "node_type": "array"}')
try:
    a.stage_commit(st["id"])
    raise AssertionError("an array without shape must not commit")
except shoal.BadRequest as e:
    assert "shape" in str(e), e
try:
    a.log("hostile")
    raise AssertionError("nothing was committed")
except shoal.NotFound:
    pass
st = a.stage_open("hostile")
a.stage_put(st["id"], "c/0", b"chunk without metadata")
try:
    a.stage_commit(st["id"])
    raise AssertionError("a tree without zarr metadata must not commit")
except shoal.BadRequest as e:
    assert "zarr" in str(e).lower(), e
try:
    a.stage_put(st["id"], "c/1", b"x")
    raise AssertionError("a committed or refused stage is gone")
except shoal.NotFound:
    pass
gw = a.gateway
resp = gw.get("/v1/stage")
resp.read()
assert resp.status == 404, "writes are never on the TCP gateway"

step("the client: add, pin with progress, ls, publish, follow, providers, stats")
added = a.add(f"{DATA}/xr_v3", name="xr3")
assert added.keys > 0 and added.version == 1, added
keys = a.keys("xr3")
assert any(k.key.endswith("zarr.json") for k in keys)
assert a.stats()["blocks"] > 0
pub = a.publish("written")
peer = a.id()["peer_id"]
assert pub["publisher"] == peer, pub
pinned = b.pin(added.root, name="xr3-copy", progress=False)
assert pinned.root == added.root and pinned.fetched, pinned
xr.testing.assert_identical(
    xr.open_zarr("shoal://xr3-copy", storage_options={"home": B}).load(), xr.open_zarr(f"{DATA}/xr_v3").load()
)
b.follow(f"{peer}/written", local="followed")
deadline = time.time() + 90
while time.time() < deadline:
    f = [f for f in b.follows() if f["local"] == "followed"]
    if f and f[0]["seq"] >= 1:
        break
    time.sleep(0.5)
else:
    raise AssertionError(f"B did not take the followed version: {b.follows()}")
xr.testing.assert_identical(xr.open_zarr("shoal://followed", storage_options={"home": B}).load(), part)
assert peer in b.providers(a.log("written")[0].root)
print("pkg_check: all passed")
