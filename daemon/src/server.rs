//! The daemon: owns the store, serves the local API on the repo's Unix
//! socket, stops cleanly on SIGTERM/SIGINT.
//!
//! Store calls are synchronous and run on the blocking pool; long calls
//! stream progress as NDJSON through a bounded channel (progress lines are
//! dropped, never queued without bound, when the client reads slowly).

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_core::{cid, Cid};
use shoal_store::{PinKind, Store, StoreOptions};
use shoal_zarr::{read, IngestOptions};

use crate::api::*;
use crate::config::{Config, Repo};

/// How long shutdown waits for in-flight requests before exiting anyway.
/// The store is crash-safe, so cutting a long add short loses no data.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Minimum interval between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

pub struct Daemon {
    pub store: Arc<Store>,
    pub repo: Repo,
    pub config: Config,
    pub net: shoal_net::Client,
    pub fetcher: shoal_net::Fetcher,
    pub source: Arc<shoal_net::BlockSource>,
    pub mounts: crate::mounts::Mounts,
    pub pop: Arc<crate::popularity::Popularity>,
    pub mirror: Arc<crate::mirror::Mirror>,
}

type St = State<Arc<Daemon>>;

/// An API error: what failed and which class of failure.
#[derive(Debug)]
pub struct AppError(pub ApiError);

