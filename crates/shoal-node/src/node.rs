//! [`Node`]: a running shoal node and its typed API, one async method per
//! operation. Store work runs on tokio's blocking pool; network waits are
//! bounded by the configured deadlines.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_core::Cid;
use shoal_net::{BlockSource, Fetcher, Multiaddr, PeerId, PeerInfo};
use shoal_store::{FsckReport, GcStats, PinKind, StatsReport, Store, StoreOptions};

use crate::config::{MountSettings, NodeConfig};
use crate::error::{Error, Result};
use crate::mirror::Mirror;
use crate::mounts::MountTable;
use crate::popularity::Popularity;
use crate::services::Services;
use crate::types::*;

mod catalogue;
mod datasets;
mod durability;
mod mirrors;
mod mounts;
mod names;
mod pins;
mod queries;
mod stages;

pub use catalogue::Catalogue;
pub use datasets::Datasets;
pub use durability::{DurabilityStats, RepairReport};
pub use mirrors::Mirrors;
pub use mounts::Mounts;
pub use names::Names;
pub use pins::Pins;
pub use queries::{Arrays, Queries, QueryRun};
pub use stages::{StageInfo, Stages};

/// What the node keeps in the store directory beside the store itself
/// (a backup copies these): version histories, published names, follows,
/// kept query results. `ingest` and `import` are scratch space.
pub const KEPT_BESIDE_THE_STORE: &[&str] = &["versions", "published", "follows", "results"];

/// How often pending access ticks are written to the store's index.
const TICK_FLUSH_EVERY: Duration = Duration::from_secs(60);

/// A running node. Cheap to clone; every clone is the same node. Its
/// operations are grouped in handles, each in its own file under `node/`:
/// [`Node::datasets`] (add, resolve, ls, read, export, versions),
/// [`Node::pins`], [`Node::queries`], [`Node::names`] (publish, follow),
/// [`Node::mounts`] and [`Node::mirrors`]. What stays here is the node
/// itself: start and shutdown, its peers, store maintenance and counters.
#[derive(Clone)]
pub struct Node {
    ctx: Arc<NodeCtx>,
}

/// What every handle and background task of one node shares.
pub(crate) struct NodeCtx {
    services: Arc<Services>,
    mirror: Arc<Mirror>,
    mounts: MountTable,
    block_size: u32,
    mount: MountSettings,
    metrics: Arc<crate::metrics::NodeMetrics>,
    /// Where each name's last add records its files (for incremental adds).
    ingest_dir: PathBuf,
    /// Each name's version history.
    versions_dir: PathBuf,
    /// Kept query results by normalised query.
    results_dir: PathBuf,
    /// Published names and follows.
    names: Arc<crate::names::NameRegistry>,
    /// The swarm's catalogue (and this node's own entries).
    catalogue: Arc<crate::catalogue::Catalogue>,
    /// Quick-looks computed one at a time.
    thumbnails: tokio::sync::Semaphore,
    /// The follow updater's wake-ups, until its task takes them.
    wakes: Mutex<Option<crate::names::Wakes>>,
    /// Scratch space of CAR imports (beside the store: same filesystem),
    /// and the CARs of UnixFS pins over bitswap (kept for resuming).
    import_dir: PathBuf,
    /// UnixFS directories being fetched over bitswap (one fetch each).
    importing: Arc<Mutex<HashSet<Cid>>>,
    /// The background tasks: stopped on shutdown.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The repair queue and the scrub's and repairs' counters.
    durability: Arc<durability::Durability>,
    scrub: crate::config::ScrubSettings,
    /// Adds, pins and queries under way (the scrub waits while any is).
    active: Arc<std::sync::atomic::AtomicU64>,
    /// Writes staged key by key, committed as one version.
    stages: stages::StageTable,
}

/// Set when the request that started some blocking work is gone.
#[derive(Clone, Default)]
struct Cancel(Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A background task of the node: started once by [`Node::start`] from
/// [`BACKGROUND`], aborted on shutdown.
type Spawn = fn(&Arc<NodeCtx>) -> tokio::task::JoinHandle<()>;

/// Every background task besides the network's event loop: the tick
/// flusher, the mirror policy, the names' announcer and follow updater,
/// the repairer and the scrub.
const BACKGROUND: [Spawn; 6] = [
    spawn_tick_flusher,
    mirrors::spawn_policy,
    names::spawn_announcer,
    names::spawn_updater,
    durability::spawn_repairer,
    durability::spawn_scrubber,
];

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("peer_id", &self.peer_id()).finish()
    }
}

