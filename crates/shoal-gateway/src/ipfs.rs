//! `/ipfs/{CID}/{path...}`: a dataset's UnixFS view (or the dataset by its
//! own root, which stands for its view) as an IPFS gateway serves it.
//!
//! - path gateway (no format): the terminal's bytes exactly (a raw block,
//!   or a UnixFS File node's leaves), with the `/zarr/` Range, HEAD and
//!   ETag semantics; a directory answers an HTML index of its links.
//! - trustless gateway: `?format=raw` / `Accept: application/vnd.ipld.raw`
//!   answers the terminal block verbatim (at most 2 MiB); `?format=car` /
//!   `Accept: application/vnd.ipld.car` a CAR v1 of the path's blocks and
//!   then, by `dag-scope`, the terminal block (`block`), its entity
//!   (`entity`: a file's leaves, limited by `entity-bytes=from:to`; a
//!   directory's node and shards) or everything under it (`all`, the
//!   default), depth first, no duplicates. A block that cannot be had
//!   mid-stream ends the CAR early (the client sees the truncation).
//! - `GET /ipfs/bafkqaaa` (the empty identity CID): 200, the probe IPFS
//!   clients send.
//!
//! Every block comes through the node's block source (local, else peers
//! that provide the view), verified against its CID; nothing is
//! synthesised: the bytes are the dataset's.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use shoal_core::cid::{self, Cid, DAG_PB};
use shoal_node::Error;
use shoal_unixfs::{car, pb, DirLink, Step, Walk, WalkLimits};

use crate::{failure, not_allowed, plain, respond, Gw, Pieces};

/// The empty identity CID clients probe a gateway with.
const PROBE: &str = "bafkqaaa";
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// Largest block `?format=raw` answers (kubo's and bitswap's limit).
const MAX_RAW: usize = 2 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Path,
    Raw,
    Car,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Block,
    Entity,
    All,
}

fn param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn format_of(query: Option<&str>, headers: &HeaderMap) -> Format {
    match param(query, "format") {
        Some("raw") => return Format::Raw,
        Some("car") => return Format::Car,
        _ => {}
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/vnd.ipld.raw") {
        Format::Raw
    } else if accept.contains("application/vnd.ipld.car") {
        Format::Car
    } else {
        Format::Path
    }
}

pub(crate) async fn ipfs(
    State(gw): State<Arc<Gw>>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    crate::timed(&gw, "ipfs", serve(&gw, &method, &path, query.as_deref(), &headers)).await
}

/// The block `c` of the view rooted at `root`, fetched if need be.
async fn get(gw: &Gw, c: Cid, root: Cid) -> shoal_node::Result<Bytes> {
    gw.node.datasets().block(c, root).await
}

/// Resolves `segs` from `root`: every segment's CID, the root's first.
async fn resolve(gw: &Gw, root: Cid, segs: &[&str]) -> shoal_node::Result<Vec<Cid>> {
    let mut out = vec![root];
    let mut cur = root;
    // The root first: a root no one can deliver is unknown here (404, as
    // the trustless-gateway spec asks), not a timeout.
    if let Err(e) = get(gw, root, root).await {
        return Err(match e {
            Error::Unavailable(m) => Error::NotFound(format!("{root} is not known here or to any peer ({m})")),
            e => e,
        });
    }
    for seg in segs {
        let (mut node, mut level) = (cur, 0);
        cur = loop {
            if node.codec() != DAG_PB {
                return Err(Error::NotFound(format!("{seg:?}: {cur} is a file, not a directory")));
            }
            let bytes = get(gw, node, root).await?;
            match shoal_unixfs::step(&bytes, seg, level).map_err(|e| Error::Corrupt(e.to_string()))? {
                Step::Found(c) => break c,
                Step::Shard(c) => (node, level) = (c, level + 1),
                Step::Absent => return Err(Error::NotFound(format!("no {seg:?} under {cur}"))),
            }
        };
        out.push(cur);
    }
    Ok(out)
}

/// The walk one `/ipfs/` answer may make: the node's limits, at most
/// `max_leaves` references.
fn walk(gw: &Gw) -> Walk {
    let l = gw.node.limits().walk;
    Walk::new(WalkLimits {
        nodes: l.nodes.min(gw.settings.max_leaves),
        ..l
    })
}