impl AppError {
    pub fn new(kind: ErrorKind, msg: impl std::fmt::Display) -> Self {
        AppError(ApiError {
            error: msg.to_string(),
            kind,
        })
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

fn store_kind(e: &shoal_store::Error) -> ErrorKind {
    use shoal_store::Error as E;
    match e {
        E::Corrupt { .. } => ErrorKind::Corrupt,
        E::Missing(_) | E::UnknownName(_) | E::Incomplete { .. } => ErrorKind::NotFound,
        E::QuotaExceeded { .. } => ErrorKind::Quota,
        E::InvalidName { .. } | E::Core(_) => ErrorKind::BadRequest,
        _ if e.is_disk_full() => ErrorKind::Quota,
        _ => ErrorKind::Internal,
    }
}

/// The disk under the repo is full: say so and what to do.
fn disk_full(e: impl std::fmt::Display) -> AppError {
    AppError::new(
        ErrorKind::Quota,
        format!("the disk holding the repo is full ({e}); nothing was pinned. Free space or set [store] quota below the disk size, then retry"),
    )
}

impl From<shoal_store::Error> for AppError {
    fn from(e: shoal_store::Error) -> Self {
        if e.is_disk_full() {
            return disk_full(e);
        }
        AppError::new(store_kind(&e), e)
    }
}

fn zarr_kind(e: &shoal_zarr::Error) -> ErrorKind {
    use shoal_zarr::Error as E;
    match e {
        E::Store(s) => store_kind(s),
        E::Key { source, .. } => zarr_kind(source),
        E::NoSuchKey(_) => ErrorKind::NotFound,
        E::OutputExists(_) => ErrorKind::Conflict,
        E::Write { .. } => ErrorKind::Internal,
        E::BlockSize { .. } => ErrorKind::Corrupt,
        E::Fetch(_) => ErrorKind::NotFound,
        _ => ErrorKind::BadRequest,
    }
}

impl From<shoal_zarr::Error> for AppError {
    fn from(e: shoal_zarr::Error) -> Self {
        if matches!(&e, shoal_zarr::Error::Store(s) if s.is_disk_full()) {
            return disk_full(e);
        }
        AppError::new(zarr_kind(&e), e)
    }
}

impl From<shoal_core::Error> for AppError {
    fn from(e: shoal_core::Error) -> Self {
        AppError::new(ErrorKind::BadRequest, e)
    }
}

type ApiResult<T> = Result<T, AppError>;

/// Runs a store operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    d: Arc<Daemon>,
    f: impl FnOnce(&Daemon) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(move || f(&d))
        .await
        .map_err(|e| AppError::new(ErrorKind::Internal, format!("task failed: {e}")))?
}

/// Runs a long operation on the blocking pool, streaming NDJSON events.
fn streamed<T: Serialize + Send + 'static>(
    d: Arc<Daemon>,
    f: impl FnOnce(&Daemon, &(dyn Fn(Progress) + Sync)) -> ApiResult<T> + Send + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::task::spawn_blocking(move || {
        let last = Mutex::new(Instant::now() - PROGRESS_EVERY);
        let progress = |p: Progress| {
            let mut last = last.lock().expect("progress lock");
            if last.elapsed() >= PROGRESS_EVERY {
                *last = Instant::now();
                let _ = tx.try_send(line(&Event::<()>::Progress(p)));
            }
        };
        let ev = match f(&d, &progress) {
            Ok(v) => Event::Done(v),
            Err(e) => Event::Error(e.0),
        };
        let _ = tx.blocking_send(line(&ev));
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = Body::from_stream(tokio_stream::StreamExt::map(stream, Ok::<_, Infallible>));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn line<T: Serialize>(v: &T) -> Bytes {
    let mut s = serde_json::to_vec(v)
        .unwrap_or_else(|e| format!("{{\"error\":{{\"error\":\"{e}\",\"kind\":\"internal\"}}}}").into_bytes());
    s.push(b'\n');
    Bytes::from(s)
}

/// A TARGET: `CID`, `NAME`, `CID/key/path` or `NAME/key/path`.
fn resolve(store: &Store, target: &str) -> ApiResult<(Cid, Option<String>)> {
    let target = target.trim_end_matches('/');
    let (head, path) = match target.split_once('/') {
        Some((h, p)) => (h, Some(p.to_string())),
        None => (target, None),
    };
    if let Ok(c) = cid::parse(head) {
        return Ok((c, path));
    }
    match store.resolve_name(head)? {
        Some(c) => Ok((c, path)),
        None => Err(AppError::new(
            ErrorKind::NotFound,
            format!("{head:?} is neither a CID nor a dataset name here (see `shoal pins`)"),
        )),
    }
}

/// Loads a dataset's manifest: from the store, else from peers.
pub(crate) fn manifest(d: &Daemon, root: &Cid) -> ApiResult<shoal_core::manifest::Manifest> {
    if root.codec() != cid::DAG_CBOR {
        return Err(AppError::new(
            ErrorKind::BadRequest,
            format!("{root} is a raw block, not a dataset"),
        ));
    }
    let block = fetch_any(d, *root)(root).map_err(|e| {
        AppError::new(
            ErrorKind::NotFound,
            format!("dataset {root} is not in this store and could not be fetched: {e}"),
        )
    })?;
    Ok(shoal_core::manifest::Manifest::decode(&block)?)
}

/// A block fetch for the synchronous readers (run on the blocking pool):
/// the local store, then peers holding dataset `root`.
fn fetch_any(d: &Daemon, root: Cid) -> impl FnMut(&Cid) -> shoal_zarr::Result<shoal_core::Block> + '_ {
    let pf = PeerFetch::new(d, root);
    move |c| pf.get(c).map_err(shoal_zarr::Error::Fetch)
}

/// Block reads for code already on a blocking thread: the store directly
/// (no extra thread hop for local data), else the block source (peers,
/// deadline, corrupt-copy replacement). Counts bytes fetched from peers.
pub struct PeerFetch {
    store: Arc<Store>,
    source: Arc<shoal_net::BlockSource>,
    rt: tokio::runtime::Handle,
    root: Cid,
    pub fetched_bytes: std::sync::atomic::AtomicU64,
}

impl PeerFetch {
    /// Must be called from a thread inside the daemon's runtime context
    /// (handlers and the blocking pool are).
    fn new(d: &Daemon, root: Cid) -> Self {
        Self {
            store: d.store.clone(),
            source: d.source.clone(),
            rt: tokio::runtime::Handle::current(),
            root,
            fetched_bytes: Default::default(),
        }
    }

    pub fn get(&self, c: &Cid) -> Result<shoal_core::Block, String> {
        if let Ok(Some(b)) = self.store.get(c) {
            return Ok(b);
        }
        let b = self
            .rt
            .block_on(self.source.get(*c, self.root))
            .map_err(|e| e.to_string())?;
        self.fetched_bytes
            .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(b)
    }
}

/// Makes a dataset complete locally, fetching what is missing from peers.
/// Blocks are protected by `session` until the caller pins (or drops it).
fn ensure_local(
    d: &Daemon,
    root: Cid,
    session: &shoal_store::Session,
    progress: &(dyn Fn(Progress) + Sync),
) -> ApiResult<Option<shoal_net::FetchReport>> {
    let report = tokio::runtime::Handle::current()
        .block_on(d.fetcher.fetch_dataset(root, session, &|p| {
            progress(Progress {
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
                items_done: p.blocks_done,
                items_total: 0,
                peers: p.peers,
            })
        }))
        .map_err(|e| {
            let e = net_error(e);
            match d.store.missing_blocks(&root) {
                Ok(m) if !m.is_empty() && d.store.has(&root).unwrap_or(false) => AppError::new(
                    e.0.kind,
                    format!(
                        "dataset {root} is incomplete here ({} blocks missing): {}",
                        m.len(),
                        e.0.error
                    ),
                ),
                _ => e,
            }
        })?;
    Ok((!report.already_local).then_some(report))
}

fn net_error(e: shoal_net::Error) -> AppError {
    use shoal_net::Error as E;
    let kind = match &e {
        E::NoProviders { .. } | E::Unfetchable { .. } | E::Unavailable { .. } => ErrorKind::NotFound,
        E::Dial { .. } | E::Config(_) => ErrorKind::BadRequest,
        E::Store(s) => store_kind(s),
        _ => ErrorKind::Internal,
    };
    AppError::new(kind, e)
}

async fn id(State(d): St) -> ApiResult<Json<IdInfo>> {
    let peer = d.net.peer_id();
    let addrs = d.net.listen_addrs().await.map_err(net_error)?;
    Ok(Json(IdInfo {
        peer_id: peer.to_string(),
        addrs: addrs.iter().map(|a| format!("{a}/p2p/{peer}")).collect(),
        version: env!("CARGO_PKG_VERSION").into(),
        repo: d.repo.home.display().to_string(),
        api_socket: d.repo.socket_path().display().to_string(),
        pid: std::process::id(),
    }))
}

async fn connect(State(d): St, Json(req): Json<ConnectRequest>) -> ApiResult<Json<ConnectResult>> {
    let addr: shoal_net::Multiaddr = req
        .addr
        .parse()
        .map_err(|e| AppError::new(ErrorKind::BadRequest, format!("invalid multiaddr {:?}: {e}", req.addr)))?;
    let peer = d.net.dial(addr).await.map_err(net_error)?;
    Ok(Json(ConnectResult {
        peer_id: peer.to_string(),
    }))
}

async fn peers(State(d): St) -> ApiResult<Json<Vec<shoal_net::PeerInfo>>> {
    Ok(Json(d.net.peers().await.map_err(net_error)?))
}

#[derive(Deserialize)]
struct CidQuery {
    cid: String,
}

/// Providers that are reachable now (this daemon counts when it holds the
/// dataset in full); stale DHT records of gone daemons are left out.
async fn providers(State(d): St, Query(q): Query<CidQuery>) -> ApiResult<Json<ProvidersResult>> {
    let root = cid::parse(&q.cid)?;
    let found = crate::mirror::reachable_providers(&d, root).await;
    Ok(Json(ProvidersResult {
        root: root.to_string(),
        providers: found.iter().map(|p| p.to_string()).collect(),
    }))
}

async fn mirrors(State(d): St) -> ApiResult<Json<MirrorsResult>> {
    d.mirror
        .view(&d)
        .await
        .map(Json)
        .map_err(|e| AppError::new(ErrorKind::Internal, format!("{e:#}")))
}

async fn add(State(d): St, Json(req): Json<AddRequest>) -> Response {
    streamed(d, move |d, progress| {
        let start = Instant::now();
        if let Some(n) = &req.name {
            shoal_store::validate_name(n)?;
        }
        let opts = IngestOptions {
            block_size: d
                .config
                .store
                .block_size_bytes()
                .map_err(|e| AppError::new(ErrorKind::BadRequest, e))?,
            threads: 0,
        };
        let session = d.store.session();
        let report = shoal_zarr::ingest(&d.store, PathBuf::from(&req.path).as_path(), &opts, &session, &|p| {
            progress(Progress {
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
                items_done: p.blocks_done,
                items_total: 0,
                peers: 0,
            })
        })?;
        d.store.pin(&report.root, PinKind::User)?;
        if let Some(n) = &req.name {
            d.store.set_name(n, &report.root)?;
        }
        drop(session);
        let _ = tokio::runtime::Handle::current().block_on(d.net.provide(report.root));
        tracing::info!(root = %report.root, keys = report.keys, bytes = report.bytes, "added {}", req.path);
        Ok(AddResult {
            root: report.root.to_string(),
            name: req.name,
            zarr_format: report.zarr_format,
            keys: report.keys,
            bytes: report.bytes,
            new_blocks: report.stats.new_blocks,
            new_bytes: report.stats.new_bytes,
            dup_blocks: report.stats.dup_blocks,
            seconds: start.elapsed().as_secs_f64(),
        })
    })
}

#[derive(Deserialize)]
struct TargetQuery {
    target: String,
}

async fn ls(State(d): St, Query(q): Query<TargetQuery>) -> ApiResult<Json<LsResult>> {
    blocking(d, move |d| {
        let (root, path) = resolve(&d.store, &q.target)?;
        let m = manifest(d, &root)?;
        let mut entries = Vec::new();
        m.for_each_entry(&mut fetch_any(d, root), &mut |e| {
            let under = match &path {
                None => true,
                Some(p) => e.key == *p || e.key.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('/')),
            };
            if under {
                entries.push(LsEntry {
                    key: e.key.clone(),
                    size: e.size,
                    blocks: e.blocks().len(),
                    inline: matches!(e.content, shoal_core::manifest::Content::Inline(_)),
                    cids: e.blocks().iter().map(|c| c.to_string()).collect(),
                });
            }
            Ok(())
        })?;
        if let (Some(p), true) = (&path, entries.is_empty()) {
            return Err(AppError::new(
                ErrorKind::NotFound,
                format!("no key {p:?} in dataset {root}"),
            ));
        }
        Ok(Json(LsResult {
            root: root.to_string(),
            zarr_format: m.zarr_format,
            keys: m.key_count,
            bytes: m.total_bytes,
            entries,
        }))
    })
    .await
}

async fn cat(State(d): St, Query(q): Query<TargetQuery>) -> ApiResult<Response> {
    blocking(d, move |d| {
        let (root, path) = resolve(&d.store, &q.target)?;
        let Some(key) = path else {
            return Err(AppError::new(
                ErrorKind::BadRequest,
                "cat needs TARGET/KEY, e.g. mydata/temp/.zarray",
            ));
        };
        let m = manifest(d, &root)?;
        let data = read::key_bytes(&m, &key, &mut fetch_any(d, root)).map_err(|e| {
            let e = AppError::from(e);
            AppError::new(
                e.0.kind,
                format!("cannot read key {key:?} of dataset {root}: {}", e.0.error),
            )
        })?;
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
    })
    .await
}

async fn get_dataset(State(d): St, Json(req): Json<GetRequest>) -> Response {
    streamed(d, move |d, progress| {
        let start = Instant::now();
        let (root, path) = resolve(&d.store, &req.target)?;
        if path.is_some() {
            return Err(AppError::new(
                ErrorKind::BadRequest,
                "get takes a dataset (CID or NAME), not a key; use `shoal cat` for one key",
            ));
        }
        // Fetch what is missing first (kept as unpinned cache data).
        let session = d.store.session();
        let fetched = ensure_local(d, root, &session, progress)?;
        let m = manifest(d, &root)?;
        let mut p = Progress {
            items_total: m.key_count,
            bytes_total: m.total_bytes,
            ..Default::default()
        };
        let (keys, bytes) = read::export(
            &m,
            PathBuf::from(&req.out).as_path(),
            &mut fetch_any(d, root),
            &mut |e| {
                p.items_done += 1;
                p.bytes_done += e.size;
                progress(p);
            },
        )?;
        drop(session);
        Ok(GetResult {
            fetched,
            root: root.to_string(),
            out: req.out,
            keys,
            bytes,
            seconds: start.elapsed().as_secs_f64(),
        })
    })
}

async fn pin(State(d): St, Json(req): Json<PinRequest>) -> Response {
    streamed(d, move |d, progress| {
        let (root, path) = resolve(&d.store, &req.target)?;
        if path.is_some() {
            return Err(AppError::new(
                ErrorKind::BadRequest,
                "pin takes a dataset (CID or NAME), not a key",
            ));
        }
        if root.codec() != cid::DAG_CBOR {
            return Err(AppError::new(
                ErrorKind::BadRequest,
                format!("{root} is a raw block, not a dataset"),
            ));
        }
        if let Some(n) = &req.name {
            shoal_store::validate_name(n)?;
        }
        if let Some(n) = req.replicas {
            if n == 0 || n > shoal_net::gossip::MAX_REPLICAS {
                return Err(AppError::new(
                    ErrorKind::BadRequest,
                    format!("--replicas must be between 1 and {}", shoal_net::gossip::MAX_REPLICAS),
                ));
            }
        }
        let was = d.store.pin_kinds(&root)?.contains(PinKind::User);
        let session = d.store.session();
        let fetched = ensure_local(d, root, &session, progress)?;
        d.store.pin(&root, PinKind::User)?;
        if let Some(n) = &req.name {
            d.store.set_name(n, &root)?;
        }
        if let Some(n) = req.replicas {
            d.store.set_replica_target(&root, n, crate::popularity::unix_now())?;
        }
        drop(session);
        let _ = tokio::runtime::Handle::current().block_on(d.net.provide(root));
        Ok(PinResult {
            root: root.to_string(),
            name: req.name,
            still_named: Vec::new(),
            changed: !was,
            fetched,
            replicas: req.replicas,
        })
    })
}

async fn unpin(State(d): St, Json(req): Json<PinRequest>) -> ApiResult<Json<PinResult>> {
    blocking(d, move |d| {
        let (root, path) = resolve(&d.store, &req.target)?;
        if path.is_some() {
            return Err(AppError::new(
                ErrorKind::BadRequest,
                "unpin takes a dataset (CID or NAME), not a key",
            ));
        }
        // Unpinning by name drops the name too: the user asked to let it go.
        let by_name = cid::parse(req.target.trim_end_matches('/')).is_err();
        let user_pinned = d.store.unpin(&root, PinKind::User)?;
        let mut changed = user_pinned;
        if by_name {
            changed |= d.store.remove_name(req.target.trim_end_matches('/'))?.is_some();
        }
        // A replica target that came with this user pin is cancelled: the
        // cancellation is gossiped (newest wins) so volunteers stop carrying
        // it. (A target carried for a mirror is not this user's to cancel.)
        let had_target = user_pinned && d.store.replica_targets()?.iter().any(|t| t.0 == root && t.1 > 0);
        if had_target {
            d.store.set_replica_target(&root, 0, crate::popularity::unix_now())?;
        }
        let still_named = d
            .store
            .names()?
            .into_iter()
            .filter(|n| n.1 == root)
            .map(|n| n.0)
            .collect();
        Ok(Json(PinResult {
            root: root.to_string(),
            name: None,
            still_named,
            changed,
            fetched: None,
            replicas: had_target.then_some(0),
        }))
    })
    .await
}

async fn pins(State(d): St) -> ApiResult<Json<Vec<PinInfo>>> {
    blocking(d, move |d| {
        let names = d.store.names()?;
        let mut roots: Vec<(Cid, Vec<String>)> = d
            .store
            .pins()?
            .into_iter()
            .map(|p| {
                (
                    p.0,
                    p.1.kinds().iter().map(|k| format!("{k:?}").to_lowercase()).collect(),
                )
            })
            .collect();
        // Named but unpinned datasets are kept too; list them.
        for (_, c) in &names {
            if !roots.iter().any(|r| r.0 == *c) {
                roots.push((*c, Vec::new()));
            }
        }
        let mut out = Vec::new();
        for (root, kinds) in roots {
            let (keys, bytes) = d
                .store
                .manifest(&root)
                .map(|m| (m.key_count, m.total_bytes))
                .unwrap_or((0, 0));
            out.push(PinInfo {
                root: root.to_string(),
                kinds,
                names: names.iter().filter(|n| n.1 == root).map(|n| n.0.clone()).collect(),
                bytes,
                keys,
            });
        }
        out.sort_by(|a, b| a.names.cmp(&b.names).then(a.root.cmp(&b.root)));
        Ok(Json(out))
    })
    .await
}

async fn gc(State(d): St) -> ApiResult<Json<shoal_store::GcStats>> {
    blocking(d, |d| Ok(Json(d.store.gc()?))).await
}

async fn fsck(State(d): St, Json(req): Json<FsckRequest>) -> ApiResult<Json<shoal_store::FsckReport>> {
    blocking(d, move |d| Ok(Json(d.store.fsck(req.repair)?))).await
}

async fn stats(State(d): St) -> ApiResult<Json<StatsResult>> {
    blocking(d, |d| {
        Ok(Json(StatsResult {
            repo: d.repo.home.display().to_string(),
            store: d.store.stats()?,
        }))
    })
    .await
}

async fn mount(State(d): St, Json(req): Json<MountRequest>) -> ApiResult<Json<MountResult>> {
    let rt = tokio::runtime::Handle::current();
    blocking(d, move |d| {
        let blocks = crate::mounts::MountBlocks {
            source: d.source.clone(),
            store: d.store.clone(),
            pop: d.pop.clone(),
        };
        let opts = shoal_fuse::MountOptions {
            readahead_files: d.config.mount.readahead_files,
            max_inflight_blocks: d.config.mount.prefetch_inflight.max(1),
            cache_bytes: crate::config::parse_size(&d.config.mount.cache).unwrap_or(64 << 20) as usize,
            ..Default::default()
        };
        let dir = d
            .mounts
            .mount(std::path::Path::new(&req.dir), blocks, opts, rt)
            .map_err(|e| AppError::new(ErrorKind::BadRequest, format!("{e:#}")))?;
        Ok(Json(MountResult {
            dir: dir.display().to_string(),
        }))
    })
    .await
}

async fn unmount(State(d): St, Json(req): Json<MountRequest>) -> ApiResult<Json<MountResult>> {
    blocking(d, move |d| {
        let dir = d
            .mounts
            .unmount(std::path::Path::new(&req.dir))
            .map_err(|e| AppError::new(ErrorKind::BadRequest, format!("{e:#}")))?;
        Ok(Json(MountResult {
            dir: dir.display().to_string(),
        }))
    })
    .await
}

async fn list_mounts(State(d): St) -> Json<Vec<String>> {
    Json(d.mounts.list().iter().map(|p| p.display().to_string()).collect())
}

async fn query(State(d): St, Json(req): Json<QueryRequest>) -> ApiResult<Json<QueryResult>> {
    let rt = tokio::runtime::Handle::current();
    let (root, path) = {
        let target = req.target.clone();
        blocking(d.clone(), move |d| resolve(&d.store, &target)).await?
    };
    if path.is_some() {
        return Err(AppError::new(
            ErrorKind::BadRequest,
            "query takes a dataset (CID or NAME) and the array path separately",
        ));
    }
    let provider_timeout =
        crate::config::parse_duration(&d.config.network.provider_timeout).unwrap_or(Duration::from_secs(20));
    d.pop.record(root, crate::popularity::Kind::Query, 1);
    blocking(d, move |d| {
        let start = Instant::now();
        let m = manifest(d, &root)?;
        let entries = m.entries(&mut fetch_any(d, root))?;
        // Worker threads read local blocks directly; missing ones come from
        // peers through the block source.
        let pf = Arc::new(PeerFetch::new(d, root));
        let fetch: shoal_query::storage::FetchFn = {
            let pf = pf.clone();
            Arc::new(move |c| pf.get(c))
        };
        let spec = shoal_query::QuerySpec {
            array: req.array.trim_matches('/').to_string(),
            op: req.op,
            dims: req.dims,
            sel: req.sel,
            ddof: req.ddof,
            raw: req.raw,
        };
        let q = |e: shoal_query::Error| {
            let kind = match &e {
                shoal_query::Error::Decode(_) | shoal_query::Error::Read(_) => ErrorKind::Internal,
                _ => ErrorKind::BadRequest,
            };
            AppError::new(kind, e)
        };
        let prepared = crate::query::prepare(m, entries, &spec, fetch).map_err(q)?;
        // Twice the cores: while one worker waits on a cold disk read,
        // another decodes and reduces.
        let threads = 2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let outcome =
            crate::query::run(&rt, &d.net, &d.store, root, &spec, &prepared, provider_timeout, threads).map_err(q)?;
        let plan = &prepared.plan;
        let values = outcome
            .partials
            .iter()
            .map(|p| p.finish(spec.op, spec.ddof))
            .map(|v| (!v.is_nan()).then_some(v))
            .collect();
        let mut remote: Vec<(String, u64)> = outcome.chunks_remote.iter().map(|(p, n)| (p.to_string(), *n)).collect();
        remote.sort();
        Ok(Json(QueryResult {
            root: root.to_string(),
            array: spec.array,
            op: spec.op,
            dims: plan.out_dims.clone(),
            reduced: plan
                .info
                .dims
                .iter()
                .filter(|d| !plan.out_dims.contains(d))
                .cloned()
                .collect(),
            shape: plan.out_shape.clone(),
            values,
            source_dtype: plan.info.dtype.clone(),
            chunks: plan.chunks.len() as u64,
            chunks_local: outcome.chunks_local,
            chunks_remote: remote,
            chunks_fetched: outcome.chunks_fetched,
            network_bytes: outcome.compute_bytes + pf.fetched_bytes.load(std::sync::atomic::Ordering::Relaxed),
            seconds: start.elapsed().as_secs_f64(),
        }))
    })
    .await
}

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/id", get(id))
        .route("/v1/connect", post(connect))
        .route("/v1/peers", get(peers))
        .route("/v1/providers", get(providers))
        .route("/v1/add", post(add))
        .route("/v1/ls", get(ls))
        .route("/v1/cat", get(cat))
        .route("/v1/get", post(get_dataset))
        .route("/v1/pin", post(pin))
        .route("/v1/unpin", post(unpin))
        .route("/v1/pins", get(pins))
        .route("/v1/mount", post(mount))
        .route("/v1/unmount", post(unmount))
        .route("/v1/mounts", get(list_mounts))
        .route("/v1/query", post(query))
        .route("/v1/gc", post(gc))
        .route("/v1/fsck", post(fsck))
        .route("/v1/stats", get(stats))
        .route("/v1/mirrors", get(mirrors))
        .with_state(d)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// Test-only misbehaviour, for the lying-peer and slow-peer tests. Never set
/// these in production: the daemon logs a warning when they are on.
fn test_switches() -> (bool, Duration) {
    let lie = std::env::var_os("SHOAL_TEST_CORRUPT_SERVED_BLOCKS").is_some();
    let delay = std::env::var("SHOAL_TEST_SERVE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if lie {
        tracing::warn!("SHOAL_TEST_CORRUPT_SERVED_BLOCKS is set: this daemon serves corrupted blocks (test mode)");
    }
    if delay > 0 {
        tracing::warn!(
            delay_ms = delay,
            "SHOAL_TEST_SERVE_DELAY_MS is set: serving is slowed down (test mode)"
        );
    }
    (lie, Duration::from_millis(delay))
}

fn serve_fn(store: Arc<Store>, pop: Arc<crate::popularity::Popularity>) -> shoal_net::ServeFn {
    let (lie, delay) = test_switches();
    Arc::new(move |_peer, root, cids| {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let out: Vec<Option<Bytes>> = cids
            .iter()
            .map(|c| match store.get(c) {
                Ok(Some(b)) => {
                    let data = b.into_data();
                    if lie && !data.is_empty() {
                        let mut v = data.to_vec();
                        v[0] ^= 0xff;
                        Some(Bytes::from(v))
                    } else {
                        Some(data)
                    }
                }
                // Missing or corrupt here: say we do not have it.
                _ => None,
            })
            .collect();
        // Count served blocks for datasets we hold (the root is the
        // requester's claim; unknown roots are not counted).
        let served = out.iter().filter(|b| b.is_some()).count() as u64;
        if let Some(root) = root.filter(|_| served > 0) {
            if store.pin_kinds(root).is_ok_and(|k| !k.is_empty()) {
                pop.record(*root, crate::popularity::Kind::Block, served);
            }
        }
        out
    })
}

fn compute_fn(store: Arc<Store>, pop: Arc<crate::popularity::Popularity>) -> shoal_net::ComputeFn {
    let (_, delay) = test_switches();
    Arc::new(move |peer, body| {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        tracing::debug!(%peer, bytes = body.len(), "compute request");
        crate::query::serve(&store, &pop, &body)
    })
}

fn net_config(
    repo: &Repo,
    cfg: &Config,
    store: Arc<Store>,
    pop: Arc<crate::popularity::Popularity>,
    gossip: Option<Duration>,
) -> Result<shoal_net::NetConfig> {
    let n = &cfg.network;
    let parse_addrs = |v: &[String], what: &str| -> Result<Vec<shoal_net::Multiaddr>> {
        v.iter()
            .map(|a| {
                a.parse()
                    .with_context(|| format!("[network] {what}: invalid multiaddr {a:?}"))
            })
            .collect()
    };
    let swarm_key = if n.swarm_key.is_empty() {
        None
    } else {
        let path = repo.home.join(&n.swarm_key);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading swarm key {}", path.display()))?;
        Some(
            text.parse::<shoal_net::PreSharedKey>()
                .map_err(|e| anyhow::anyhow!("invalid swarm key {}: {e}", path.display()))?,
        )
    };
    let allow_peers = if n.allow_peers.is_empty() {
        None
    } else {
        Some(
            n.allow_peers
                .iter()
                .map(|p| {
                    p.parse()
                        .with_context(|| format!("[network] allow_peers: invalid peer id {p:?}"))
                })
                .collect::<Result<Vec<shoal_net::PeerId>>>()?,
        )
    };
    Ok(shoal_net::NetConfig {
        keypair: repo.load_identity()?,
        listen: parse_addrs(&n.listen, "listen")?,
        bootstrap: parse_addrs(&n.bootstrap, "bootstrap")?,
        swarm_key,
        allow_peers,
        reprovide_interval: crate::config::parse_duration(&n.reprovide_interval)?,
        request_timeout: crate::config::parse_duration(&n.request_timeout)?,
        max_connections: 256,
        serve: serve_fn(store.clone(), pop.clone()),
        compute: compute_fn(store, pop.clone()),
        gossip: gossip.map(|_| -> shoal_net::GossipFn { Arc::new(move |author, data| pop.receive(author, data)) }),
        // A third of the report interval, between 1 and 5 seconds.
        gossip_heartbeat: (gossip.unwrap_or(Duration::from_secs(15)) / 3)
            .clamp(Duration::from_secs(1), Duration::from_secs(5)),
    })
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(repo: Repo) -> Result<()> {
    if repo.init(&[])? {
        tracing::info!("created repo at {}", repo.home.display());
    }
    let config = repo.load_config()?;
    let opts = StoreOptions {
        quota: config.store.quota_bytes()?,
    };
    let store_path = repo.store_path();
    let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(&store_path, opts)).await??);
    let settings = crate::mirror::Settings::from_config(&config.mirror)?;
    let pop = Arc::new(crate::popularity::Popularity::new(
        crate::config::parse_duration(&config.mirror.window)?,
        config.mirror.peer_cap,
        config.mirror.threshold,
    ));
    let gossip = settings.every;
    let mirror = Arc::new(crate::mirror::Mirror::new(pop.clone(), settings));
    let (net, event_loop) = shoal_net::EventLoop::new(net_config(&repo, &config, store.clone(), pop.clone(), gossip)?)?;
    tokio::spawn(event_loop.run());
    let fetch_opts = shoal_net::FetchOptions {
        provider_timeout: crate::config::parse_duration(&config.network.provider_timeout)?,
        block_deadline: crate::config::parse_duration(&config.network.block_timeout)?,
        ..Default::default()
    };
    let fetcher = shoal_net::Fetcher {
        net: net.clone(),
        store: store.clone(),
        opts: fetch_opts,
    };
    let source = Arc::new(shoal_net::BlockSource::new(fetcher.clone()));
    let mounts = crate::mounts::Mounts::recover(&repo.home);
    // We hold the store lock, so any socket file left is stale.
    let sock = repo.socket_path();
    let _ = std::fs::remove_file(&sock);
    let listener =
        tokio::net::UnixListener::bind(&sock).with_context(|| format!("binding API socket {}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .context("restricting API socket to its owner")?;
    let d = Arc::new(Daemon {
        store,
        repo,
        config,
        net,
        fetcher,
        source,
        mounts,
        pop,
        mirror,
    });
    // Announce every complete dataset we hold.
    let held = {
        let store = d.store.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<Cid>> {
            let mut roots: Vec<Cid> = store.pins()?.into_iter().map(|p| p.0).collect();
            roots.extend(store.names()?.into_iter().map(|n| n.1));
            roots.sort();
            roots.dedup();
            Ok(roots
                .into_iter()
                .filter(|r| store.missing_blocks(r).map(|m| m.is_empty()).unwrap_or(false))
                .collect())
        })
        .await??
    };
    for root in held {
        d.net.provide(root).await?;
    }
    tokio::spawn(d.mirror.clone().run(d.clone()));
    eprintln!(
        "shoal daemon {} ready: peer {}, repo {}, API {}",
        env!("CARGO_PKG_VERSION"),
        d.net.peer_id(),
        d.repo.home.display(),
        sock.display()
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(listener, router(d.clone())).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(async move { serve.await });
    shutdown_signal().await;
    let _ = stop_tx.send(());
    // Unmount first: readers get their answers or errors now, not a hang.
    let dm = d.clone();
    let _ = tokio::task::spawn_blocking(move || dm.mounts.unmount_all()).await;
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; exiting anyway (the store is crash-safe)");
    }
    let _ = std::fs::remove_file(&sock);
    let store_d = d.clone();
    tokio::task::spawn_blocking(move || store_d.store.flush()).await??;
    eprintln!("shoal daemon stopped");
    Ok(())
}
