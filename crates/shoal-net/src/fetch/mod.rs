//! Fetching datasets and blocks from peers.
//!
//! [`Fetcher::fetch_dataset`] makes a dataset complete locally: it finds the
//! providers of the root on the DHT, then repeatedly asks the store which
//! blocks of the dataset are missing (the root first, then manifest pages,
//! then data blocks) and downloads them from all providers at once:
//! batches of [`FetchOptions::batch`] CIDs, [`FetchOptions::per_peer_inflight`]
//! requests in flight per provider, at most [`FetchOptions::max_peers`]
//! providers. Each block is verified against its CID before it is stored. A
//! provider that sends wrong bytes is banned and disconnected; one that lacks
//! a block is not asked for it again; one that times out or fails gets a
//! strike and is dropped after [`FetchOptions::max_strikes`]. Its work goes
//! back in the queue for the others. Blocks are stored in batches under the
//! caller's store session, so an interrupted fetch keeps what it has and a
//! re-run fetches only what is missing.
//!
//! The rooms: `dataset` holds the state of one dataset fetch without I/O
//! (what to ask of whom, what each answer means), driven from here;
//! `link` the per-provider link estimate; `source` the [`BlockSource`]
//! that serves single blocks to readers (mount, query, `cat`) and
//! `write_behind` its batched store writer.

mod dataset;
mod link;
mod source;
pub mod speculative;
mod write_behind;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::PeerId;
use shoal_core::{Block, Cid, Progress};
use shoal_store::{Session, Store};

use self::dataset::{DatasetFetch, Request};
pub use self::link::LinkReport;
pub use self::source::{BlockSource, CorruptFn, SourceStats};
use crate::network::Client;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// How long to search the DHT for providers.
    pub provider_timeout: Duration,
    /// CIDs per request. 8 x 1 MiB blocks keep a response under 8 MiB.
    pub batch: usize,
    /// Requests in flight per provider until its link is measured; then
    /// twice its bandwidth-delay product (at most 8 requests).
    pub per_peer_inflight: usize,
    /// Providers used at once. Response data in flight is bounded by
    /// [`MAX_INFLIGHT_BYTES`] over all of them.
    pub max_peers: usize,
    /// Failures (timeouts, errors) before a provider is dropped.
    pub max_strikes: u32,
    /// Bytes buffered before a store batch (one fsync) is written.
    pub write_batch_bytes: usize,
    /// Deadline of one [`BlockSource::get`], and the longest a dataset
    /// fetch waits without receiving any block.
    pub block_deadline: Duration,
    /// Stop a dataset fetch once it has received more than this many bytes
    /// (a mirror fetches at most what it made room for, whatever the
    /// dataset turns out to hold).
    pub max_bytes: Option<u64>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            provider_timeout: Duration::from_secs(20),
            batch: 8,
            per_peer_inflight: 8,
            max_peers: 8,
            max_strikes: 3,
            write_batch_bytes: 32 << 20,
            block_deadline: Duration::from_secs(30),
            max_bytes: None,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FetchReport {
    pub root: String,
    pub blocks_fetched: u64,
    pub bytes_fetched: u64,
    /// True when the dataset was already complete locally.
    pub already_local: bool,
    /// Providers that delivered blocks.
    pub peers_used: Vec<String>,
    /// Providers banned for sending wrong bytes.
    pub banned: Vec<String>,
    /// Per provider: its share and its measured link.
    #[serde(default)]
    pub links: Vec<LinkReport>,
}

#[derive(Clone)]
pub struct Fetcher {
    pub net: Client,
    pub store: Arc<Store>,
    pub opts: FetchOptions,
}

/// Bytes requested and not yet received, over all providers of a fetch:
/// what a fetch may have buffered in the muxer at once.
pub const MAX_INFLIGHT_BYTES: u64 = 256 << 20;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Config(format!("blocking task failed: {e}")))?
}

/// The providers a fetch asks, at most `max`: connected ones first. The
/// records of providers long gone (a DHT record outlives a killed daemon)
/// must not push a live one out of the few asked; it would then be dropped
/// as unconfirmed and the fetch would fail with stale peers only.
fn pick_providers(found: HashSet<PeerId>, connected: &HashSet<PeerId>, max: usize) -> Vec<PeerId> {
    let mut found: Vec<PeerId> = found.into_iter().collect();
    found.sort_by_key(|p| (!connected.contains(p), *p));
    found.truncate(max);
    found
}

impl Fetcher {
    async fn providers(&self, root: Cid) -> Result<Vec<PeerId>> {
        let started = Instant::now();
        let connected: HashSet<PeerId> = self
            .net
            .peers()
            .await?
            .iter()
            .filter_map(|p| p.peer_id.parse().ok())
            .collect();
        let peers = connected.len();
        // With no peer at all there is nobody to ask: fail now, not after
        // the DHT timeout.
        let found = if peers == 0 {
            HashSet::new()
        } else {
            self.net.find_providers(root, self.opts.provider_timeout).await?
        };
        if found.is_empty() {
            return Err(Error::NoProviders {
                cid: root,
                secs: started.elapsed().as_secs_f64(),
                peers,
            });
        }
        Ok(pick_providers(found, &connected, self.opts.max_peers))
    }