fn too_large(e: shoal_unixfs::Error) -> Error {
    match e {
        shoal_unixfs::Error::Budget(m) => Error::BadRequest(format!("this DAG is too large to answer: {m}")),
        e => Error::Corrupt(e.to_string()),
    }
}

/// A UnixFS file's leaves (CID, size) and total size: a raw block is its
/// own leaf; a File node lists them (nested File nodes are followed).
/// Every reference counts against one walk: a node linked many times can
/// not make the answer larger than the walk's limits.
async fn leaves(gw: &Gw, c: Cid, root: Cid) -> shoal_node::Result<Option<(Vec<(Cid, u64)>, u64)>> {
    let mut walk = walk(gw);
    let mut out = Vec::new();
    // Nodes still to expand, the next on top: (cid, size, depth).
    let mut todo = vec![(c, None::<u64>, 0usize)];
    while let Some((c, size, depth)) = todo.pop() {
        walk.enter(depth).map_err(too_large)?;
        if c.codec() != DAG_PB {
            let size = match size {
                Some(s) => s,
                None => get(gw, c, root).await?.len() as u64,
            };
            walk.spend(size).map_err(too_large)?;
            out.push((c, size));
            continue;
        }
        let bytes = get(gw, c, root).await?;
        let Some(node) = shoal_unixfs::file_node(&c, &bytes).map_err(too_large)? else {
            return if depth == 0 {
                Ok(None)
            } else {
                Err(Error::Corrupt(format!("{c}: a file links a directory")))
            };
        };
        if node.links.is_empty() {
            if depth == 0 {
                // A file whose bytes are inside the node (an empty file, or
                // small files IPFS tools write): served from the node.
                return Ok(Some((Vec::new(), node.data.len() as u64)));
            }
            // kubo without --raw-leaves: leaves are dag-pb nodes holding
            // their bytes. Refused rather than served short.
            return Err(Error::BadRequest(format!(
                "{c}: a file whose leaves are dag-pb nodes is not served here (IPFS tools add with --raw-leaves)"
            )));
        }
        for (l, s) in node.links.into_iter().rev() {
            todo.push((l, (l.codec() != DAG_PB).then_some(s), depth + 1));
        }
    }
    let total = out.iter().map(|x| x.1).sum();
    Ok(Some((out, total)))
}

fn ipfs_headers(h: &mut HeaderMap, roots: &[Cid]) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    let list: Vec<String> = roots.iter().map(|c| c.to_string()).collect();
    if let Ok(v) = HeaderValue::from_str(&list.join(",")) {
        h.insert("x-ipfs-roots", v);
    }
}

