//! Request accounting: what this daemon counts, what its peers report, and
//! the capped score the mirror policy ranks datasets by.
//!
//! - Local counts (blocks served, mount opens, queries run) per dataset go
//!   into time buckets; the window is the sum of the buckets younger than
//!   `window`. Each bucket holds at most [`MAX_LOCAL_ROOTS`] datasets, so a
//!   peer naming random roots in its block requests cannot grow it.
//! - Each peer's latest [`Report`] replaces its previous one. At most
//!   [`MAX_PEERS`] peers are remembered (the stalest is dropped for a new
//!   one), a report arriving sooner than half the author's own interval
//!   after its last is rejected, and a report expires after three of the
//!   author's intervals. Memory is therefore bounded whatever peers send.
//! - A dataset's score is the sum over sources (this daemon and each fresh
//!   peer) of `min(that source's requests, peer_cap)`: one source, however
//!   loud, moves a score by at most `peer_cap`.
//! - Replica targets heard in reports are claims of their reporter (the
//!   gossip author, whose signature gossipsub checks): each peer's claims are
//!   the targets of its latest fresh report (at most `gossip::MAX_TARGETS`),
//!   so only a claim's author can lower or cancel it, and claims are bounded
//!   by [`MAX_PEERS`] times that. The mirror policy merges them (decision
//!   0015).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_core::Cid;
use shoal_net::gossip::{self, Report};
use shoal_net::PeerId;

use crate::records::unix_now;

/// Peers whose latest report is kept.
pub const MAX_PEERS: usize = 512;
/// Distinct datasets counted per local time bucket.
pub const MAX_LOCAL_ROOTS: usize = 4096;
/// Buckets per window.
const BUCKETS: u32 = 10;
/// A target set more than this far in the future is refused (a peer cannot
/// make its target win every later change by dating it ahead).
const MAX_CLOCK_SKEW_SECS: u64 = 24 * 3600;

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Block,
    Mount,
    Query,
}

/// Requests in the window: blocks served, mount opens, queries run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub blocks: u64,
    pub mounts: u64,
    pub queries: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.blocks + self.mounts + self.queries
    }
    fn add(&mut self, o: Counts) {
        self.blocks += o.blocks;
        self.mounts += o.mounts;
        self.queries += o.queries;
    }
}

/// A dataset's popularity as the policy sees it.
#[derive(Debug, Clone)]
pub struct Score {
    pub root: Cid,
    /// Sum over sources of their requests, each capped at `peer_cap`.
    pub score: u64,
    /// Sources (this daemon, peers) reporting requests for it.
    pub sources: usize,
    /// Uncapped sums over all sources.
    pub counts: Counts,
    /// This daemon's own counts.
    pub local: Counts,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct GossipStats {
    pub peers: usize,
    pub accepted: u64,
    pub rejected: u64,
    pub targets_known: usize,
}

/// A replica target as one peer claims it in its latest report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub root: Cid,
    /// The peer whose report carries it.
    pub author: PeerId,
    pub copies: u8,
    pub set_at: u64,
}

struct PeerEntry {
    at: Instant,
    report: Report,
}

impl PeerEntry {
    fn fresh(&self, now: Instant) -> bool {
        now.duration_since(self.at) <= Duration::from_secs(3 * u64::from(self.report.every))
    }
}

struct Inner {
    /// Datasets at or above the threshold when `newly_popular` last looked
    /// (only it updates this: other readers of the scores must not hide a
    /// crossing from it).
    popular: std::collections::HashSet<Cid>,
    /// Counts changed since `newly_popular` last looked.
    dirty: bool,
    buckets: VecDeque<(Instant, HashMap<Cid, Counts>)>,
    peers: HashMap<PeerId, PeerEntry>,
    stats: GossipStats,
}