    /// Makes `root`'s dataset complete in the local store (not pinned: the
    /// caller pins under the same `session`).
    pub async fn fetch_dataset(
        &self,
        root: Cid,
        session: &Session,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<FetchReport> {
        let mut report = FetchReport {
            root: root.to_string(),
            ..Default::default()
        };
        let store = self.store.clone();
        let first = blocking(move || Ok(store.missing_blocks(&root)?)).await?;
        if first.is_empty() {
            report.already_local = true;
            return Ok(report);
        }
        // Ask the connected peers at once while the DHT lookup runs: at a
        // distance the lookup costs round trips the first requests need not
        // wait for. A connected peer that turns out not to hold the dataset
        // is dropped at its first all-"don't have" answer.
        let connected: Vec<PeerId> = self
            .net
            .peers()
            .await?
            .iter()
            .filter_map(|p| p.peer_id.parse().ok())
            .take(self.opts.max_peers)
            .collect();
        let mut lookup = Some({
            let f = self.clone();
            tokio::spawn(async move { f.providers(root).await })
        });
        let mut fetch = if connected.is_empty() {
            let l = lookup.take().expect("just set");
            let providers = l
                .await
                .map_err(|e| Error::Config(format!("provider lookup task failed: {e}")))??;
            DatasetFetch::new(root, providers, HashSet::new(), &self.opts)
        } else {
            let guessed = connected.iter().copied().collect();
            DatasetFetch::new(root, connected, guessed, &self.opts)
        };
        tracing::info!(%root, providers = fetch.providers.len(), "fetching dataset");
        let mut missing = first;
        // Root, then pages, then data: each round reveals the next level.
        for _round in 0..=shoal_core::manifest::MAX_DEPTH + 2 {
            if missing.is_empty() {
                break;
            }
            if fetch.progress.bytes_total == 0 {
                let store = self.store.clone();
                fetch.progress.bytes_total =
                    blocking(move || Ok(store.manifest(&root).map(|m| m.total_bytes).unwrap_or(0))).await?;
            }
            fetch.round(missing, Instant::now());
            self.download(&mut fetch, session, progress, &mut lookup).await?;
            let store = self.store.clone();
            missing = blocking(move || Ok(store.missing_blocks(&root)?)).await?;
        }
        if let Some(first) = missing.first() {
            return Err(Error::Unfetchable {
                root,
                missing: missing.len(),
                providers: fetch.providers.len(),
                first: *first,
            });
        }
        report.blocks_fetched = fetch.progress.items_done;
        report.bytes_fetched = fetch.progress.bytes_done;
        report.peers_used = fetch.used.iter().map(|p| p.to_string()).collect();
        report.banned = fetch.banned.iter().map(|p| p.to_string()).collect();
        report.links = fetch.links.iter().map(|(p, l)| l.report(p)).collect();
        report.links.sort_by_key(|l| std::cmp::Reverse(l.bytes));
        Ok(report)
    }

    /// One round of `fetch`: its requests sent, its answers handed back,
    /// verified blocks written in batches, until the round is done or no
    /// provider can serve what is left.
    async fn download(
        &self,
        fetch: &mut DatasetFetch,
        session: &Session,
        progress: &(dyn Fn(Progress) + Send + Sync),
        lookup: &mut Option<Lookup>,
    ) -> Result<()> {
        let root = fetch.root();
        let mut inflight = FuturesUnordered::new();
        let mut w = BatchWriter::new(self.store.clone());
        let mut refreshes = 0;
        // The DHT lookup's error, if it found nobody.
        let mut lookup_err: Option<Error> = None;
        let unfetchable = |fetch: &DatasetFetch, missing: usize| Error::Unfetchable {
            root,
            missing,
            providers: fetch.providers.len(),
            first: fetch.queued().1.unwrap_or(root),
        };
        loop {
            // No block for this long (every provider busy, slow or
            // lacking): the fetch ends with what it has, resumable.
            if fetch.last_progress.elapsed() > self.opts.block_deadline {
                w.finish(session).await?;
                return Err(unfetchable(fetch, fetch.missing()));
            }
            let now = Instant::now();
            for Request { peer, cids, bytes } in fetch.assign(now) {
                let net = self.net.clone();
                inflight.push(async move {
                    let sent = Instant::now();
                    let res = net.request(peer, Some(root), cids.clone()).await;
                    (peer, cids, res, sent, bytes)
                });
            }
            if fetch.round_done() {
                break;
            }
            if inflight.is_empty() {
                // Only paused providers left: wait for the first to resume.
                if let Some(t) = fetch.next_resume(now) {
                    tokio::time::sleep_until(t.into()).await;
                    continue;
                }
                // The DHT lookup still running: its providers come next.
                if let Some(l) = lookup.take() {
                    fetch.lookup_ended();
                    let found = l
                        .await
                        .map_err(|e| Error::Config(format!("provider lookup task failed: {e}")))?;
                    match found {
                        Ok(found) => {
                            fetch.add_providers(found);
                        }
                        // Nobody provides it and the guesses had nothing:
                        // that is the error to report.
                        Err(e) if fetch.progress.items_done == 0 => {
                            w.finish(session).await?;
                            return Err(e);
                        }
                        Err(_) => {}
                    }
                    continue;
                }
                // Nobody we know can serve what is left: look for more providers.
                refreshes += 1;
                let fresh: Vec<PeerId> = if refreshes <= 2 {
                    self.providers(root).await.unwrap_or_default()
                } else {
                    Vec::new()
                };
                if !fetch.add_providers(fresh) {
                    // Nothing came from anyone and the DHT knows no
                    // provider: that is the error to report.
                    w.finish(session).await?;
                    if let Some(e) = lookup_err.take().filter(|_| fetch.progress.items_done == 0) {
                        return Err(e);
                    }
                    return Err(unfetchable(fetch, fetch.queued().0));
                }
                continue;
            }
            let next = match lookup.as_mut() {
                Some(l) => tokio::select! {
                    r = inflight.next() => r,
                    found = l => {
                        match found {
                            Ok(Ok(found)) => fetch.confirmed(found),
                            Ok(Err(e)) => {
                                lookup_err = Some(e);
                                fetch.lookup_ended();
                            }
                            Err(_) => fetch.lookup_ended(),
                        }
                        *lookup = None;
                        continue;
                    }
                },
                None => inflight.next().await,
            };
            let Some((peer, asked, res, sent, request_bytes)) = next else {
                continue;
            };
            match res {
                Ok(resp) => {
                    let a = fetch.on_answer(peer, asked, resp, request_bytes, sent.elapsed(), Instant::now());
                    let mut stored = 0;
                    for b in a.blocks {
                        self.net.stats().received(b.len());
                        stored += b.len() as u64;
                        w.push(b);
                    }
                    if let Some(max) = a.over_budget {
                        // The block that passed the budget was received too.
                        self.net.stats().received((a.received - stored) as usize);
                        w.finish(session).await?;
                        return Err(Error::OverBudget { root, max });
                    }
                    if a.lied {
                        self.net.ban(peer).await?;
                    }
                    progress(fetch.progress);
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "block request failed; reassigning its blocks");
                    fetch.on_timeout(peer, asked, request_bytes, Instant::now());
                }
            }
            if w.pending_bytes >= self.opts.write_batch_bytes {
                w.start(session).await?;
            }
        }
        w.finish(session).await
    }
}

