//! [`Services`]: the store, the network and the block source of a running
//! node, shared by its handles, the mirror policy, the query runner and the
//! serve handlers, and the read helpers over them: a dataset's manifest
//! from the store or peers, block reads for code on a blocking thread, and
//! "make this dataset complete here".

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::manifest::{Entry, Manifest, PageCache};
use shoal_core::{cid, Block, Cid};
use shoal_net::{BlockSource, FetchReport, Fetcher, PeerId};
use shoal_store::{Session, Store};

use crate::error::{Error, Result};
use crate::popularity::Popularity;
use crate::types::Progress;

/// Deadline of one reachability dial.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Services {
    pub store: Arc<Store>,
    pub net: shoal_net::Client,
    pub fetcher: Fetcher,
    pub source: Arc<BlockSource>,
    pub pop: Arc<Popularity>,
    pub provider_timeout: Duration,
    pub query: crate::config::QuerySettings,
    /// Bounds and counters of the compute requests served.
    pub serve_limits: Arc<crate::trust::ServeLimits>,
    /// Peers caught returning wrong partials.
    pub liars: crate::trust::Liars,
    /// Bounds on untrusted input.
    pub limits: crate::config::Limits,
    /// Decoded manifests of the datasets read lately.
    pub manifests: Manifests,
}

fn no_key(key: &str, root: Cid) -> Error {
    Error::NotFound(format!("no key {key:?} in dataset {root}"))
}

/// Decoded manifest roots kept (each with its own pages).
const MANIFESTS_KEPT: usize = 8;
/// Decoded pages kept per manifest: a reader of one dataset (fsspec, the
/// gateway) asks for neighbouring keys, which share pages.
const PAGES_PER_MANIFEST: usize = 8;

/// A dataset's decoded, validated manifest root and the pages its key
/// lookups went through (validated against this root's tree: pages are
/// kept per root, never shared with another root's claims about them).
pub(crate) struct Decoded {
    pub manifest: Manifest,
    pub pages: PageCache,
    /// [`Store::removals`] read before the root was last found stored here
    /// (`u64::MAX`: not yet): while the store's count is still this, the
    /// root is still here and a lookup needs no store call.
    stored_at: AtomicU64,
}

/// The manifests of the datasets read lately, decoded once: a gateway or
/// CLI read of one key no longer reads, verifies and decodes the root and
/// the page holding the key every time. Roots are immutable, so nothing
/// goes stale; one is used only while its root block is stored here; the
/// oldest root leaves first. At most MANIFESTS_KEPT roots
/// (each at most 1 MiB encoded) and PAGES_PER_MANIFEST pages each.
#[derive(Default)]
pub(crate) struct Manifests {
    kept: Mutex<VecDeque<(Cid, Arc<Decoded>)>>,
}

impl Manifests {
    fn get(&self, root: &Cid) -> Option<Arc<Decoded>> {
        let mut kept = self.kept.lock().expect("manifests lock");
        let at = kept.iter().position(|(c, _)| c == root)?;
        let hit = kept.remove(at).expect("found above");
        kept.push_back(hit.clone());
        Some(hit.1)
    }

    fn forget(&self, root: &Cid) {
        self.kept.lock().expect("manifests lock").retain(|(c, _)| c != root);
    }

    fn put(&self, root: Cid, d: Arc<Decoded>) {
        let mut kept = self.kept.lock().expect("manifests lock");
        if kept.iter().any(|(c, _)| *c == root) {
            return;
        }
        if kept.len() >= MANIFESTS_KEPT {
            kept.pop_front();
        }
        kept.push_back((root, d));
    }
}

impl Services {
    /// Loads a dataset's manifest: from the store, else from peers.
    /// Blocking: call from the blocking pool inside the node's runtime.
    pub fn manifest(&self, root: &Cid) -> Result<Manifest> {
        Ok(self.decoded(root)?.manifest.clone())
    }

    /// The decoded manifest of `root` with its kept pages: from the cache,
    /// else loaded as [`Self::manifest`] says and kept. Blocking.
    pub fn decoded(&self, root: &Cid) -> Result<Arc<Decoded>> {
        // Kept while the root is stored here: a dataset removed since (gc)
        // reads as it would uncached (fetched from peers, or not found).
        if let Some(d) = self.manifests.get(root) {
            if self.stored_here(root, &d) {
                return Ok(d);
            }
            self.manifests.forget(root);
        }
        let d = Arc::new(Decoded {
            manifest: self.load_manifest(root)?,
            pages: PageCache::new(PAGES_PER_MANIFEST),
            stored_at: AtomicU64::new(u64::MAX),
        });
        if self.stored_here(root, &d) {
            self.manifests.put(*root, d.clone());
        }
        Ok(d)
    }

