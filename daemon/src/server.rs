//! The daemon: starts a [`Node`] from the repo's config, serves the local
//! API on the repo's Unix socket, stops cleanly on SIGTERM/SIGINT.
//!
//! Each handler parses its request, calls the node and serialises the
//! answer. Long calls stream progress as NDJSON through a bounded channel
//! (progress lines are throttled and dropped, never queued without bound,
//! when the client reads slowly).

use std::convert::Infallible;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_node::{Node, ProgressFn};

use shoal_api::*;
use shoal_repo::Repo;

/// How long shutdown waits for in-flight requests before exiting anyway.
/// The store is crash-safe, so cutting a long add short loses no data.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Minimum interval between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

struct Daemon {
    node: Node,
    repo: Repo,
    gateway: Option<String>,
}

type St = State<Arc<Daemon>>;

/// A node error as an HTTP answer: status by kind, `{error, kind}` body.
struct AppError(ApiError);

impl<E: Into<ApiError>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

fn bad_request(msg: impl std::fmt::Display) -> AppError {
    AppError(ApiError {
        error: msg.to_string(),
        kind: ErrorKind::BadRequest,
    })
}

type ApiResult<T> = Result<T, AppError>;

/// A JSON request body whose rejection (malformed JSON, a missing field)
/// answers like every other error: `{error, kind: "bad_request"}`, so the
/// CLI says what was wrong instead of "daemon answered 400".
struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| JsonBody(v))
            .map_err(|e| bad_request(format!("malformed request: {}", e.body_text())))
    }
}

/// Query parameters with the same typed rejection.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, AppError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e| bad_request(format!("malformed request: {}", e.body_text())))
    }
}

