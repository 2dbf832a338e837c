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
//! [`BlockSource`] serves single blocks to readers (mount, query, `cat`):
//! local store first, then providers of the dataset, with concurrent
//! requests for one CID collapsed into one fetch and a deadline on each.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::PeerId;
use shoal_core::Progress;
use shoal_core::{Block, Cid};
use shoal_store::{Session, Store};
use tokio::sync::oneshot;

use crate::codec::{Answer, BlockResponse};
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

/// A block asked for and not yet received: the providers asked (two at
/// most, in the endgame) and when it was first asked.
struct Pending {
    asked: Vec<PeerId>,
    since: Instant,
}

#[derive(Default)]
struct PeerState {
    inflight: usize,
    strikes: u32,
    /// The link as measured (see [`Link`]).
    link: Link,
    /// Consecutive answers that skipped everything (the peer is at its
    /// inbound limit), and until when it gets no new work.
    busy_streak: u32,
    busy_until: Option<Instant>,
}

/// First pause after a provider answers "skipped" for a whole request; it
/// doubles with each such answer in a row, up to [`BUSY_PAUSE_MAX`].
const BUSY_PAUSE: Duration = Duration::from_millis(50);
const BUSY_PAUSE_MAX: Duration = Duration::from_secs(2);
/// "Skipped" answers in a row after which a provider counts one strike.
const BUSY_STRIKE_AFTER: u32 = 8;

impl PeerState {
    fn paused(&self, now: Instant) -> bool {
        self.busy_until.is_some_and(|t| t > now)
    }
}

/// Requests in flight per provider at most: 8 of at most 15 blocks is 120
/// blocks, within the serving side's per-peer bound
/// (`network::MAX_INBOUND_PER_PEER` blocks) beyond which requests are
/// answered "skipped".
const MAX_PEER_INFLIGHT: usize = 8;
/// Blocks per request at most: one response stays under the protocol's
/// 16 MiB response bound with 1 MiB blocks.
const MAX_BATCH: usize = 15;
/// Bytes requested and not yet received, over all providers of a fetch:
/// what a fetch may have buffered in the muxer at once.
pub const MAX_INFLIGHT_BYTES: u64 = 256 << 20;
/// The window over which a provider's delivery rate is measured: about one
/// of its round trips, within these bounds.
const RATE_WINDOW: Duration = Duration::from_millis(200);
const RATE_WINDOW_MIN: Duration = Duration::from_millis(50);

/// What the fetcher has measured of one provider's link, BBR-style: the
/// fastest round trip of a request (its floor, `min_rtt`) and the best
/// delivery rate over a short window (`max_rate`). Their product is the
/// bandwidth-delay product: the bytes that must be in flight to keep the
/// link busy. The request window follows it.
#[derive(Default, Clone, Copy)]
struct Link {
    min_rtt: Option<Duration>,
    max_rate: f64,
    window_start: Option<Instant>,
    window_bytes: u64,
    /// Bytes asked of this provider and not yet received; its peak.
    inflight_bytes: u64,
    peak_inflight: u64,
    /// Bytes it delivered.
    total: u64,
}

/// One provider's share of a fetch and what was measured of its link.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LinkReport {
    pub peer: String,
    /// Block bytes it delivered.
    pub bytes: u64,
    /// The most bytes requested of it and not yet received at once.
    pub peak_inflight: u64,
    /// Its measured bandwidth-delay product (best rate x fastest round trip).
    pub bdp: Option<u64>,
    pub min_rtt_ms: Option<f64>,
    /// Best delivery rate over a window of about one round trip, bytes/s.
    pub max_rate: f64,
}

impl Link {
    fn delivered(&mut self, bytes: u64, rtt: Duration, now: Instant) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes += bytes;
        // Windows about one round trip long: long enough to average over
        // several responses, short enough that the rate is known after the
        // first round trips of data.
        let span = now.duration_since(start);
        let window = self.min_rtt.unwrap_or(RATE_WINDOW).clamp(RATE_WINDOW_MIN, RATE_WINDOW);
        if span >= window {
            self.max_rate = self.max_rate.max(self.window_bytes as f64 / span.as_secs_f64());
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
    }

