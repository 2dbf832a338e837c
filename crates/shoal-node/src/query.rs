//! Queries: planning where chunks run, and serving compute requests.
//!
//! Requester ([`run`]): chunks whose blocks are all local (or that are
//! absent, i.e. fill value) run here on all cores. The rest go, in batches,
//! to peers that may hold them (the dataset's providers and connected
//! peers), at most 2 requests in flight per peer; only partials come back.
//! A batch a peer fails, answers "busy", times out or partly lacks is
//! reassigned to a peer that has not tried it; chunks no peer computes are
//! fetched through the block source and computed here.
//!
//! Server ([`serve`]): computes the requested chunks from local blocks only
//! (it never fetches on a requester's behalf), one core per request; the
//! network layer bounds concurrent requests.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use shoal_core::manifest::{Entry, Manifest};
use shoal_core::{cid, Cid};
use shoal_net::codec::MAX_COMPUTE_RESPONSE;
use shoal_net::PeerId;
use shoal_query::label::Coordinate;
use shoal_query::plan::{self, Plan};
use shoal_query::storage::{FetchFn, ManifestStorage};
use shoal_query::wire::{self, ComputeHeader, ComputeRequest, MAX_CHUNKS_PER_REQUEST};
use shoal_query::{exec, grid, kernel, meta};
use shoal_query::{Partial, QuerySpec};
use shoal_store::Store;
use zarrs::array::Array;

use crate::error::Result;
use crate::popularity::{Kind, Popularity};
use crate::services::Services;
pub(crate) use crate::trust::{Liars, ServeLimits};
use crate::types::QueryReport;

/// Deadline of one compute request to a peer.
const COMPUTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Compute requests in flight per peer.
const PER_PEER_INFLIGHT: usize = 2;
/// Smallest compute request (when a query has that many remote chunks):
/// one chunk of each is checked here, so about one chunk in this many.
const CHECKED_ONE_IN: usize = 4;

pub(crate) struct Prepared {
    pub array: Arc<Array<ManifestStorage>>,
    pub plan: Plan,
}

/// Memory an entry kept takes, roughly: its key, its CIDs, the slot.
fn entry_bytes(e: &Entry) -> u64 {
    (e.key.len() + 64 * e.blocks().len() + 96) as u64
}

/// Every metadata document of the dataset, wherever the manifest keeps it
/// (inline or in its pages: `--all` names every array). The rest of the
/// manifest is walked, not kept; what is kept counts against `budget`.
fn metadata_entries<E: From<shoal_core::Error> + std::fmt::Display>(
    m: &Manifest,
    budget: u64,
    fetch: &mut dyn FnMut(&Cid) -> Result<shoal_core::Block, E>,
) -> Result<Vec<Entry>, shoal_query::Error> {
    let meta = |k: &str| shoal_core::key::METADATA_NAMES.contains(&k.rsplit('/').next().unwrap_or(k));
    /// Why the walk stopped: the budget, or the manifest could not be read.
    enum Stop<E> {
        OverBudget,
        Read(E),
    }
    impl<E: From<shoal_core::Error>> From<shoal_core::Error> for Stop<E> {
        fn from(e: shoal_core::Error) -> Self {
            Stop::Read(e.into())
        }
    }
    let (mut out, mut bytes) = (Vec::new(), 0u64);
    m.for_each_entry::<Stop<E>>(&mut |c| fetch(c).map_err(Stop::Read), &mut |e| {
        if meta(&e.key) {
            bytes += entry_bytes(e);
            if bytes > budget / 2 {
                return Err(Stop::OverBudget);
            }
            out.push(e.clone());
        }
        Ok(())
    })
    .map_err(|stop| match stop {
        Stop::OverBudget => shoal_query::Error::TooBig(format!(
            "the dataset's metadata documents need more than half the query memory budget ({budget} bytes); raise [query] memory in config.toml"
        )),
        Stop::Read(e) => shoal_query::Error::Read(e.to_string()),
    })?;
    Ok(out)
}

/// The arrays (and groups) named by metadata documents, for errors.
fn arrays_of(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| {
            e.key
                .strip_suffix("/zarr.json")
                .or_else(|| e.key.strip_suffix("/.zarray"))
        })
        .map(String::from)
        .collect()
}

/// The coordinate arrays of an array's dimensions `dims` (the 1-D array
/// named as the dimension beside it, as xarray stores them), their keys
/// looked up in the manifest's pages. Dimensions without one are left out.
fn coordinates(
    m: &Manifest,
    array: &str,
    dims: &[String],
    fetch: &FetchFn,
    budget: u64,
) -> Result<HashMap<String, Coordinate>, shoal_query::Error> {
    let group = array.rsplit_once('/').map(|(g, _)| format!("{g}/")).unwrap_or_default();
    let storage = || ManifestStorage::lazy(m.clone(), fetch.clone());
    let keys = storage();
    let has = |path: &str| {
        keys.entry(&format!("{path}/.zarray")).is_some() || keys.entry(&format!("{path}/zarr.json")).is_some()
    };
    let mut out = HashMap::new();
    for d in dims {
        let path = format!("{group}{d}");
        if path != array && has(&path) {
            out.insert(
                d.clone(),
                meta::read_coordinate(storage(), m.zarr_format, &path, budget)?,
            );
        }
    }
    Ok(out)
}