    /// Whether `root` is stored here, recording in `d` the removal count
    /// read before the check (so [`lookup_kept`](Self::lookup_kept) can
    /// trust the answer until something leaves the store).
    fn stored_here(&self, root: &Cid, d: &Decoded) -> bool {
        let removals = self.store.removals();
        let here = self.store.has(root).unwrap_or(false);
        if here {
            d.stored_at.store(removals, Ordering::Release);
        }
        here
    }

    /// [`lookup`](Self::lookup) without I/O, for async callers to skip a
    /// thread hop: the entry when the decoded manifest of `root` is kept,
    /// nothing left the store since its root was last found here, and every
    /// page on the key's path is kept. `None`: call `lookup` on the
    /// blocking pool.
    pub fn lookup_kept(&self, root: Cid, key: &str) -> Option<Result<(Entry, u32)>> {
        enum Miss {
            NotKept,
            Bad(shoal_core::Error),
        }
        impl From<shoal_core::Error> for Miss {
            fn from(e: shoal_core::Error) -> Self {
                Miss::Bad(e)
            }
        }
        let d = self.manifests.get(&root)?;
        if d.stored_at.load(Ordering::Acquire) != self.store.removals() {
            return None;
        }
        let found = d
            .manifest
            .lookup_in(key, &mut |child| d.pages.get(&child.cid).ok_or(Miss::NotKept));
        match found {
            Ok(Some(e)) => Some(Ok((e, d.manifest.block_size))),
            Ok(None) => Some(Err(no_key(key, root))),
            Err(Miss::NotKept) => None,
            Err(Miss::Bad(e)) => Some(Err(e.into())),
        }
    }

    /// One key's manifest entry and the dataset's block size, through the
    /// decoded pages kept for `root` (fetching the others). Blocking.
    pub fn lookup(&self, root: Cid, key: &str) -> Result<(Entry, u32)> {
        let d = self.decoded(&root)?;
        Ok((self.entry(&d, root, key)?, d.manifest.block_size))
    }

    /// One key's manifest entry in `d`, the decoded manifest of `root`.
    pub fn entry(&self, d: &Decoded, root: Cid, key: &str) -> Result<Entry> {
        let reader = self.reader(root);
        let found = d.manifest.lookup_cached(key, &d.pages, &mut reader.fetch())?;
        found.ok_or_else(|| no_key(key, root))
    }

    fn load_manifest(&self, root: &Cid) -> Result<Manifest> {
        if root.codec() != cid::DAG_CBOR {
            return Err(Error::BadRequest(format!("{root} is a raw block, not a dataset")));
        }
        let block = self.reader(*root).get(root).map_err(|e| {
            Error::NotFound(format!(
                "dataset {root} is not in this store and could not be fetched: {e}"
            ))
        })?;
        Ok(Manifest::decode(&block)?)
    }

    /// A block reader for dataset `root` (see [`Reader`]).
    pub fn reader(&self, root: Cid) -> Reader {
        Reader {
            store: self.store.clone(),
            source: self.source.clone(),
            rt: tokio::runtime::Handle::current(),
            root,
            fetched_bytes: AtomicU64::new(0),
        }
    }

