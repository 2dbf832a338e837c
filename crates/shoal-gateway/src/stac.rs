//! The STAC API over the node's catalogue (`/stac/`): STAC 1.1.0 documents
//! as the STAC API 1.0.0 core, collections, features and item-search
//! specifications define them, with free-text search (`q`).
//!
//! - `/stac/`: the landing page (a Catalog: conformance, links to the
//!   collections, the search endpoint and every collection);
//! - `/stac/conformance`;
//! - `/stac/collections`, `/stac/collections/{id}`: one collection per
//!   publisher and name (`NAME.PUBLISHER`), extent over its versions;
//! - `/stac/collections/{id}/items[/{item}]`: one item per version
//!   (`NAME@SEQ`), newest first, paged;
//! - `/stac/search` (GET with query parameters, POST with a JSON body):
//!   `bbox`, `datetime`, `q`, `collections`, `ids`, `limit`, paged with a
//!   `next` link (`token`);
//! - `/stac/thumbnails/{root}.png`: the item's quick-look.
//!
//! Item assets: `zarr` (this gateway's `/zarr/ROOT/`, what xarray opens),
//! `shoal` (`shoal://ROOT`), `ipfs` (`ipfs://VIEW`, the UnixFS view) and
//! `thumbnail`. Times in a non-Gregorian calendar are given as the nearest
//! real date (`2000-02-30` of a 360-day calendar as `2000-02-29`); the
//! calendar's own dates are in `shoal:time_extent`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use shoal_core::Cid;
use shoal_node::catalogue::{Item, SearchQuery};

use crate::{failure, plain, Gw};

pub const STAC_VERSION: &str = "1.1.0";
/// Items a page holds unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 10;
/// Longest accepted search body (POST), bytes.
pub const MAX_SEARCH_BODY: usize = 64 << 10;

const CONFORMS: [&str; 8] = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0-rc.1/item-search#free-text",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
];

/// `http://HOST` as the client addressed this gateway (a Host header that
/// is not a plain host[:port] is not echoed).
pub(crate) fn base(headers: &HeaderMap, gw: &Gw) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    });
    match host {
        Some(h) => format!("http://{h}"),
        None => format!("http://{}", gw.settings.public_host),
    }
}

/// Percent-encodes a path segment (ids hold any character a name may).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded query value (`+` is a space).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pairs of a query string, decoded.
pub(crate) fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