/// Turns the label selections of `spec` into index selections, looking the
/// labels up in the dimensions' coordinates. What is planned, run and sent
/// to peers carries index ranges only.
fn resolve_labels(
    info: &meta::ArrayInfo,
    mut spec: QuerySpec,
    coords: &HashMap<String, Coordinate>,
) -> Result<QuerySpec, shoal_query::Error> {
    for label in std::mem::take(&mut spec.labels) {
        let dim = &label.dim;
        let Some(i) = info.dims.iter().position(|d| d == dim) else {
            return Err(shoal_query::Error::UnknownDim {
                dim: dim.clone(),
                array: spec.array.clone(),
                dims: info.dims.join(", "),
            });
        };
        if spec.sel.iter().any(|(d, _, _)| d == dim) {
            return Err(shoal_query::Error::Selection(format!(
                "{dim} is selected twice (--sel and --isel)"
            )));
        }
        let coord = coords.get(dim).ok_or_else(|| {
            shoal_query::Error::Selection(format!(
                "{dim} has no coordinate array to select labels in; use --isel {dim}=I:J"
            ))
        })?;
        if coord.values.len() as u64 != info.shape[i] {
            return Err(shoal_query::Error::Selection(format!(
                "the coordinate of {dim} has {} values but {} has {} along {dim}",
                coord.values.len(),
                spec.array,
                info.shape[i]
            )));
        }
        let r = shoal_query::label::index_range(&label, coord)?;
        spec.sel.push((dim.clone(), r.start, r.end));
    }
    Ok(spec)
}

