"""Search latency of a gateway's STAC API against a static catalogue.

The static catalogue is what a group without a search service publishes:
every item in one JSON file on a web server (nginx here), which the client
downloads, parses and filters itself (as intake catalogues and static STAC
do). Both answer the same queries with the same rules (words in the
name/title/description/institution/source/variables, bbox meets, interval
overlaps); the counts are compared. Interleaved: each round runs every
query against both, then the floor (a /stac/conformance round trip) and
the client-side filter alone (the static catalogue already in memory).

usage: stac_latency.py GATEWAY_URL STATIC_URL ROUNDS REQS
  STATIC_URL/items.json must exist (write it with --dump FILE first):
  stac_latency.py --dump GATEWAY_URL FILE
prints one JSON object: per query, medians over rounds of p50 and p95 (ms).
"""
import json
import statistics
import sys
import time

import requests

QUERIES = {
    "text": {"q": "sea ice"},
    "bbox": {"bbox": "-60,10,-30,40"},
    "datetime": {"datetime": "1990-01-01T00:00:00Z/1995-12-31T00:00:00Z"},
    "combined": {"q": "temperature", "bbox": "-60,10,-30,40", "datetime": "1990-01-01T00:00:00Z/1995-12-31T00:00:00Z"},
    "first page": {},
}
LIMIT = 10


def dump(base, out):
    s, items, url = requests.Session(), [], f"{base}/stac/search?limit=1000"
    while url:
        page = s.get(url, timeout=30).json()
        items += page["features"]
        url = next((l["href"] for l in page["links"] if l["rel"] == "next"), None)
    json.dump({"type": "FeatureCollection", "features": items}, open(out, "w"))
    print(len(items), "items")


def interval(p):
    if p.get("datetime"):
        return p["datetime"], p["datetime"]
    return p["start_datetime"], p["end_datetime"]


def meets(a, b):
    def spans(w, e):
        return [(w, e)] if w <= e else [(w, 180.0), (-180.0, e)]
    if a[1] > b[3] or b[1] > a[3]:
        return False
    return any(x[0] <= y[1] and y[0] <= x[1] for x in spans(a[0], a[2]) for y in spans(b[0], b[2]))


def hay(it):
    p = it["properties"]
    parts = [p["shoal:name"], p["title"], p.get("description", ""), p["providers"][0]["name"], p.get("shoal:source", "")]
    for k, v in p["shoal:variables"].items():
        parts += [k, v.get("long_name", ""), v.get("standard_name", "")]
    return "\n".join(parts).lower()


def local(items, params):
    words = params.get("q", "").lower().split()
    bbox = [float(x) for x in params["bbox"].split(",")] if "bbox" in params else None
    start, end = params["datetime"].split("/") if "datetime" in params else (None, None)
    hits = []
    for it in items:
        if words and not all(w in it["_hay"] for w in words):
            continue
        if bbox and not ("bbox" in it and meets(it["bbox"], bbox)):
            continue
        if start:
            a, b = interval(it["properties"])
            if b < start or a > end:
                continue
        hits.append(it)
    return hits


def static(s, url, params):
    items = s.get(url, timeout=60).json()["features"]
    for it in items:
        it["_hay"] = hay(it)
    return local(items, params)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def main():
    if sys.argv[1] == "--dump":
        return dump(sys.argv[2].rstrip("/"), sys.argv[3])
    base, static_url, rounds, reqs = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s = requests.Session()
    memory = s.get(static_url, timeout=60).json()["features"]
    for it in memory:
        it["_hay"] = hay(it)
    res = {name: {k: [] for k in ("shoal50", "shoal95", "static50", "memory50")} for name in QUERIES}
    floor, counts = [], {}
    for _ in range(rounds):
        for name, params in QUERIES.items():
            t = []
            for _ in range(reqs):
                t0 = time.perf_counter()
                r = s.get(f"{base}/stac/search", params={**params, "limit": LIMIT}, timeout=30)
                r.raise_for_status()
                page = r.json()
                t.append(time.perf_counter() - t0)
            res[name]["shoal50"].append(pct(t, 0.5))
            res[name]["shoal95"].append(pct(t, 0.95))
            t = []
            for _ in range(max(3, reqs // 20)):
                t0 = time.perf_counter()
                hits = static(s, static_url, params)
                t.append(time.perf_counter() - t0)
            res[name]["static50"].append(pct(t, 0.5))
            t = []
            for _ in range(reqs):
                t0 = time.perf_counter()
                local(memory, params)
                t.append(time.perf_counter() - t0)
            res[name]["memory50"].append(pct(t, 0.5))
            counts[name] = (page["numberMatched"], len(hits))
        t = []
        for _ in range(reqs):
            t0 = time.perf_counter()
            s.get(f"{base}/stac/conformance", timeout=30).raise_for_status()
            t.append(time.perf_counter() - t0)
        floor.append(pct(t, 0.5))
    out = {name: {k: statistics.median(v) for k, v in r.items()} | {"matched": counts[name]} for name, r in res.items()}
    out["floor50"] = statistics.median(floor)
    out["entries"] = len(memory)
    print(json.dumps(out))


main()