/// A calendar date-time (`YYYY-MM-DDTHH:MM:SS`) as an RFC 3339 instant:
/// a day past the real month's end (360-day calendars) becomes its last.
pub(crate) fn rfc3339(t: &str) -> String {
    let (y, m, d) = (
        t.get(0..4).and_then(|s| s.parse::<i64>().ok()),
        t.get(5..7).and_then(|s| s.parse::<u32>().ok()),
        t.get(8..10).and_then(|s| s.parse::<u32>().ok()),
    );
    let (Some(y), Some(m), Some(d)) = (y, m, d) else {
        return format!("{t}Z");
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let last = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let rest = t.get(10..).unwrap_or("T00:00:00");
    format!("{y:04}-{:02}-{:02}{rest}Z", m.clamp(1, 12), d.clamp(1, last))
}

fn link(rel: &str, href: String, kind: &str) -> Value {
    json!({"rel": rel, "href": href, "type": kind})
}

const JSON: &str = "application/json";
/// Collections a `/stac/collections` page holds unless `limit` says otherwise.
const COLLECTIONS_PAGE: usize = 100;
/// Collections the landing page links as children.
const CHILD_LINKS: usize = 100;
const GEOJSON: &str = "application/geo+json";

fn geometry(b: [f64; 4]) -> Value {
    let [w, s, e, n] = b;
    let poly = |w: f64, e: f64| json!([[[w, s], [e, s], [e, n], [w, n], [w, s]]]);
    if w <= e {
        json!({"type": "Polygon", "coordinates": poly(w, e)})
    } else {
        json!({"type": "MultiPolygon", "coordinates": [poly(w, 180.0), poly(-180.0, e)]})
    }
}

fn collection_url(base: &str, it: &Item) -> String {
    format!("{base}/stac/collections/{}", seg(&it.collection()))
}

/// One version as a STAC item.
pub(crate) fn item(base: &str, it: &Item) -> Value {
    let s = &it.summary;
    let mut props = Map::new();
    let (a, b) = it.interval();
    if a == b {
        props.insert("datetime".into(), json!(rfc3339(&a)));
    } else {
        props.insert("datetime".into(), Value::Null);
        props.insert("start_datetime".into(), json!(rfc3339(&a)));
        props.insert("end_datetime".into(), json!(rfc3339(&b)));
    }
    props.insert("title".into(), json!(s.title));
    if !s.description.is_empty() {
        props.insert("description".into(), json!(s.description));
    }
    props.insert(
        "created".into(),
        json!(rfc3339(&shoal_node::catalogue::iso_of_unix(it.published))),
    );
    props.insert(
        "providers".into(),
        json!([{"name": if s.institution.is_empty() { it.publisher.clone() } else { s.institution.clone() }, "roles": ["producer", "host"]}]),
    );
    props.insert("shoal:publisher".into(), json!(it.publisher));
    props.insert("shoal:name".into(), json!(it.name));
    props.insert("shoal:version".into(), json!(it.seq));
    props.insert("shoal:root".into(), json!(it.root.to_string()));
    props.insert("shoal:size".into(), json!(s.size));
    props.insert("shoal:keys".into(), json!(s.keys));
    props.insert("shoal:zarr_format".into(), json!(s.zarr_format));
    if let Some((a, b)) = &s.time {
        props.insert(
            "shoal:time_extent".into(),
            json!({"start": a, "end": b, "calendar": s.calendar}),
        );
    }
    if !s.source.is_empty() {
        props.insert("shoal:source".into(), json!(s.source));
    }
    let vars: Map<String, Value> = s
        .variables
        .iter()
        .map(|v| {
            let mut o = json!({"dimensions": v.dims, "shape": v.shape, "data_type": v.dtype, "type": if v.coord { "coordinate" } else { "data" }});
            for (k, f) in [("unit", &v.units), ("long_name", &v.long_name), ("standard_name", &v.standard_name)] {
                if !f.is_empty() {
                    o[k] = json!(f);
                }
            }
            (v.name.clone(), o)
        })
        .collect();
    props.insert("shoal:variables".into(), Value::Object(vars));
    if s.more_variables > 0 {
        props.insert("shoal:more_variables".into(), json!(s.more_variables));
    }
    let root = it.root.to_string();
    let mut assets = Map::new();
    assets.insert(
        "zarr".into(),
        json!({"href": format!("{base}/zarr/{root}/"), "type": "application/vnd+zarr", "roles": ["data"], "title": "Zarr store over this gateway (xarray.open_zarr)"}),
    );
    assets.insert(
        "shoal".into(),
        json!({"href": format!("shoal://{root}"), "type": "application/vnd+zarr", "roles": ["data"], "title": "Zarr store through the shoal Python package"}),
    );
    if let Some(v) = s.view {
        assets.insert(
            "ipfs".into(),
            json!({"href": format!("ipfs://{v}"), "roles": ["data"], "title": "UnixFS view for IPFS tools"}),
        );
    }
    if !s.thumbnail.is_empty() {
        assets.insert(
            "thumbnail".into(),
            json!({"href": format!("{base}/stac/thumbnails/{root}.png"), "type": "image/png", "roles": ["thumbnail"], "title": format!("{} (mean over time)", s.thumbnail)}),
        );
    }
    let coll = collection_url(base, it);
    let mut out = json!({
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "id": it.id(),
        "collection": it.collection(),
        "geometry": Value::Null,
        "properties": props,
        "links": [
            link("self", format!("{coll}/items/{}", seg(&it.id())), GEOJSON),
            link("parent", coll.clone(), JSON),
            link("collection", coll, JSON),
            link("root", format!("{base}/stac/"), JSON),
        ],
        "assets": assets,
    });
    if let Some(b) = s.bbox {
        out["geometry"] = geometry(b);
        out["bbox"] = json!(b);
    }
    out
}

/// A collection: the newest version's description, the extent over the
/// versions in `all`.
fn collection(base: &str, newest: &Item, all: &[Item]) -> Value {
    let s = &newest.summary;
    let mut bbox: Option<[f64; 4]> = None;
    for it in all {
        if let Some(b) = it.summary.bbox {
            bbox = Some(match bbox {
                None => b,
                Some(a) if a[0] <= a[2] && b[0] <= b[2] => {
                    [a[0].min(b[0]), a[1].min(b[1]), a[2].max(b[2]), a[3].max(b[3])]
                }
                Some(a) => a,
            });
        }
    }
    let (mut lo, mut hi) = newest.interval();
    for it in all {
        let (a, b) = it.interval();
        lo = lo.min(a);
        hi = hi.max(b);
    }
    let url = collection_url(base, newest);
    let mut keywords: Vec<String> = s
        .variables
        .iter()
        .filter(|v| !v.coord)
        .flat_map(|v| [v.name.clone(), v.standard_name.clone()])
        .filter(|k| !k.is_empty())
        .collect();
    keywords.dedup();
    json!({
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "id": newest.collection(),
        "title": format!("{} ({})", s.title, newest.name),
        "description": if s.description.is_empty() { format!("{} published by {}", newest.name, newest.publisher) } else { s.description.clone() },
        "keywords": keywords,
        "license": "other",
        "providers": [{"name": newest.publisher, "roles": ["host"], "description": "the shoal daemon (peer id) that publishes it"}],
        "extent": {
            "spatial": {"bbox": [bbox.unwrap_or([-180.0, -90.0, 180.0, 90.0])]},
            "temporal": {"interval": [[rfc3339(&lo), rfc3339(&hi)]]},
        },
        "summaries": {"shoal:versions": [all.len()]},
        "links": [
            link("self", url.clone(), JSON),
            link("items", format!("{url}/items"), GEOJSON),
            link("parent", format!("{base}/stac/"), JSON),
            link("root", format!("{base}/stac/"), JSON),
        ],
    })
}

fn json_reply(v: &Value, kind: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

fn bad(msg: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, JSON)],
        json!({"code": "BadRequest", "description": msg.to_string()}).to_string(),
    )
        .into_response()
}