/// A long call: its progress and its one result streamed as NDJSON lines.
fn streamed<T, F, Fut>(f: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(ProgressFn) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, shoal_node::Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let progress: ProgressFn = {
        let (tx, last) = (tx.clone(), Mutex::new(Instant::now() - PROGRESS_EVERY));
        Arc::new(move |p| {
            let mut last = last.lock().expect("progress lock");
            if last.elapsed() >= PROGRESS_EVERY {
                *last = Instant::now();
                let _ = tx.try_send(line(&Event::<()>::Progress(p.into())));
            }
        })
    };
    tokio::spawn(async move {
        let ev = match f(progress).await {
            Ok(v) => Event::Done(v),
            Err(e) => Event::Error(e.into()),
        };
        let _ = tx.send(line(&ev)).await;
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

async fn id(State(d): St) -> ApiResult<Json<IdInfo>> {
    let info = d.node.info().await?;
    Ok(Json(IdInfo {
        peer_id: info.peer_id.to_string(),
        addrs: info.addrs.iter().map(|a| a.to_string()).collect(),
        version: env!("CARGO_PKG_VERSION").into(),
        repo: d.repo.home.display().to_string(),
        api_socket: d.repo.socket_path().display().to_string(),
        pid: std::process::id(),
        gateway: d.gateway.clone(),
    }))
}

async fn connect(State(d): St, JsonBody(req): JsonBody<ConnectRequest>) -> ApiResult<Json<ConnectResult>> {
    let addr = req
        .addr
        .parse()
        .map_err(|e| bad_request(format!("invalid multiaddr {:?}: {e}", req.addr)))?;
    let peer = d.node.connect(addr).await?;
    Ok(Json(ConnectResult {
        peer_id: peer.to_string(),
    }))
}

async fn peers(State(d): St) -> ApiResult<Json<Vec<PeerEntry>>> {
    Ok(Json(d.node.peers().await?.into_iter().map(Into::into).collect()))
}

#[derive(Deserialize)]
struct CidQuery {
    cid: String,
}

async fn providers(State(d): St, Params(q): Params<CidQuery>) -> ApiResult<Json<ProvidersResult>> {
    let root = shoal_core::cid::parse(&q.cid).map_err(bad_request)?;
    let found = d.node.providers(root).await?;
    Ok(Json(ProvidersResult {
        root: root.to_string(),
        providers: found.iter().map(|p| p.to_string()).collect(),
    }))
}

async fn mirrors(State(d): St) -> ApiResult<Json<MirrorsResult>> {
    Ok(Json(d.node.mirrors().view().await?.into()))
}

async fn add(State(d): St, JsonBody(req): JsonBody<AddRequest>) -> Response {
    streamed(move |progress| async move {
        let path = PathBuf::from(req.path);
        let opts = shoal_node::AddOptions {
            rehash: req.rehash,
            keep: req.keep,
        };
        let r = d.node.datasets().add_path(path, req.name, opts, progress).await?;
        Ok(AddResult::from(r))
    })
}

#[derive(Deserialize)]
struct TargetQuery {
    target: String,
}

#[derive(Deserialize)]
struct NameQuery {
    name: String,
}

async fn log(State(d): St, Params(q): Params<NameQuery>) -> ApiResult<Json<Vec<VersionInfo>>> {
    Ok(Json(
        d.node
            .datasets()
            .log(&q.name)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

async fn search(State(d): St, Json(r): Json<SearchRequest>) -> ApiResult<Json<SearchResult>> {
    let found = d.node.catalogue().search(r.into())?;
    Ok(Json(SearchResult {
        matched: found.matched,
        items: found.items.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Deserialize)]
struct DiffQuery {
    a: String,
    b: String,
}

async fn diff(State(d): St, Params(q): Params<DiffQuery>) -> ApiResult<Json<DiffResult>> {
    let (a, b) = (
        d.node.datasets().resolve(&q.a).await?,
        d.node.datasets().resolve(&q.b).await?,
    );
    let r = d.node.datasets().diff(&a, &b).await?;
    Ok(Json(DiffResult {
        from: a.root.to_string(),
        to: b.root.to_string(),
        added: r.added,
        changed: r.changed,
        removed: r.removed,
    }))
}

/// Bytes of listing lines sent to the client at once.
const LS_CHUNK: usize = 64 << 10;

/// A dataset's keys as NDJSON ([`LsLine`]), streamed from the manifest: a
/// million keys never sit in the daemon's memory (nor in the CLI's). A
/// first walk counts them and finds the widest (the head carries both, and
/// a path that matches nothing is a 404 before anything is sent); the
/// second sends them, a 64 KiB chunk at a time, as fast as the client
/// reads.
async fn ls(State(d): St, Params(q): Params<TargetQuery>) -> ApiResult<Response> {
    let target = d.node.datasets().resolve(&q.target).await?;
    let counts = Arc::new(Mutex::new((0u64, 0usize)));
    let c = counts.clone();
    let summary = d
        .node
        .datasets()
        .ls_each(&target, move |e| {
            let mut c = c.lock().expect("ls lock");
            c.0 += 1;
            c.1 = c.1.max(e.key.len());
            Ok(())
        })
        .await?;
    let (listed, width) = *counts.lock().expect("ls lock");
    let head = LsLine::Head(LsHead {
        root: summary.root.to_string(),
        zarr_format: summary.zarr_format,
        keys: summary.keys,
        bytes: summary.bytes,
        unixfs: summary.unixfs.map(|c| c.to_string()),
        listed,
        width,
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        if tx.send(line(&head)).await.is_err() {
            return;
        }
        let buf = Arc::new(Mutex::new(Vec::with_capacity(LS_CHUNK)));
        let (sink, chunk) = (tx.clone(), buf.clone());
        let walked = d
            .node
            .datasets()
            .ls_each(&target, move |e| {
                let mut b = chunk.lock().expect("ls lock");
                b.extend_from_slice(&line(&LsLine::Entry(LsEntry::from(e))));
                if b.len() >= LS_CHUNK {
                    let full = Bytes::from(std::mem::replace(&mut *b, Vec::with_capacity(LS_CHUNK)));
                    sink.blocking_send(full)
                        .map_err(|_| shoal_node::Error::Unavailable("the client stopped reading the listing".into()))?;
                }
                Ok(())
            })
            .await;
        let rest = std::mem::take(&mut *buf.lock().expect("ls lock"));
        let last = match walked {
            Ok(_) => LsLine::End,
            Err(e) => LsLine::Error(e.into()),
        };
        let _ = tx.send(Bytes::from(rest)).await;
        let _ = tx.send(line(&last)).await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = Body::from_stream(tokio_stream::StreamExt::map(stream, Ok::<_, Infallible>));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

async fn cat(State(d): St, Params(q): Params<TargetQuery>) -> ApiResult<Response> {
    let target = d.node.datasets().resolve(&q.target).await?;
    let Some(key) = target.path else {
        return Err(bad_request("cat needs TARGET/KEY, e.g. mydata/temp/.zarray"));
    };
    let data = d.node.datasets().read(target.root, &key, None).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

async fn get_dataset(State(d): St, JsonBody(req): JsonBody<GetRequest>) -> Response {
    streamed(move |progress| async move {
        let target = d.node.datasets().resolve(&req.target).await?;
        if target.path.is_some() {
            return Err(shoal_node::Error::BadRequest(
                "get takes a dataset (CID or NAME), not a key; use `shoal cat` for one key".into(),
            ));
        }
        let r = if req.car {
            d.node
                .datasets()
                .export_car(&target, PathBuf::from(req.out), progress)
                .await?
        } else {
            d.node
                .datasets()
                .export(&target, PathBuf::from(req.out), progress)
                .await?
        };
        Ok(GetResult::from(r))
    })
}

async fn pin(State(d): St, JsonBody(req): JsonBody<PinRequest>) -> Response {
    streamed(move |progress| async move {
        let from = req
            .from
            .iter()
            .map(|a| {
                a.parse::<shoal_node::Multiaddr>()
                    .map_err(|e| shoal_node::Error::BadRequest(format!("--from {a}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(dir) = d.node.datasets().foreign_unixfs(&req.target).await? {
            let r = d
                .node
                .pins()
                .pin_unixfs(dir, from, req.name, req.replicas, progress)
                .await?;
            return Ok(PinResult::from(r));
        }
        for addr in from {
            d.node.connect(addr).await?;
        }
        let target = d.node.datasets().resolve(&req.target).await?;
        let r = d.node.pins().pin(&target, req.name, req.replicas, progress).await?;
        Ok(PinResult::from(r))
    })
}

async fn unpin(State(d): St, JsonBody(req): JsonBody<PinRequest>) -> ApiResult<Json<PinResult>> {
    let target = d.node.datasets().resolve(&req.target).await?;
    Ok(Json(d.node.pins().unpin(&target).await?.into()))
}

/// `?limit=N&after=ROOT`: a page of the list, after the entry of ROOT (the
/// last of the previous page); without them, the whole list.
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
}

async fn pins(State(d): St, Params(q): Params<PageQuery>) -> ApiResult<Json<Vec<PinInfo>>> {
    let after = q
        .after
        .map(|a| shoal_core::cid::parse(&a))
        .transpose()
        .map_err(bad_request)?;
    let limit = q.limit.unwrap_or(usize::MAX);
    Ok(Json(
        d.node
            .pins()
            .page(after, limit)
            .await?
            .into_iter()
            .map(PinInfo::from)
            .collect(),
    ))
}

async fn publish(State(d): St, JsonBody(req): JsonBody<NameRequest>) -> ApiResult<Json<PublishResult>> {
    Ok(Json(d.node.names().publish(&req.name).await?.into()))
}

async fn unpublish(State(d): St, JsonBody(req): JsonBody<NameRequest>) -> ApiResult<Json<UnpublishResult>> {
    let changed = d.node.names().unpublish(&req.name).await?;
    Ok(Json(UnpublishResult {
        name: req.name,
        changed,
    }))
}

async fn follow(State(d): St, JsonBody(req): JsonBody<FollowRequest>) -> ApiResult<Json<FollowInfo>> {
    Ok(Json(
        d.node.names().follow(&req.target, req.local, req.keep).await?.into(),
    ))
}

async fn follows(State(d): St) -> Json<Vec<FollowInfo>> {
    Json(d.node.names().follows().into_iter().map(FollowInfo::from).collect())
}

async fn unfollow(State(d): St, JsonBody(req): JsonBody<NameRequest>) -> ApiResult<Json<FollowInfo>> {
    Ok(Json(d.node.names().unfollow(&req.name).await?.into()))
}

async fn gc(State(d): St) -> ApiResult<Json<GcResult>> {
    Ok(Json(d.node.gc().await?.into()))
}

async fn fsck(State(d): St, JsonBody(req): JsonBody<FsckRequest>) -> ApiResult<Json<FsckResult>> {
    Ok(Json(d.node.fsck(req.repair).await?.into()))
}

async fn stats(State(d): St) -> ApiResult<Json<StatsResult>> {
    Ok(Json(StatsResult {
        repo: d.repo.home.display().to_string(),
        compute_refused: d.node.compute_refused(),
        compute_liars: d.node.compute_liars(),
        provide_failures: d.node.net_stats().provide_failures.load(Ordering::Relaxed),
        handler_panics: d.node.net_stats().handler_panics.load(Ordering::Relaxed),
        names_rejected: d.node.net_stats().names_rejected.load(Ordering::Relaxed),
        bitswap: {
            let n = d.node.net_stats();
            BitswapInfo {
                blocks_sent: n.bitswap_blocks_sent.load(Ordering::Relaxed),
                dont_have: n.bitswap_dont_have.load(Ordering::Relaxed),
                refused: n.bitswap_refused.load(Ordering::Relaxed),
                unasked: n.bitswap_unasked.load(Ordering::Relaxed),
                blocks_received: n.bitswap_blocks_received.load(Ordering::Relaxed),
            }
        },
        durability: DurabilityInfo::new(
            &d.node.scrub_state().await?,
            d.node.scrub_settings().rate,
            d.node.durability_stats(),
            d.node.recovery(),
        ),
        store: d.node.stats().await?.into(),
    }))
}

/// A consistent copy of the repo (config, identity, store and the node's
/// records) written while the daemon runs. Only over the local socket.
async fn export_repo(State(d): St, JsonBody(req): JsonBody<ExportRepoRequest>) -> ApiResult<Json<ExportRepoResult>> {
    let dest = PathBuf::from(&req.dest);
    if !dest.is_absolute() {
        return Err(bad_request(format!(
            "export-repo: {:?} is not an absolute path",
            req.dest
        )));
    }
    let (repo, store) = (d.repo.clone(), d.node.store().clone());
    let done = tokio::task::spawn_blocking(move || {
        repo.export(&dest, |to| Ok(store.backup(to, shoal_node::KEPT_BESIDE_THE_STORE)?))
    })
    .await
    .map_err(|e| bad_request(format!("export-repo: {e}")))?;
    match done {
        Ok(r) => Ok(Json(ExportRepoResult::new(req.dest, &r))),
        Err(e) => Err(bad_request(format!("export-repo: {e:#}"))),
    }
}

async fn mount(State(d): St, JsonBody(req): JsonBody<MountRequest>) -> ApiResult<Json<MountResult>> {
    let dir = d.node.mounts().mount(PathBuf::from(req.dir)).await?;
    Ok(Json(MountResult {
        dir: dir.display().to_string(),
    }))
}

async fn unmount(State(d): St, JsonBody(req): JsonBody<MountRequest>) -> ApiResult<Json<MountResult>> {
    let dir = d.node.mounts().unmount(PathBuf::from(req.dir)).await?;
    Ok(Json(MountResult {
        dir: dir.display().to_string(),
    }))
}

async fn list_mounts(State(d): St) -> Json<Vec<String>> {
    Json(d.node.mounts().list().iter().map(|p| p.display().to_string()).collect())
}

async fn query(State(d): St, JsonBody(req): JsonBody<QueryRequest>) -> ApiResult<Json<Vec<QueryResult>>> {
    let target = d.node.datasets().resolve(&req.target).await?;
    let arrays = match req.all {
        true => shoal_node::Arrays::All,
        false => shoal_node::Arrays::Listed(req.array.clone().unwrap_or_default()),
    };
    let spec = shoal_query::QuerySpec {
        array: String::new(),
        op: req.op,
        dims: req.dims,
        sel: req.isel,
        labels: req.sel,
        coords: req.coords,
        verify_all: req.verify.as_deref() == Some("all"),
        group: req.groupby.or(req.resample),
        weights: req.weights,
        ddof: req.ddof,
        raw: req.raw,
    };
    let keep = req.name.as_deref().map(|n| (n, req.no_cache));
    let run = d.node.queries().run(&target, arrays, spec, keep).await?;
    let out = run.reports.into_iter().map(|report| {
        let mut r = QueryResult::from(report);
        if let Some((root, cached)) = run.kept {
            (r.result, r.cached) = (Some(root.to_string()), cached);
        }
        r
    });
    Ok(Json(out.collect()))
}

async fn stage_open(State(d): St, JsonBody(req): JsonBody<StageRequest>) -> ApiResult<Json<StageOpened>> {
    let s = d.node.stages().open(&req.name, req.overwrite).await?;
    Ok(Json(StageOpened {
        id: s.id,
        name: s.name,
        base: s.base.map(|c| c.to_string()),
        base_version: s.base_version,
    }))
}

async fn stage_put(State(d): St, Path((id, key)): Path<(String, String)>, body: Body) -> ApiResult<Json<StagedKey>> {
    let size = d.node.stages().put(&id, &key, body.into_data_stream()).await?;
    Ok(Json(StagedKey { key, size }))
}

async fn stage_read(State(d): St, Path((id, key)): Path<(String, String)>) -> ApiResult<Response> {
    let data = d.node.stages().read(&id, &key).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

async fn stage_remove(
    State(d): St,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<StageRemoveRequest>,
) -> ApiResult<Json<StageRemoveRequest>> {
    d.node.stages().remove(&id, &req.key).await?;
    Ok(Json(req))
}

async fn stage_abort(State(d): St, Path(id): Path<String>) -> ApiResult<Json<StageRemoveRequest>> {
    d.node.stages().abort(&id).await?;
    Ok(Json(StageRemoveRequest { key: String::new() }))
}

async fn stage_commit(State(d): St, Path(id): Path<String>, JsonBody(req): JsonBody<StageCommitRequest>) -> Response {
    streamed(move |progress| async move {
        let r = d.node.stages().commit(&id, req.keep, progress).await?;
        Ok(AddResult::from(r))
    })
}

fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/id", get(id))
        .route("/v1/connect", post(connect))
        .route("/v1/peers", get(peers))
        .route("/v1/providers", get(providers))
        .route("/v1/add", post(add))
        .route("/v1/ls", get(ls))
        .route("/v1/log", get(log))
        .route("/v1/search", post(search))
        .route("/v1/diff", get(diff))
        .route("/v1/cat", get(cat))
        .route("/v1/get", post(get_dataset))
        .route("/v1/pin", post(pin))
        .route("/v1/unpin", post(unpin))
        .route("/v1/pins", get(pins))
        .route("/v1/mount", post(mount))
        .route("/v1/unmount", post(unmount))
        .route("/v1/mounts", get(list_mounts))
        .route("/v1/query", post(query))
        .route("/v1/publish", post(publish))
        .route("/v1/unpublish", post(unpublish))
        .route("/v1/follow", post(follow))
        .route("/v1/follows", get(follows))
        .route("/v1/unfollow", post(unfollow))
        .route("/v1/gc", post(gc))
        .route("/v1/fsck", post(fsck))
        .route("/v1/stats", get(stats))
        .route("/v1/export-repo", post(export_repo))
        .route("/v1/mirrors", get(mirrors))
        // Staged writes: only here, on the Unix socket, never the gateway.
        .route("/v1/stage", post(stage_open))
        .route("/v1/stage/{id}/key/{*key}", get(stage_read).put(stage_put))
        .route("/v1/stage/{id}/remove", post(stage_remove))
        .route("/v1/stage/{id}/abort", post(stage_abort))
        .route("/v1/stage/{id}/commit", post(stage_commit))
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

/// The API socket: its owner's only (0600), or also `group`'s (0660).
fn share_socket(sock: &std::path::Path, group: &str) -> Result<()> {
    if group.is_empty() {
        return std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600))
            .context("restricting API socket to its owner");
    }
    let gid = group_id(group)?;
    std::os::unix::fs::chown(sock, None, Some(gid))
        .with_context(|| format!("giving API socket {} to group {group} ([api] group)", sock.display()))?;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o660))
        .context("opening API socket to its group")?;
    // The group may pass through the repo directory to the socket (0710:
    // not list it, nor read anything else in it).
    if let Some(home) = sock.parent() {
        std::os::unix::fs::chown(home, None, Some(gid))
            .with_context(|| format!("giving repo {} to group {group}", home.display()))?;
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o710))
            .context("letting the API socket's group through the repo directory")?;
    }
    tracing::info!(group, gid, "API socket open to its group (mode 0660)");
    Ok(())
}

/// A group's id, from a number or from /etc/group.
fn group_id(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").context("reading /etc/group for [api] group")?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .with_context(|| format!("[api] group {group:?} is not in /etc/group (create it, or give its number)"))
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(repo: Repo) -> Result<()> {
    if repo.init(&[], None)? {
        tracing::info!("created repo at {}", repo.home.display());
    }
    let config = repo.load_config()?;
    let gateway_settings = config.gateway.settings()?;
    let show = |l: Option<u64>| l.map_or("unlimited".to_string(), |n| n.to_string());
    match shoal_node::raise_open_files_limit() {
        Ok((before, after)) => tracing::info!("open files limit: {} (soft limit was {})", show(after), show(before)),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    let node = Node::start(config.node_config(&repo)?).await?;
    let gateway = match gateway_settings {
        Some((addr, settings)) => Some(shoal_gateway::start(node.clone(), addr, settings).await.with_context(
            || format!("starting the HTTP gateway on {addr} ([gateway] listen in config.toml; \"\" turns it off)"),
        )?),
        None => None,
    };
    // We hold the store lock, so any socket file left is stale.
    let sock = repo.socket_path();
    let _ = std::fs::remove_file(&sock);
    let listener =
        tokio::net::UnixListener::bind(&sock).with_context(|| format!("binding API socket {}", sock.display()))?;
    share_socket(&sock, &config.api.group)?;
    let url = gateway.as_ref().map(|g| g.url());
    eprintln!(
        "shoal daemon {} ready: peer {}, repo {}, API {}, gateway {}",
        env!("CARGO_PKG_VERSION"),
        node.peer_id(),
        repo.home.display(),
        sock.display(),
        url.as_deref().map_or("off".to_string(), |u| format!("{u}/zarr/"))
    );
    let d = Arc::new(Daemon {
        node,
        repo,
        gateway: url,
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(listener, router(d.clone())).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(async move { serve.await });
    shutdown_signal().await;
    let _ = stop_tx.send(());
    if let Some(g) = gateway {
        g.stop(SHUTDOWN_GRACE).await;
    }
    // Unmount first: readers get their answers or errors now, not a hang.
    d.node.mounts().unmount_all().await;
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; exiting anyway (the store is crash-safe)");
    }
    let _ = std::fs::remove_file(&sock);
    d.node.shutdown().await?;
    eprintln!("shoal daemon stopped");
    Ok(())
}