/// The data variables of dataset `root` that have every dimension in
/// `dims`: arrays that are not coordinates (a 1-D array named as its
/// dimension), of a type queries reduce, in path order.
pub(crate) fn data_arrays(parts: &Services, root: Cid, dims: &[String]) -> Result<Vec<String>> {
    let m = parts.manifest(&root)?;
    let reader = Arc::new(parts.reader(root));
    let budget = parts.query.memory;
    let entries = metadata_entries(&m, budget, &mut reader.fetch())?;
    let fetch: FetchFn = {
        let reader = reader.clone();
        Arc::new(move |c| reader.get(c))
    };
    let storage = ManifestStorage::new(entries.clone(), m.block_size, fetch);
    let mut out = Vec::new();
    for path in arrays_of(&entries) {
        let Ok(info) = meta::array_info(&storage, m.zarr_format, &path, true, &[], budget) else {
            continue; // a group, or a type queries do not reduce
        };
        let name = path.rsplit('/').next().unwrap_or(&path);
        let coordinate = info.dims.len() == 1 && info.dims[0] == name;
        if !coordinate && dims.iter().all(|d| info.dims.contains(d)) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Names a latitude dimension goes by.
const LATITUDE_NAMES: [&str; 4] = ["lat", "latitude", "nav_lat", "y"];

/// The grouping and weights of `spec`, read from the dataset: the time
/// coordinate's selected positions for a grouping, the latitude
/// coordinate (`coslat`) or another array (`ARRAY`) for weights.
#[allow(clippy::too_many_arguments)]
fn extras(
    m: &Manifest,
    spec: &QuerySpec,
    info: &meta::ArrayInfo,
    fetch: &FetchFn,
    budget: u64,
) -> Result<(plan::Extras, Option<Coordinate>), shoal_query::Error> {
    let mut out = plan::Extras::default();
    let mut time = None;
    let unknown = |dim: &str| shoal_query::Error::UnknownDim {
        dim: dim.to_string(),
        array: spec.array.clone(),
        dims: info.dims.join(", "),
    };
    if let Some(g) = &spec.group {
        let i = info
            .dims
            .iter()
            .position(|d| *d == g.dim)
            .ok_or_else(|| unknown(&g.dim))?;
        let mut coords = coordinates(m, &spec.array, std::slice::from_ref(&g.dim), fetch, budget)?;
        let c = coords
            .remove(&g.dim)
            .ok_or_else(|| shoal_query::Error::Selection(format!("{}: {} has no coordinate array", g.text(), g.dim)))?;
        let range = spec
            .sel
            .iter()
            .find(|s| s.0 == g.dim)
            .map_or(0..info.shape[i], |s| s.1..s.2);
        let values = c
            .values
            .get(range.start as usize..range.end as usize)
            .filter(|_| c.values.len() as u64 == info.shape[i])
            .ok_or_else(|| {
                shoal_query::Error::Selection(format!(
                    "the coordinate of {} has {} values but {} has {} along it",
                    g.dim,
                    c.values.len(),
                    spec.array,
                    info.shape[i]
                ))
            })?;
        out.group = Some(shoal_query::group::resolve(g, &c, values)?);
        time = Some(c);
    }
    match spec.weights.as_deref() {
        None => {}
        Some("coslat") => {
            let named: Vec<String> = info
                .dims
                .iter()
                .filter(|d| LATITUDE_NAMES.contains(&d.to_ascii_lowercase().as_str()))
                .cloned()
                .collect();
            let dims = if named.is_empty() { info.dims.clone() } else { named };
            let coords = coordinates(m, &spec.array, &dims, fetch, budget)?;
            let is_lat = |d: &String, c: &Coordinate| {
                let attr = |k: &str| c.attrs.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
                LATITUDE_NAMES[..2].contains(&d.to_ascii_lowercase().as_str())
                    || attr("standard_name") == "latitude"
                    || attr("units").starts_with("degrees_north")
            };
            let (dim, c) = dims
                .iter()
                .find_map(|d| coords.get(d).filter(|c| is_lat(d, c)).map(|c| (d, c)))
                .ok_or_else(|| {
                    shoal_query::Error::Selection(format!(
                        "weights coslat: {} has no latitude coordinate (a dimension named lat or latitude, or with units degrees_north)",
                        spec.array
                    ))
                })?;
            let values = c.values.iter().map(|v| v.to_radians().cos()).collect();
            let n = c.values.len() as u64;
            out.weights = Some(plan::Weights::new(
                info,
                "coslat",
                std::slice::from_ref(dim),
                &[n],
                values,
            )?);
        }
        Some(name) => {
            let group = spec
                .array
                .rsplit_once('/')
                .map(|(g, _)| format!("{g}/"))
                .unwrap_or_default();
            let path = if name.contains('/') {
                name.trim_matches('/').to_string()
            } else {
                format!("{group}{name}")
            };
            let storage = ManifestStorage::lazy(m.clone(), fetch.clone());
            if storage.entry(&format!("{path}/.zarray")).is_none()
                && storage.entry(&format!("{path}/zarr.json")).is_none()
            {
                return Err(shoal_query::Error::Selection(format!(
                    "weights {name}: no array {path} in this dataset"
                )));
            }
            let (winfo, _, values) = meta::read_whole(storage, m.zarr_format, &path, budget)?;
            out.weights = Some(plan::Weights::new(info, name, &winfo.dims, &winfo.shape, values)?);
        }
    }
    Ok((out, time))
}

/// A grouping's labels and the time coordinate they were read from (its
/// attributes encode time labels in the result).
type GroupLabels = Option<(shoal_query::group::Labels, Coordinate)>;

/// Opens `spec.array` of dataset `root`, reading blocks through `fetch`
/// (and manifest pages through `walk`), and plans within `budget` bytes.
/// Also returns a grouping's labels.
fn prepare(
    manifest: Manifest,
    spec: &QuerySpec,
    fetch: FetchFn,
    budget: u64,
) -> Result<(Prepared, GroupLabels), shoal_query::Error> {
    // The arrays named in an error: those of the inline metadata.
    let arrays = arrays_of(&manifest.metadata);
    let storage = ManifestStorage::lazy(manifest.clone(), fetch.clone());
    let info = meta::array_info(&storage, manifest.zarr_format, &spec.array, spec.raw, &arrays, budget)?;
    let (extras, time) = if spec.group.is_some() || spec.weights.is_some() {
        extras(&manifest, spec, &info, &fetch, budget)?
    } else {
        Default::default()
    };
    // Metadata is checked (shapes, chunk sizes) before zarrs opens it; every
    // chunk read from now on is checked against what it may decode to.
    let storage = storage.with_guard(info.guard.clone());
    let array = Array::open(Arc::new(storage), &format!("/{}", spec.array))
        .map_err(|e| shoal_query::Error::Metadata(format!("cannot open array {}: {e}", spec.array)))?;
    let labels = extras.group.as_ref().map(|g| g.labels.clone()).zip(time);
    let plan = plan::plan_with(info, spec, budget, extras)?;
    Ok((
        Prepared {
            array: Arc::new(array),
            plan,
        },
        labels,
    ))
}

/// What a query did, for the report.
#[derive(Debug, Default)]
struct Outcome {
    pub partials: Vec<Partial>,
    pub chunks_local: u64,
    pub chunks_remote: HashMap<PeerId, u64>,
    pub chunks_fetched: u64,
    pub compute_bytes: u64,
    /// Peers caught returning wrong partials in this query.
    pub liars: Vec<PeerId>,
    pub chunks_checked: u64,
    pub peers_asked: u64,
}

struct Batch {
    chunks: Vec<Vec<u64>>,
    tried: HashSet<PeerId>,
}

/// Answers a query of dataset `root` (blocking: run it on the blocking
/// pool): loads the manifest, plans, runs, finishes the values.
pub(crate) fn execute(parts: &Services, root: Cid, mut spec: QuerySpec) -> Result<QueryReport> {
    let start = Instant::now();
    let m = parts.manifest(&root)?;
    let reader = Arc::new(parts.reader(root));
    let budget = parts.query.memory;
    // Worker threads read local blocks directly; missing ones come from
    // peers through the block source.
    let fetch: FetchFn = {
        let reader = reader.clone();
        Arc::new(move |c| reader.get(c))
    };
    // Coordinates: for label selections, and for a result written as a
    // dataset (all of the array's dimensions).
    let (coords, attrs) = if spec.labels.is_empty() && !spec.coords {
        (HashMap::new(), serde_json::Map::new())
    } else {
        let meta = ManifestStorage::lazy(m.clone(), fetch.clone());
        let info = meta::array_info(&meta, m.zarr_format, &spec.array, true, &arrays_of(&m.metadata), budget)?;
        let mut dims: Vec<String> = spec.labels.iter().map(|l| l.dim.clone()).collect();
        if spec.coords {
            dims.extend(info.dims.iter().cloned());
        }
        dims.dedup();
        let coords = coordinates(&m, &spec.array, &dims, &fetch, budget)?;
        let attrs = meta::array_attrs(&meta, m.zarr_format, &spec.array)?;
        spec = resolve_labels(&info, spec, &coords)?;
        (coords, attrs)
    };
    let (prepared, labels) = prepare(m, &spec, fetch, budget)?;
    // Twice the cores: while one worker waits on a cold disk read, another
    // decodes and reduces.
    let threads = 2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let outcome = run(parts, root, &spec, &prepared, threads)?;
    let plan = &prepared.plan;
    let mut remote: Vec<(PeerId, u64)> = outcome.chunks_remote.into_iter().collect();
    remote.sort();
    Ok(QueryReport {
        root,
        op: spec.op,
        dims: plan.out_dims.clone(),
        reduced: plan.reduced_dims(),
        shape: plan.out_shape.clone(),
        values: outcome
            .partials
            .iter()
            .map(|p| {
                if plan.weighted() {
                    p.finish_weighted(spec.op)
                } else {
                    p.finish(spec.op, spec.ddof)
                }
            })
            .collect(),
        source_dtype: plan.info.dtype.clone(),
        chunks: plan.chunk_count,
        chunks_local: outcome.chunks_local,
        chunks_remote: remote,
        chunks_fetched: outcome.chunks_fetched,
        network_bytes: outcome.compute_bytes + reader.fetched_bytes(),
        elapsed: start.elapsed(),
        liars: outcome.liars,
        chunks_checked: outcome.chunks_checked,
        peers_asked: outcome.peers_asked,
        selection: plan
            .info
            .dims
            .iter()
            .zip(&plan.ranges)
            .map(|(d, r)| (d.clone(), r.start, r.end))
            .collect(),
        coords: plan
            .out_dims
            .iter()
            .enumerate()
            .filter_map(|(k, d)| {
                let i = (0..plan.info.dims.len()).filter(|i| !plan.reduced[*i]).nth(k)?;
                if plan.group.as_ref().is_some_and(|g| g.axis == i) {
                    let (l, time) = labels.as_ref()?;
                    return Some(crate::types::ResultCoord::of_labels(d, l, &time.attrs));
                }
                let r = &plan.ranges[i];
                let c = coords.get(d)?;
                Some(crate::types::ResultCoord::new(
                    d,
                    c.raw.get(r.start as usize..r.end as usize)?.to_vec(),
                    c.attrs.clone(),
                ))
            })
            .collect(),
        attrs,
        array: spec.array,
    })
}

/// Runs a prepared query: local chunks here, the rest on peers.
fn run(
    parts: &Services,
    root: Cid,
    spec: &QuerySpec,
    p: &Prepared,
    threads: usize,
) -> Result<Outcome, shoal_query::Error> {
    let (rt, net, store) = (&tokio::runtime::Handle::current(), &parts.net, &parts.store);
    // Fewer workers when their grids would not fit; an error if one does not.
    let threads = p.plan.threads_within(threads)?;
    let mut out = Outcome::default();
    let (mut local, mut remote_chunks) = (Vec::new(), Vec::new());
    for c in p.plan.chunks() {
        let key = exec::chunk_key(&p.array, &c);
        let here = match p.array.storage().entry(&key) {
            None => true, // absent chunk: the fill value, no data needed
            Some(e) => e.blocks().iter().all(|b| store.has(b).unwrap_or(false)),
        };
        if here {
            local.push(c);
        } else {
            remote_chunks.push(c);
        }
    }
    let cells = p.plan.full_region().cells();
    let full = p.plan.full_region();
    // Only when some chunks are not held here: who may hold them? First
    // the dataset's providers; what none of them computed goes to the
    // connected peers that do not provide it (a partial copy, a cache),
    // except peers caught lying. Peers' partials are kept apart until the
    // end of each round (one grid per peer), so no more than the memory
    // budget has grids for.
    let per_grid = (cells as u64).saturating_mul(plan::CELL_BYTES).max(1);
    let fit = ((parts.query.memory / 2) / per_grid).max(1) as usize;
    let (providers, others) = if remote_chunks.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let (p, o) = rt.block_on(candidates(net, root, parts.provider_timeout));
        let keep =
            |v: Vec<PeerId>| -> Vec<PeerId> { v.into_iter().filter(|c| !parts.liars.contains(c)).take(fit).collect() };
        (keep(p), keep(o))
    };
    let mut fetched_here = 0;
    if providers.is_empty() && others.is_empty() {
        // Nobody to ask: fetch their blocks and compute here.
        fetched_here = remote_chunks.len() as u64;
        local.append(&mut remote_chunks);
    }
    let (check_tx, check_rx) = std::sync::mpsc::channel::<Check>();
    let check_rx = std::sync::Mutex::new(check_rx);
    let (local_grid, local_failed, remote) = std::thread::scope(|s| {
        let h = s.spawn(|| exec::compute_chunks(&p.array, &p.plan, &local, threads, &full));
        // Checks of peers' answers run here, CHECK_THREADS at a time; each
        // first fetches the chunk's missing blocks together (one round
        // trip, not one per block).
        let check_rx = &check_rx;
        for _ in 0..CHECK_THREADS {
            s.spawn(move || loop {
                let next = check_rx.lock().expect("checks lock").recv();
                let Ok((chunk, reply)) = next else { break };
                prefetch_chunk(rt, parts, root, p, &chunk);
                let _ = reply.send(compute_here(p, &chunk));
            });
        }
        let remote = rt.block_on(async {
            let ask = |chunks, peers, checks| remote_loop(net, root, spec, chunks, peers, cells, checks, &parts.liars);
            let mut r = ask(remote_chunks, &providers, check_tx.clone()).await;
            r.asked = providers.len();
            if !r.leftover.is_empty() && !others.is_empty() {
                let more = ask(std::mem::take(&mut r.leftover), &others, check_tx).await;
                r.absorb(more);
                r.asked += others.len();
            }
            r
        });
        let (g, f) = h.join().expect("local workers panicked");
        (g, f, remote)
    });
    if let Some((_, e)) = local_failed.into_iter().next() {
        return Err(e);
    }
    out.chunks_local = local.len() as u64 - fetched_here;
    out.chunks_fetched = fetched_here;
    let RemoteResult {
        mut grid,
        per_peer,
        leftover,
        bytes,
        liars,
        unverified,
        checked,
        asked,
    } = remote;
    out.peers_asked = asked as u64;
    if !unverified.is_empty() {
        tracing::info!(peers = ?unverified, "answers that could not be checked here were not used");
    }
    shoal_query::partial::merge_into(&mut grid, &local_grid);
    drop(local_grid);
    out.chunks_remote = per_peer;
    out.compute_bytes = bytes;
    out.liars = liars;
    out.chunks_checked = checked;
    if !leftover.is_empty() {
        // Nobody computed these: fetch their blocks and compute here.
        let (g, failed) = exec::compute_chunks(&p.array, &p.plan, &leftover, threads, &full);
        if let Some((_, e)) = failed.into_iter().next() {
            return Err(e);
        }
        shoal_query::partial::merge_into(&mut grid, &g);
        out.chunks_fetched += leftover.len() as u64;
    }
    out.partials = grid;
    Ok(out)
}

/// Who may compute chunks of `root`: its providers, and the connected
/// peers that do not provide it (a peer may hold some chunks without
/// providing the dataset: a partial copy, its cache), asked only for what
/// no provider computed.
async fn candidates(net: &shoal_net::Client, root: Cid, timeout: Duration) -> (Vec<PeerId>, Vec<PeerId>) {
    let providers: Vec<PeerId> = net
        .find_providers(root, timeout)
        .await
        .map(|p| p.into_iter().collect())
        .unwrap_or_default();
    let mut others = Vec::new();
    for p in net.peers().await.unwrap_or_default() {
        if let Ok(id) = p.peer_id.parse() {
            if !providers.contains(&id) && !others.contains(&id) {
                others.push(id);
            }
        }
    }
    (providers, others)
}

/// A chunk to compute here, to check a peer's answer for it; the partials
/// (or why they could not be computed) come back on the oneshot.
type Check = (
    Vec<u64>,
    tokio::sync::oneshot::Sender<Result<Vec<(usize, Partial)>, String>>,
);

/// Chunks checked here at once.
const CHECK_THREADS: usize = 4;

/// Fetches the blocks of `chunk` this node lacks, all at once (verified
/// and kept as cache by the block source), so computing it here reads
/// local blocks instead of one network round trip per block.
fn prefetch_chunk(rt: &tokio::runtime::Handle, parts: &Services, root: Cid, p: &Prepared, chunk: &[u64]) {
    let key = exec::chunk_key(&p.array, chunk);
    let storage = p.array.storage();
    let Some(e) = storage.entry(&key) else { return };
    let missing: Vec<Cid> = e
        .blocks()
        .iter()
        .filter(|b| !parts.store.has(b).unwrap_or(false))
        .copied()
        .collect();
    if missing.is_empty() {
        return;
    }
    let source = parts.source.clone();
    rt.block_on(futures::future::join_all(missing.into_iter().map(|c| {
        let source = source.clone();
        async move { source.get(c, root).await }
    })));
}

/// The partials of one chunk computed here from verified blocks (fetched
/// when not held), as a peer would answer a request for it alone.
fn compute_here(p: &Prepared, chunk: &[u64]) -> Result<Vec<(usize, Partial)>, String> {
    let plan = &p.plan;
    let region = plan.chunk_region(chunk).map_err(|e| e.to_string())?;
    let grid = shoal_query::grid::SharedGrid::new(region.cells());
    kernel::reduce_chunk_into(&p.array, plan, chunk, &region, &grid, 0).map_err(|e| e.to_string())?;
    let g = grid.into_vec();
    let mut enc = wire::Encoder::new(plan.fields());
    enc.add(&region, &plan.out_shape, &g);
    let bytes = enc.finish(&ComputeHeader {
        computed: vec![0],
        ..Default::default()
    });
    Ok(wire::response_partials(&bytes, plan.full_region().cells(), 1, plan.fields())?.1)
}

/// What the remote part of a query produced: the merged partials of the
/// peers that passed every check, chunks per peer, chunks nobody computed
/// (to compute here), bytes moved, and the peers caught lying.
struct RemoteResult {
    grid: Vec<Partial>,
    per_peer: HashMap<PeerId, u64>,
    leftover: Vec<Vec<u64>>,
    bytes: u64,
    liars: Vec<PeerId>,
    /// Peers whose answers could not be checked here (none of them used).
    unverified: Vec<PeerId>,
    /// Chunks computed here to check a peer's answer.
    checked: u64,
    /// Peers asked (set by the caller: the rounds' candidates).
    asked: usize,
}

impl RemoteResult {
    /// Adds a later round's result (over other peers, for this round's
    /// leftover) to this one.
    fn absorb(&mut self, r: RemoteResult) {
        shoal_query::partial::merge_into(&mut self.grid, &r.grid);
        for (peer, n) in r.per_peer {
            *self.per_peer.entry(peer).or_default() += n;
        }
        self.leftover.extend(r.leftover);
        self.bytes += r.bytes;
        self.liars.extend(r.liars);
        self.unverified.extend(r.unverified);
        self.checked += r.checked;
    }
}

/// One answer (or a check's verdict) coming back to the loop.
enum Event {
    Answer {
        peer: PeerId,
        res: std::result::Result<Vec<u8>, String>,
        batch: Batch,
        probe: bool,
    },
    Checked {
        peer: PeerId,
        chunk: Vec<u64>,
        answer: Vec<(usize, Partial)>,
        here: Result<Vec<(usize, Partial)>, String>,
    },
}

#[allow(clippy::too_many_arguments)]
async fn remote_loop(
    net: &shoal_net::Client,
    root: Cid,
    spec: &QuerySpec,
    chunks: Vec<Vec<u64>>,
    candidates: &[PeerId],
    cells: usize,
    checks: std::sync::mpsc::Sender<Check>,
    liars: &Liars,
) -> RemoteResult {
    let mut out = RemoteResult {
        grid: vec![Partial::EMPTY; cells],
        per_peer: HashMap::new(),
        leftover: Vec::new(),
        bytes: 0,
        liars: Vec::new(),
        unverified: Vec::new(),
        checked: 0,
        asked: 0,
    };
    if chunks.is_empty() {
        return out;
    }
    if candidates.is_empty() {
        // Nobody to ask (the caller computes these here).
        out.leftover = chunks;
        return out;
    }
    // Audit mode checks every chunk, so every request holds one chunk.
    // Otherwise one chunk of every request is checked: requests of at
    // least CHECKED_ONE_IN chunks (when there are that many) keep the
    // checks to at most one chunk in four (one in 64 for large queries),
    // while small enough to spread over every candidate twice.
    let size = if spec.verify_all {
        1
    } else {
        chunks
            .len()
            .div_ceil(candidates.len() * PER_PEER_INFLIGHT)
            .max(CHECKED_ONE_IN.min(chunks.len()))
            .clamp(1, MAX_CHUNKS_PER_REQUEST)
    };
    let mut queue: VecDeque<Batch> = chunks
        .chunks(size)
        .map(|c| Batch {
            chunks: c.to_vec(),
            tried: HashSet::new(),
        })
        .collect();
    let mut load: HashMap<PeerId, usize> = HashMap::new();
    // Peers whose answer was malformed: asked nothing more in this query.
    let mut struck: HashSet<PeerId> = HashSet::new();
    // Each peer's partials stay apart until the end: a peer caught lying
    // later in the query loses all of them, and its chunks are recomputed.
    let mut grids: HashMap<PeerId, Vec<Partial>> = HashMap::new();
    let mut done: HashMap<PeerId, Vec<Vec<u64>>> = HashMap::new();
    let mut rng = rand::thread_rng();
    // Checks split off a request, waiting for a free slot of its peer.
    let mut checks_due: Vec<(PeerId, Batch)> = Vec::new();
    let mut inflight: FuturesUnordered<futures::future::BoxFuture<'_, Event>> = FuturesUnordered::new();
    let send = |peer: PeerId, batch: Batch, probe: bool, bytes: &mut u64| -> futures::future::BoxFuture<'_, Event> {
        let body = serde_json::to_vec(&ComputeRequest {
            root: root.to_string(),
            spec: spec.clone(),
            chunks: batch.chunks.clone(),
        })
        .expect("request serialises");
        *bytes += body.len() as u64;
        let net = net.clone();
        Box::pin(async move {
            let res = net
                .compute(peer, body, COMPUTE_TIMEOUT)
                .await
                .map_err(|e| e.to_string());
            Event::Answer {
                peer,
                res,
                batch,
                probe,
            }
        })
    };
    loop {
        // Checks split off earlier go first, each to its own peer, as
        // soon as that peer has a free request slot (servers answer
        // "busy" beyond two at once), between its ordinary requests.
        let mut held = Vec::new();
        for (peer, probe) in checks_due.drain(..) {
            if liars.contains(&peer) || struck.contains(&peer) {
                queue.push_back(probe);
            } else if load.get(&peer).copied().unwrap_or(0) < PER_PEER_INFLIGHT {
                *load.entry(peer).or_default() += 1;
                inflight.push(send(peer, probe, true, &mut out.bytes));
            } else {
                held.push((peer, probe));
            }
        }
        checks_due = held;
        let mut waiting = VecDeque::new();
        while let Some(b) = queue.pop_front() {
            let untried: Vec<PeerId> = candidates
                .iter()
                .copied()
                .filter(|c| !b.tried.contains(c) && !struck.contains(c) && !liars.contains(c))
                .collect();
            if untried.is_empty() {
                out.leftover.extend(b.chunks);
                continue;
            }
            let Some(peer) = untried
                .iter()
                .copied()
                .filter(|c| load.get(c).copied().unwrap_or(0) < PER_PEER_INFLIGHT)
                .min_by_key(|c| load.get(c).copied().unwrap_or(0))
            else {
                waiting.push_back(b);
                continue;
            };
            *load.entry(peer).or_default() += 1;
            // One chunk of every request goes separately (when the peer has
            // a free slot) and is checked here: the peer cannot tell it
            // from any other small request.
            let mut b = b;
            if b.chunks.len() > 1 {
                use rand::Rng;
                let k = rng.gen_range(0..b.chunks.len());
                let probe = Batch {
                    chunks: vec![b.chunks.swap_remove(k)],
                    tried: b.tried.clone(),
                };
                checks_due.push((peer, probe));
                inflight.push(send(peer, b, false, &mut out.bytes));
            } else {
                inflight.push(send(peer, b, true, &mut out.bytes));
            }
        }
        queue = waiting;
        let Some(event) = inflight.next().await else {
            if queue.is_empty() && checks_due.is_empty() {
                break;
            }
            continue;
        };
        let (peer, res, mut b, probe) = match event {
            Event::Checked {
                peer,
                chunk,
                answer,
                here,
            } => {
                if liars.contains(&peer) || out.unverified.contains(&peer) {
                    // Caught (or found uncheckable) meanwhile: its chunks
                    // are already requeued.
                    queue.push_back(Batch {
                        chunks: vec![chunk],
                        tried: HashSet::from([peer]),
                    });
                    continue;
                }
                // A check that cannot run here (the chunk's blocks could not
                // be had, or do not decode) proves nothing: the peer's
                // answers are unverified, so none of them count (fail
                // closed). It is not called a liar, but it is asked nothing
                // more in this query; its chunks go to other holders, or
                // are computed here.
                let verdict = match &here {
                    Ok(here) => wire::partials_agree(&answer, here).map_err(|why| (why, true)),
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "could not check a peer's chunk here; its answers are not used");
                        Err((format!("its answer could not be checked here: {e}"), false))
                    }
                };
                match verdict {
                    Ok(()) => {
                        let g = grids.entry(peer).or_insert_with(|| vec![Partial::EMPTY; cells]);
                        for (c, p) in answer {
                            g[c] = g[c].merge(p);
                        }
                        done.entry(peer).or_default().push(chunk);
                        *out.per_peer.entry(peer).or_default() += 1;
                    }
                    Err((why, lied)) => {
                        if lied {
                            liars.catch(peer, &why);
                            out.liars.push(peer);
                        } else {
                            struck.insert(peer);
                            out.unverified.push(peer);
                        }
                        grids.remove(&peer);
                        out.per_peer.remove(&peer);
                        let mut redo = done.remove(&peer).unwrap_or_default();
                        redo.push(chunk);
                        for c in redo {
                            queue.push_back(Batch {
                                chunks: vec![c],
                                tried: HashSet::from([peer]),
                            });
                        }
                    }
                }
                continue;
            }
            Event::Answer {
                peer,
                res,
                batch,
                probe,
            } => (peer, res, batch, probe),
        };
        *load.entry(peer).or_default() -= 1;
        b.tried.insert(peer);
        if liars.contains(&peer) || out.unverified.contains(&peer) {
            queue.push_back(b);
            continue;
        }
        let resp = match res {
            Ok(r) if r.is_empty() => Err("busy".to_string()),
            Ok(r) => {
                out.bytes += r.len() as u64;
                // Checked whole; a malformed answer strikes the peer for
                // this query.
                wire::response_partials(&r, cells, b.chunks.len(), wire::Fields::of(spec)).inspect_err(|e| {
                    tracing::warn!(%peer, error = %e, "malformed compute answer; not asking this peer again");
                    struck.insert(peer);
                })
            }
            Err(e) => Err(e),
        };
        match resp {
            Ok((
                ComputeHeader {
                    error: None,
                    computed,
                    missing,
                },
                pairs,
            )) => {
                if !missing.is_empty() {
                    queue.push_back(Batch {
                        chunks: missing.iter().map(|i| b.chunks[*i].clone()).collect(),
                        tried: b.tried.clone(),
                    });
                }
                if computed.is_empty() {
                    continue;
                }
                if probe {
                    // Compute the same chunk here (blocking work, on the
                    // checking thread) before its partials count.
                    let chunk = b.chunks[computed[0]].clone();
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    out.checked += 1;
                    let here = if checks.send((chunk.clone(), tx)).is_ok() {
                        Some(rx)
                    } else {
                        None
                    };
                    inflight.push(Box::pin(async move {
                        let here = match here {
                            Some(rx) => rx.await.unwrap_or_else(|_| Err("the checking thread stopped".into())),
                            None => Err("the checking thread stopped".into()),
                        };
                        Event::Checked {
                            peer,
                            chunk,
                            answer: pairs,
                            here,
                        }
                    }));
                } else {
                    let g = grids.entry(peer).or_insert_with(|| vec![Partial::EMPTY; cells]);
                    for (c, p) in pairs {
                        g[c] = g[c].merge(p);
                    }
                    *out.per_peer.entry(peer).or_default() += computed.len() as u64;
                    done.entry(peer)
                        .or_default()
                        .extend(computed.iter().map(|i| b.chunks[*i].clone()));
                }
            }
            Ok((ComputeHeader { error: Some(e), .. }, _)) | Err(e) => {
                tracing::info!(%peer, error = %e, chunks = b.chunks.len(), "compute request failed; reassigning");
                queue.push_back(b);
            }
        }
    }
    for (_, g) in grids {
        shoal_query::partial::merge_into(&mut out.grid, &g);
    }
    out
}

