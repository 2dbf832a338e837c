//! shoal-gateway: the read-only HTTP face of a node.
//!
//! - `GET`/`HEAD /zarr/{name-or-CID}/{key...}`: a key's bytes through the
//!   node's block source (local store, then peers; every block verified),
//!   single byte ranges, ETags, immutable caching under a CID;
//! - consolidated metadata synthesised for datasets stored without it, and
//!   directory indexes (HTML links for fsspec's `ls`, `?format=json`);
//! - `GET`/`HEAD /ipfs/{CID}/{path...}`: the dataset's UnixFS view as an
//!   IPFS path and trustless gateway (`?format=raw`, `?format=car`; see
//!   [`ipfs`]);
//! - `GET /metrics`: the Prometheus text exposition;
//! - `/stac/...`: the swarm's catalogue as a STAC API (see [`stac`]), and
//!   at `/` the same catalogue as a browse page with a search form.
//!
//! Nothing here writes: add, pin, gc and the rest stay on the daemon's Unix
//! socket. Bounds: concurrent requests, blocks fetched ahead per response
//! (a shard is streamed, never held whole), a deadline to the response
//! head, path length. The rules are in docs/SEMANTICS.md.

mod ahead;
mod browse;
mod hot;
mod idle;
mod ipfs;
pub mod meta;
pub mod metrics;
pub mod range;
pub mod stac;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use shoal_core::manifest::Content;
use shoal_core::Cid;
use shoal_node::{Dir, Error, KeyReader, Node};
use tokio::sync::Semaphore;

use crate::metrics::{Exposition, GatewayMetrics, Snapshot};
use crate::range::Ranged;

/// The gateway's bounds.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests served at once; more wait (up to `request_timeout`) for a
    /// slot, then get 503.
    pub max_requests: usize,
    /// Deadline to the response head: resolving the dataset, the key and
    /// its first block (the block source's own deadline bounds each block).
    pub request_timeout: Duration,
    /// Blocks fetched ahead of the client per response.
    pub blocks_ahead: usize,
    /// Longest accepted request path, bytes.
    pub max_path: usize,
    /// Most children a directory index lists.
    pub dir_limit: usize,
    /// A connection none of whose reads or writes moved a byte for this long
    /// is closed (a client that stops reading gives its request slot back;
    /// an idle keep-alive connection goes).
    pub idle_timeout: Duration,
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Bytes of chunk keys read ahead of clients reading an array's chunks
    /// in order (held or under way; 0: off). See [`ahead`].
    pub readahead_bytes: u64,
    /// Bytes of whole keys served lately kept in memory, verified, for the
    /// next request of the same key (0: off). See [`hot`].
    pub hot_cache_bytes: u64,
    /// Most leaves one `/ipfs/` file answer may list (a 1 MiB-leaf file of
    /// a million leaves is 1 TiB; a file node that links one node 20,000
    /// times asks for more and is refused). The node's walk limits bound
    /// it further.
    pub max_leaves: u64,
    /// `host:port` put in the catalogue's absolute links when a request
    /// carries no usable Host header (set to the bound address by
    /// [`start`] when empty).
    pub public_host: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_requests: 256,
            request_timeout: Duration::from_secs(60),
            blocks_ahead: 8,
            max_path: 4096,
            dir_limit: 10_000,
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_leaves: 1 << 20,
            readahead_bytes: 64 << 20,
            hot_cache_bytes: hot::auto_bytes(),
            public_host: String::new(),
        }
    }
}

/// Immutable for a year: what `/zarr/CID/...` serves never changes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A name can move to another root.
const MOVABLE: &str = "public, max-age=60";
/// Datasets whose synthesised consolidated metadata is kept.
const CONSOLIDATED_CACHE: usize = 64;

/// Synthesised consolidated metadata by root, with the root's Zarr format,
/// and the roots in insertion order.
type Consolidated = (HashMap<Cid, (u8, Option<Bytes>)>, VecDeque<Cid>);

/// The bytes of a byte range of a representation, as a stream of pieces.
type Pieces = futures::stream::BoxStream<'static, shoal_node::Result<Bytes>>;

struct Gw {
    node: Node,
    settings: Settings,
    permits: Arc<Semaphore>,
    metrics: GatewayMetrics,
    exposition: Exposition,
    /// Synthesised consolidated metadata by root (roots are immutable, so
    /// entries never go stale); the oldest leaves first.
    consolidated: Mutex<Consolidated>,
    ahead: Arc<ahead::Ahead>,
    hot: Arc<hot::Hot>,
}

