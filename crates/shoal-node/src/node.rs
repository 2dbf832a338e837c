//! [`Node`]: a running shoal node and its typed API, one async method per
//! operation. Store work runs on tokio's blocking pool; network waits are
//! bounded by the configured deadlines.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::Cid;
use shoal_net::{BlockSource, Fetcher, Multiaddr, PeerId, PeerInfo};
use shoal_store::{FsckReport, GcStats, StatsReport, Store, StoreOptions};

use crate::config::{MountSettings, NodeConfig};
use crate::error::Result;
use crate::mirror::{Mirror, MirrorsView};
use crate::mounts::{MountBlocks, Mounts};
use crate::parts::Parts;
use crate::popularity::Popularity;
use crate::types::*;

mod datasets;
mod names;
mod pins;
mod queries;

/// How often pending access ticks are written to the store's index.
const TICK_FLUSH_EVERY: Duration = Duration::from_secs(60);

/// A running node. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    parts: Arc<Parts>,
    mirror: Arc<Mirror>,
    mounts: Mounts,
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
    names: Arc<crate::names::Names>,
    /// Scratch space of CAR imports (beside the store: same filesystem).
    import_dir: PathBuf,
    /// The network event loop and the mirror policy: stopped on shutdown.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
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
            tokio::task::spawn_blocking(move || crate::names::Names::open(&dir, key, settings)).await??
        };
        let net_cfg = shoal_net::NetConfig {
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
        let mut tasks = vec![tokio::spawn(event_loop.run()).abort_handle()];
        let fetcher = Fetcher {
            net: net.clone(),
            store: store.clone(),
            opts: shoal_net::FetchOptions {
                provider_timeout: cfg.provider_timeout,
                block_deadline: cfg.block_timeout,
                ..Default::default()
            },
        };
        let parts = Arc::new(Parts {
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
        });
        let mounts = Mounts::recover(&cfg.mounts_record);
        // Announce every complete dataset held.
        let held = {
            let parts = parts.clone();
            tokio::task::spawn_blocking(move || -> Result<Vec<Cid>> {
                let mut roots: Vec<Cid> = parts.store.pins()?.into_iter().map(|p| p.0).collect();
                roots.extend(parts.store.names()?.into_iter().map(|n| n.1));
                roots.sort();
                roots.dedup();
                Ok(roots.into_iter().filter(|r| parts.complete_here(r)).collect())
            })
            .await??
        };
        for root in held {
            parts.net.provide(root).await?;
            if let Ok(Some(view)) = parts.store.view(&root) {
                parts.net.provide(view).await?;
            }
        }
        // The background tasks: the network's event loop (above), the tick
        // flusher, the mirror policy, and (below) the names' announcer and
        // follow updater; all stopped on shutdown.
        let mirror = Arc::new(Mirror::new(pop, cfg.mirror.clone()));
        tasks.push(tokio::spawn(flush_ticks(parts.store.clone())).abort_handle());
        tasks.push(tokio::spawn(mirror.clone().run(parts.clone())).abort_handle());
        let node = Node {
            inner: Arc::new(Inner {
                parts,
                mirror,
                mounts,
                block_size: cfg.block_size,
                mount: cfg.mount,
                metrics: Arc::default(),
                ingest_dir: cfg.store_dir.join("ingest"),
                versions_dir: cfg.store_dir.join("versions"),
                results_dir: cfg.store_dir.join("results"),
                import_dir: cfg.store_dir.join("import"),
                names,
                tasks: Mutex::new(tasks),
            }),
        };
        node.start_names(wakes).await?;
        Ok(node)
    }

    /// Unmounts every mount: readers get their answers or errors now.
    pub async fn unmount_all(&self) {
        let _ = self
            .blocking(|n| {
                n.mounts.unmount_all();
                Ok(())
            })
            .await;
    }

    /// Unmounts every mount, stops the network and the policy, and
    /// persists access ticks. Operations still running then fail.
    pub async fn shutdown(&self) -> Result<()> {
        self.unmount_all().await;
        for t in self.inner.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
        self.blocking(|n| Ok(n.parts.store.flush()?)).await
    }

    /// Runs `f` on the blocking pool (store calls are synchronous).
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await?
    }

    /// Blocking work for a request: when the request's future is dropped
    /// (its deadline passed, its client went), `cancel` is set and the work
    /// stops at its next check instead of running on unseen.
    async fn blocking_for_request<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &Cancel) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let cancel = Cancel::default();
        let _on_drop = CancelOnDrop(cancel.clone());
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner, &cancel)).await?
    }

    fn parts(&self) -> &Arc<Parts> {
        &self.inner.parts
    }

    /// The bounds on untrusted input this node runs under.
    pub fn limits(&self) -> crate::config::Limits {
        self.parts().limits
    }

    /// The local block store (for tools that read it directly).
    pub fn store(&self) -> &Arc<Store> {
        &self.parts().store
    }

    pub fn peer_id(&self) -> PeerId {
        self.parts().net.peer_id()
    }

    /// Peer id and dialable listen addresses.
    pub async fn info(&self) -> Result<NodeInfo> {
        let peer_id = self.peer_id();
        let addrs = self.parts().net.listen_addrs().await?;
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
        Ok(self.parts().net.dial(addr).await?)
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        Ok(self.parts().net.peers().await?)
    }

    /// Providers of a dataset that answer now (this node included when it
    /// holds the dataset in full); stale DHT records are left out.
    pub async fn providers(&self, root: Cid) -> Result<Vec<PeerId>> {
        Ok(self.parts().providers(root).await.0)
    }

    /// Peers caught returning compute partials that disagree with the same
    /// chunks computed here (asked for no more compute).
    pub fn compute_liars(&self) -> u64 {
        self.parts().liars.caught.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The node's own counters (queries, mount reads).
    pub fn metrics(&self) -> &crate::metrics::NodeMetrics {
        &self.inner.metrics
    }

    /// The block source's counters (local hits, peer fetches and their
    /// latency).
    pub fn source_stats(&self) -> &shoal_net::SourceStats {
        self.parts().source.stats()
    }

    /// Mounts every dataset read-only under `dir` (`dir/<name or CID>/...`).
    pub async fn mount(&self, dir: PathBuf) -> Result<PathBuf> {
        let rt = tokio::runtime::Handle::current();
        self.blocking(move |n| {
            let blocks = MountBlocks {
                source: n.parts.source.clone(),
                store: n.parts.store.clone(),
                pop: n.parts.pop.clone(),
                metrics: n.metrics.clone(),
            };
            let opts = shoal_fuse::MountOptions {
                readahead_files: n.mount.readahead_files,
                max_inflight_blocks: n.mount.prefetch_inflight.max(1),
                cache_bytes: n.mount.cache_bytes,
                table_bytes: n.mount.table_bytes,
                ..Default::default()
            };
            n.mounts.mount(&dir, blocks, opts, rt)
        })
        .await
    }

    pub async fn unmount(&self, dir: PathBuf) -> Result<PathBuf> {
        self.blocking(move |n| n.mounts.unmount(&dir)).await
    }

    /// This node's live mounts.
    pub fn mounts(&self) -> Vec<PathBuf> {
        self.inner.mounts.list()
    }

    /// Removes what no pin or name needs; compacts pack segments.
    pub async fn gc(&self) -> Result<GcStats> {
        self.blocking(|n| Ok(n.parts.store.gc()?)).await
    }

    /// Verifies every stored block and dataset, once the blocks fetched for
    /// readers are in the store (a corrupt copy a read replaced is then
    /// gone; waits up to 5 s).
    pub async fn fsck(&self, repair: bool) -> Result<FsckReport> {
        self.parts().source.settle(Duration::from_secs(5)).await;
        self.blocking(move |n| Ok(n.parts.store.fsck(repair)?)).await
    }

    /// Store totals, counting the blocks fetched for readers that are
    /// still on their way into the store (waits up to 5 s for them).
    pub async fn stats(&self) -> Result<StatsReport> {
        self.parts().source.settle(Duration::from_secs(5)).await;
        self.blocking(|n| Ok(n.parts.store.stats()?)).await
    }

    /// What this node mirrors and why.
    pub async fn mirrors(&self) -> Result<MirrorsView> {
        self.inner.mirror.view(self.parts()).await
    }

    /// Runs the mirror policy once now (it also runs on its schedule).
    pub async fn check_mirrors(&self) -> Result<()> {
        self.inner.mirror.check(self.parts()).await
    }

    /// The network's counters (handler panics, skipped requests, provide
    /// failures).
    pub fn net_stats(&self) -> &shoal_net::NetStats {
        self.parts().net.stats()
    }

    /// Compute requests from peers refused for their size.
    pub fn compute_refused(&self) -> u64 {
        self.parts()
            .serve_limits
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The request accounting (what this node counts and hears).
    pub fn popularity(&self) -> &Arc<Popularity> {
        &self.parts().pop
    }

    /// Whether `dir` is a mount point now.
    pub fn is_mounted(dir: &Path) -> bool {
        crate::mounts::is_mounted(dir)
    }
}

/// Access ticks (the LRU eviction order) reach the index every minute.
async fn flush_ticks(store: Arc<Store>) {
    let mut tick = tokio::time::interval(TICK_FLUSH_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let store = store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush()).await {
            tracing::warn!(error = %e, "writing access ticks failed");
        }
    }
}