pub struct Popularity {
    window: Duration,
    peer_cap: u64,
    threshold: u64,
    inner: Mutex<Inner>,
    /// Fires when a new replica target is heard (and, through the mirror
    /// task's poll of [`Self::newly_popular`], when a dataset becomes popular).
    pub changed: tokio::sync::Notify,
}

impl Popularity {
    pub fn new(window: Duration, peer_cap: u64, threshold: u64) -> Self {
        Self {
            window,
            peer_cap,
            threshold,
            changed: tokio::sync::Notify::new(),
            inner: Mutex::new(Inner {
                popular: Default::default(),
                dirty: false,
                buckets: VecDeque::new(),
                peers: HashMap::new(),
                stats: GossipStats::default(),
            }),
        }
    }

    pub fn peer_cap(&self) -> u64 {
        self.peer_cap
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("popularity lock")
    }

    pub fn record(&self, root: Cid, kind: Kind, n: u64) {
        self.record_at(root, kind, n, Instant::now())
    }

    pub fn record_at(&self, root: Cid, kind: Kind, n: u64, now: Instant) {
        let bucket_len = self.window / BUCKETS;
        let mut g = self.lock();
        let window = self.window;
        while g.buckets.front().is_some_and(|b| now.duration_since(b.0) > window) {
            g.buckets.pop_front();
        }
        if g.buckets.back().is_none_or(|b| now.duration_since(b.0) >= bucket_len) {
            g.buckets.push_back((now, HashMap::new()));
        }
        g.dirty = true;
        let bucket = &mut g.buckets.back_mut().expect("a bucket").1;
        if bucket.len() >= MAX_LOCAL_ROOTS && !bucket.contains_key(&root) {
            return;
        }
        let c = bucket.entry(root).or_default();
        match kind {
            Kind::Block => c.blocks += n,
            Kind::Mount => c.mounts += n,
            Kind::Query => c.queries += n,
        }
    }

    fn local_at(g: &Inner, window: Duration, now: Instant) -> HashMap<Cid, Counts> {
        let mut out: HashMap<Cid, Counts> = HashMap::new();
        for (start, b) in &g.buckets {
            if now.duration_since(*start) <= window {
                for (r, c) in b {
                    out.entry(*r).or_default().add(*c);
                }
            }
        }
        out
    }

    /// Takes a report from `author`; false = rejected (not forwarded).
    pub fn receive(&self, author: &PeerId, bytes: &[u8]) -> bool {
        self.receive_at(author, bytes, Instant::now(), unix_now())
    }