fn not_found(msg: impl std::fmt::Display) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, JSON)],
        json!({"code": "NotFound", "description": msg.to_string()}).to_string(),
    )
        .into_response()
}

pub(crate) async fn landing(State(gw): State<Arc<Gw>>, headers: HeaderMap) -> Response {
    gw.metrics.request("stac", 200);
    let base = base(&headers, &gw);
    let mut links = vec![
        link("self", format!("{base}/stac/"), JSON),
        link("root", format!("{base}/stac/"), JSON),
        link("conformance", format!("{base}/stac/conformance"), JSON),
        link("data", format!("{base}/stac/collections"), JSON),
        json!({"rel": "search", "href": format!("{base}/stac/search"), "type": GEOJSON, "method": "GET"}),
        json!({"rel": "search", "href": format!("{base}/stac/search"), "type": GEOJSON, "method": "POST"}),
    ];
    // The first collections as children (every one is under `data`, paged).
    for (it, _) in gw.node.catalogue().collections(0, CHILD_LINKS).0 {
        let mut l = link("child", collection_url(&base, &it), JSON);
        l["title"] = json!(it.summary.title);
        links.push(l);
    }
    json_reply(
        &json!({
            "type": "Catalog",
            "stac_version": STAC_VERSION,
            "id": "shoal",
            "title": "shoal swarm catalogue",
            "description": "The datasets this shoal daemon's swarm publishes: one collection per publisher and name, one item per version.",
            "conformsTo": CONFORMS,
            "links": links,
        }),
        JSON,
    )
}