async fn serve(gw: &Arc<Gw>, method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return not_allowed();
    }
    if path.len() > gw.settings.max_path {
        return plain(StatusCode::URI_TOO_LONG, "path too long\n");
    }
    let (head, rest) = path.split_once('/').unwrap_or((path, ""));
    if head == PROBE {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], "").into_response();
    }
    let root = match cid::parse(head) {
        Ok(c) => c,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{head:?}: {e}\n")),
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let format = format_of(query, headers);
    let deadline = gw.settings.request_timeout;
    let permit = match tokio::time::timeout(deadline, gw.permits.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway is at its request limit; retry\n",
            )
        }
    };
    // A dataset root stands for its view (when held here in full).
    let work = async {
        let view = if root.codec() == cid::DAG_CBOR {
            gw.node.datasets().view_of(root).await?.ok_or_else(|| {
                Error::NotFound(format!(
                    "{root} is a dataset not held here in full; ask for its UnixFS view's CID"
                ))
            })?
        } else {
            root
        };
        let roots = resolve(gw, view, &segs).await?;
        Ok::<_, Error>((view, roots))
    };
    let (view, roots) = match tokio::time::timeout(deadline, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failure(&e),
        Err(_) => return plain(StatusCode::GATEWAY_TIMEOUT, "no peer delivered the path in time\n"),
    };
    let terminal = *roots.last().expect("the root at least");
    match format {
        Format::Raw => {
            let b = match tokio::time::timeout(deadline, get(gw, terminal, view)).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return failure(&e),
                Err(_) => return plain(StatusCode::GATEWAY_TIMEOUT, "no peer delivered the block in time\n"),
            };
            if b.len() > MAX_RAW {
                return plain(StatusCode::PAYLOAD_TOO_LARGE, "block larger than 2 MiB\n");
            }
            let mut h = HeaderMap::new();
            ipfs_headers(&mut h, &roots);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.ipld.raw"),
            );
            h.insert(
                header::ETAG,
                HeaderValue::from_str(&format!("\"{terminal}.raw\"")).expect("ASCII"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
            if *method == Method::HEAD {
                return (StatusCode::OK, h).into_response();
            }
            (StatusCode::OK, h, b).into_response()
        }
        Format::Car => {
            let scope = match param(query, "dag-scope") {
                Some("block") => Scope::Block,
                Some("entity") => Scope::Entity,
                None | Some("all") => Scope::All,
                Some(other) => return plain(StatusCode::BAD_REQUEST, format!("unknown dag-scope {other:?}\n")),
            };
            let bytes = match param(query, "entity-bytes").map(parse_entity_bytes) {
                None => None,
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            let mut h = HeaderMap::new();
            ipfs_headers(&mut h, &roots);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.ipld.car; version=1; order=dfs; dups=n"),
            );
            let tag = format!(
                "\"{terminal}.car.{}\"",
                &blake3::hash(format!("{path}?{}", query.unwrap_or("")).as_bytes()).to_hex()[..16]
            );
            h.insert(header::ETAG, HeaderValue::from_str(&tag).expect("ASCII"));
            if *method == Method::HEAD {
                return (StatusCode::OK, h).into_response();
            }
            let body = car_stream(gw.clone(), view, roots, scope, bytes, permit);
            (StatusCode::OK, h, Body::from_stream(body)).into_response()
        }
        Format::Path => {
            let files = match tokio::time::timeout(deadline, leaves(gw, terminal, view)).await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return failure(&e),
                Err(_) => return plain(StatusCode::GATEWAY_TIMEOUT, "no peer delivered in time\n"),
            };
            let Some((leaves, size)) = files else {
                return index(gw, path, terminal, view, permit).await;
            };
            let etag = format!("\"{terminal}\"");
            let (gw2, ahead) = (gw.clone(), gw.settings.blocks_ahead);
            let body = move |r: std::ops::Range<u64>| file_stream(gw2, view, terminal, leaves, r, ahead);
            let resp = respond(
                gw,
                method,
                headers,
                size,
                &etag,
                IMMUTABLE,
                "application/octet-stream",
                permit,
                body,
            )
            .await;
            let mut resp = resp;
            ipfs_headers(resp.headers_mut(), &roots);
            resp
        }
    }
}

fn parse_entity_bytes(s: &str) -> Result<(u64, Option<i64>), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("entity-bytes {s:?}: expected FROM:TO"))?;
    let from: u64 = a
        .parse()
        .map_err(|_| format!("entity-bytes {s:?}: FROM is not a number"))?;
    let to = match b {
        "*" => None,
        b => Some(
            b.parse::<i64>()
                .map_err(|_| format!("entity-bytes {s:?}: TO is not a number or *"))?,
        ),
    };
    Ok((from, to))
}

/// The bytes `r` of a file of `leaves` (a node holding its own bytes when
/// it has no leaves).
fn file_stream(
    gw: Arc<Gw>,
    view: Cid,
    file: Cid,
    leaves: Vec<(Cid, u64)>,
    r: std::ops::Range<u64>,
    ahead: usize,
) -> Pieces {
    if leaves.is_empty() {
        return futures::stream::once(async move {
            let b = get(&gw, file, view).await?;
            let node = pb::decode_node(&b).map_err(|e| Error::Corrupt(e.to_string()))?;
            let fs = pb::UnixFs::decode(&node.data).map_err(|e| Error::Corrupt(e.to_string()))?;
            Ok(Bytes::from(fs.data).slice(r.start as usize..r.end as usize))
        })
        .boxed();
    }
    let mut at = 0u64;
    let mut parts = Vec::new();
    for (c, s) in leaves {
        let (lo, hi) = (at, at + s);
        at = hi;
        if hi <= r.start || lo >= r.end {
            continue;
        }
        parts.push((c, (r.start.max(lo) - lo) as usize, (r.end.min(hi) - lo) as usize));
    }
    futures::stream::iter(parts)
        .map(move |(c, from, to)| {
            let gw = gw.clone();
            async move {
                let b = get(&gw, c, view).await?;
                if b.len() < to {
                    return Err(Error::Corrupt(format!("leaf {c} is shorter than its file says")));
                }
                Ok(b.slice(from..to))
            }
        })
        .buffered(ahead.max(1))
        .boxed()
}

