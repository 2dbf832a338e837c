//! [`BlockSource`]: single blocks for readers (mount, query, `cat`): the
//! local store first, then the providers of the dataset, with concurrent
//! requests for one CID collapsed into one fetch and a deadline on each;
//! what is fetched is stored behind the reader's back (`write_behind`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use shoal_core::{Block, Cid};
use shoal_store::Store;
use tokio::sync::oneshot;

use super::write_behind::WriteBehind;
use super::{blocking, Fetcher};
use crate::codec::Answer;
use crate::{Error, Result};

type Waiters = Vec<oneshot::Sender<std::result::Result<Block, String>>>;

/// Blocks for readers: local store, then peers holding the dataset.
pub struct BlockSource {
    fetcher: Fetcher,
    inflight: Mutex<HashMap<Cid, Waiters>>,
    providers: Mutex<HashMap<Cid, (Vec<PeerId>, Instant)>>,
    stats: SourceStats,
    behind: Arc<WriteBehind>,
    /// Told (dataset root, block) when a read meets a corrupt local copy,
    /// so the rest of the dataset can be checked and repaired.
    on_corrupt: std::sync::OnceLock<CorruptFn>,
}

/// See [`BlockSource::on_corrupt`].
pub type CorruptFn = Arc<dyn Fn(Cid, Cid) + Send + Sync>;

/// What the block source did: blocks found locally, blocks fetched from
/// peers and how long each such fetch took (readers waiting on another
/// reader's fetch are not counted twice).
#[derive(Debug)]
pub struct SourceStats {
    pub local: AtomicU64,
    pub fetched: AtomicU64,
    pub failed: AtomicU64,
    pub fetch_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for SourceStats {
    fn default() -> Self {
        Self {
            local: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            // 1 ms .. ~33 s, doubling.
            fetch_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16),
            ),
        }
    }
}

struct LeaderGuard<'a> {
    map: &'a Mutex<HashMap<Cid, Waiters>>,
    cid: Cid,
    result: std::result::Result<Block, String>,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let waiters = self
            .map
            .lock()
            .expect("inflight lock")
            .remove(&self.cid)
            .unwrap_or_default();
        for w in waiters {
            let _ = w.send(self.result.clone());
        }
    }
}

/// Providers found for a dataset are reused for this long.
const PROVIDER_CACHE_TTL: Duration = Duration::from_secs(60);

impl BlockSource {
    pub fn new(fetcher: Fetcher) -> Self {
        Self {
            fetcher,
            inflight: Mutex::new(HashMap::new()),
            providers: Mutex::new(HashMap::new()),
            stats: SourceStats::default(),
            behind: Arc::default(),
            on_corrupt: std::sync::OnceLock::new(),
        }
    }

    /// Sets what is told (dataset root, block) when a read meets a corrupt
    /// local copy (the read itself fetches the block again). Set once.
    pub fn on_corrupt(&self, f: CorruptFn) {
        let _ = self.on_corrupt.set(f);
    }