pub(crate) async fn conformance(State(gw): State<Arc<Gw>>) -> Response {
    gw.metrics.request("stac", 200);
    json_reply(&json!({"conformsTo": CONFORMS}), JSON)
}

/// `/stac/collections`: a page of the collections (`limit`, default 100,
/// and `token` as for items), with `next`/`prev` links.
pub(crate) async fn collections(State(gw): State<Arc<Gw>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let base = base(&headers, &gw);
    let params = query_map(query.as_deref());
    let (limit, offset) = match page_of(&params, COLLECTIONS_PAGE) {
        Ok(p) => p,
        Err(e) => {
            gw.metrics.request("stac", 400);
            return bad(e);
        }
    };
    gw.metrics.request("stac", 200);
    let cat = gw.node.catalogue();
    let (cols, total) = cat.collections(offset, limit);
    let docs: Vec<Value> = cols
        .iter()
        .map(|(it, _)| collection(&base, it, &cat.collection(&it.collection())))
        .collect();
    let url = format!("{base}/stac/collections");
    let mut links = vec![
        link("self", url.clone(), JSON),
        link("root", format!("{base}/stac/"), JSON),
    ];
    if offset + cols.len() < total {
        links.push(link(
            "next",
            format!("{url}?limit={limit}&token=next:{}", offset + cols.len()),
            JSON,
        ));
    }
    if offset > 0 {
        links.push(link(
            "prev",
            format!("{url}?limit={limit}&token=next:{}", offset.saturating_sub(limit)),
            JSON,
        ));
    }
    json_reply(
        &json!({"collections": docs, "links": links, "numberMatched": total, "numberReturned": cols.len()}),
        JSON,
    )
}

pub(crate) async fn one_collection(State(gw): State<Arc<Gw>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let base = base(&headers, &gw);
    let versions = gw.node.catalogue().collection(&id);
    let Some(newest) = versions.first() else {
        gw.metrics.request("stac", 404);
        return not_found(format!("no collection {id:?}"));
    };
    gw.metrics.request("stac", 200);
    json_reply(&collection(&base, newest, &versions), JSON)
}

/// What a search asks, from GET parameters or a POST body, and the
/// parameters to repeat in its `next` link.
fn parse_search(params: &Map<String, Value>) -> Result<SearchQuery, String> {
    let list = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
            _ => Vec::new(),
        }
    };
    let mut q = SearchQuery {
        limit: DEFAULT_LIMIT,
        collections: list(params.get("collections")),
        ids: list(params.get("ids")),
        ..SearchQuery::default()
    };
    match params.get("q") {
        Some(Value::String(s)) if !s.trim().is_empty() => q.text = Some(s.clone()),
        Some(Value::Array(a)) => {
            q.text = Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","));
        }
        _ => {}
    }
    if let Some(b) = params.get("bbox") {
        let nums: Vec<f64> = match b {
            Value::String(s) => s
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("bbox {s:?}: expected four numbers"))?,
            Value::Array(a) => a.iter().filter_map(Value::as_f64).collect(),
            _ => Vec::new(),
        };
        // A 3-D bbox (with heights) keeps its horizontal part.
        q.bbox = Some(match nums.as_slice() {
            [w, s, e, n] => [*w, *s, *e, *n],
            [w, s, _, e, n, _] => [*w, *s, *e, *n],
            _ => return Err("bbox: expected west,south,east,north".into()),
        });
    }
    if let Some(dt) = params.get("datetime").and_then(Value::as_str) {
        let (a, b) = dt.split_once('/').unwrap_or((dt, dt));
        let open = |s: &str| s.is_empty() || s == "..";
        q.start = (!open(a)).then(|| a.to_string());
        q.end = (!open(b)).then(|| b.to_string());
        if q.start.is_none() && q.end.is_none() && dt.split_once('/').is_none() {
            return Err(format!("datetime {dt:?}: expected an instant or an interval"));
        }
    }
    (q.limit, q.offset) = page_of(params, DEFAULT_LIMIT)?;
    Ok(q)
}