/// An HTML index of a directory's links (sharded directories: their
/// shard nodes' links, names without the slot prefix). Each shard is read
/// once, under the request's deadline and permit.
async fn index(gw: &Arc<Gw>, path: &str, dir: Cid, view: Cid, permit: tokio::sync::OwnedSemaphorePermit) -> Response {
    let names = match tokio::time::timeout(gw.settings.request_timeout, dir_names(gw, dir, view)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return failure(&e),
        Err(_) => return plain(StatusCode::GATEWAY_TIMEOUT, "no peer delivered the directory in time\n"),
    };
    drop(permit);
    let Some(mut names) = names else {
        return plain(StatusCode::INSUFFICIENT_STORAGE, "directory too large to index\n");
    };
    names.sort();
    let base = format!("/ipfs/{}/", path.trim_end_matches('/'));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><body><h1>/ipfs/{}</h1><ul>\n",
        crate::html(path)
    );
    for n in &names {
        html += &format!(
            "<li><a href=\"{}{}\">{}</a></li>\n",
            crate::html(&base),
            crate::encode(n),
            crate::html(n)
        );
    }
    html += "</ul></body></html>\n";
    let mut h = HeaderMap::new();
    ipfs_headers(&mut h, &[dir]);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    (StatusCode::OK, h, html).into_response()
}

/// A directory's entry names, or None past `dir_limit`.
async fn dir_names(gw: &Gw, dir: Cid, view: Cid) -> shoal_node::Result<Option<Vec<String>>> {
    let mut walk = walk(gw);
    let mut names = Vec::new();
    let mut todo = vec![(dir, 0usize)];
    while let Some((c, depth)) = todo.pop() {
        walk.enter(depth).map_err(too_large)?;
        let bytes = get(gw, c, view).await?;
        for l in shoal_unixfs::dir_links(&bytes).map_err(too_large)?.unwrap_or_default() {
            match l {
                DirLink::Entry(l) => names.push(l.name),
                DirLink::Shard(s) if walk.first(&s) => todo.push((s, depth + 1)),
                DirLink::Shard(s) => return Err(Error::Corrupt(format!("directory {dir} links shard {s} twice"))),
            }
            if names.len() > gw.settings.dir_limit {
                return Ok(None);
            }
        }
    }
    Ok(Some(names))
}

