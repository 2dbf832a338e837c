"""Checks a gateway's STAC API as a scientist's client sees it: pystac-client
searches by bbox, datetime and text (POST and GET, paged), every document
validates against the STAC 1.1.0 JSON schemas (pystac's bundled copies),
and an item's Zarr asset opens with xarray.

usage: stac_check.py GATEWAY_URL
  The gateway's swarm holds make_catalogue_datasets.py's two datasets,
  published as "atlantic" and "arctic".
"""
import sys
import warnings

import numpy as np
import pystac
import pystac.validation
import pystac_client
import requests
import xarray as xr

warnings.filterwarnings("ignore")
base = sys.argv[1].rstrip("/")

client = pystac_client.Client.open(f"{base}/stac/")
assert client.conforms_to("ITEM_SEARCH"), "the landing page does not conform to item-search"
assert client.conforms_to("COLLECTIONS")
pystac.validation.validate_dict(requests.get(f"{base}/stac/").json())

cols = {c.id.split(".")[0]: c for c in client.get_collections()}
assert set(cols) >= {"atlantic", "arctic"}, sorted(cols)
for c in cols.values():
    c.validate()


def search(q=None, **kw):
    # pystac-client 0.9 sends free text (`q`) only for collection search;
    # an item search gets it added to the parameters it sends (POST body or
    # GET query), as the free-text extension defines it.
    s = client.search(**kw)
    if q is not None:
        s._parameters["q"] = q
    return s


def ids(**kw):
    return sorted(i.id for i in search(**kw).items())


assert ids(bbox=[-60, 10, -30, 40]) == ["atlantic@1"], ids(bbox=[-60, 10, -30, 40])
assert ids(bbox=[100, 70, 120, 80]) == ["arctic@1"]
assert ids(bbox=[10, -50, 20, -40]) == []
assert ids(datetime="2010-06-01/2010-07-01") == ["arctic@1"]
assert ids(datetime="2000-01-05") == ["atlantic@1"]
assert ids(datetime="1990-01-01/1999-12-31") == []
assert ids(q="ice") == ["arctic@1"]
assert ids(q="sea surface temperature") == ["atlantic@1"]
assert ids(q="sea") == ["arctic@1", "atlantic@1"], "both hold a sea variable"
assert ids(q="sea", bbox=[-60, 10, -30, 40], datetime="2000-01-01/2000-02-01") == ["atlantic@1"]
assert ids(q="sea", method="GET") == ["arctic@1", "atlantic@1"]
assert ids(datetime="2010-06-01/..", method="GET") == ["arctic@1"]
# Paging: one item a page, followed through the next links.
paged = search(q="sea", limit=1)
pages = list(paged.pages())
assert [len(p.items) for p in pages] == [1, 1], [len(p.items) for p in pages]
assert paged.matched() == 2
pages = list(search(q="sea", limit=1, method="GET").pages())
assert [len(p.items) for p in pages] == [1, 1], "GET pages"

items = {i.id: i for i in search(q="sea").items()}
for it in items.values():
    it.validate()
    assert it.assets["thumbnail"].media_type == "image/png"
    png = requests.get(it.assets["thumbnail"].href, timeout=120)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n", png.status_code
    assert it.assets["shoal"].href.startswith("shoal://")
    assert it.assets["ipfs"].href.startswith("ipfs://")

atl = items["atlantic@1"]
assert atl.properties["start_datetime"] == "2000-01-01T00:00:00Z", atl.properties
assert atl.properties["end_datetime"] == "2000-01-20T00:00:00Z"
assert atl.bbox == [-79.5, 0.5, -0.5, 59.5], atl.bbox
assert atl.properties["shoal:variables"]["sst"]["unit"] == "K"
ds = xr.open_zarr(atl.assets["zarr"].href)
assert ds.title == "North Atlantic sea surface temperature"
mean = float(ds.sst.mean())
assert abs(mean - 294.5) < 1e-3, mean

arc = items["arctic@1"]
# A 360-day calendar's 2010-12-30 is a real date; its own dates are kept.
assert arc.properties["end_datetime"] == "2010-12-30T00:00:00Z", arc.properties
assert arc.properties["shoal:time_extent"]["calendar"] == "360_day"
ds = xr.open_zarr(arc.assets["zarr"].href, use_cftime=True)
assert ds.time.values[-1].calendar == "360_day"
assert np.isclose(float(ds.siconc.max()), 1.0)
print("ok")