/// A page's `limit` (clamped to 1..=MAX_LIMIT, `default` when absent) and
/// offset (from a `token` this gateway gave), from GET parameters or a POST
/// body.
fn page_of(params: &Map<String, Value>, default: usize) -> Result<(usize, usize), String> {
    let limit = match params.get("limit") {
        None => default,
        Some(Value::String(s)) => s.parse::<usize>().map_err(|_| format!("limit {s:?} is not a number"))?,
        Some(v) => v.as_u64().ok_or("limit is not a number")? as usize,
    };
    let offset = match params.get("token") {
        None => 0,
        Some(t) => {
            let s = t.as_str().map(String::from).unwrap_or_else(|| t.to_string());
            s.strip_prefix("next:")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("token {s:?} is not one this gateway gave"))?
        }
    };
    Ok((limit.clamp(1, shoal_node::catalogue::MAX_LIMIT), offset))
}

/// An ItemCollection of a search's page, with `next` (and `prev`) links
/// that repeat the search.
fn item_collection(
    base: &str,
    url: &str,
    method: &str,
    params: &Map<String, Value>,
    gw: &Gw,
    q: SearchQuery,
) -> Response {
    let found = match gw.node.catalogue().search(q.clone()) {
        Ok(f) => f,
        Err(e) => return bad(e),
    };
    let feats: Vec<Value> = found.items.iter().map(|it| item(base, it)).collect();
    let mut links = vec![link("root", format!("{base}/stac/"), JSON)];
    let page = |offset: usize, rel: &str| -> Value {
        let token = format!("next:{offset}");
        if method == "POST" {
            let mut body = params.clone();
            body.insert("token".into(), json!(token));
            json!({"rel": rel, "href": url, "type": GEOJSON, "method": "POST", "body": body})
        } else {
            let mut qs: Vec<String> = params
                .iter()
                .filter(|(k, _)| k.as_str() != "token")
                .map(|(k, v)| format!("{}={}", seg(k), seg(v.as_str().unwrap_or(&v.to_string()))))
                .collect();
            qs.push(format!("token={}", seg(&token)));
            json!({"rel": rel, "href": format!("{url}?{}", qs.join("&")), "type": GEOJSON, "method": "GET"})
        }
    };
    if q.offset + found.items.len() < found.matched {
        links.push(page(q.offset + found.items.len(), "next"));
    }
    if q.offset > 0 {
        links.push(page(q.offset.saturating_sub(q.limit), "prev"));
    }
    let n = feats.len();
    json_reply(
        &json!({
            "type": "FeatureCollection",
            "features": feats,
            "links": links,
            "numberMatched": found.matched,
            "numberReturned": n,
        }),
        GEOJSON,
    )
}

fn query_map(query: Option<&str>) -> Map<String, Value> {
    pairs(query).into_iter().map(|(k, v)| (k, Value::String(v))).collect()
}

pub(crate) async fn search_get(State(gw): State<Arc<Gw>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let base = base(&headers, &gw);
    let params = query_map(query.as_deref());
    let r = match parse_search(&params) {
        Ok(q) => item_collection(&base, &format!("{base}/stac/search"), "GET", &params, &gw, q),
        Err(e) => bad(e),
    };
    gw.metrics.request("stac_search", r.status().as_u16());
    r
}

pub(crate) async fn search_post(State(gw): State<Arc<Gw>>, headers: HeaderMap, body: Bytes) -> Response {
    let base = base(&headers, &gw);
    let r = if body.len() > MAX_SEARCH_BODY {
        bad(format!("a search body has at most {MAX_SEARCH_BODY} bytes"))
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(params)) => match parse_search(&params) {
                Ok(q) => item_collection(&base, &format!("{base}/stac/search"), "POST", &params, &gw, q),
                Err(e) => bad(e),
            },
            _ if body.is_empty() => {
                let params = Map::new();
                match parse_search(&params) {
                    Ok(q) => item_collection(&base, &format!("{base}/stac/search"), "POST", &params, &gw, q),
                    Err(e) => bad(e),
                }
            }
            _ => bad("the search body is not a JSON object"),
        }
    };
    gw.metrics.request("stac_search", r.status().as_u16());
    r
}