/// The CAR body: header, the path's blocks, then the terminal's by scope,
/// depth first, each block once. Blocks are fetched as the stream goes; one
/// that cannot be had ends it early.
fn car_stream(
    gw: Arc<Gw>,
    view: Cid,
    roots: Vec<Cid>,
    scope: Scope,
    bytes: Option<(u64, Option<i64>)>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
    struct St {
        gw: Arc<Gw>,
        view: Cid,
        /// Blocks still to send, the next on top; (cid, expand: walk its links).
        todo: Vec<(Cid, bool)>,
        seen: HashSet<Cid>,
        scope: Scope,
        bytes: Option<(u64, Option<i64>)>,
        header: Option<Bytes>,
        /// A file's raw leaves being fetched, `ahead` at a time.
        leaves: Option<futures::stream::BoxStream<'static, (Cid, shoal_node::Result<Bytes>)>>,
        ahead: usize,
        /// Blocks and bytes sent, under the node's walk limits.
        walk: Walk,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    impl St {
        /// The next section, counted against the walk: past its limits the
        /// CAR ends with an error (and nothing more is fetched).
        fn section(&mut self, c: &Cid, b: &Bytes) -> Result<Bytes, std::io::Error> {
            let counted = self.walk.enter(0).and_then(|()| self.walk.spend(b.len() as u64));
            if let Err(e) = counted {
                tracing::info!(%c, error = %e, "a CAR response ends early: past the walk's limits");
                self.todo.clear();
                self.leaves = None;
                return Err(std::io::Error::other(e.to_string()));
            }
            Ok(Bytes::from(car::section(c, b)))
        }
    }
    let terminal = *roots.last().expect("a root");
    // The path's blocks (not expanded), then the terminal (expanded by scope).
    let mut todo: Vec<(Cid, bool)> = vec![(terminal, scope != Scope::Block)];
    for c in roots[..roots.len() - 1].iter().rev() {
        todo.push((*c, false));
    }
    let ahead = gw.settings.blocks_ahead.max(1);
    let st = St {
        walk: Walk::new(gw.node.limits().walk),
        gw,
        view,
        todo,
        seen: HashSet::new(),
        scope,
        bytes,
        header: Some(Bytes::from(car::header(&[view]))),
        leaves: None,
        ahead,
        _permit: permit,
    };
    futures::stream::unfold(st, |mut st| async move {
        if let Some(h) = st.header.take() {
            return Some((Ok(h), st));
        }
        // A file's leaves first, fetched ahead in order.
        if let Some(leaves) = st.leaves.as_mut() {
            match leaves.next().await {
                Some((c, Ok(b))) => return Some((st.section(&c, &b), st)),
                Some((c, Err(e))) => {
                    tracing::info!(%c, error = %e, "a CAR response ends early: a block could not be had");
                    let st = St {
                        todo: Vec::new(),
                        leaves: None,
                        ..st
                    };
                    return Some((Err(std::io::Error::other(e.to_string())), st));
                }
                None => st.leaves = None,
            }
        }
        loop {
            let (c, expand) = st.todo.pop()?;
            if !st.seen.insert(c) {
                continue;
            }
            let b = match get(&st.gw, c, st.view).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::info!(%c, error = %e, "a CAR response ends early: a block could not be had");
                    return Some((Err(std::io::Error::other(e.to_string())), St { todo: Vec::new(), ..st }));
                }
            };
            if expand && c.codec() == DAG_PB {
                if let Ok(node) = pb::decode_node(&b) {
                    let fs = pb::UnixFs::decode(&node.data).ok();
                    let kind = fs.as_ref().map_or(u64::MAX, |f| f.kind);
                    let children: Vec<(Cid, bool)> = match (st.scope, kind) {
                        // A file's leaves, within entity-bytes.
                        (_, pb::FILE) => {
                            let sizes = fs.map(|f| f.blocksizes).unwrap_or_default();
                            let mut at = 0u64;
                            let total: u64 = sizes.iter().sum();
                            let (from, to) = match st.bytes {
                                None => (0, total),
                                Some((f, None)) => (f, total),
                                Some((f, Some(t))) if t < 0 => (f, total.saturating_sub(t.unsigned_abs() - 1)),
                                Some((f, Some(t))) => (f, (t as u64 + 1).min(total)),
                            };
                            node.links
                                .iter()
                                .zip(sizes.iter().chain(std::iter::repeat(&0)))
                                .filter_map(|(l, s)| {
                                    let (lo, hi) = (at, at + s);
                                    at = hi;
                                    (hi > from && lo < to).then_some((l.cid, true))
                                })
                                .collect()
                        }
                        // A sharded directory's entity is all its shards.
                        (Scope::Entity, pb::HAMT_SHARD) => node
                            .links
                            .iter()
                            .filter(|l| l.name.len() == 2)
                            .map(|l| (l.cid, true))
                            .collect(),
                        (Scope::Entity, _) => Vec::new(),
                        _ => node.links.iter().map(|l| (l.cid, true)).collect(),
                    };
                    // Raw leaves of a file stream ahead; anything else
                    // waits its turn on the stack.
                    if kind == pb::FILE && children.iter().all(|c| c.0.codec() == cid::RAW) {
                        let fresh: Vec<Cid> = children
                            .into_iter()
                            .map(|c| c.0)
                            .filter(|c| st.seen.insert(*c))
                            .collect();
                        let (gw, view) = (st.gw.clone(), st.view);
                        st.leaves = Some(
                            futures::stream::iter(fresh)
                                .map(move |c| {
                                    let gw = gw.clone();
                                    async move { (c, get(&gw, c, view).await) }
                                })
                                .buffered(st.ahead)
                                .boxed(),
                        );
                    } else {
                        st.todo.extend(children.into_iter().rev());
                    }
                }
            }
            return Some((st.section(&c, &b), st));
        }
    })
    .boxed()
}