    /// Makes a dataset complete locally, fetching what is missing from
    /// peers. Blocks are protected by `session` until the caller pins (or
    /// drops it). `None` when nothing had to be fetched. Blocking.
    pub fn ensure_local(
        &self,
        root: Cid,
        session: &Session,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Option<FetchReport>> {
        let report = tokio::runtime::Handle::current()
            .block_on(self.fetcher.fetch_dataset(root, session, &|p| progress(p)))
            .map_err(|e| {
                let e = Error::from(e);
                match self.store.missing_blocks(&root) {
                    Ok(m) if !m.is_empty() && self.store.has(&root).unwrap_or(false) => e.context(format!(
                        "dataset {root} is incomplete here ({} blocks missing)",
                        m.len()
                    )),
                    _ => e,
                }
            })?;
        Ok((!report.already_local).then_some(report))
    }

    /// Whether every block of `root` is here. Blocking.
    pub fn complete_here(&self, root: &Cid) -> bool {
        self.store.missing_blocks(root).map(|m| m.is_empty()).unwrap_or(false)
    }

    /// Providers of `root`: those that answer now (plus this node if it
    /// holds it in full), and every peer with a provider record (gone ones
    /// included: a DHT record outlives a killed daemon).
    pub async fn providers(self: &Arc<Self>, root: Cid) -> (Vec<PeerId>, HashSet<PeerId>) {
        let found = self
            .net
            .find_providers(root, self.provider_timeout)
            .await
            .unwrap_or_default();
        let recorded = found.clone();
        let checks = found.into_iter().map(|p| {
            let net = self.net.clone();
            async move { net.reachable(p, REACH_TIMEOUT).await.then_some(p) }
        });
        let mut out: Vec<PeerId> = futures::future::join_all(checks).await.into_iter().flatten().collect();
        let this = self.clone();
        if tokio::task::spawn_blocking(move || this.complete_here(&root))
            .await
            .unwrap_or(false)
        {
            out.push(self.net.peer_id());
        }
        out.sort();
        (out, recorded)
    }
}

/// Block reads for code already on a blocking thread: the store directly
/// (no thread hop for local data), else the block source (peers, deadline,
/// replacement of a corrupt local copy). Counts bytes fetched from peers.
pub(crate) struct Reader {
    store: Arc<Store>,
    source: Arc<BlockSource>,
    rt: tokio::runtime::Handle,
    root: Cid,
    fetched_bytes: AtomicU64,
}

impl Reader {
    pub fn get(&self, c: &Cid) -> std::result::Result<Block, String> {
        if let Ok(Some(b)) = self.store.get(c) {
            return Ok(b);
        }
        let b = self
            .rt
            .block_on(self.source.get(*c, self.root))
            .map_err(|e| e.to_string())?;
        self.fetched_bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }

    /// The reader as the fetch function `shoal-zarr` and manifests take.
    pub fn fetch(&self) -> impl FnMut(&Cid) -> shoal_zarr::Result<Block> + '_ {
        |c| self.get(c).map_err(shoal_zarr::Error::Fetch)
    }

    pub fn fetched_bytes(&self) -> u64 {
        self.fetched_bytes.load(Ordering::Relaxed)
    }
}

impl Services {
    /// The UnixFS view of dataset `root` when it is held here in full
    /// (built now if need be), else None.
    pub fn view_if_complete(&self, root: Cid) -> Result<Option<Cid>> {
        match self.store.view(&root)? {
            Some(v) => Ok(Some(v)),
            None if self.complete_here(&root) => self.ensure_view(root).map(Some),
            None => Ok(None),
        }
    }

    /// The UnixFS view of dataset `root` (held here in full): the recorded
    /// one, or built now from the manifest (its new blocks stored, the
    /// view recorded so GC keeps it with the dataset) and provided on the
    /// DHT by its caller.
    pub fn ensure_view(&self, root: Cid) -> Result<Cid> {
        if let Some(v) = self.store.view(&root)? {
            return Ok(v);
        }
        let m = self.manifest(&root)?;
        let session = self.store.session();
        let store = &self.store;
        let mut pending: Vec<shoal_core::Block> = Vec::new();
        let flush = |pending: &mut Vec<shoal_core::Block>| -> shoal_unixfs::Result<()> {
            store
                .put_many(pending, Some(&session))
                .map_err(|e| shoal_unixfs::Error::Invalid(format!("storing the view: {e}")))?;
            pending.clear();
            Ok(())
        };
        let view = {
            let mut put = |cid: Cid, data: Vec<u8>| -> shoal_unixfs::Result<()> {
                pending.push(shoal_core::Block::verified(cid, data.into())?);
                if pending.len() >= 256 {
                    flush(&mut pending)?;
                }
                Ok(())
            };
            let mut builder = shoal_unixfs::ViewBuilder::new(m.block_size, &mut put);
            let mut fetch = |c: &Cid| {
                store
                    .require(c)
                    .map_err(|e| shoal_unixfs::Error::Invalid(format!("reading the manifest: {e}")))
            };
            m.for_each_entry(&mut fetch, &mut |e| builder.add(e))
                .and_then(|_| builder.finish())
                .map_err(|e| Error::Internal(format!("building the UnixFS view of {root}: {e}")))?
        };
        flush(&mut pending).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.set_view(&root, &view)?;
        tracing::debug!(%root, %view, "built the UnixFS view");
        Ok(view)
    }
}