pub(crate) async fn items(
    State(gw): State<Arc<Gw>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let base = base(&headers, &gw);
    if gw.node.catalogue().collection(&id).is_empty() {
        gw.metrics.request("stac", 404);
        return not_found(format!("no collection {id:?}"));
    }
    let mut params = query_map(query.as_deref());
    params.remove("collections");
    params.remove("ids");
    let r = match parse_search(&params) {
        Ok(mut q) => {
            q.collections = vec![id.clone()];
            q.all_versions = true;
            let url = format!("{base}/stac/collections/{}/items", seg(&id));
            item_collection(&base, &url, "GET", &params, &gw, q)
        }
        Err(e) => bad(e),
    };
    gw.metrics.request("stac", r.status().as_u16());
    r
}

pub(crate) async fn one_item(
    State(gw): State<Arc<Gw>>,
    Path((id, item_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let base = base(&headers, &gw);
    let found = gw.node.catalogue().search(SearchQuery {
        collections: vec![id.clone()],
        ids: vec![item_id.clone()],
        limit: 1,
        ..SearchQuery::default()
    });
    match found.map(|f| f.items.into_iter().next()) {
        Ok(Some(it)) => {
            gw.metrics.request("stac", 200);
            json_reply(&item(&base, &it), GEOJSON)
        }
        _ => {
            gw.metrics.request("stac", 404);
            not_found(format!("no item {item_id:?} in {id:?}"))
        }
    }
}

pub(crate) async fn thumbnail(State(gw): State<Arc<Gw>>, Path(file): Path<String>) -> Response {
    let Some(root) = file.strip_suffix(".png").and_then(|c| c.parse::<Cid>().ok()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "thumbnails are /stac/thumbnails/{root CID}.png\n",
        );
    };
    let deadline = gw.settings.request_timeout.max(std::time::Duration::from_secs(120));
    let r = match tokio::time::timeout(deadline, gw.node.catalogue().thumbnail(root)).await {
        Ok(Ok(png)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, crate::IMMUTABLE),
            ],
            png,
        )
            .into_response(),
        Ok(Err(e)) => failure(&e),
        Err(_) => plain(StatusCode::GATEWAY_TIMEOUT, "the quick-look took too long; retry\n"),
    };
    gw.metrics.request("stac_thumbnail", r.status().as_u16());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates_become_real_instants_and_queries_decode() {
        assert_eq!(rfc3339("2000-02-30T00:00:00"), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339("2001-02-30T06:00:00"), "2001-02-28T06:00:00Z");
        assert_eq!(rfc3339("2001-04-31T00:00:00"), "2001-04-30T00:00:00Z");
        assert_eq!(unescape("sea+surface%2C%20ice"), "sea surface, ice");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        let p = query_map(Some("bbox=-10,0,10,5&datetime=2000-01-01/..&q=sst&limit=5"));
        let q = parse_search(&p).unwrap();
        assert_eq!(q.bbox, Some([-10.0, 0.0, 10.0, 5.0]));
        assert_eq!(q.start.as_deref(), Some("2000-01-01"));
        assert_eq!(q.end, None);
        assert_eq!(q.limit, 5);
        assert!(parse_search(&query_map(Some("bbox=1,2"))).is_err());
        assert!(parse_search(&query_map(Some("token=elsewhere"))).is_err());
        assert_eq!(parse_search(&query_map(Some("token=next%3A20"))).unwrap().offset, 20);
        assert_eq!(page_of(&query_map(None), 100), Ok((100, 0)));
        assert_eq!(
            page_of(&query_map(Some("limit=99999&token=next:7")), 100),
            Ok((1000, 7))
        );
        assert_eq!(page_of(&query_map(Some("limit=0")), 100), Ok((1, 0)));
        assert!(page_of(&query_map(Some("limit=ten")), 100).is_err());
    }
}