/// A running gateway: its bound address, stopped when dropped or stopped.
pub struct Gateway {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets running responses finish (bounded by `grace`).
    pub async fn stop(mut self, grace: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `listen` (port 0: any free port) and serves the node on it.
pub async fn start(node: Node, listen: SocketAddr, mut settings: Settings) -> std::io::Result<Gateway> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    if settings.public_host.is_empty() {
        settings.public_host = addr.to_string();
    }
    let listener = idle::Listener::new(listener, settings.idle_timeout, settings.max_connections);
    let app = router(node, settings);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the HTTP gateway stopped");
        }
    });
    tracing::info!("HTTP gateway on http://{addr}");
    Ok(Gateway {
        addr,
        stop: Some(stop),
        task,
    })
}

/// The gateway's routes over `node`.
pub fn router(node: Node, settings: Settings) -> Router {
    let metrics = GatewayMetrics::default();
    let hot = Arc::new(hot::Hot::new(
        settings.hot_cache_bytes,
        metrics.hot_hits.clone(),
        metrics.hot_bytes.clone(),
    ));
    let ahead = ahead::Ahead::new(
        settings.readahead_bytes,
        hot.clone(),
        metrics.readahead_hits.clone(),
        metrics.readahead_late.clone(),
        metrics.readahead_wasted.clone(),
    );
    let ahead = Arc::new(ahead);
    ahead.sweep();
    let gw = Arc::new(Gw {
        ahead,
        hot,
        exposition: Exposition::new(&node, &metrics),
        permits: Arc::new(Semaphore::new(settings.max_requests.max(1))),
        node,
        settings,
        metrics,
        consolidated: Mutex::new((HashMap::new(), VecDeque::new())),
    });
    Router::new()
        .route("/zarr/{*path}", any(zarr))
        .route("/zarr", any(zarr_top))
        .route("/zarr/", any(zarr_top))
        .route("/metrics", get(metrics_page))
        .route("/ipfs/{*path}", any(ipfs::ipfs))
        .route("/", get(browse::page))
        .route("/stac", get(stac::landing))
        .route("/stac/", get(stac::landing))
        .route("/stac/conformance", get(stac::conformance))
        .route("/stac/collections", get(stac::collections))
        .route("/stac/collections/{id}", get(stac::one_collection))
        .route("/stac/collections/{id}/items", get(stac::items))
        .route("/stac/collections/{id}/items/{item}", get(stac::one_item))
        .route(
            "/stac/search",
            get(stac::search_get)
                .post(stac::search_post)
                .layer(axum::extract::DefaultBodyLimit::max(stac::MAX_SEARCH_BODY)),
        )
        .route("/stac/thumbnails/{file}", get(stac::thumbnail))
        .fallback(|| async {
            plain(
                StatusCode::NOT_FOUND,
                "not found: the gateway serves /zarr/{name-or-CID}/{key}, /ipfs/{CID}/{path}, /stac/, / (the catalogue) and /metrics\n",
            )
        })
        .with_state(gw)
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

/// The status a node error answers, and its message.
fn failure(e: &Error) -> Response {
    let status = match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Unavailable(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::Corrupt(_) => StatusCode::BAD_GATEWAY,
        Error::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    plain(status, format!("{e}\n"))
}

async fn metrics_page(State(gw): State<Arc<Gw>>) -> Response {
    let mut s = Snapshot::default();
    if let Ok(st) = gw.node.stats().await {
        s.blocks = st.blocks;
        s.live_bytes = st.live_bytes;
        s.segment_bytes = st.segment_bytes;
        s.segments = st.segments;
        s.pins = st.pins;
        s.quota = st.quota;
    }
    if let Ok(p) = gw.node.peers().await {
        s.peers = p.len() as u64;
    }
    gw.metrics.request("metrics", 200);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.exposition.render(s),
    )
        .into_response()
}

async fn zarr_top(method: Method) -> Response {
    if !matches!(method, Method::GET | Method::HEAD) {
        return not_allowed();
    }
    plain(StatusCode::NOT_FOUND, "give a dataset: /zarr/{name-or-CID}/{key}\n")
}

fn not_allowed() -> Response {
    let mut r = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "the gateway is read-only: GET and HEAD only\n",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

async fn zarr(
    State(gw): State<Arc<Gw>>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    timed(&gw, "zarr", serve(&gw, &method, &path, query.as_deref(), &headers)).await
}

/// Runs a route's answer, counting it by route and status and timing it.
async fn timed(gw: &Gw, route: &str, answer: impl std::future::Future<Output = Response>) -> Response {
    let started = Instant::now();
    let r = answer.await;
    gw.metrics.request(route, r.status().as_u16());
    gw.metrics.request_seconds.observe(started.elapsed().as_secs_f64());
    r
}

async fn serve(gw: &Arc<Gw>, method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return not_allowed();
    }
    if path.len() > gw.settings.max_path {
        return plain(
            StatusCode::URI_TOO_LONG,
            format!("path longer than {} bytes\n", gw.settings.max_path),
        );
    }
    let deadline = gw.settings.request_timeout;
    let permit = match tokio::time::timeout(deadline, gw.permits.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            let mut r = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway is at its request limit; retry\n",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    };
    let (head, rest) = path.split_once('/').unwrap_or((path, ""));
    let work = async {
        let target = gw.node.datasets().resolve(head).await?;
        let cache = if target.name.is_some() { MOVABLE } else { IMMUTABLE };
        let want_dir = rest.is_empty() || rest.ends_with('/');
        let key = rest.trim_matches('/');
        if let Some(doc) = consolidated(gw, target.root, key).await? {
            return Ok(Reply::Bytes(doc, cache));
        }
        if !want_dir {
            match gw.node.datasets().open(target.root, key).await {
                Ok(r) => return Ok(Reply::Key(r, cache)),
                Err(Error::NotFound(m)) => {
                    // Not a key; perhaps a directory, else absent.
                    return match gw.node.datasets().dir(target.root, key, gw.settings.dir_limit).await? {
                        Some(d) => Ok(Reply::Dir(target.root, head.to_string(), key.to_string(), d, cache)),
                        None => Err(Error::NotFound(m)),
                    };
                }
                Err(e) => return Err(e),
            }
        }
        match gw.node.datasets().dir(target.root, key, gw.settings.dir_limit).await? {
            Some(d) => Ok(Reply::Dir(target.root, head.to_string(), key.to_string(), d, cache)),
            None => Err(Error::NotFound(format!(
                "no key or directory {key:?} in dataset {}",
                target.root
            ))),
        }
    };
    let reply = match tokio::time::timeout(deadline, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failure(&e),
        Err(_) => {
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no answer within {}s (the dataset's peers did not deliver)\n",
                    deadline.as_secs()
                ),
            )
        }
    };
    match reply {
        Reply::Bytes(doc, cache) => {
            let etag = format!("\"b3-{}\"", &blake3::hash(&doc).to_hex()[..32]);
            let size = doc.len() as u64;
            let body = move |r: std::ops::Range<u64>| {
                futures::stream::iter([Ok(doc.slice(r.start as usize..r.end as usize))]).boxed()
            };
            respond(
                gw,
                method,
                headers,
                size,
                &etag,
                cache,
                "application/json",
                permit,
                body,
            )
            .await
        }
        Reply::Key(reader, cache) => {
            let etag = etag_of(&reader);
            let size = reader.size();
            let ahead = gw.settings.blocks_ahead;
            let ctype = content_type(&reader.entry().key);
            let (root, key) = (reader.root(), reader.entry().key.clone());
            // A GET of a key served lately, or of a chunk read ahead, is
            // answered from memory (a whole key read ahead, or read here,
            // is kept for the next); a GET in chunk order reads the next
            // chunks ahead (`chain`: their reads start when it is
            // dropped), once this one's blocks are read (the body's last
            // piece is taken, or the response goes without a body).
            let (ready, chain) = if *method == Method::GET {
                let (ready, hit) = match gw.hot.get(root, &key) {
                    Some(pieces) => (Some(pieces), true),
                    None => match gw.ahead.take(root, &key) {
                        ahead::Claim::Ready(pieces) => {
                            gw.hot.put(root, &key, pieces.clone());
                            (Some(pieces), true)
                        }
                        ahead::Claim::Late => (None, true),
                        ahead::Claim::Miss => (None, false),
                    },
                };
                let chain = gw.ahead.follow(&gw.node, root, &key, hit, ahead).await;
                (ready, chain)
            } else {
                (None, ahead::Chain::default())
            };
            let keep = (*method == Method::GET).then(|| (gw.hot.clone(), root, key.clone()));
            let body = move |r: std::ops::Range<u64>| match ready {
                Some(pieces) => ahead::body(pieces, r, chain),
                None => {
                    let read = reader.stream(r.clone(), ahead);
                    let read = match keep {
                        Some((hot, root, key)) if r == (0..size) => hot::keep(read, hot, root, key, size),
                        _ => read,
                    };
                    ahead::then_start(read, chain)
                }
            };
            respond(gw, method, headers, size, &etag, cache, ctype, permit, body).await
        }
        Reply::Dir(root, head, key, dir, cache) => {
            drop(permit);
            let json = query.is_some_and(|q| q.split('&').any(|kv| kv == "format=json"));
            listing(gw, root, &head, &key, dir, cache, json, method).await
        }
    }
}

enum Reply {
    Bytes(Bytes, &'static str),
    Key(KeyReader, &'static str),
    Dir(Cid, String, String, Dir, &'static str),
}

/// An ETag from what identifies the bytes: the key's block CIDs (or its
/// inline bytes), hashed.
fn etag_of(r: &KeyReader) -> String {
    let mut h = blake3::Hasher::new();
    match &r.entry().content {
        Content::Inline(d) => {
            h.update(b"inline");
            h.update(d);
        }
        Content::Blocks(cids) => {
            for c in cids {
                h.update(&c.to_bytes());
            }
        }
    }
    format!("\"b3-{}\"", &h.finalize().to_hex()[..32])
}

fn content_type(key: &str) -> &'static str {
    let base = key.rsplit('/').next().unwrap_or(key);
    if base == "zarr.json" || base.starts_with(".z") || base.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// Answers one representation of `size` bytes: conditional requests,
/// ranges, HEAD; the body's first piece is in hand before the head goes
/// out, so a dataset no peer delivers is a 504, not a truncated 200.
#[allow(clippy::too_many_arguments)]
async fn respond(
    gw: &Arc<Gw>,
    method: &Method,
    headers: &HeaderMap,
    size: u64,
    etag: &str,
    cache: &'static str,
    ctype: &'static str,
    permit: tokio::sync::OwnedSemaphorePermit,
    body: impl FnOnce(std::ops::Range<u64>) -> Pieces,
) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex ETag"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    let ranged = range::parse(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), size);
    let (status, r) = match ranged {
        Ranged::Whole => (StatusCode::OK, 0..size),
        Ranged::Part(r) => {
            let cr = format!("bytes {}-{}/{size}", r.start, r.end - 1);
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ASCII"));
            (StatusCode::PARTIAL_CONTENT, r)
        }
        Ranged::Unsatisfiable => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII"),
            );
            return (StatusCode::RANGE_NOT_SATISFIABLE, h).into_response();
        }
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
    if *method == Method::HEAD || r.start == r.end {
        return (status, h).into_response();
    }
    let mut stream = body(r);
    let first = match tokio::time::timeout(gw.settings.request_timeout, stream.next()).await {
        Ok(Some(Ok(b))) => b,
        Ok(Some(Err(e))) => return failure(&e),
        Ok(None) => Bytes::new(),
        Err(_) => {
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                format!("no peer delivered within {}s\n", gw.settings.request_timeout.as_secs()),
            )
        }
    };
    let served = gw.metrics.bytes_served.clone();
    served.inc_by(first.len() as u64);
    let rest = stream.map(move |piece| {
        // The permit lives as long as the body streams.
        let _held = &permit;
        let piece = piece.map_err(|e| {
            tracing::warn!(error = %e, "a gateway response ended early");
            std::io::Error::other(e.to_string())
        })?;
        served.inc_by(piece.len() as u64);
        Ok::<Bytes, std::io::Error>(piece)
    });
    let all = futures::stream::iter([Ok::<Bytes, std::io::Error>(first)]).chain(rest);
    (status, h, Body::from_stream(all)).into_response()
}

/// The synthesised consolidated metadata answering `key`, when the dataset
/// lacks its own: `.zmetadata` of a v2 dataset, the root `zarr.json` of a v3
/// group.
async fn consolidated(gw: &Arc<Gw>, root: Cid, key: &str) -> shoal_node::Result<Option<Bytes>> {
    if key != ".zmetadata" && key != "zarr.json" {
        return Ok(None);
    }
    if let Some((format, doc)) = gw.consolidated.lock().expect("cache lock").0.get(&root) {
        return Ok(doc.clone().filter(|_| answers(*format, key)));
    }
    let (format, docs) = gw.node.datasets().metadata(root).await?;
    let built = match format {
        2 if !docs.iter().any(|(k, _)| k == ".zmetadata") => Some(meta::v2_consolidated(&docs)),
        3 => meta::v3_consolidated(&docs).transpose(),
        _ => None,
    };
    let built = match built {
        None => None,
        Some(Ok(b)) => Some(Bytes::from(b)),
        // A document that is not JSON: served as stored; zarr will say why.
        Some(Err(e)) => {
            tracing::warn!(%root, error = %e, "cannot consolidate metadata");
            None
        }
    };
    let (map, order) = &mut *gw.consolidated.lock().expect("cache lock");
    if map.insert(root, (format, built.clone())).is_none() {
        order.push_back(root);
        if order.len() > CONSOLIDATED_CACHE {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
    Ok(built.filter(|_| answers(format, key)))
}

/// The key a synthesised document answers: `.zmetadata` in Zarr v2, the
/// root `zarr.json` in v3.
fn answers(format: u8, key: &str) -> bool {
    matches!((format, key), (2, ".zmetadata") | (3, "zarr.json"))
}

/// A directory index: HTML links (what fsspec's HTTP `ls` reads) or JSON.
#[allow(clippy::too_many_arguments)]
async fn listing(
    gw: &Arc<Gw>,
    root: Cid,
    head: &str,
    key: &str,
    mut dir: Dir,
    cache: &'static str,
    json: bool,
    method: &Method,
) -> Response {
    // A v2 dataset's top lists the synthesised .zmetadata it serves.
    if key.is_empty() && dir.zarr_format == 2 && !dir.children.iter().any(|c| c.name == ".zmetadata") {
        if let Ok(Some(doc)) = consolidated(gw, root, ".zmetadata").await {
            let at = dir.children.partition_point(|c| c.name.as_str() < ".zmetadata");
            dir.children.insert(
                at,
                shoal_node::Child {
                    name: ".zmetadata".into(),
                    dir: false,
                    size: doc.len() as u64,
                },
            );
        }
    }
    let base = if key.is_empty() {
        format!("/zarr/{}", encode(head))
    } else {
        format!(
            "/zarr/{}/{}",
            encode(head),
            key.split('/').map(encode).collect::<Vec<_>>().join("/")
        )
    };
    let (ctype, body) = if json {
        let entries: Vec<serde_json::Value> = dir
            .children
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "type": if c.dir { "directory" } else { "file" },
                    "size": c.size,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "root": root.to_string(),
            "path": key,
            "entries": entries,
            "truncated": dir.truncated,
        });
        ("application/json", serde_json::to_string_pretty(&doc).expect("JSON"))
    } else {
        let mut s = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head><body>\n<h1>{t}/</h1>\n<ul>\n",
            t = html(&base)
        );
        for c in &dir.children {
            let slash = if c.dir { "/" } else { "" };
            s.push_str(&format!(
                "<li><a href=\"{base}/{}{slash}\">{}{slash}</a></li>\n",
                html(&encode(&c.name)),
                html(&c.name)
            ));
        }
        if dir.truncated {
            s.push_str(&format!(
                "</ul><p>(only the first {} entries)</p>\n",
                dir.children.len()
            ));
        } else {
            s.push_str("</ul>\n");
        }
        s.push_str("</body></html>\n");
        ("text/html; charset=utf-8", s)
    };
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if *method == Method::HEAD {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        return (StatusCode::OK, h).into_response();
    }
    (StatusCode::OK, h, body).into_response()
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters kept).
fn encode(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_html_are_escaped() {
        assert_eq!(encode("a b/c%"), "a%20b%2Fc%25");
        assert_eq!(encode(".zarray"), ".zarray");
        assert_eq!(html("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }

    #[test]
    fn synthesised_documents_answer_their_format_s_key() {
        assert!(answers(2, ".zmetadata") && !answers(2, "zarr.json"));
        assert!(answers(3, "zarr.json") && !answers(3, ".zmetadata"));
    }
}