/// Answers a peer's compute request from local blocks. A request for a
/// dataset held here counts as a query of it (popularity), so a dataset
/// queried remotely is seen as requested by its holder as well.
///
/// Memory: what a request may cost is bounded by `limits.request_memory`,
/// whatever its spec says. The chunks it names are checked against the
/// plan (rank, inside the selection); grids cover only the output cells
/// those chunks touch, one region at a time; a request whose largest region,
/// decode buffer and answer would not fit is refused with an error answer
/// (and counted), never allocated.
pub(crate) fn serve(store: &Arc<Store>, pop: &Popularity, limits: &ServeLimits, body: &[u8]) -> Vec<u8> {
    let fail = |e: String| {
        wire::encode_response(
            &ComputeHeader {
                error: Some(e),
                ..Default::default()
            },
            &[],
            wire::Fields::plain(shoal_query::Op::Count),
        )
    };
    let refuse = |e: String| {
        limits.refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(error = %e, "refused a compute request");
        fail(e)
    };
    let req: ComputeRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return fail(format!("bad request: {e}")),
    };
    if req.chunks.len() > MAX_CHUNKS_PER_REQUEST {
        return fail(format!("more than {MAX_CHUNKS_PER_REQUEST} chunks in one request"));
    }
    let all_missing = || {
        wire::encode_response(
            &ComputeHeader {
                missing: (0..req.chunks.len()).collect(),
                ..Default::default()
            },
            &[],
            wire::Fields::of(&req.spec),
        )
    };
    let Ok(root) = cid::parse(&req.root) else {
        return fail("bad root CID".into());
    };
    if store.pin_kinds(&root).is_ok_and(|k| !k.is_empty()) {
        pop.record(root, Kind::Query, 1);
    }
    let Ok(manifest) = store.manifest(&root) else {
        return all_missing();
    };
    let budget = limits.request_memory;
    let local = store.clone();
    let fetch: FetchFn = Arc::new(move |c| match local.get(c) {
        Ok(Some(b)) => Ok(b),
        _ => Err(format!("block {c} is not held here")),
    });
    let p = match prepare(manifest, &req.spec, fetch, budget) {
        Ok((p, _)) => p,
        Err(shoal_query::Error::TooBig(e)) => return refuse(e),
        Err(e) => return fail(e.to_string()),
    };
    // Chunks by the output region they reduce into. Without a grouping,
    // two chunks' regions are equal or disjoint; with one, chunks in
    // different years share month bins, so their regions may overlap:
    // then one region bounds them all and every cell is sent once.
    let mut regions: BTreeMap<grid::Region, Vec<usize>> = BTreeMap::new();
    for (i, c) in req.chunks.iter().enumerate() {
        match p.plan.chunk_region(c) {
            Ok(r) => regions.entry(r).or_default().push(i),
            Err(e) => return fail(e.to_string()),
        }
    }
    if p.plan.group.is_some() && regions.len() > 1 {
        let mut keys = regions.keys();
        let first = keys.next().expect("more than one").clone();
        let bound = keys.fold(first, |a, r| a.union(r));
        regions = BTreeMap::from([(bound, (0..req.chunks.len()).collect())]);
    }
    let largest = regions.keys().map(|r| r.cells() as u64).max().unwrap_or(0);
    let answer_cells: u64 = regions.keys().map(|r| r.cells() as u64).sum();
    let answer = wire::response_bytes(answer_cells, p.plan.fields());
    let cost = largest
        .saturating_mul(plan::CELL_BYTES)
        .saturating_add(p.plan.info.chunk_bytes.saturating_mul(3))
        .saturating_add(answer);
    if cost > budget || answer > (MAX_COMPUTE_RESPONSE / 2) as u64 {
        return refuse(format!(
            "this compute request needs about {cost} bytes ({largest} cells in its largest region, {answer} bytes of answer); this daemon allows {budget} per request: send fewer chunks per request or compute them where the blocks are fetched"
        ));
    }
    let started = Instant::now();
    let mut enc = wire::Encoder::new(p.plan.fields());
    let mut missing = Vec::new();
    for (region, idx) in &regions {
        let chunks: Vec<Vec<u64>> = idx.iter().map(|i| req.chunks[*i].clone()).collect();
        let (grid, failed) = exec::compute_chunks(&p.array, &p.plan, &chunks, 1, region);
        missing.extend(failed.iter().map(|f| idx[f.0]));
        enc.add(region, &p.plan.out_shape, &grid);
    }
    missing.sort_unstable();
    let computed = (0..req.chunks.len())
        .filter(|i| missing.binary_search(i).is_err())
        .collect();
    tracing::debug!(
        chunks = req.chunks.len(),
        regions = regions.len(),
        missing = missing.len(),
        ms = started.elapsed().as_millis() as u64,
        "served compute request"
    );
    enc.finish(&ComputeHeader {
        computed,
        missing,
        error: None,
    })
}