    /// Bandwidth x delay, once both are measured.
    fn bdp(&self) -> Option<u64> {
        let rtt = self.min_rtt?;
        (self.max_rate > 0.0).then_some((self.max_rate * rtt.as_secs_f64()) as u64)
    }

    /// Blocks per request: `base` until the link is measured, then more
    /// (up to [`MAX_BATCH`]) on a link whose bandwidth-delay product the
    /// largest window of `base`-block requests would not cover twice. (A
    /// larger first flight measured no faster and hands a small dataset out
    /// before the faster of two providers has shown it is faster.)
    fn batch(&self, base: usize, block: u64) -> usize {
        match self.bdp() {
            None => base,
            Some(b) => ((2 * b).div_ceil(MAX_PEER_INFLIGHT as u64 * block) as usize).clamp(base, MAX_BATCH.max(base)),
        }
    }

    /// Requests to keep in flight: `start` until the link is measured, then
    /// twice the bandwidth-delay product (one to fill the pipe, one to
    /// absorb jitter) in requests of `request_bytes`, between 2 and the
    /// serving side's bound. On loopback that is 2; at 100 ms, 8.
    fn window(&self, request_bytes: u64, start: usize) -> usize {
        match self.bdp() {
            None => start.clamp(1, MAX_PEER_INFLIGHT),
            Some(b) => ((2 * b).div_ceil(request_bytes.max(1)) as usize).clamp(2, MAX_PEER_INFLIGHT),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Config(format!("blocking task failed: {e}")))?
}

impl Fetcher {
    async fn providers(&self, root: Cid) -> Result<Vec<PeerId>> {
        let started = Instant::now();
        let peers = self.net.peers().await?.len();
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
        Ok(found.into_iter().take(self.opts.max_peers).collect())
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
        let mut lookup = Some(Lookup {
            task: {
                let f = self.clone();
                tokio::spawn(async move { f.providers(root).await })
            },
            guessed: connected.iter().copied().collect(),
        });
        let mut providers = if connected.is_empty() {
            let l = lookup.take().expect("just set");
            l.task
                .await
                .map_err(|e| Error::Config(format!("provider lookup task failed: {e}")))??
        } else {
            connected
        };
        tracing::info!(%root, providers = providers.len(), "fetching dataset");
        let mut prog = Progress::default();
        let mut used = HashSet::new();
        let mut banned = HashSet::new();
        let mut links = HashMap::new();
        let mut missing = first;
        // Root, then pages, then data: each round reveals the next level.
        for _round in 0..=shoal_core::manifest::MAX_DEPTH + 2 {
            if missing.is_empty() {
                break;
            }
            if prog.bytes_total == 0 {
                let store = self.store.clone();
                prog.bytes_total =
                    blocking(move || Ok(store.manifest(&root).map(|m| m.total_bytes).unwrap_or(0))).await?;
            }
            self.download(
                root,
                missing,
                &mut providers,
                session,
                &mut prog,
                &mut used,
                &mut banned,
                progress,
                &mut links,
                &mut lookup,
            )
            .await?;
            let store = self.store.clone();
            missing = blocking(move || Ok(store.missing_blocks(&root)?)).await?;
        }
        if let Some(first) = missing.first() {
            return Err(Error::Unfetchable {
                root,
                missing: missing.len(),
                providers: providers.len(),
                first: *first,
            });
        }
        report.blocks_fetched = prog.items_done;
        report.bytes_fetched = prog.bytes_done;
        report.peers_used = used.iter().map(|p: &PeerId| p.to_string()).collect();
        report.banned = banned.iter().map(|p: &PeerId| p.to_string()).collect();
        report.links = links
            .iter()
            .map(|(p, l)| LinkReport {
                peer: p.to_string(),
                bytes: l.total,
                peak_inflight: l.peak_inflight,
                bdp: l.bdp(),
                min_rtt_ms: l.min_rtt.map(|r| r.as_secs_f64() * 1000.0),
                max_rate: l.max_rate,
            })
            .collect();
        report.links.sort_by_key(|l| std::cmp::Reverse(l.bytes));
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        root: Cid,
        cids: Vec<Cid>,
        providers: &mut Vec<PeerId>,
        session: &Session,
        prog: &mut Progress,
        used: &mut HashSet<PeerId>,
        banned: &mut HashSet<PeerId>,
        progress: &(dyn Fn(Progress) + Send + Sync),
        links: &mut HashMap<PeerId, Link>,
        lookup: &mut Option<Lookup>,
    ) -> Result<()> {
        let mut queue: VecDeque<Cid> = cids.into();
        let mut lacking: HashMap<Cid, HashSet<PeerId>> = HashMap::new();
        // Each provider starts from what earlier rounds measured of it.
        let mut peers: HashMap<PeerId, PeerState> = providers
            .iter()
            .map(|p| {
                let link = links.get(p).copied().unwrap_or_default();
                (
                    *p,
                    PeerState {
                        link,
                        ..Default::default()
                    },
                )
            })
            .collect();
        // No block for this long (every provider busy, slow or lacking):
        // the fetch ends with what it has, resumable.
        let mut last_progress = Instant::now();
        // Blocks are at most the block size the store writes (manifest
        // pages are smaller): what a request of n blocks may bring back.
        let block = u64::from(shoal_core::DEFAULT_BLOCK_SIZE);
        let mut inflight = FuturesUnordered::new();
        let mut w = BatchWriter::new(self.store.clone());
        let mut refreshes = 0;
        // The DHT lookup's error, if it found nobody.
        let mut lookup_err: Option<Error> = None;
        // Blocks asked for and not yet received: who was asked, since when.
        let mut pending: HashMap<Cid, Pending> = HashMap::new();
        loop {
            if last_progress.elapsed() > self.opts.block_deadline {
                w.finish(session).await?;
                return Err(Error::Unfetchable {
                    root,
                    missing: queue.len() + pending.len(),
                    providers: providers.len(),
                    first: queue.front().copied().unwrap_or(root),
                });
            }
            // Hand out work to every provider with spare capacity (a busy
            // one waits out its pause; the others get its blocks).
            let now = Instant::now();
            let mut order: Vec<PeerId> = peers.keys().copied().filter(|p| !peers[p].paused(now)).collect();
            order.sort_by_key(|p| peers[p].inflight);
            for peer in order {
                let size = peers[&peer].link.batch(self.opts.batch, block);
                let request_bytes = size as u64 * block;
                let window = peers[&peer].link.window(request_bytes, self.opts.per_peer_inflight);
                // Endgame: nothing left to hand out and this provider has
                // room, so it also asks for what other providers still owe
                // (each block of at most two at once; the first answer
                // wins), newest asks first: those are the ones the other
                // link would deliver last. A slow provider then costs at
                // most its share, not the tail, and the link that finished
                // first does not idle for a round trip before it helps.
                let hedge = queue.is_empty();
                while peers[&peer].inflight < window
                    && (!queue.is_empty() || hedge)
                    && peers.values().map(|p| p.link.inflight_bytes).sum::<u64>() + request_bytes <= MAX_INFLIGHT_BYTES
                {
                    let mut batch = Vec::new();
                    if hedge {
                        let mut owed: Vec<(&Cid, &Pending)> = pending
                            .iter()
                            .filter(|(c, p)| {
                                p.asked.len() == 1
                                    && !p.asked.contains(&peer)
                                    && !lacking.get(*c).is_some_and(|l| l.contains(&peer))
                            })
                            .collect();
                        owed.sort_by_key(|(_, p)| std::cmp::Reverse(p.since));
                        batch.extend(owed.into_iter().take(size).map(|(c, _)| *c));
                    } else {
                        let mut skipped = Vec::new();
                        while batch.len() < size {
                            let Some(c) = queue.pop_front() else { break };
                            if lacking.get(&c).is_some_and(|l| l.contains(&peer)) {
                                skipped.push(c);
                            } else {
                                batch.push(c);
                            }
                        }
                        for c in skipped.into_iter().rev() {
                            queue.push_front(c);
                        }
                    }
                    if batch.is_empty() {
                        break;
                    }
                    let st = peers.get_mut(&peer).expect("peer");
                    st.inflight += 1;
                    st.link.inflight_bytes += request_bytes;
                    st.link.peak_inflight = st.link.peak_inflight.max(st.link.inflight_bytes);
                    for c in &batch {
                        let p = pending.entry(*c).or_insert_with(|| Pending {
                            asked: Vec::new(),
                            since: Instant::now(),
                        });
                        p.asked.push(peer);
                    }
                    let net = self.net.clone();
                    let sent = Instant::now();
                    inflight.push(async move {
                        let res = net.request(peer, Some(root), batch.clone()).await;
                        (peer, batch, res, sent, request_bytes)
                    });
                }
            }
            if queue.is_empty() && pending.is_empty() {
                // Everything arrived; hedged requests still running are
                // dropped (their answers would be duplicates). Providers
                // that never answered are reported too.
                for (p, st) in &peers {
                    links.insert(*p, st.link);
                }
                break;
            }
            if inflight.is_empty() {
                // Only paused providers left: wait for the first to resume.
                if let Some(t) = peers.values().filter_map(|p| p.busy_until).filter(|t| *t > now).min() {
                    tokio::time::sleep_until(t.into()).await;
                    continue;
                }
                // The DHT lookup still running: its providers come next.
                if let Some(l) = lookup.take() {
                    let found = l
                        .task
                        .await
                        .map_err(|e| Error::Config(format!("provider lookup task failed: {e}")))?;
                    match found {
                        Ok(found) => add_providers(found, &mut peers, providers, banned),
                        // Nobody provides it and the guesses had nothing:
                        // that is the error to report.
                        Err(e) if prog.items_done == 0 => {
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
                    self.providers(root)
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|p| !banned.contains(p))
                        .collect()
                } else {
                    Vec::new()
                };
                let before = peers.len();
                add_providers(fresh, &mut peers, providers, banned);
                if peers.len() == before {
                    // Nothing came from anyone and the DHT knows no
                    // provider: that is the error to report.
                    if let Some(e) = lookup_err.take().filter(|_| prog.items_done == 0) {
                        w.finish(session).await?;
                        return Err(e);
                    }
                    w.finish(session).await?;
                    return Err(Error::Unfetchable {
                        root,
                        missing: queue.len(),
                        providers: providers.len(),
                        first: queue[0],
                    });
                }
                continue;
            }
            let next = match lookup.as_mut() {
                Some(l) => tokio::select! {
                    r = inflight.next() => r,
                    found = &mut l.task => {
                        let found = match found {
                            Ok(Ok(found)) => Some(found),
                            Ok(Err(e)) => {
                                lookup_err = Some(e);
                                None
                            }
                            Err(_) => None,
                        };
                        if let Some(found) = found {
                            // Guesses the DHT does not confirm and that have
                            // delivered nothing are asked no more.
                            let unconfirmed: Vec<PeerId> = l
                                .guessed
                                .iter()
                                .filter(|p| !found.contains(p) && !used.contains(p))
                                .copied()
                                .collect();
                            for p in unconfirmed {
                                peers.remove(&p);
                                providers.retain(|x| *x != p);
                            }
                            add_providers(found, &mut peers, providers, banned);
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
            // A block another request already delivered needs nothing more;
            // one still asked of another provider waits for that answer;
            // only a block nobody is asked for any more goes back in line.
            let settle = |c: Cid, pending: &mut HashMap<Cid, Pending>| -> bool {
                match pending.get_mut(&c) {
                    None => false,
                    Some(p) => {
                        p.asked.retain(|x| *x != peer);
                        if p.asked.is_empty() {
                            pending.remove(&c);
                            true
                        } else {
                            false
                        }
                    }
                }
            };
            if let Some(st) = peers.get_mut(&peer) {
                st.inflight -= 1;
                st.link.inflight_bytes = st.link.inflight_bytes.saturating_sub(request_bytes);
                if let Ok(r) = &res {
                    let got: u64 = r
                        .answers
                        .iter()
                        .map(|a| match &a.1 {
                            Answer::Data(d) => d.len() as u64,
                            _ => 0,
                        })
                        .sum();
                    if got > 0 {
                        st.link.delivered(got, sent.elapsed(), Instant::now());
                        st.link.total += got;
                    }
                }
                links.insert(peer, st.link);
            }
            match res {
                Ok(BlockResponse { answers }) => {
                    let asked_set: HashSet<Cid> = asked.iter().copied().collect();
                    let mut answered = HashSet::new();
                    let mut lied = false;
                    let mut skipped = 0;
                    for (cid, ans) in answers {
                        // Unsolicited or repeated answers are ignored, and
                        // so are answers for blocks another request
                        // delivered first.
                        if !asked_set.contains(&cid) || !answered.insert(cid) {
                            continue;
                        }
                        if !pending.contains_key(&cid) {
                            continue;
                        }
                        match ans {
                            Answer::Data(bytes) => match Block::verified(cid, bytes) {
                                Ok(b) => {
                                    pending.remove(&cid);
                                    self.net.stats().received(b.len());
                                    last_progress = Instant::now();
                                    prog.bytes_done += b.len() as u64;
                                    if let Some(max) = self.opts.max_bytes.filter(|m| prog.bytes_done > *m) {
                                        w.finish(session).await?;
                                        return Err(Error::OverBudget { root, max });
                                    }
                                    prog.items_done += 1;
                                    w.push(b);
                                    if used.insert(peer) {
                                        prog.peers = used.len() as u64;
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(%peer, %cid, error = %e, "peer sent a block that fails verification");
                                    lied = true;
                                    if settle(cid, &mut pending) {
                                        queue.push_back(cid);
                                    }
                                }
                            },
                            Answer::DontHave => {
                                lacking.entry(cid).or_default().insert(peer);
                                if settle(cid, &mut pending) {
                                    queue.push_back(cid);
                                }
                            }
                            Answer::Skipped => {
                                skipped += 1;
                                if settle(cid, &mut pending) {
                                    queue.push_front(cid);
                                }
                            }
                        }
                    }
                    if let Some(st) = peers.get_mut(&peer) {
                        if skipped == asked.len() {
                            // At its inbound limit: pause it, longer each
                            // time in a row; a strike every few such answers.
                            st.busy_streak += 1;
                            let pause = BUSY_PAUSE
                                .saturating_mul(1 << st.busy_streak.min(8))
                                .min(BUSY_PAUSE_MAX);
                            st.busy_until = Some(Instant::now() + pause);
                            if st.busy_streak % BUSY_STRIKE_AFTER == 0 {
                                st.strikes += 1;
                            }
                        } else {
                            st.busy_streak = 0;
                            st.busy_until = None;
                        }
                        if st.strikes >= self.opts.max_strikes {
                            tracing::warn!(%peer, "dropping provider: busy for too long");
                            peers.remove(&peer);
                            providers.retain(|p| *p != peer);
                        }
                    }
                    // A guessed provider (connected, not yet confirmed by the
                    // DHT) that has none of what it was asked holds nothing.
                    let had_none = asked.iter().all(|c| lacking.get(c).is_some_and(|l| l.contains(&peer)));
                    if had_none && lookup.as_ref().is_some_and(|l| l.guessed.contains(&peer)) {
                        peers.remove(&peer);
                        providers.retain(|p| *p != peer);
                    }
                    for c in asked.into_iter().filter(|c| !answered.contains(c)) {
                        if settle(c, &mut pending) {
                            queue.push_back(c);
                        }
                    }
                    if lied {
                        banned.insert(peer);
                        peers.remove(&peer);
                        providers.retain(|p| *p != peer);
                        self.net.ban(peer).await?;
                    }
                    progress(*prog);
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "block request failed; reassigning its blocks");
                    for c in asked {
                        if settle(c, &mut pending) {
                            queue.push_back(c);
                        }
                    }
                    if let Some(st) = peers.get_mut(&peer) {
                        st.strikes += 1;
                        if st.strikes >= self.opts.max_strikes {
                            tracing::warn!(%peer, "dropping provider after repeated failures");
                            peers.remove(&peer);
                            providers.retain(|p| *p != peer);
                        }
                    }
                }
            }
            // Lacking-by-everyone blocks: stop asking once every known
            // provider has said it does not have them.
            if w.pending_bytes >= self.opts.write_batch_bytes {
                w.start(session).await?;
            }
        }
        w.finish(session).await
    }
}

/// A DHT provider lookup running while the first requests go to connected
/// peers, and which of those were only guesses.
struct Lookup {
    task: tokio::task::JoinHandle<Result<Vec<PeerId>>>,
    guessed: HashSet<PeerId>,
}

/// Adds providers not banned and not known yet.
fn add_providers(
    found: Vec<PeerId>,
    peers: &mut HashMap<PeerId, PeerState>,
    providers: &mut Vec<PeerId>,
    banned: &HashSet<PeerId>,
) {
    for p in found.into_iter().filter(|p| !banned.contains(p)) {
        peers.entry(p).or_default();
        if !providers.contains(&p) {
            providers.push(p);
        }
    }
}

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

type Waiters = Vec<oneshot::Sender<std::result::Result<Block, String>>>;

/// Blocks for readers: local store, then peers holding the dataset.
pub struct BlockSource {
    fetcher: Fetcher,
    inflight: Mutex<HashMap<Cid, Waiters>>,
    providers: Mutex<HashMap<Cid, (Vec<PeerId>, Instant)>>,
    stats: SourceStats,
    behind: Arc<WriteBehind>,
}

/// Verified blocks fetched for readers (mount, gateway, key reads), stored
/// behind their backs: the reader has its block as soon as it is verified,
/// and one writer stores what has queued meanwhile as one batch (one fsync,
/// one index commit). Stored one at a time, a cold read of 1 GiB through
/// the mount cost 2,050 fsyncs and 7,150 index writes (two per 1 MiB
/// block). These blocks are evictable cache: a batch that fails to store
/// (a full disk) is logged and dropped, and the readers already have
/// their bytes. Bounded by [`WRITE_BEHIND_BYTES`]: past it, readers wait
/// for the writer.
#[derive(Default)]
struct WriteBehind {
    state: Mutex<Behind>,
    room: tokio::sync::Notify,
}

#[derive(Default)]
struct Behind {
    pending: HashMap<Cid, Block>,
    bytes: usize,
    writing: bool,
}

/// Bytes of fetched blocks waiting to be stored, at most.
const WRITE_BEHIND_BYTES: usize = 64 << 20;

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

/// The write-behind's writer: stores what is pending in batches until
/// nothing is, then marks itself gone (under the lock, so a reader that
/// queues a block afterwards starts a new writer).
async fn write_behind(behind: Arc<WriteBehind>, store: Arc<Store>) {
    loop {
        let batch: Vec<Block> = {
            let mut st = behind.state.lock().expect("write-behind lock");
            if st.pending.is_empty() {
                st.writing = false;
                drop(st);
                behind.room.notify_waiters();
                return;
            }
            st.pending.values().cloned().collect()
        };
        let s = store.clone();
        let stored = blocking(move || {
            // Kept as unpinned cache data: evictable. A corrupt local copy
            // is replaced only now that a verified one is in hand; without
            // one, fsck still sees it.
            for b in &batch {
                s.drop_if_corrupt(b.cid())?;
            }
            Ok(s.put_cache(&batch).map(|_| batch)?)
        })
        .await;
        let batch = match stored {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "fetched blocks could not be stored; readers have them, the store does not");
                // Drop what was pending at the failure; new blocks get a fresh try.
                let mut st = behind.state.lock().expect("write-behind lock");
                st.pending.clear();
                st.bytes = 0;
                drop(st);
                behind.room.notify_waiters();
                continue;
            }
        };
        {
            let mut st = behind.state.lock().expect("write-behind lock");
            for b in &batch {
                if st.pending.remove(b.cid()).is_some() {
                    st.bytes -= b.len();
                }
            }
        }
        behind.room.notify_waiters();
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
        }
    }

    /// Waits (at most `limit`) until every fetched block handed to the
    /// write-behind is stored, or dropped if storing it failed.
    pub async fn settle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let room = self.behind.room.notified();
                if !self.behind.state.lock().expect("write-behind lock").writing {
                    return;
                }
                room.await;
            }
        })
        .await;
    }

    /// A block fetched and verified but maybe not stored yet.
    fn pending(&self, cid: &Cid) -> Option<Block> {
        self.behind
            .state
            .lock()
            .expect("write-behind lock")
            .pending
            .get(cid)
            .cloned()
    }

    /// Queues a verified block for the write-behind (waiting while the
    /// queue is full) and starts the writer if none runs.
    async fn store_behind(&self, b: Block) {
        loop {
            let room = self.behind.room.notified();
            {
                let mut st = self.behind.state.lock().expect("write-behind lock");
                if st.bytes == 0 || st.bytes + b.len() <= WRITE_BEHIND_BYTES {
                    st.bytes += b.len();
                    if let Some(old) = st.pending.insert(*b.cid(), b) {
                        st.bytes -= old.len();
                    }
                    if !st.writing {
                        st.writing = true;
                        tokio::spawn(write_behind(self.behind.clone(), self.fetcher.store.clone()));
                    }
                    return;
                }
            }
            room.await;
        }
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
        let store = self.fetcher.store.clone();
        let local = match blocking(move || Ok(store.get(&cid))).await? {
            Ok(Some(b)) => {
                self.stats.local.fetch_add(1, Ordering::Relaxed);
                return Ok(b);
            }
            Ok(None) => "not in the local store".to_string(),
            Err(e) => {
                tracing::warn!(%cid, error = %e, "local copy unusable; fetching from peers");
                format!("the local copy is unusable ({e})")
            }
        };
        if let Some(b) = self.pending(&cid) {
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
                                    self.store_behind(b.clone()).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A link that delivers `rate` bytes/s in responses of `chunk` bytes,
    /// each taking `rtt`, for `span`.
    fn measured(rate: f64, rtt: Duration, chunk: u64, span: Duration) -> Link {
        let mut l = Link::default();
        let t0 = Instant::now();
        let step = Duration::from_secs_f64(chunk as f64 / rate);
        let mut t = Duration::ZERO;
        while t <= span {
            l.delivered(chunk, rtt, t0 + t);
            t += step;
        }
        l
    }

    #[test]
    fn an_unmeasured_link_uses_the_starting_window_and_batch() {
        let l = Link::default();
        assert_eq!(l.bdp(), None);
        assert_eq!(l.window(8 * MIB, 8), 8);
        assert_eq!(l.window(8 * MIB, 0), 1, "at least one request");
        assert_eq!(l.window(8 * MIB, 100), MAX_PEER_INFLIGHT, "at most the server's bound");
        assert_eq!(l.batch(8, MIB), 8);
    }

    #[test]
    fn the_rate_is_the_best_window_and_the_rtt_the_fastest_round_trip() {
        let l = measured(
            100.0 * MIB as f64,
            Duration::from_millis(1),
            MIB,
            Duration::from_secs(1),
        );
        assert_eq!(l.min_rtt, Some(Duration::from_millis(1)));
        let rate = l.max_rate / MIB as f64;
        // The response that opens a window counts in it although its bytes
        // travelled before: with 5 responses per 50 ms window the estimate
        // is 6/5 of the rate (found by this test; the window's twice-BDP
        // margin absorbs it, and changing it is a change of fetch
        // behaviour to measure first).
        assert!((95.0..=125.0).contains(&rate), "{rate} MiB/s measured of 100");
        // A slower round trip later does not raise the floor.
        let mut l2 = l;
        l2.delivered(MIB, Duration::from_millis(50), Instant::now());
        assert_eq!(l2.min_rtt, Some(Duration::from_millis(1)));
    }

    #[test]
    fn the_window_follows_twice_the_bandwidth_delay_product() {
        // Loopback: 1 GiB/s x 1 ms = ~1 MiB in flight: the floor of 2.
        let lo = measured(
            1024.0 * MIB as f64,
            Duration::from_millis(1),
            MIB,
            Duration::from_millis(500),
        );
        assert_eq!(lo.window(8 * MIB, 8), 2);
        assert_eq!(lo.batch(8, MIB), 8, "small BDP: the base batch");
        // 100 ms at 100 MiB/s = 10 MiB: 2 x 10 MiB in 8 MiB requests -> 3.
        let far = measured(
            100.0 * MIB as f64,
            Duration::from_millis(100),
            MIB,
            Duration::from_secs(2),
        );
        let bdp = far.bdp().unwrap() as f64 / MIB as f64;
        assert!((8.0..=12.0).contains(&bdp), "{bdp} MiB");
        assert_eq!(far.window(8 * MIB, 8), 3);
        // 200 ms at 400 MiB/s = 80 MiB: past the server's bound of 8, and
        // the batch grows (2 x 80 MiB over 8 requests of 1 MiB blocks = 20,
        // clamped to 15).
        let wide = measured(
            400.0 * MIB as f64,
            Duration::from_millis(200),
            MIB,
            Duration::from_secs(2),
        );
        assert_eq!(wide.window(8 * MIB, 8), MAX_PEER_INFLIGHT);
        assert_eq!(wide.batch(8, MIB), MAX_BATCH);
    }
}