impl Node {
    /// Opens the store (creating it on first run; its lock refuses a second
    /// node on the same directory), starts the network and the mirror
    /// policy, unmounts what a crashed predecessor left mounted, and
    /// announces every complete dataset held.
    pub async fn start(cfg: NodeConfig) -> Result<Node> {
        let store_dir = cfg.store_dir.clone();
        let cache_max = cfg.cache.bytes_at(&store_dir);
        tracing::info!(cache_max, "read-through cache bounded");
        let opts = StoreOptions {
            quota: cfg.quota,
            cache_max: Some(cache_max),
        };
        let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(&store_dir, opts)).await??);
        let m = &cfg.mirror;
        let pop = Arc::new(Popularity::new(m.window, m.peer_cap, m.threshold));
        let serve_limits = Arc::new(crate::query::ServeLimits {
            request_memory: cfg.query.request_memory,
            refused: Default::default(),
        });
        let (names, wakes) = {
            let (dir, key, settings) = (cfg.store_dir.clone(), cfg.net.keypair.clone(), cfg.names);
            tokio::task::spawn_blocking(move || crate::names::NameRegistry::open(&dir, key, settings)).await??
        };
        let catalogue = {
            let (dir, limits) = (cfg.store_dir.clone(), cfg.limits);
            Arc::new(
                tokio::task::spawn_blocking(move || crate::catalogue::Catalogue::open(&dir, &limits))
                    .await?
                    .map_err(|e| Error::Internal(format!("opening the catalogue: {e}")))?,
            )
        };
        let net_cfg = shoal_net::NetConfig {
            catalogue: Some({
                let catalogue = catalogue.clone();
                Arc::new(move |_author, envelope| catalogue.heard(envelope))
            }),
            names: Some({
                let names = names.clone();
                Arc::new(move |_author, r, signed| names.heard(r, signed))
            }),
            swarm: cfg.net.clone(),
            serve: crate::serve::blocks(store.clone(), pop.clone(), cfg.test),
            compute: crate::serve::compute(store.clone(), pop.clone(), serve_limits.clone(), cfg.test),
            gossip: m.every.map(|_| -> shoal_net::GossipFn {
                let pop = pop.clone();
                Arc::new(move |author, data| pop.receive(author, data))
            }),
            // A third of the report interval, between 1 and 5 seconds.
            gossip_heartbeat: (m.every.unwrap_or(Duration::from_secs(15)) / 3)
                .clamp(Duration::from_secs(1), Duration::from_secs(5)),
        };
        cfg.test.check()?;
        let (net, event_loop) = shoal_net::EventLoop::new(net_cfg)?;
        let event_loop = tokio::spawn(event_loop.run()).abort_handle();
        let fetcher = Fetcher {
            net: net.clone(),
            store: store.clone(),
            opts: shoal_net::FetchOptions {
                provider_timeout: cfg.provider_timeout,
                block_deadline: cfg.block_timeout,
                ..Default::default()
            },
        };
        let services = Arc::new(Services {
            source: Arc::new(BlockSource::new(fetcher.clone())),
            store,
            net,
            fetcher,
            pop: pop.clone(),
            provider_timeout: cfg.provider_timeout,
            query: cfg.query,
            serve_limits,
            liars: Default::default(),
            limits: cfg.limits,
            manifests: Default::default(),
        });
        let ctx = Arc::new(NodeCtx {
            services,
            mirror: Arc::new(Mirror::new(pop, cfg.mirror.clone())),
            mounts: MountTable::recover(&cfg.mounts_record),
            block_size: cfg.block_size,
            mount: cfg.mount,
            metrics: Arc::default(),
            ingest_dir: cfg.store_dir.join("ingest"),
            versions_dir: cfg.store_dir.join("versions"),
            results_dir: cfg.store_dir.join("results"),
            import_dir: cfg.store_dir.join("import"),
            importing: Arc::default(),
            names,
            catalogue,
            thumbnails: tokio::sync::Semaphore::new(1),
            wakes: Mutex::new(Some(wakes)),
            tasks: Mutex::new(vec![event_loop]),
            durability: Arc::default(),
            scrub: cfg.scrub,
            active: Arc::default(),
            stages: stages::StageTable::new(cfg.store_dir.join("staging")),
        });
        {
            // A read that meets a corrupt local copy fetches that block
            // again; the rest of its dataset is checked too.
            let d = ctx.durability.clone();
            ctx.services
                .source
                .on_corrupt(Arc::new(move |root, block| d.suspect(root, block)));
        }
        // A start that fails here stops the network it started.
        let online = async {
            ctx.announce_held().await?;
            ctx.names_online().await
        };
        if let Err(e) = online.await {
            ctx.tasks.lock().expect("tasks lock").drain(..).for_each(|t| t.abort());
            return Err(e);
        }
        let started: Vec<_> = BACKGROUND.iter().map(|spawn| spawn(&ctx).abort_handle()).collect();
        ctx.tasks.lock().expect("tasks lock").extend(started);
        Ok(Node { ctx })
    }

    /// The datasets: add, resolve, list, read, export, versions.
    pub fn datasets(&self) -> Datasets {
        self.ctx.datasets()
    }

    /// Pins and unpins (fetching what is missing), the pin list.
    pub fn pins(&self) -> Pins {
        Pins { ctx: self.ctx.clone() }
    }

    /// Distributed reductions and kept results.
    pub fn queries(&self) -> Queries {
        Queries { ctx: self.ctx.clone() }
    }

    /// Published names and follows.
    pub fn names(&self) -> Names {
        self.ctx.names()
    }

    /// The swarm's catalogue: search, collections, quick-looks.
    pub fn catalogue(&self) -> Catalogue {
        Catalogue { ctx: self.ctx.clone() }
    }

    /// Writes staged key by key (zarr-python through `shoal://`) and
    /// committed as a name's next version.
    pub fn stages(&self) -> Stages {
        Stages { ctx: self.ctx.clone() }
    }

    /// The FUSE mounts of this node.
    pub fn mounts(&self) -> Mounts {
        Mounts { ctx: self.ctx.clone() }
    }

    /// What the mirror policy carries for the swarm, and why.
    pub fn mirrors(&self) -> Mirrors {
        Mirrors { ctx: self.ctx.clone() }
    }

    /// Unmounts every mount, stops the network and the background tasks,
    /// and persists access ticks. Operations still running then fail.
    pub async fn shutdown(&self) -> Result<()> {
        self.mounts().unmount_all().await;
        for t in self.ctx.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
        self.ctx.blocking(|n| Ok(n.services.store.flush()?)).await
    }

    fn services(&self) -> &Arc<Services> {
        &self.ctx.services
    }

    /// The bounds on untrusted input this node runs under.
    pub fn limits(&self) -> crate::config::Limits {
        self.services().limits
    }

    /// The local block store (for tools that read it directly).
    pub fn store(&self) -> &Arc<Store> {
        &self.services().store
    }

    pub fn peer_id(&self) -> PeerId {
        self.services().net.peer_id()
    }

    /// Peer id and dialable listen addresses.
    pub async fn info(&self) -> Result<NodeInfo> {
        let peer_id = self.peer_id();
        let addrs = self.services().net.listen_addrs().await?;
        Ok(NodeInfo {
            peer_id,
            addrs: addrs
                .into_iter()
                .map(|a| a.with(shoal_net::Protocol::P2p(peer_id)))
                .collect(),
        })
    }

    /// Connects to a peer; returns its id.
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId> {
        Ok(self.services().net.dial(addr).await?)
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        Ok(self.services().net.peers().await?)
    }

    /// Providers of a dataset that answer now (this node included when it
    /// holds the dataset in full); stale DHT records are left out.
    pub async fn providers(&self, root: Cid) -> Result<Vec<PeerId>> {
        Ok(self.services().providers(root).await.0)
    }

    /// Removes what no pin or name needs; compacts pack segments.
    pub async fn gc(&self) -> Result<GcStats> {
        self.ctx.blocking(|n| Ok(n.services.store.gc()?)).await
    }

    /// Verifies every stored block and dataset, once the blocks fetched for
    /// readers are in the store (a corrupt copy a read replaced is then
    /// gone; waits up to 5 s).
    ///
    /// With `repair`, corrupt blocks are dropped and every held dataset
    /// left incomplete is fetched again from its providers; the report says
    /// what was fetched and which datasets stay incomplete, and why.
    pub async fn fsck(&self, repair: bool) -> Result<FsckReport> {
        self.services().source.settle(Duration::from_secs(5)).await;
        let mut report = self.ctx.blocking(move |n| Ok(n.services.store.fsck(repair)?)).await?;
        if !repair || report.incomplete.is_empty() {
            return Ok(report);
        }
        let roots: Vec<Cid> = report
            .incomplete
            .iter()
            .filter_map(|d| shoal_core::cid::parse(&d.root).ok())
            .collect();
        let held: std::collections::HashSet<Cid> = self.ctx.blocking(|n| n.held_roots()).await?.into_iter().collect();
        let outcome = self.ctx.repair(roots).await;
        report.refetched_blocks = outcome.repaired.iter().map(|r| r.1).sum();
        report.repaired_datasets = outcome.repaired.iter().map(|r| r.0.to_string()).collect();
        let still = self
            .ctx
            .blocking(move |n| {
                let mut out = Vec::new();
                for mut d in report.incomplete.drain(..) {
                    let Ok(root) = shoal_core::cid::parse(&d.root) else {
                        continue;
                    };
                    let missing = n.services.store.missing_blocks(&root)?;
                    if missing.is_empty() {
                        continue;
                    }
                    d.missing_blocks = missing.len();
                    d.reason = Some(match outcome.failed.iter().find(|f| f.0 == root) {
                        Some((_, why)) => why.clone(),
                        None if !held.contains(&root) => {
                            "read-through cache only (no user or mirror pin, no name): not repaired".into()
                        }
                        None => "not repaired".into(),
                    });
                    out.push(d);
                }
                Ok((report, out))
            })
            .await?;
        let (mut report, incomplete) = still;
        report.incomplete = incomplete;
        Ok(report)
    }

    /// What the store had to recover from when it opened (a rebuilt index,
    /// lost segment files).
    pub fn recovery(&self) -> &shoal_store::Recovery {
        self.services().store.recovery()
    }

    /// Where the scrub is and what it has found (kept across restarts).
    pub async fn scrub_state(&self) -> Result<shoal_store::ScrubState> {
        self.ctx.blocking(|n| Ok(n.services.store.scrub_state()?)).await
    }

    /// The scrub's settings.
    pub fn scrub_settings(&self) -> crate::config::ScrubSettings {
        self.ctx.scrub
    }

    /// Counters of the scrub and the repairs since the start.
    pub fn durability_stats(&self) -> &DurabilityStats {
        &self.ctx.durability.stats
    }

    /// Store totals, counting the blocks fetched for readers that are
    /// still on their way into the store (waits up to 5 s for them).
    pub async fn stats(&self) -> Result<StatsReport> {
        self.services().source.settle(Duration::from_secs(5)).await;
        self.ctx.blocking(|n| Ok(n.services.store.stats()?)).await
    }

    /// Peers caught returning compute partials that disagree with the same
    /// chunks computed here (asked for no more compute).
    pub fn compute_liars(&self) -> u64 {
        self.services().liars.caught.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Compute requests from peers refused for their size.
    pub fn compute_refused(&self) -> u64 {
        self.services()
            .serve_limits
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The node's own counters (queries, mount reads).
    pub fn metrics(&self) -> &crate::metrics::NodeMetrics {
        &self.ctx.metrics
    }

    /// The block source's counters (local hits, peer fetches and their
    /// latency).
    pub fn source_stats(&self) -> &shoal_net::SourceStats {
        self.services().source.stats()
    }

    /// The network's counters (handler panics, skipped requests, provide
    /// failures).
    pub fn net_stats(&self) -> &shoal_net::NetStats {
        self.services().net.stats()
    }

    /// The request accounting (what this node counts and hears).
    pub fn popularity(&self) -> &Arc<Popularity> {
        &self.services().pop
    }
}

/// A claimed UnixFS fetch ([`NodeCtx::importing`]).
struct Importing(Arc<Mutex<HashSet<Cid>>>, Cid);

impl Drop for Importing {
    fn drop(&mut self) {
        self.0.lock().expect("importing lock").remove(&self.1);
    }
}

impl NodeCtx {
    fn datasets(self: &Arc<Self>) -> Datasets {
        Datasets { ctx: self.clone() }
    }

    fn names(self: &Arc<Self>) -> Names {
        Names { ctx: self.clone() }
    }

    /// A reader of one key of dataset `root` (its entry and block size, as
    /// [`Services::lookup`] finds them).
    fn key_reader(&self, root: Cid, (entry, block_size): (shoal_core::manifest::Entry, u32)) -> crate::KeyReader {
        crate::KeyReader {
            root,
            entry: Arc::new(entry),
            block_size,
            source: self.services.source.clone(),
            ahead: false,
        }
    }

    /// Claims the fetch of UnixFS directory `root` (one at a time: they
    /// share its CAR) until the guard is dropped.
    fn importing(&self, root: Cid) -> Result<Importing> {
        let mut set = self.importing.lock().expect("importing lock");
        if !set.insert(root) {
            return Err(Error::Conflict(format!("{root} is being pinned already")));
        }
        Ok(Importing(self.importing.clone(), root))
    }

    /// Runs `f` on the blocking pool (store calls are synchronous).
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&NodeCtx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let ctx = self.clone();
        tokio::task::spawn_blocking(move || f(&ctx)).await?
    }

    /// Blocking work for a request: when the request's future is dropped
    /// (its deadline passed, its client went), `cancel` is set and the work
    /// stops at its next check instead of running on unseen.
    async fn blocking_for_request<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&NodeCtx, &Cancel) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let cancel = Cancel::default();
        let _on_drop = CancelOnDrop(cancel.clone());
        let ctx = self.clone();
        tokio::task::spawn_blocking(move || f(&ctx, &cancel)).await?
    }

    /// An ingest's root made a dataset of this node: pinned (user), its
    /// UnixFS view built, and under `name` its next version (older ones
    /// beyond `keep` unpinned). Blocking; the session that protected the
    /// blocks may end after this.
    fn land(&self, r: &shoal_zarr::IngestReport, name: Option<String>, keep: Option<u32>) -> Result<AddReport> {
        let store = &self.services.store;
        store.pin(&r.root, PinKind::User)?;
        let unixfs = self.services.ensure_view(r.root)?;
        let mut version = None;
        if let Some(name) = &name {
            let previous = store.resolve_name(name)?;
            store.set_name(name, &r.root)?;
            version = self.record_version(name, previous, r.root, r.stats.new_bytes, keep)?;
        }
        Ok(AddReport {
            root: r.root,
            name,
            zarr_format: r.zarr_format,
            keys: r.keys,
            bytes: r.bytes,
            new_blocks: r.stats.new_blocks,
            new_bytes: r.stats.new_bytes,
            dup_blocks: r.stats.dup_blocks,
            reused_files: r.reused_files,
            reused_bytes: r.reused_bytes,
            version,
            unixfs,
            elapsed: Duration::ZERO,
        })
    }

    /// After [`NodeCtx::land`]: the dataset and its view announced, its
    /// name's record published again; the report's time since `start`.
    async fn landed(self: &Arc<Self>, report: AddReport, start: Instant) -> AddReport {
        self.announce(report.root).await;
        self.announce(report.unixfs).await;
        if let Some(name) = &report.name {
            self.names().republish(name).await;
        }
        AddReport {
            elapsed: start.elapsed(),
            ..report
        }
    }

    /// Provides `root` on the DHT; a failure is logged, not fatal (the
    /// periodic reprovide retries).
    async fn announce(&self, root: Cid) {
        if let Err(e) = self.services.net.provide(root).await {
            tracing::warn!(%root, error = %e, "announcing the dataset failed");
        }
    }

    /// Announces every complete dataset held, and its UnixFS view; the
    /// incomplete ones a user or mirror pin or a name holds (a lost segment,
    /// a rebuilt index) go to the repairer.
    async fn announce_held(self: &Arc<Self>) -> Result<()> {
        let (held, broken) = self
            .blocking(|n| {
                let s = &n.services;
                let mut roots: Vec<Cid> = s.store.pins()?.into_iter().map(|p| p.0).collect();
                roots.extend(s.store.names()?.into_iter().map(|n| n.1));
                roots.sort();
                roots.dedup();
                let (held, broken): (Vec<Cid>, Vec<Cid>) = roots.into_iter().partition(|r| s.complete_here(r));
                Ok((held, broken))
            })
            .await?;
        if !broken.is_empty() {
            tracing::warn!(
                datasets = broken.len(),
                "held datasets are incomplete here; repairing from providers"
            );
        }
        for root in broken {
            self.durability.schedule(root);
        }
        for root in held {
            self.services.net.provide(root).await?;
            if let Ok(Some(view)) = self.services.store.view(&root) {
                self.services.net.provide(view).await?;
            }
        }
        Ok(())
    }
}

/// Access ticks (the LRU eviction order) reach the index every minute.
fn spawn_tick_flusher(ctx: &Arc<NodeCtx>) -> tokio::task::JoinHandle<()> {
    let store = ctx.services.store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK_FLUSH_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let store = store.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush()).await {
                tracing::warn!(error = %e, "writing access ticks failed");
            }
        }
    })
}