    /// Waits (at most `limit`) until every fetched block handed to the
    /// write-behind is stored, or dropped if storing it failed.
    pub async fn settle(&self, limit: Duration) {
        self.behind.settle(limit).await
    }

    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.fetcher.store
    }

    /// The verified block `cid` of dataset `root`, within the deadline. A
    /// corrupt local copy is treated as absent and fetched again.
    pub async fn get(&self, cid: Cid, root: Cid) -> Result<Block> {
        self.get_as(cid, root, false).await
    }

    /// [`get`](Self::get) for a read nobody waits for yet (read-ahead):
    /// the local copy is read and verified on the low-priority threads of
    /// [`speculative`](super::speculative).
    pub async fn get_ahead(&self, cid: Cid, root: Cid) -> Result<Block> {
        self.get_as(cid, root, true).await
    }

    /// The verified local copy of `cid`, read on the calling thread; `None`
    /// if it is not held or its copy is unusable ([`get`](Self::get) then
    /// fetches it and reports the corrupt copy).
    pub fn get_local(&self, cid: &Cid) -> Option<Block> {
        let b = self.fetcher.store.get(cid).ok()??;
        self.stats.local.fetch_add(1, Ordering::Relaxed);
        Some(b)
    }

    async fn get_as(&self, cid: Cid, root: Cid, ahead: bool) -> Result<Block> {
        let store = self.fetcher.store.clone();
        let read = move || Ok(store.get(&cid));
        let pool = if ahead { super::speculative::pool() } else { None };
        let found = match pool {
            Some(pool) => pool.run(read).await??,
            None => blocking(read).await?,
        };
        let local = match found {
            Ok(Some(b)) => {
                self.stats.local.fetch_add(1, Ordering::Relaxed);
                return Ok(b);
            }
            Ok(None) => "not in the local store".to_string(),
            Err(e) => {
                tracing::warn!(%cid, error = %e, "local copy unusable; fetching from peers");
                if let Some(f) = self.on_corrupt.get() {
                    f(root, cid);
                }
                format!("the local copy is unusable ({e})")
            }
        };
        if let Some(b) = self.behind.pending(&cid) {
            self.stats.local.fetch_add(1, Ordering::Relaxed);
            return Ok(b);
        }
        let deadline = self.fetcher.opts.block_deadline;
        let (tx, rx) = oneshot::channel();
        let leader = {
            let mut map = self.inflight.lock().expect("inflight lock");
            match map.get_mut(&cid) {
                Some(waiters) => {
                    waiters.push(tx);
                    false
                }
                None => {
                    map.insert(cid, vec![tx]);
                    true
                }
            }
        };
        if leader {
            // The guard answers every waiter and clears the entry even if this
            // future is dropped mid-fetch, so a cancelled reader never leaves
            // the others waiting on a fetch nobody runs (cancel-safe).
            let mut guard = LeaderGuard {
                map: &self.inflight,
                cid,
                result: Err("fetch abandoned".to_string()),
            };
            let started = Instant::now();
            guard.result = match tokio::time::timeout(deadline, self.fetch_one(cid, root)).await {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no peer delivered it within {}s", deadline.as_secs())),
            };
            let counter = if guard.result.is_ok() {
                &self.stats.fetched
            } else {
                &self.stats.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.stats.fetch_seconds.observe(started.elapsed().as_secs_f64());
        }
        let fetched = match tokio::time::timeout(deadline + Duration::from_secs(1), rx).await {
            Ok(Ok(r)) => r,
            _ => Err("fetch abandoned".to_string()),
        };
        fetched.map_err(|reason| Error::Unavailable {
            cid,
            reason: format!("{local}, and {reason}"),
        })
    }

    /// Tries the cached providers of `root`; if they all fail, looks the
    /// providers up again once (a provider may have gone and a new mirror
    /// appeared since the list was cached) and tries the new ones.
    ///
    /// A provider at its inbound limit answers "skipped" (busy): that is
    /// retried after a short, growing pause, not reported as a failure. The
    /// caller's deadline bounds the retries.
    async fn fetch_one(&self, cid: Cid, root: Cid) -> Result<Block> {
        let mut last = String::from("no providers");
        let mut pause = Duration::from_millis(20);
        let mut looked_up = false;
        loop {
            let cached = self
                .providers
                .lock()
                .expect("providers lock")
                .get(&root)
                .filter(|(_, t)| t.elapsed() < PROVIDER_CACHE_TTL)
                .map(|(p, _)| p.clone())
                .filter(|p| !p.is_empty());
            let mut busy = false;
            let mut tried = Vec::new();
            if let Some(p) = cached {
                if let Some(b) = self.try_providers(cid, root, &p, &mut last, &mut busy).await? {
                    return Ok(b);
                }
                tried = p;
            }
            if !busy && !looked_up {
                looked_up = true;
                let fresh = self.fetcher.providers(root).await?;
                self.providers
                    .lock()
                    .expect("providers lock")
                    .insert(root, (fresh.clone(), Instant::now()));
                let untried: Vec<PeerId> = fresh.into_iter().filter(|p| !tried.contains(p)).collect();
                if let Some(b) = self.try_providers(cid, root, &untried, &mut last, &mut busy).await? {
                    return Ok(b);
                }
            }
            if !busy {
                return Err(Error::Unavailable { cid, reason: last });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn try_providers(
        &self,
        cid: Cid,
        root: Cid,
        providers: &[PeerId],
        last: &mut String,
        busy: &mut bool,
    ) -> Result<Option<Block>> {
        for &peer in providers {
            match self.fetcher.net.request(peer, Some(root), vec![cid]).await {
                Ok(resp) => {
                    for (c, a) in resp.answers {
                        if c != cid {
                            continue;
                        }
                        match a {
                            Answer::Data(bytes) => match Block::verified(cid, bytes) {
                                Ok(b) => {
                                    self.fetcher.net.stats().received(b.len());
                                    self.behind.push(b.clone(), &self.fetcher.store).await;
                                    return Ok(Some(b));
                                }
                                Err(_) => {
                                    self.fetcher.net.ban(peer).await?;
                                    *last = format!("peer {peer} sent wrong bytes (banned)");
                                }
                            },
                            Answer::DontHave => *last = format!("peer {peer} does not have it"),
                            Answer::Skipped => {
                                *busy = true;
                                *last = format!("peer {peer} is busy");
                            }
                        }
                    }
                }
                Err(e) => *last = e.to_string(),
            }
        }
        Ok(None)
    }
}
