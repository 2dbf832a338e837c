//! [`Node`]: a running shoal node and its typed API, one async method per
//! operation. Store work runs on tokio's blocking pool; network waits are
//! bounded by the configured deadlines.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_core::manifest::Entry;
use shoal_core::{cid, Cid};
use shoal_net::{BlockSource, Fetcher, Multiaddr, PeerId, PeerInfo};
use shoal_store::{FsckReport, GcStats, PinKind, StatsReport, Store, StoreOptions};
use shoal_zarr::{read, IngestOptions};

use crate::config::{MountSettings, NodeConfig};
use crate::error::{Error, Result};
use crate::mirror::{Mirror, MirrorsView};
use crate::mounts::{MountBlocks, Mounts};
use crate::parts::Parts;
use crate::popularity::{Kind, Popularity};
use crate::records::{unix_now, unix_now_nanos};
use crate::types::*;

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
        // Access ticks (LRU eviction order) reach the index every minute.
        let store = parts.store.clone();
        tasks.push(
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
            .abort_handle(),
        );
        let mirror = Arc::new(Mirror::new(pop, cfg.mirror.clone()));
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

    /// Resolves a TARGET: `CID`, `NAME`, `CID/key/path` or `NAME/key/path`.
    pub async fn resolve(&self, target: &str) -> Result<Target> {
        let target = target.trim_end_matches('/');
        let (head, path) = match target.split_once('/') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (target.to_string(), None),
        };
        // A CID needs no store lookup (and no thread hop), except a UnixFS
        // view's, which stands for its dataset.
        if let Ok(root) = cid::parse(&head) {
            if root.codec() != cid::DAG_PB {
                return Ok(Target { root, name: None, path });
            }
            return self
                .blocking(move |n| match n.parts.store.dataset_of_view(&root)? {
                    Some(ds) => Ok(Target { root: ds, name: None, path }),
                    None => Err(Error::NotFound(format!(
                        "{root} is a UnixFS view whose dataset is not known here; use the dataset's CID, or read the view over the gateway's /ipfs/"
                    ))),
                })
                .await;
        }
        if let Some((name, number)) = crate::versions::split_at(&head) {
            let name = name.to_string();
            return self
                .blocking(move |n| {
                    let root = n
                        .history(&name)?
                        .versions
                        .into_iter()
                        .find(|v| v.number == number)
                        .map(|v| v.root)
                        .ok_or_else(|| {
                            Error::NotFound(format!("{name} has no version {number} (see `shoal log {name}`)"))
                        })?;
                    Ok(Target { root, name: None, path })
                })
                .await;
        }
        self.blocking(move |n| match n.parts.store.resolve_name(&head)? {
            Some(root) => Ok(Target {
                root,
                name: Some(head),
                path,
            }),
            None => Err(Error::NotFound(format!(
                "{head:?} is neither a CID nor a dataset name here (see `shoal pins`)"
            ))),
        })
        .await
    }

    /// Ingests a Zarr v2/v3 directory, pins it (user) and names it.
    pub async fn add(&self, path: PathBuf, name: Option<String>, progress: ProgressFn) -> Result<AddReport> {
        self.add_with(path, name, AddOptions::default(), progress).await
    }

    /// [`Node::add`]. Re-adding under a name records a new version (its
    /// parent, time, keys added/changed/removed; older versions beyond the
    /// name's `keep` are unpinned) and reads only the files whose size,
    /// mtime, inode or device changed since that name's last add (the
    /// others keep their recorded blocks), unless `rehash`.
    pub async fn add_with(
        &self,
        path: PathBuf,
        name: Option<String>,
        opts: AddOptions,
        progress: ProgressFn,
    ) -> Result<AddReport> {
        let AddOptions { rehash, keep } = opts;
        if keep == Some(0) {
            return Err(Error::BadRequest(
                "--keep must be at least 1 (the current version)".into(),
            ));
        }
        let start = Instant::now();
        let block_size = self.inner.block_size;
        let report = self
            .blocking(move |n| {
                if let Some(name) = &name {
                    shoal_store::validate_name(name)?;
                }
                let record = name.as_deref().map(|nm| n.ingest_record(nm));
                let prior = match (&record, rehash) {
                    (Some(r), false) => read_record(r),
                    _ => None,
                };
                let store = &n.parts.store;
                let opts = IngestOptions {
                    block_size,
                    threads: 0,
                    prior: prior.map(Arc::new),
                };
                let session = store.session();
                let r = shoal_zarr::ingest(store, &path, &opts, &session, &|p| progress(*p))?;
                store.pin(&r.root, PinKind::User)?;
                let unixfs = n.parts.ensure_view(r.root)?;
                let mut version = None;
                if let Some(name) = &name {
                    let previous = store.resolve_name(name)?;
                    store.set_name(name, &r.root)?;
                    version = n.record_version(name, previous, r.root, r.stats.new_bytes, keep)?;
                }
                if let Some(rec) = &record {
                    // Best effort: without it the next add reads everything.
                    if let Err(e) = crate::records::write_cbor(rec, &r.record) {
                        tracing::warn!(error = %e, path = %rec.display(), "cannot keep the add's file record");
                    }
                }
                tracing::info!(root = %r.root, keys = r.keys, bytes = r.bytes, reused = r.reused_files, "added {}", path.display());
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
            })
            .await?;
        self.announce(report.root).await;
        self.announce(report.unixfs).await;
        if let Some(name) = &report.name {
            self.republish(name).await;
        }
        Ok(AddReport {
            elapsed: start.elapsed(),
            ..report
        })
    }

    /// A name's versions, newest first.
    pub async fn log(&self, name: &str) -> Result<Vec<crate::versions::Version>> {
        let name = name.to_string();
        self.blocking(move |n| {
            let mut v = n.history(&name)?.versions;
            v.reverse();
            Ok(v)
        })
        .await
    }

    /// The keys added, changed and removed from dataset `a` to dataset `b`
    /// (fetching their manifests from peers if needed).
    pub async fn diff(&self, a: &Target, b: &Target) -> Result<crate::versions::Diff> {
        let (a, b) = (a.dataset("diff")?, b.dataset("diff")?);
        self.blocking(move |n| {
            let (ma, mb) = (n.parts.manifest(&a)?, n.parts.manifest(&b)?);
            let (ra, rb) = (n.parts.reader(a), n.parts.reader(b));
            let (mut fa, mut fb) = (ra.fetch(), rb.fetch());
            // Pages of either manifest, from whichever dataset they are in.
            let mut fetch = |c: &Cid| fa(c).or_else(|_| fb(c));
            Ok(crate::versions::diff(&ma, &mb, &mut fetch)?)
        })
        .await
    }

    /// Provides `root` on the DHT; a failure is logged, not fatal (the
    /// periodic reprovide retries).
    async fn announce(&self, root: Cid) {
        if let Err(e) = self.parts().net.provide(root).await {
            tracing::warn!(%root, error = %e, "announcing the dataset failed");
        }
    }

    /// Lists a dataset's keys (or those under `target.path`). Reads the
    /// manifest from the store or peers, never the chunks.
    pub async fn ls(&self, target: &Target) -> Result<Listing> {
        let entries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = entries.clone();
        let mut l = self
            .ls_each(target, move |e| {
                sink.lock().expect("ls lock").push(e.clone());
                Ok(())
            })
            .await?;
        l.entries = std::mem::take(&mut *entries.lock().expect("ls lock"));
        Ok(l)
    }

    /// Lists `target` without holding its entries: `each` sees every key
    /// under it in key order (on a blocking thread; `Err` stops the walk).
    /// Returns the listing's summary (its `entries` empty), or NotFound
    /// when a path matches no key.
    pub async fn ls_each(
        &self,
        target: &Target,
        mut each: impl FnMut(&Entry) -> Result<()> + Send + 'static,
    ) -> Result<Listing> {
        let Target { root, path, .. } = target.clone();
        self.blocking(move |n| {
            let m = n.parts.manifest(&root)?;
            let reader = n.parts.reader(root);
            let mut found = false;
            let mut fetch = reader.fetch();
            m.for_each_entry::<Error>(&mut |c| fetch(c).map_err(Error::from), &mut |e| {
                let under = match &path {
                    None => true,
                    Some(p) => e.key == *p || e.key.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('/')),
                };
                if under {
                    found = true;
                    each(e)?;
                }
                Ok(())
            })?;
            if let (Some(p), false) = (&path, found) {
                return Err(Error::NotFound(format!("no key {p:?} in dataset {root}")));
            }
            let unixfs = n.parts.view_if_complete(root)?;
            let listing = Listing {
                root,
                zarr_format: m.zarr_format,
                keys: m.key_count,
                bytes: m.total_bytes,
                entries: Vec::new(),
                unixfs,
            };
            Ok(listing)
        })
        .await
    }

    /// One key's manifest entry (its size and blocks).
    pub async fn entry(&self, root: Cid, key: &str) -> Result<Entry> {
        Ok(self.lookup(root, key).await?.0)
    }

    /// The immediate children of directory `dir` of a dataset (`""` is its
    /// top), at most `limit` of them; `None` when `dir` is not a directory
    /// (no key lies below it). Walks the manifest's pages, holding only the
    /// children.
    pub async fn dir(&self, root: Cid, dir: &str, limit: usize) -> Result<Option<Dir>> {
        let prefix = match dir.trim_matches('/') {
            "" => String::new(),
            d => format!("{d}/"),
        };
        self.blocking_for_request(move |n, cancel| {
            let m = n.parts.manifest(&root)?;
            let mut out = Dir {
                zarr_format: m.zarr_format,
                children: Vec::new(),
                truncated: false,
            };
            let mut any = false;
            // The walk stops early: past the prefix's keys (they are
            // adjacent), past the limit, or when the request is gone.
            let mut stopped = false;
            let stop = || shoal_zarr::Error::Fetch("stopped".into());
            let walked = m.for_each_entry(&mut n.parts.reader(root).fetch(), &mut |e| {
                if cancel.is_set() {
                    return Err(stop());
                }
                let Some(rest) = e.key.strip_prefix(prefix.as_str()) else {
                    if any {
                        stopped = true;
                        return Err(stop());
                    }
                    return Ok(());
                };
                any = true;
                let (name, dir) = match rest.split_once('/') {
                    Some((d, _)) => (d, true),
                    None => (rest, false),
                };
                // Keys come in order, so a directory's keys are adjacent.
                if out.children.last().is_some_and(|c| c.name == name && c.dir == dir) {
                    return Ok(());
                }
                if out.children.len() == limit {
                    out.truncated = true;
                    stopped = true;
                    return Err(stop());
                }
                out.children.push(Child {
                    name: name.to_string(),
                    dir,
                    size: if dir { 0 } else { e.size },
                });
                Ok(())
            });
            match walked {
                Ok(()) => {}
                Err(_) if stopped => {}
                Err(_) if cancel.is_set() => return Err(Error::Unavailable("the request was dropped".into())),
                Err(e) => return Err(e.into()),
            }
            Ok(any.then_some(out))
        })
        .await
    }

    /// The dataset's metadata documents (`.zarray`, `.zgroup`, `.zattrs`,
    /// `zarr.json`, `.zmetadata` at every level) and its Zarr format: the
    /// manifest keeps them inline in its root, so this reads no page and no
    /// chunk.
    pub async fn metadata(&self, root: Cid) -> Result<(u8, Vec<(String, Bytes)>)> {
        self.blocking(move |n| {
            let m = n.parts.manifest(&root)?;
            let reader = n.parts.reader(root);
            let mut fetch = reader.fetch();
            let mut docs = Vec::with_capacity(m.metadata.len());
            for e in &m.metadata {
                let data = read::entry_range(&m, e, 0, e.size, &mut fetch)?;
                docs.push((e.key.clone(), data));
            }
            Ok((m.zarr_format, docs))
        })
        .await
    }

    /// One key's entry and the dataset's block size.
    async fn lookup(&self, root: Cid, key: &str) -> Result<(Entry, u32)> {
        let key = key.to_string();
        self.blocking(move |n| {
            let m = n.parts.manifest(&root)?;
            let e = m
                .lookup(&key, &mut n.parts.reader(root).fetch())?
                .ok_or_else(|| Error::NotFound(format!("no key {key:?} in dataset {root}")))?;
            Ok((e, m.block_size))
        })
        .await
    }

    /// The bytes of one key, or of `range` of it (clamped to its size),
    /// fetching only the blocks the range covers: local first, then peers,
    /// every block verified and its length checked against the manifest.
    pub async fn read(&self, root: Cid, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let key = key.to_string();
        self.blocking(move |n| {
            let m = n.parts.manifest(&root)?;
            let reader = n.parts.reader(root);
            let mut fetch = reader.fetch();
            let entry = m
                .lookup(&key, &mut fetch)?
                .ok_or_else(|| Error::NotFound(format!("no key {key:?} in dataset {root}")))?;
            let range = range.unwrap_or(0..entry.size);
            read::entry_range(&m, &entry, range.start, range.end, &mut fetch)
                .map_err(|e| Error::from(e).context(format!("cannot read key {key:?} of dataset {root}")))
        })
        .await
    }

    /// Opens one key for streaming reads (see [`KeyReader`]): resolves its
    /// manifest entry (fetching the manifest from peers if needed) without
    /// reading any of its blocks.
    pub async fn open(&self, root: Cid, key: &str) -> Result<crate::KeyReader> {
        let (entry, block_size) = self.lookup(root, key).await?;
        Ok(crate::KeyReader {
            root,
            entry: Arc::new(entry),
            block_size,
            source: self.parts().source.clone(),
        })
    }

    /// Writes a dataset's UnixFS view as a CAR v1 at `out` (fetching what
    /// is not held first): what `ipfs dag import` and IPFS tools read.
    pub async fn export_car(&self, target: &Target, out: PathBuf, progress: ProgressFn) -> Result<ExportReport> {
        self.export_with(target, out, progress, |n, root, out, _| {
            let view = n.parts.ensure_view(root)?;
            let store = &n.parts.store;
            crate::car::write_car(view, out, &|c| Ok(store.require(c)?.data().to_vec()))
        })
        .await
    }

    /// Adds the Zarr hierarchy inside a CAR file (a UnixFS directory, as
    /// `ipfs-car pack` and `ipfs dag export` write them): every block is
    /// verified against its CID (blake3 or sha2-256), the tree rebuilt in
    /// scratch space beside the store, then added as a directory would be.
    pub async fn add_car(
        &self,
        car: PathBuf,
        name: Option<String>,
        opts: AddOptions,
        progress: ProgressFn,
    ) -> Result<AddReport> {
        let work = self
            .inner
            .import_dir
            .join(format!("{}-{}", std::process::id(), unix_now_nanos()));
        let tree = {
            let (car, work) = (car.clone(), work.clone());
            self.blocking(move |n| crate::car::unpack(&car, &work, &n.parts.limits))
                .await
        };
        let r = match tree {
            Ok(tree) => self.add_with(tree, name, opts, progress).await,
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&work);
        r
    }

    /// One block by CID, verified: the local store, else the peers that
    /// provide `root` (a dataset or a UnixFS view).
    pub async fn block(&self, cid: Cid, root: Cid) -> Result<Bytes> {
        self.parts()
            .source
            .get(cid, root)
            .await
            .map(|b| b.into_data())
            .map_err(|e| Error::Unavailable(format!("block {cid}: {e}")))
    }

    /// The UnixFS view of dataset `root` when it is held here in full (built
    /// now if need be), else None.
    pub async fn view_of(&self, root: Cid) -> Result<Option<Cid>> {
        self.blocking(move |n| n.parts.view_if_complete(root)).await
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

    /// Writes a dataset out as a Zarr directory, fetching what is missing
    /// first (kept as unpinned cache data).
    pub async fn export(&self, target: &Target, out: PathBuf, progress: ProgressFn) -> Result<ExportReport> {
        self.export_with(target, out, progress, |n, root, out, progress| {
            let m = n.parts.manifest(&root)?;
            let mut p = Progress {
                items_total: m.key_count,
                bytes_total: m.total_bytes,
                ..Default::default()
            };
            let reader = n.parts.reader(root);
            let written = read::export(&m, out, &mut reader.fetch(), &mut |e| {
                p.items_done += 1;
                p.bytes_done += e.size;
                progress(p);
            })?;
            Ok(written)
        })
        .await
    }

    /// Fetches what the dataset of `target` lacks here (kept as unpinned
    /// cache data while `write` runs), then has `write` write it to `out`;
    /// `write` returns the items and bytes written.
    async fn export_with(
        &self,
        target: &Target,
        out: PathBuf,
        progress: ProgressFn,
        write: impl FnOnce(&Inner, Cid, &Path, &ProgressFn) -> Result<(u64, u64)> + Send + 'static,
    ) -> Result<ExportReport> {
        let root = target.dataset("get")?;
        let start = Instant::now();
        self.blocking(move |n| {
            let session = n.parts.store.session();
            let fetched = n.parts.ensure_local(root, &session, &*progress)?;
            let (keys, bytes) = write(n, root, &out, &progress)?;
            drop(session);
            Ok(ExportReport {
                fetched,
                root,
                out,
                keys,
                bytes,
                elapsed: start.elapsed(),
            })
        })
        .await
    }

    /// Pins a dataset (user): fetches whatever is missing from every
    /// provider at once, verifies each block, then pins, names, records a
    /// replica target and announces it.
    pub async fn pin(
        &self,
        target: &Target,
        name: Option<String>,
        replicas: Option<u8>,
        progress: ProgressFn,
    ) -> Result<PinReport> {
        let root = target.dataset("pin")?;
        if root.codec() != cid::DAG_CBOR {
            return Err(Error::BadRequest(format!("{root} is a raw block, not a dataset")));
        }
        if let Some(name) = &name {
            shoal_store::validate_name(name)?;
        }
        if let Some(r) = replicas {
            if r == 0 || r > shoal_net::gossip::MAX_REPLICAS {
                return Err(Error::BadRequest(format!(
                    "--replicas must be between 1 and {}",
                    shoal_net::gossip::MAX_REPLICAS
                )));
            }
        }
        let report = self
            .blocking(move |n| {
                let store = &n.parts.store;
                let was = store.pin_kinds(&root)?.contains(PinKind::User);
                let session = store.session();
                let fetched = n.parts.ensure_local(root, &session, &*progress)?;
                store.pin(&root, PinKind::User)?;
                let view = n.parts.ensure_view(root)?;
                if let Some(name) = &name {
                    store.set_name(name, &root)?;
                }
                if let Some(r) = replicas {
                    store.set_replica_target(&root, r, unix_now())?;
                }
                Ok((
                    PinReport {
                        root,
                        name,
                        changed: !was,
                        fetched,
                        replicas,
                    },
                    view,
                ))
            })
            .await?;
        let (report, view) = report;
        self.announce(root).await;
        self.announce(view).await;
        if let Some(name) = &report.name {
            self.republish(name).await;
        }
        Ok(report)
    }

    /// Drops the user pin (and the name, when the target was a name). A
    /// replica target that came with the pin is cancelled: the cancellation
    /// is gossiped (newest wins) so volunteers stop carrying it.
    pub async fn unpin(&self, target: &Target) -> Result<UnpinReport> {
        let root = target.dataset("unpin")?;
        let name = target.name.clone();
        self.blocking(move |n| {
            let store = &n.parts.store;
            let user_pinned = store.unpin(&root, PinKind::User)?;
            let mut changed = user_pinned;
            if let Some(name) = &name {
                changed |= store.remove_name(name)?.is_some();
                // The name's older versions go with it (unless another name
                // holds one).
                let history = n.history(name).unwrap_or_default();
                let named: HashSet<Cid> = store.names()?.into_iter().map(|x| x.1).collect();
                for v in history
                    .versions
                    .iter()
                    .filter(|v| v.root != root && !named.contains(&v.root))
                {
                    store.unpin(&v.root, PinKind::User)?;
                }
                crate::versions::remove(&n.versions_dir, name);
            }
            // A target carried for a mirror is not this user's to cancel.
            let target_cancelled = user_pinned && store.replica_targets()?.iter().any(|t| t.0 == root && t.1 > 0);
            if target_cancelled {
                store.set_replica_target(&root, 0, unix_now())?;
            }
            let still_named = store
                .names()?
                .into_iter()
                .filter(|n| n.1 == root)
                .map(|n| n.0)
                .collect();
            Ok(UnpinReport {
                root,
                changed,
                still_named,
                target_cancelled,
            })
        })
        .await
    }

    /// Pinned and named datasets, sorted by name then root.
    pub async fn pins(&self) -> Result<Vec<PinEntry>> {
        self.blocking(|n| {
            let store = &n.parts.store;
            let names = store.names()?;
            let mut roots: Vec<(Cid, Vec<PinKind>)> = store.pins()?.into_iter().map(|p| (p.0, p.1.kinds())).collect();
            // Named but unpinned datasets are kept too; list them.
            for (_, c) in &names {
                if !roots.iter().any(|r| r.0 == *c) {
                    roots.push((*c, Vec::new()));
                }
            }
            let mut out: Vec<PinEntry> = roots
                .into_iter()
                .map(|(root, kinds)| {
                    let (keys, bytes) = store
                        .manifest(&root)
                        .map(|m| (m.key_count, m.total_bytes))
                        .unwrap_or((0, 0));
                    PinEntry {
                        root,
                        kinds,
                        names: names.iter().filter(|n| n.1 == root).map(|n| n.0.clone()).collect(),
                        bytes,
                        keys,
                    }
                })
                .collect();
            out.sort_by(|a, b| a.names.cmp(&b.names).then(a.root.cmp(&b.root)));
            Ok(out)
        })
        .await
    }

    /// Reduces one array of a dataset: chunks held here run on all cores,
    /// the rest run on peers that hold them (only partials come back), and
    /// what nobody computes is fetched and computed here.
    pub async fn query(&self, target: &Target, spec: shoal_query::QuerySpec) -> Result<QueryReport> {
        let root = target.dataset("query").map_err(|_| {
            Error::BadRequest("query takes a dataset (CID or NAME) and the array path separately".into())
        })?;
        self.parts().pop.record(root, Kind::Query, 1);
        let spec = shoal_query::QuerySpec {
            array: spec.array.trim_matches('/').to_string(),
            ..spec
        };
        let m = self.inner.metrics.clone();
        m.queries.inc();
        let started = Instant::now();
        let r = self
            .blocking(move |n| crate::query::execute(&n.parts, root, spec))
            .await;
        m.query_seconds.observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            m.query_errors.inc();
        }
        r
    }

    /// The data variables of a dataset that have every dimension in
    /// `dims` (what `shoal query --all` reduces).
    pub async fn data_arrays(&self, target: &Target, dims: Vec<String>) -> Result<Vec<String>> {
        let root = target.dataset("query")?;
        self.blocking(move |n| crate::query::data_arrays(&n.parts, root, &dims))
            .await
    }

    /// Runs a query and keeps its result as a named dataset (a Zarr group:
    /// the values, their coordinates, attributes, cell_methods, provenance;
    /// pinned, mountable, readable over the gateway), or, when the same
    /// query (normalised) of the same root was kept before and its result
    /// is still complete here, names that result without computing.
    /// Several arrays (one spec each) make one dataset. Returns the
    /// reports (from the cache on a hit), the result's root and whether it
    /// came from the cache.
    pub async fn query_into(
        &self,
        target: &Target,
        specs: Vec<shoal_query::QuerySpec>,
        name: &str,
        no_cache: bool,
    ) -> Result<(Vec<QueryReport>, Cid, bool)> {
        shoal_store::validate_name(name)?;
        let root = target.dataset("query")?;
        if specs.is_empty() {
            return Err(Error::BadRequest("no array to query".into()));
        }
        let specs: Vec<shoal_query::QuerySpec> = specs
            .into_iter()
            .map(|spec| shoal_query::QuerySpec {
                array: spec.array.trim_matches('/').to_string(),
                coords: true,
                ..spec
            })
            .collect();
        let key = crate::results::key(root, &specs);
        let file = self.inner.results_dir.join(&key);
        if !no_cache {
            let (nm, file) = (name.to_string(), file.clone());
            let hit = self
                .blocking(move |n| {
                    let Some(cached) = crate::results::load(&file) else {
                        return Ok(None);
                    };
                    if !n.parts.complete_here(&cached.result) {
                        return Ok(None);
                    }
                    let store = &n.parts.store;
                    store.pin(&cached.result, PinKind::User)?;
                    let previous = store.resolve_name(&nm)?;
                    store.set_name(&nm, &cached.result)?;
                    n.record_version(&nm, previous, cached.result, 0, None)?;
                    Ok(Some(cached))
                })
                .await?;
            if let Some(c) = hit {
                self.republish(name).await;
                return Ok((c.reports(root), c.result, true));
            }
        }
        let mut reports = Vec::with_capacity(specs.len());
        for spec in &specs {
            reports.push(self.query(target, spec.clone()).await?);
        }
        let tmp = self.inner.results_dir.join(format!("{key}.partial"));
        let out = tmp.join("result.zarr");
        {
            let (reports, tmp, out) = (reports.clone(), tmp.clone(), out.clone());
            let query = if specs.len() == 1 {
                serde_json::to_value(&specs[0])
            } else {
                serde_json::to_value(&specs)
            }
            .map_err(|e| Error::Internal(e.to_string()))?;
            self.blocking(move |_| {
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp).map_err(|e| Error::Internal(format!("{}: {e}", tmp.display())))?;
                crate::results::write(&reports, query, &out)
            })
            .await?;
        }
        let added = self
            .add_with(out, Some(name.to_string()), AddOptions::default(), no_progress())
            .await;
        let _ = std::fs::remove_dir_all(&tmp);
        let added = added?;
        crate::results::save(&file, added.root, &reports);
        Ok((reports, added.root, false))
    }

    /// Publishes `name`: signs a record pointing at its current root (the
    /// next sequence number, or the held record again when the name has
    /// not moved), puts it on the DHT and announces it on its topic. Later
    /// versions of the name are published automatically.
    pub async fn publish(&self, name: &str) -> Result<crate::names::PublishReport> {
        let names = self.inner.names.clone();
        let name = name.to_string();
        // The highest record of this name on the DHT: after a lost record
        // file the next sequence must still pass it. A lookup that finds
        // nothing (no peers yet) leaves what this node knows.
        let seen = {
            let key = shoal_net::names::dht_key(&self.peer_id(), &name);
            let lookup = self.inner.names.settings.lookup;
            match self.parts().net.get_name(key, lookup).await {
                Ok(found) => crate::names::newest(found, &self.peer_id(), &name).map_or(0, |(r, _)| r.seq),
                Err(e) => {
                    tracing::debug!(name, error = %e, "no record of this name found on the DHT");
                    0
                }
            }
        };
        let (r, signed, new) = self
            .blocking(move |n| {
                let root = n
                    .parts
                    .store
                    .resolve_name(&name)?
                    .ok_or_else(|| Error::NotFound(format!("no name {name:?} here (shoal pins lists names)")))?;
                match names.published(&name) {
                    Some((r, b)) if r.root == root && r.seq >= seen => Ok((r, b, false)),
                    _ => names.sign_next(&name, root, seen).map(|(r, b)| (r, b, true)),
                }
            })
            .await?;
        let net = &self.parts().net;
        net.put_name(signed.clone()).await?;
        net.publish_to(shoal_net::names::topic(&r.publisher(), &r.name), signed)
            .await?;
        tracing::info!(name = %r.name, root = %r.root, seq = r.seq, "published");
        Ok(crate::names::PublishReport {
            publisher: r.publisher().to_string(),
            name: r.name,
            root: r.root,
            seq: r.seq,
            new,
        })
    }

    /// Stops publishing `name` (peers keep the last record until it
    /// expires); false if it was not published.
    pub async fn unpublish(&self, name: &str) -> Result<bool> {
        let (names, name) = (self.inner.names.clone(), name.to_string());
        self.blocking(move |_| names.unpublish(&name)).await
    }

    /// Publishes `name` again if it is published (after it moved).
    async fn republish(&self, name: &str) {
        if self.inner.names.published(name).is_some() {
            if let Err(e) = self.publish(name).await {
                tracing::warn!(name, error = %e, "publishing the new version failed");
            }
        }
    }

    /// Follows `PEER/NAME` under the local name `local` (default NAME):
    /// subscribes to its announcements, looks up the newest record and
    /// takes that version before returning; keeps following afterwards.
    pub async fn follow(&self, spec: &str, local: Option<String>, keep: Option<u32>) -> Result<crate::names::Follow> {
        let (peer, name) = crate::names::parse_follow(spec)?;
        if peer == self.peer_id() {
            return Err(Error::BadRequest("that is this daemon's own name".into()));
        }
        if keep == Some(0) {
            return Err(Error::BadRequest("--keep must be at least 1".into()));
        }
        let local = local.unwrap_or_else(|| name.clone());
        shoal_store::validate_name(&local)?;
        let names = self.inner.names.clone();
        let key = (peer.to_string(), name.clone());
        if let Some(other) = names
            .by_local(&local)
            .filter(|f| (f.publisher.clone(), f.name.clone()) != key)
        {
            return Err(Error::Conflict(format!(
                "{local} already follows {}/{}; unfollow it first or choose --as",
                other.publisher, other.name
            )));
        }
        let f = match names.get(&key) {
            Some(mut f) => {
                f.local = local;
                f.keep = keep.or(f.keep);
                f
            }
            None => crate::names::Follow {
                publisher: key.0.clone(),
                name: name.clone(),
                local,
                keep,
                seq: 0,
                root: None,
                updated: 0,
                error: None,
                failures: 0,
                pending: Vec::new(),
            },
        };
        {
            let (names, f) = (names.clone(), f.clone());
            self.blocking(move |_| names.save(&f)).await?;
        }
        let net = &self.parts().net;
        net.subscribe(shoal_net::names::topic(&peer, &name), true).await?;
        self.lookup_follow(&peer, &name).await;
        self.update_follow(key.clone()).await;
        let f = names
            .get(&key)
            .ok_or_else(|| Error::Internal("the follow vanished".into()))?;
        if f.seq == 0 && f.error.is_none() {
            let mut f = f;
            f.error = Some(format!(
                "no record of {peer}/{name} found yet (not published, or the publisher is offline and no peer holds it); still following"
            ));
            return Ok(f);
        }
        Ok(f)
    }

    /// Every follow.
    pub fn follows(&self) -> Vec<crate::names::Follow> {
        self.inner.names.follows()
    }

    /// Stops following into the local name `local` (its versions stay).
    pub async fn unfollow(&self, local: &str) -> Result<crate::names::Follow> {
        let (names, l) = (self.inner.names.clone(), local.to_string());
        let f = self
            .blocking(move |_| Ok(names.remove(&l)))
            .await?
            .ok_or_else(|| Error::NotFound(format!("{local} follows nothing (shoal follows lists follows)")))?;
        if let Ok((peer, name)) = f.source() {
            self.parts()
                .net
                .subscribe(shoal_net::names::topic(&peer, &name), false)
                .await?;
        }
        Ok(f)
    }

    /// Looks the followed name up on the DHT; a newer record than the
    /// follow knows is kept as pending (and wakes the updater).
    async fn lookup_follow(&self, peer: &PeerId, name: &str) {
        let names = &self.inner.names;
        let key = shoal_net::names::dht_key(peer, name);
        let found = self
            .parts()
            .net
            .get_name(key, names.settings.lookup)
            .await
            .unwrap_or_default();
        if let Some((r, b)) = crate::names::newest(found, peer, name) {
            names.heard(&r, &b);
        }
    }

    /// Takes the pending version of a follow, if newer than the one held:
    /// fetches what is missing, pins it, points the local name at it.
    async fn update_follow(&self, key: (String, String)) {
        let names = self.inner.names.clone();
        let _one = names.updating.lock().await;
        let Some(f) = names.get(&key) else { return };
        let Ok(r) = shoal_net::names::verify(&f.pending) else {
            return;
        };
        if r.seq <= f.seq {
            return;
        }
        let (local, keep, root) = (f.local.clone(), f.keep, r.root);
        let started = Instant::now();
        let took = self
            .blocking(move |n| {
                let store = &n.parts.store;
                let session = store.session();
                let fetched = n.parts.ensure_local(root, &session, &|_| {})?;
                store.pin(&root, PinKind::User)?;
                let view = n.parts.ensure_view(root)?;
                let previous = store.resolve_name(&local)?;
                store.set_name(&local, &root)?;
                let bytes = fetched.as_ref().map_or(0, |f| f.bytes_fetched);
                n.record_version(&local, previous, root, bytes, keep)?;
                Ok((bytes, view))
            })
            .await;
        // Unfollowed meanwhile: the version stays, the follow is gone.
        let Some(mut f) = names.get(&key) else { return };
        match took {
            Ok((bytes, view)) => {
                self.announce(root).await;
                self.announce(view).await;
                tracing::info!(publisher = %key.0, name = %key.1, seq = r.seq, %root, bytes, secs = started.elapsed().as_secs_f64(), "took a followed version");
                f.seq = r.seq;
                f.root = Some(root);
                f.updated = unix_now();
                f.error = None;
                f.failures = 0;
                if f.pending_seq_is(r.seq) {
                    f.pending.clear();
                }
            }
            Err(e) => {
                // Retried after 5 s, doubling per failure up to the poll
                // interval (a publisher or peers back online are noticed
                // soon, a long outage costs little).
                let delay = (Duration::from_secs(5) * 2u32.pow(f.failures.min(6))).min(names.settings.poll);
                tracing::warn!(publisher = %key.0, name = %key.1, seq = r.seq, error = %e, retry_in = ?delay, "taking a followed version failed");
                f.error = Some(e.to_string());
                f.failures = f.failures.saturating_add(1);
                let (names, key) = (names.clone(), key.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    names.wake(key);
                });
            }
        }
        let newer = !f.pending.is_empty();
        let _ = self.blocking(move |n| n.names.save(&f)).await;
        if newer {
            names.wake(key);
        }
    }

    /// Puts published records back on the DHT, subscribes to followed
    /// names, and starts the announcer and the follow updater.
    async fn start_names(&self, mut wakes: crate::names::Wakes) -> Result<()> {
        let names = self.inner.names.clone();
        let net = self.parts().net.clone();
        for signed in names.all_published() {
            net.put_name(signed).await?;
        }
        for f in names.follows() {
            if let Ok((peer, name)) = f.source() {
                net.subscribe(shoal_net::names::topic(&peer, &name), true).await?;
            }
        }
        let settings = names.settings;
        // The announcer: current records again (followers ignore what they
        // hold), and on the DHT every PUT_EVERY rounds.
        let announcer = {
            let (names, net) = (names.clone(), net.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(settings.announce);
                let mut round = 0u32;
                loop {
                    tick.tick().await;
                    round = round.wrapping_add(1);
                    for signed in names.all_published() {
                        let Ok(r) = shoal_net::names::verify(&signed) else {
                            continue;
                        };
                        if round.is_multiple_of(crate::names::PUT_EVERY) {
                            let _ = net.put_name(signed.clone()).await;
                        }
                        let _ = net
                            .publish_to(shoal_net::names::topic(&r.publisher(), &r.name), signed)
                            .await;
                    }
                }
            })
        };
        // The updater: wake-ups from gossip (and follow), a DHT lookup of
        // every follow each poll (the first at once: an update a restart
        // cut short completes).
        let weak = Arc::downgrade(&self.inner);
        let updater = tokio::spawn(async move {
            let mut poll = tokio::time::interval(settings.poll);
            loop {
                tokio::select! {
                    key = wakes.recv() => {
                        let (Some(key), Some(inner)) = (key, weak.upgrade()) else { break };
                        Node { inner }.update_follow(key).await;
                    }
                    _ = poll.tick() => {
                        let Some(inner) = weak.upgrade() else { break };
                        let node = Node { inner };
                        for f in node.follows() {
                            if let Ok((peer, name)) = f.source() {
                                node.lookup_follow(&peer, &name).await;
                            }
                            node.update_follow(f.key()).await;
                        }
                    }
                }
            }
        });
        let mut tasks = self.inner.tasks.lock().expect("tasks lock");
        tasks.push(announcer.abort_handle());
        tasks.push(updater.abort_handle());
        Ok(())
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