/// A DHT provider lookup running while the first requests go to connected
/// peers.
type Lookup = tokio::task::JoinHandle<Result<Vec<PeerId>>>;

/// Verified blocks on their way to the store. A full batch is written on
/// the blocking pool while the next one fills, so its fsync never stalls
/// the request pipeline (a stall costs a round trip of idle link); at most
/// two batches are in memory.
struct BatchWriter {
    store: Arc<Store>,
    pending: Vec<Block>,
    pending_bytes: usize,
    writing: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl BatchWriter {
    fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            pending: Vec::new(),
            pending_bytes: 0,
            writing: None,
        }
    }

    fn push(&mut self, b: Block) {
        self.pending_bytes += b.len();
        self.pending.push(b);
    }

    /// Waits for the batch being written, then starts writing this one.
    async fn start(&mut self, session: &Session) -> Result<()> {
        self.wait().await?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let blocks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        session.protect(blocks.iter().map(|b| *b.cid()));
        let store = self.store.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            Ok(store.put_many(&blocks, None).map(|_| ())?)
        }));
        Ok(())
    }

    async fn wait(&mut self) -> Result<()> {
        match self.writing.take() {
            Some(h) => h
                .await
                .map_err(|e| Error::Config(format!("store write task failed: {e}")))?,
            None => Ok(()),
        }
    }

    /// Writes everything still pending and waits for it.
    async fn finish(&mut self, session: &Session) -> Result<()> {
        self.start(session).await?;
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (found by bench/scrub.sh): with more provider records
    /// than a fetch asks, the cut was random and often left out the one
    /// live (connected) provider.
    #[test]
    fn connected_providers_survive_the_cut() {
        let live: Vec<PeerId> = (0..2).map(|_| PeerId::random()).collect();
        let connected: HashSet<PeerId> = live.iter().copied().collect();
        for _ in 0..50 {
            let mut found: HashSet<PeerId> = (0..30).map(|_| PeerId::random()).collect();
            found.extend(&live);
            let picked = pick_providers(found, &connected, 8);
            assert_eq!(picked.len(), 8);
            assert!(live.iter().all(|p| picked.contains(p)), "{picked:?}");
        }
        let few: HashSet<PeerId> = live.iter().copied().collect();
        assert_eq!(pick_providers(few, &HashSet::new(), 8).len(), 2);
    }
}