    pub fn receive_at(&self, author: &PeerId, bytes: &[u8], now: Instant, unix: u64) -> bool {
        let mut g = self.lock();
        let report = match gossip::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                g.stats.rejected += 1;
                tracing::debug!(%author, error = %e, "dropping malformed popularity report");
                return false;
            }
        };
        if let Some(prev) = g.peers.get(author) {
            let gap = Duration::from_millis(500 * u64::from(report.every.min(prev.report.every)));
            if now.duration_since(prev.at) < gap {
                g.stats.rejected += 1;
                tracing::debug!(%author, "dropping popularity report: sent too soon after the last");
                return false;
            }
        }
        if report.targets.iter().any(|t| t.2 > unix + MAX_CLOCK_SKEW_SECS) {
            g.stats.rejected += 1;
            tracing::debug!(%author, "dropping popularity report: replica target dated in the future");
            return false;
        }
        if !g.peers.contains_key(author) && g.peers.len() >= MAX_PEERS {
            // Full: a newcomer takes the place of an expired report only,
            // so a swarm of fresh identities cannot push out the reports of
            // peers that keep reporting.
            let stale = g.peers.iter().find(|p| !p.1.fresh(now)).map(|p| *p.0);
            match stale {
                Some(p) => {
                    g.peers.remove(&p);
                }
                None => {
                    g.stats.rejected += 1;
                    tracing::debug!(%author, "dropping popularity report: {MAX_PEERS} peers already reporting");
                    return false;
                }
            }
        }
        // News for the policy: a claim this author did not make before.
        let before = g.peers.get(author).filter(|p| p.fresh(now));
        let news = report
            .targets
            .iter()
            .any(|t| before.is_none_or(|p| !p.report.targets.contains(t)));
        g.peers.insert(*author, PeerEntry { at: now, report });
        g.stats.accepted += 1;
        // Scores are not recomputed here (this runs on the network task
        // for every report): `newly_popular` does it at most once a poll.
        g.dirty = true;
        drop(g);
        if news {
            self.changed.notify_one();
        }
        true
    }

    /// Whether a dataset reached the threshold since the last call. Scores
    /// are computed only if counts changed meanwhile, so polling this once a
    /// second bounds the work whatever the report rate.
    pub fn newly_popular(&self) -> bool {
        let before = {
            let mut g = self.lock();
            if !std::mem::take(&mut g.dirty) {
                return false;
            }
            g.popular.clone()
        };
        let threshold = self.threshold;
        let now: std::collections::HashSet<Cid> = self
            .scores_at(Instant::now())
            .into_iter()
            .filter(|s| s.score >= threshold)
            .map(|s| s.root)
            .collect();
        let news = now.iter().any(|r| !before.contains(r));
        self.lock().popular = now;
        news
    }

    /// Every dataset with requests in the window, highest score first.
    pub fn scores(&self) -> Vec<Score> {
        self.scores_at(Instant::now())
    }

    pub fn scores_at(&self, now: Instant) -> Vec<Score> {
        let g = self.lock();
        let mut acc: HashMap<Cid, Score> = HashMap::new();
        let cap = self.peer_cap;
        let mut add = |root: Cid, c: Counts, local: bool| {
            if c.total() == 0 {
                return;
            }
            let s = acc.entry(root).or_insert_with(|| Score {
                root,
                score: 0,
                sources: 0,
                counts: Counts::default(),
                local: Counts::default(),
            });
            s.score += c.total().min(cap);
            s.sources += 1;
            s.counts.add(c);
            if local {
                s.local = c;
            }
        };
        for (root, c) in Self::local_at(&g, self.window, now) {
            add(root, c, true);
        }
        for p in g.peers.values().filter(|p| p.fresh(now)) {
            for &(root, blocks, mounts, queries) in &p.report.counts {
                let c = Counts {
                    blocks: blocks.into(),
                    mounts: mounts.into(),
                    queries: queries.into(),
                };
                add(root, c, false);
            }
        }
        drop(g);
        let mut out: Vec<Score> = acc.into_values().collect();
        out.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then(b.sources.cmp(&a.sources))
                .then(a.root.cmp(&b.root))
        });
        out
    }

    /// The replica targets fresh reports claim, one per (root, author).
    pub fn claims(&self) -> Vec<Claim> {
        let now = Instant::now();
        let g = self.lock();
        g.peers
            .iter()
            .filter(|p| p.1.fresh(now))
            .flat_map(|(author, p)| {
                p.report.targets.iter().map(|&(root, copies, set_at)| Claim {
                    root,
                    author: *author,
                    copies,
                    set_at,
                })
            })
            .collect()
    }

    /// Peers with a fresh report: (peer, spare mirror bytes, roots it is fetching).
    pub fn live_peers(&self) -> Vec<(PeerId, u64, Vec<Cid>)> {
        self.live_peers_at(Instant::now())
    }

    pub fn live_peers_at(&self, now: Instant) -> Vec<(PeerId, u64, Vec<Cid>)> {
        let g = self.lock();
        g.peers
            .iter()
            .filter(|p| p.1.fresh(now))
            .map(|(id, p)| (*id, p.report.spare, p.report.fetching.clone()))
            .collect()
    }

    pub fn stats(&self) -> GossipStats {
        let now = Instant::now();
        let g = self.lock();
        GossipStats {
            peers: g.peers.values().filter(|p| p.fresh(now)).count(),
            targets_known: g
                .peers
                .values()
                .filter(|p| p.fresh(now))
                .map(|p| p.report.targets.len())
                .sum(),
            ..g.stats
        }
    }

    /// This daemon's report: its most requested datasets, plus what the
    /// caller adds (targets, spare budget, fetching).
    pub fn report(&self, every: Duration, spare: u64, targets: Vec<gossip::Target>, fetching: Vec<Cid>) -> Report {
        let g = self.lock();
        let mut counts: Vec<(Cid, Counts)> = Self::local_at(&g, self.window, Instant::now()).into_iter().collect();
        counts.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(&b.0)));
        counts.truncate(gossip::MAX_COUNTS);
        let sat = |v: u64| v.min(u64::from(u32::MAX)) as u32;
        Report {
            version: 1,
            every: (every.as_secs() as u32).clamp(1, gossip::MAX_EVERY_SECS),
            window: (self.window.as_secs() as u32).clamp(1, gossip::MAX_WINDOW_SECS),
            spare,
            counts: counts
                .into_iter()
                .map(|(r, c)| (r, sat(c.blocks), sat(c.mounts), sat(c.queries)))
                .collect(),
            targets: targets.into_iter().take(gossip::MAX_TARGETS).collect(),
            fetching: fetching.into_iter().take(gossip::MAX_FETCHING).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(i: u32) -> Cid {
        *shoal_core::Block::dag_cbor(i.to_be_bytes().to_vec()).cid()
    }

    fn report(counts: Vec<(Cid, u32, u32, u32)>, targets: Vec<(Cid, u8, u64)>) -> Vec<u8> {
        Report {
            version: 1,
            every: 1,
            window: 60,
            spare: 1 << 30,
            counts,
            targets,
            fetching: vec![],
        }
        .encode()
    }

    #[test]
    fn window_slides_and_local_roots_are_bounded() {
        let p = Popularity::new(Duration::from_secs(10), 1000, 10);
        let t0 = Instant::now();
        p.record_at(root(1), Kind::Block, 5, t0);
        p.record_at(root(1), Kind::Query, 1, t0 + Duration::from_secs(5));
        let s = p.scores_at(t0 + Duration::from_secs(6));
        assert_eq!(s[0].counts.total(), 6);
        // The first bucket has left the window.
        let s = p.scores_at(t0 + Duration::from_secs(12));
        assert_eq!(
            s[0].counts,
            Counts {
                blocks: 0,
                mounts: 0,
                queries: 1
            }
        );
        for i in 0..(MAX_LOCAL_ROOTS as u32 + 100) {
            p.record_at(root(i + 10), Kind::Mount, 1, t0 + Duration::from_secs(13));
        }
        let g = p.lock();
        assert!(g.buckets.iter().all(|b| b.1.len() <= MAX_LOCAL_ROOTS));
    }

    #[test]
    fn one_source_moves_a_score_by_at_most_the_cap() {
        let p = Popularity::new(Duration::from_secs(60), 10, 15);
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        assert!(p.receive_at(
            &a,
            &report(vec![(root(1), u32::MAX, u32::MAX, u32::MAX)], vec![]),
            now,
            0
        ));
        assert_eq!(p.scores_at(now)[0].score, 10);
        assert!(p.receive_at(&b, &report(vec![(root(1), 3, 0, 0)], vec![]), now, 0));
        p.record_at(root(1), Kind::Query, 2, now);
        let s = &p.scores_at(now)[0];
        assert_eq!((s.score, s.sources), (15, 3));
    }

    #[test]
    fn garbage_floods_and_fake_peers_stay_bounded() {
        let p = Popularity::new(Duration::from_secs(60), 10, 15);
        let now = Instant::now();
        let a = PeerId::random();
        assert!(!p.receive_at(&a, b"\xff\x00garbage", now, 0));
        assert!(p.receive_at(&a, &report(vec![(root(1), 1, 0, 0)], vec![]), now, 0));
        // Too soon after the last one.
        assert!(!p.receive_at(&a, &report(vec![(root(2), 1, 0, 0)], vec![]), now, 0));
        // Later it replaces the previous report rather than adding to it.
        let later = now + Duration::from_secs(1);
        assert!(p.receive_at(&a, &report(vec![(root(2), 1, 0, 0)], vec![]), later, 0));
        assert_eq!(p.scores_at(later).len(), 1);
        for i in 0..(MAX_PEERS + 50) {
            let targets = vec![(root(i as u32), 3, 100)];
            p.receive_at(
                &PeerId::random(),
                &report(vec![(root(i as u32), 1, 0, 0)], targets),
                later,
                0,
            );
        }
        let g = p.lock();
        assert_eq!(g.peers.len(), MAX_PEERS);
        // The 51 beyond the table were refused, and the first peer (fresh)
        // kept its place.
        assert_eq!(g.stats.rejected, 2 + 51);
        assert!(g.peers.contains_key(&a));
        drop(g);
        // Once reports expire, newcomers take their places.
        let much_later = later + Duration::from_secs(10);
        assert!(p.receive_at(&PeerId::random(), &report(vec![], vec![]), much_later, 0));
    }

    #[test]
    fn claims_are_per_author_replaced_by_its_next_report_and_refuse_the_future() {
        let p = Popularity::new(Duration::from_secs(60), 10, 15);
        let now = Instant::now();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        p.receive_at(&a, &report(vec![], vec![(root(1), 3, 100)]), now, 1000);
        // b's cancellation is b's claim: it does not touch a's.
        p.receive_at(&b, &report(vec![], vec![(root(1), 0, 200)]), now, 1000);
        let mut claims = p.claims();
        claims.sort_by_key(|c| c.copies);
        let got: Vec<(PeerId, u8)> = claims.iter().map(|c| (c.author, c.copies)).collect();
        assert_eq!(got, vec![(b, 0), (a, 3)]);
        // a's next report replaces a's claims.
        p.receive_at(
            &a,
            &report(vec![], vec![(root(1), 5, 150)]),
            now + Duration::from_secs(1),
            1000,
        );
        let of_a: Vec<u8> = p.claims().iter().filter(|c| c.author == a).map(|c| c.copies).collect();
        assert_eq!(of_a, vec![5]);
        assert!(!p.receive_at(
            &c,
            &report(vec![], vec![(root(1), 9, 1000 + 2 * MAX_CLOCK_SKEW_SECS)]),
            now,
            1000
        ));
        assert_eq!(p.claims().len(), 2);
    }

    #[test]
    fn newly_popular_fires_once_per_dataset_crossing_the_threshold() {
        let p = Popularity::new(Duration::from_secs(60), 10, 15);
        assert!(!p.newly_popular());
        p.receive(&PeerId::random(), &report(vec![(root(1), 9, 0, 0)], vec![]));
        assert!(!p.newly_popular(), "9 < 15");
        p.receive(&PeerId::random(), &report(vec![(root(1), 50, 0, 0)], vec![]));
        // Someone else reading the scores (`shoal mirrors`) hides nothing.
        assert_eq!(p.scores()[0].score, 19);
        assert!(p.newly_popular(), "9 + 10 (capped) >= 15");
        p.record(root(1), Kind::Query, 1);
        assert!(!p.newly_popular(), "already popular");
    }

    #[test]
    fn report_carries_the_most_requested() {
        let p = Popularity::new(Duration::from_secs(60), 10, 15);
        for i in 0..100u32 {
            p.record(root(i), Kind::Block, u64::from(i));
        }
        let r = p.report(Duration::from_secs(15), 7, vec![], vec![]);
        assert_eq!(r.counts.len(), gossip::MAX_COUNTS);
        assert_eq!(r.counts[0], (root(99), 99, 0, 0));
        assert_eq!(gossip::decode(&r.encode()).unwrap(), r);
    }
}