impl Inner {
    /// A name's history; a name added before histories were kept shows its
    /// current root as version 1 (time unknown: 0).
    fn history(&self, name: &str) -> Result<crate::versions::History> {
        let mut h = crate::versions::load(&self.versions_dir, name)?;
        if h.versions.is_empty() {
            match self.parts.store.resolve_name(name)? {
                Some(root) => h.versions.push(crate::versions::Version::untracked(root)),
                None => {
                    return Err(Error::NotFound(format!(
                        "no dataset named {name:?} here (see `shoal pins`)"
                    )))
                }
            }
        }
        if h.keep == 0 {
            h.keep = crate::versions::DEFAULT_KEEP;
        }
        Ok(h)
    }

    /// Records `root` as the newest version of `name` (whose root was
    /// `previous`), then unpins versions beyond the name's retention.
    fn record_version(
        &self,
        name: &str,
        previous: Option<Cid>,
        root: Cid,
        new_bytes: u64,
        keep: Option<u32>,
    ) -> Result<Option<crate::versions::Version>> {
        let store = &self.parts.store;
        let mut h = crate::versions::load(&self.versions_dir, name)?;
        if h.versions.is_empty() {
            if let Some(p) = previous.filter(|p| *p != root) {
                h.versions.push(crate::versions::Version::untracked(p));
            }
        }
        h.keep = keep.unwrap_or(if h.keep == 0 {
            crate::versions::DEFAULT_KEEP
        } else {
            h.keep
        });
        let last = h.versions.last().cloned();
        if last.as_ref().is_some_and(|v| v.root == root) {
            crate::versions::save(&self.versions_dir, name, &h)?;
            return Ok(last);
        }
        let parent = last.as_ref().map(|v| v.root);
        let (added, changed, removed) = match parent {
            Some(p) => {
                let reader = self.parts.reader(root);
                let (a, b) = (self.parts.manifest(&p)?, self.parts.manifest(&root)?);
                let d = crate::versions::diff(&a, &b, &mut reader.fetch())?;
                (d.added.len() as u64, d.changed.len() as u64, d.removed.len() as u64)
            }
            None => (self.parts.manifest(&root)?.key_count, 0, 0),
        };
        let v = crate::versions::Version {
            number: last.map_or(1, |v| v.number + 1),
            root,
            parent,
            time: unix_now(),
            added,
            changed,
            removed,
            new_bytes,
        };
        h.versions.push(v.clone());
        // Retention: the oldest versions beyond `keep` are unpinned (a
        // root another kept version or another name holds stays).
        let excess = h.versions.len().saturating_sub(h.keep as usize);
        let dropped: Vec<crate::versions::Version> = h.versions.drain(..excess).collect();
        let named: HashSet<Cid> = store.names()?.into_iter().map(|x| x.1).collect();
        for d in dropped {
            if !named.contains(&d.root) && !h.versions.iter().any(|k| k.root == d.root) {
                store.unpin(&d.root, PinKind::User)?;
            }
        }
        crate::versions::save(&self.versions_dir, name, &h)?;
        Ok(Some(v))
    }

    /// The file holding the last add's record for `name`.
    fn ingest_record(&self, name: &str) -> PathBuf {
        crate::records::path(&self.ingest_dir, name)
    }
}

/// The record an earlier add left (`None` if absent or unreadable: the add
/// then reads every file).
fn read_record(path: &Path) -> Option<shoal_zarr::Prior> {
    crate::records::read_cbor(path).unwrap_or_else(|e| {
        tracing::warn!(error = %e, path = %path.display(), "ignoring an unreadable add record");
        None
    })
}
