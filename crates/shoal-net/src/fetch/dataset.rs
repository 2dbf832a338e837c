//! [`DatasetFetch`]: the state of one dataset fetch, without I/O. The
//! driver (`Fetcher::fetch_dataset`) asks it what to request of whom
//! ([`DatasetFetch::assign`]), sends the requests, and hands every answer
//! back ([`DatasetFetch::on_answer`], or [`DatasetFetch::on_timeout`] for
//! a request that failed or timed out); the state decides which blocks
//! are verified and kept, who lacks what, who is busy, struck, dropped or
//! banned, and what goes back in line.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use shoal_core::{Block, Cid, Progress};

use super::link::Link;
use super::{FetchOptions, MAX_INFLIGHT_BYTES};
use crate::codec::{Answer, BlockResponse};

/// First pause after a provider answers "skipped" for a whole request; it
/// doubles with each such answer in a row, up to [`BUSY_PAUSE_MAX`].
const BUSY_PAUSE: Duration = Duration::from_millis(50);
const BUSY_PAUSE_MAX: Duration = Duration::from_secs(2);
/// "Skipped" answers in a row after which a provider counts one strike.
const BUSY_STRIKE_AFTER: u32 = 8;

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

impl PeerState {
    fn paused(&self, now: Instant) -> bool {
        self.busy_until.is_some_and(|t| t > now)
    }
}

/// One request to send: these CIDs of `peer`, which may bring back up to
/// `bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub peer: PeerId,
    pub cids: Vec<Cid>,
    pub bytes: u64,
}

/// What an answer gave: the blocks verified and now owed to the store
/// (in order), the bytes verified (for the network's counters), whether
/// the peer lied (it is banned and dropped here; the driver disconnects
/// it), and the budget passed, if it was (the block that passed it is not
/// among `blocks`).
#[derive(Default)]
pub(super) struct Answered {
    pub blocks: Vec<Block>,
    pub received: u64,
    pub lied: bool,
    pub over_budget: Option<u64>,
}

/// The state of one dataset fetch: rounds of missing blocks (the root,
/// then manifest pages, then data), handed out to every provider at once.
pub(super) struct DatasetFetch {
    root: Cid,
    batch: usize,
    per_peer_inflight: usize,
    max_strikes: u32,
    max_bytes: Option<u64>,
    /// The largest block a request may bring back.
    block: u64,
    /// Known providers, in the order found.
    pub providers: Vec<PeerId>,
    /// Connected peers asked before the DHT confirmed them; empty once the
    /// lookup has answered.
    guessed: HashSet<PeerId>,
    /// Providers that delivered, and those banned for wrong bytes.
    pub used: HashSet<PeerId>,
    pub banned: HashSet<PeerId>,
    /// What was measured of each provider's link, kept across rounds.
    pub links: HashMap<PeerId, Link>,
    pub progress: Progress,
    // The round's state.
    queue: VecDeque<Cid>,
    lacking: HashMap<Cid, HashSet<PeerId>>,
    peers: HashMap<PeerId, PeerState>,
    pending: HashMap<Cid, Pending>,
    /// When a block last arrived (or the round began).
    pub last_progress: Instant,
}

impl DatasetFetch {
    /// A fetch of `root` from `providers`, of which `guessed` are connected
    /// peers the DHT has not confirmed yet.
    pub fn new(root: Cid, providers: Vec<PeerId>, guessed: HashSet<PeerId>, opts: &FetchOptions) -> Self {
        DatasetFetch {
            root,
            batch: opts.batch,
            per_peer_inflight: opts.per_peer_inflight,
            max_strikes: opts.max_strikes,
            max_bytes: opts.max_bytes,
            block: u64::from(shoal_core::DEFAULT_BLOCK_SIZE),
            providers,
            guessed,
            used: HashSet::new(),
            banned: HashSet::new(),
            links: HashMap::new(),
            progress: Progress::default(),
            queue: VecDeque::new(),
            lacking: HashMap::new(),
            peers: HashMap::new(),
            pending: HashMap::new(),
            last_progress: Instant::now(),
        }
    }

    /// Starts a round over `cids`: each provider starts from what earlier
    /// rounds measured of it.
    pub fn round(&mut self, cids: Vec<Cid>, now: Instant) {
        self.queue = cids.into();
        self.lacking.clear();
        self.pending.clear();
        self.peers = self
            .providers
            .iter()
            .map(|p| {
                let link = self.links.get(p).copied().unwrap_or_default();
                (
                    *p,
                    PeerState {
                        link,
                        ..Default::default()
                    },
                )
            })
            .collect();
        self.last_progress = now;
    }

    /// Work for every provider with spare capacity (a busy one waits out
    /// its pause; the others get its blocks), within each link's window and
    /// [`MAX_INFLIGHT_BYTES`] over all. Endgame: with nothing left to hand
    /// out, a provider with room also asks for what other providers still
    /// owe (each block of at most two at once; the first answer wins),
    /// newest asks first: those the other link would deliver last. A slow
    /// provider then costs at most its share, not the tail, and the link
    /// that finished first does not idle for a round trip before it helps.
    pub fn assign(&mut self, now: Instant) -> Vec<Request> {
        let mut out = Vec::new();
        let mut order: Vec<PeerId> = self
            .peers
            .keys()
            .copied()
            .filter(|p| !self.peers[p].paused(now))
            .collect();
        order.sort_by_key(|p| self.peers[p].inflight);
        for peer in order {
            let size = self.peers[&peer].link.batch(self.batch, self.block);
            let request_bytes = size as u64 * self.block;
            let window = self.peers[&peer].link.window(request_bytes, self.per_peer_inflight);
            let hedge = self.queue.is_empty();
            while self.peers[&peer].inflight < window
                && (!self.queue.is_empty() || hedge)
                && self.inflight_bytes() + request_bytes <= MAX_INFLIGHT_BYTES
            {
                let batch = if hedge {
                    self.owed_by_others(peer, size)
                } else {
                    self.next_batch(peer, size)
                };
                if batch.is_empty() {
                    break;
                }
                let st = self.peers.get_mut(&peer).expect("peer");
                st.inflight += 1;
                st.link.inflight_bytes += request_bytes;
                st.link.peak_inflight = st.link.peak_inflight.max(st.link.inflight_bytes);
                for c in &batch {
                    let p = self.pending.entry(*c).or_insert_with(|| Pending {
                        asked: Vec::new(),
                        since: now,
                    });
                    p.asked.push(peer);
                }
                out.push(Request {
                    peer,
                    cids: batch,
                    bytes: request_bytes,
                });
            }
        }
        out
    }

    fn inflight_bytes(&self) -> u64 {
        self.peers.values().map(|p| p.link.inflight_bytes).sum()
    }

    fn lacks(&self, peer: &PeerId, c: &Cid) -> bool {
        self.lacking.get(c).is_some_and(|l| l.contains(peer))
    }

    /// Up to `size` queued blocks `peer` has not said it lacks.
    fn next_batch(&mut self, peer: PeerId, size: usize) -> Vec<Cid> {
        let (mut batch, mut skipped) = (Vec::new(), Vec::new());
        while batch.len() < size {
            let Some(c) = self.queue.pop_front() else { break };
            if self.lacks(&peer, &c) {
                skipped.push(c);
            } else {
                batch.push(c);
            }
        }
        for c in skipped.into_iter().rev() {
            self.queue.push_front(c);
        }
        batch
    }

    /// Up to `size` blocks asked of exactly one other provider, newest
    /// asks first.
    fn owed_by_others(&self, peer: PeerId, size: usize) -> Vec<Cid> {
        let mut owed: Vec<(&Cid, &Pending)> = self
            .pending
            .iter()
            .filter(|(c, p)| p.asked.len() == 1 && !p.asked.contains(&peer) && !self.lacks(&peer, c))
            .collect();
        owed.sort_by_key(|(_, p)| std::cmp::Reverse(p.since));
        owed.into_iter().take(size).map(|(c, _)| *c).collect()
    }

    /// Every block of the round arrived. Hedged requests still running may
    /// be dropped (their answers would be duplicates).
    pub fn round_done(&mut self) -> bool {
        let done = self.queue.is_empty() && self.pending.is_empty();
        if done {
            // Providers that never answered are reported too.
            for (p, st) in &self.peers {
                self.links.insert(*p, st.link);
            }
        }
        done
    }

    /// Blocks not received yet: queued, and asked for.
    pub fn missing(&self) -> usize {
        self.queue.len() + self.pending.len()
    }

    /// Blocks waiting for a provider, and the first of them.
    pub fn queued(&self) -> (usize, Option<Cid>) {
        (self.queue.len(), self.queue.front().copied())
    }

    /// When the first paused provider resumes, if one is paused.
    pub fn next_resume(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.busy_until)
            .filter(|t| *t > now)
            .min()
    }

    /// Adds providers not banned and not known yet; whether any was new to
    /// this round.
    pub fn add_providers(&mut self, found: Vec<PeerId>) -> bool {
        let before = self.peers.len();
        for p in found.into_iter().filter(|p| !self.banned.contains(p)) {
            self.peers.entry(p).or_default();
            if !self.providers.contains(&p) {
                self.providers.push(p);
            }
        }
        self.peers.len() > before
    }

    /// The DHT lookup answered with `found`: guesses it does not confirm
    /// and that have delivered nothing are asked no more.
    pub fn confirmed(&mut self, found: Vec<PeerId>) {
        let unconfirmed: Vec<PeerId> = self
            .guessed
            .iter()
            .filter(|p| !found.contains(p) && !self.used.contains(p))
            .copied()
            .collect();
        for p in unconfirmed {
            self.drop_peer(p);
        }
        self.guessed.clear();
        self.add_providers(found);
    }

    /// The lookup ended without an answer: guesses stay as they are.
    pub fn lookup_ended(&mut self) {
        self.guessed.clear();
    }

    fn drop_peer(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
        self.providers.retain(|p| *p != peer);
    }

    /// `peer` no longer has this request in flight; what it delivered (if
    /// anything) measures its link.
    fn returned(&mut self, peer: PeerId, request_bytes: u64, delivered: u64, rtt: Duration, now: Instant) {
        if let Some(st) = self.peers.get_mut(&peer) {
            st.inflight -= 1;
            st.link.inflight_bytes = st.link.inflight_bytes.saturating_sub(request_bytes);
            if delivered > 0 {
                st.link.delivered(delivered, rtt, now);
                st.link.total += delivered;
            }
            self.links.insert(peer, st.link);
        }
    }

    /// `peer` answered for `c`: a block another request already delivered
    /// needs nothing more; one still asked of another provider waits for
    /// that answer; only a block nobody is asked for any more goes back in
    /// line (true).
    fn settle(&mut self, c: Cid, peer: PeerId) -> bool {
        match self.pending.get_mut(&c) {
            None => false,
            Some(p) => {
                p.asked.retain(|x| *x != peer);
                if p.asked.is_empty() {
                    self.pending.remove(&c);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// `peer` answered the request for `asked` (sent `rtt` ago, of up to
    /// `request_bytes`). Every block is verified against its CID;
    /// unsolicited or repeated answers, and answers for blocks another
    /// request delivered first, are ignored.
    pub fn on_answer(
        &mut self,
        peer: PeerId,
        asked: Vec<Cid>,
        resp: BlockResponse,
        request_bytes: u64,
        rtt: Duration,
        now: Instant,
    ) -> Answered {
        let delivered: u64 = resp
            .answers
            .iter()
            .map(|a| match &a.1 {
                Answer::Data(d) => d.len() as u64,
                _ => 0,
            })
            .sum();
        self.returned(peer, request_bytes, delivered, rtt, now);
        let mut out = Answered::default();
        let asked_set: HashSet<Cid> = asked.iter().copied().collect();
        let mut answered = HashSet::new();
        let mut skipped = 0;
        for (cid, ans) in resp.answers {
            if !asked_set.contains(&cid) || !answered.insert(cid) || !self.pending.contains_key(&cid) {
                continue;
            }
            match ans {
                Answer::Data(bytes) => match Block::verified(cid, bytes) {
                    Ok(b) => {
                        self.pending.remove(&cid);
                        out.received += b.len() as u64;
                        self.last_progress = now;
                        self.progress.bytes_done += b.len() as u64;
                        if let Some(max) = self.max_bytes.filter(|m| self.progress.bytes_done > *m) {
                            out.over_budget = Some(max);
                            return out;
                        }
                        self.progress.items_done += 1;
                        out.blocks.push(b);
                        if self.used.insert(peer) {
                            self.progress.peers = self.used.len() as u64;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%peer, %cid, error = %e, "peer sent a block that fails verification");
                        out.lied = true;
                        if self.settle(cid, peer) {
                            self.queue.push_back(cid);
                        }
                    }
                },
                Answer::DontHave => {
                    self.lacking.entry(cid).or_default().insert(peer);
                    if self.settle(cid, peer) {
                        self.queue.push_back(cid);
                    }
                }
                Answer::Skipped => {
                    skipped += 1;
                    if self.settle(cid, peer) {
                        self.queue.push_front(cid);
                    }
                }
            }
        }
        if let Some(st) = self.peers.get_mut(&peer) {
            if skipped == asked.len() {
                // At its inbound limit: pause it, longer each time in a
                // row; a strike every few such answers.
                st.busy_streak += 1;
                let pause = BUSY_PAUSE
                    .saturating_mul(1 << st.busy_streak.min(8))
                    .min(BUSY_PAUSE_MAX);
                st.busy_until = Some(now + pause);
                if st.busy_streak.is_multiple_of(BUSY_STRIKE_AFTER) {
                    st.strikes += 1;
                }
            } else {
                st.busy_streak = 0;
                st.busy_until = None;
            }
            if st.strikes >= self.max_strikes {
                tracing::warn!(%peer, "dropping provider: busy for too long");
                self.drop_peer(peer);
            }
        }
        // A guessed provider (connected, not yet confirmed by the DHT)
        // that has none of what it was asked holds nothing.
        let had_none = asked.iter().all(|c| self.lacks(&peer, c));
        if had_none && self.guessed.contains(&peer) {
            self.drop_peer(peer);
        }
        for c in asked.into_iter().filter(|c| !answered.contains(c)) {
            if self.settle(c, peer) {
                self.queue.push_back(c);
            }
        }
        if out.lied {
            self.banned.insert(peer);
            self.drop_peer(peer);
        }
        out
    }

    /// The request for `asked` failed or timed out: its blocks go back in
    /// line (unless another provider was asked too), the provider gets a
    /// strike and is dropped after `max_strikes`.
    pub fn on_timeout(&mut self, peer: PeerId, asked: Vec<Cid>, request_bytes: u64, now: Instant) {
        self.returned(peer, request_bytes, 0, Duration::ZERO, now);
        for c in asked {
            if self.settle(c, peer) {
                self.queue.push_back(c);
            }
        }
        if let Some(st) = self.peers.get_mut(&peer) {
            st.strikes += 1;
            if st.strikes >= self.max_strikes {
                tracing::warn!(%peer, "dropping provider after repeated failures");
                self.drop_peer(peer);
            }
        }
    }

    pub fn root(&self) -> Cid {
        self.root
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use shoal_core::cid::{cid_of, RAW};

    use super::*;

    /// How a fake provider answers.
    #[derive(Clone, Copy)]
    enum Kind {
        /// Has the blocks whose index passes the filter.
        Honest(fn(usize) -> bool),
        /// Sends other bytes for every block.
        Liar,
        /// Never answers (every request times out).
        Silent,
        /// Skips whole requests this many times, then answers honestly.
        Busy(usize),
    }

    fn all(_: usize) -> bool {
        true
    }

    /// A dataset of `n` small blocks and a swarm of fake providers, driven
    /// in virtual time: each step answers one outstanding request (the
    /// oldest, or the oldest not from a peer held back).
    struct Swarm {
        blocks: Vec<(Cid, Bytes)>,
        kinds: BTreeMap<PeerId, Kind>,
        skipped: HashMap<PeerId, usize>,
        /// Every request sent, in order.
        sent: Vec<Request>,
        stored: Vec<Block>,
        now: Instant,
        /// Sum of outstanding request bytes, at its highest.
        peak_bytes: u64,
    }

    impl Swarm {
        fn new(n: usize, kinds: &[Kind]) -> (Swarm, Vec<PeerId>) {
            let blocks = (0..n)
                .map(|i| {
                    let data = Bytes::from(format!("block {i} of the test dataset"));
                    (cid_of(RAW, &data), data)
                })
                .collect();
            let peers: Vec<PeerId> = kinds.iter().map(|_| PeerId::random()).collect();
            let swarm = Swarm {
                blocks,
                kinds: peers.iter().copied().zip(kinds.iter().copied()).collect(),
                skipped: HashMap::new(),
                sent: Vec::new(),
                stored: Vec::new(),
                now: Instant::now(),
                peak_bytes: 0,
            };
            (swarm, peers)
        }

        fn cids(&self) -> Vec<Cid> {
            self.blocks.iter().map(|b| b.0).collect()
        }

        fn fetch(&self, peers: &[PeerId], opts: &FetchOptions) -> DatasetFetch {
            let mut f = DatasetFetch::new(self.blocks[0].0, peers.to_vec(), HashSet::new(), opts);
            f.round(self.cids(), self.now);
            f
        }

        /// `peer`'s answer to a request, or `None` for a timeout.
        fn answer(&mut self, r: &Request) -> Option<BlockResponse> {
            let kind = self.kinds[&r.peer];
            if matches!(kind, Kind::Silent) {
                return None;
            }
            if let Kind::Busy(n) = kind {
                let k = self.skipped.entry(r.peer).or_default();
                if *k < n {
                    *k += 1;
                    return Some(BlockResponse {
                        answers: r.cids.iter().map(|c| (*c, Answer::Skipped)).collect(),
                    });
                }
            }
            let answers = r
                .cids
                .iter()
                .map(|c| {
                    let i = self
                        .blocks
                        .iter()
                        .position(|b| b.0 == *c)
                        .expect("asked for a block of the dataset");
                    let a = match kind {
                        Kind::Liar => Answer::Data(Bytes::from_static(b"not the block")),
                        Kind::Honest(has) if !has(i) => Answer::DontHave,
                        _ => Answer::Data(self.blocks[i].1.clone()),
                    };
                    (*c, a)
                })
                .collect();
            Some(BlockResponse { answers })
        }

        /// Runs the round to its end (or until nobody can serve what is
        /// left); answers from `held_back` wait while any other is due.
        fn run(&mut self, f: &mut DatasetFetch, held_back: Option<PeerId>) -> Option<u64> {
            let mut outstanding: VecDeque<Request> = VecDeque::new();
            for _ in 0..10_000 {
                for r in f.assign(self.now) {
                    self.sent.push(r.clone());
                    outstanding.push_back(r);
                }
                self.peak_bytes = self.peak_bytes.max(outstanding.iter().map(|r| r.bytes).sum());
                if f.round_done() {
                    return None;
                }
                let pick = outstanding
                    .iter()
                    .position(|r| Some(r.peer) != held_back)
                    .or((!outstanding.is_empty()).then_some(0));
                let Some(i) = pick else {
                    match f.next_resume(self.now) {
                        Some(t) => {
                            self.now = t;
                            continue;
                        }
                        None => return None,
                    }
                };
                let r = outstanding.remove(i).expect("picked");
                self.now += Duration::from_millis(1);
                match self.answer(&r) {
                    Some(resp) => {
                        let a = f.on_answer(r.peer, r.cids, resp, r.bytes, Duration::from_millis(1), self.now);
                        self.stored.extend(a.blocks);
                        if a.over_budget.is_some() {
                            return a.over_budget;
                        }
                    }
                    None => f.on_timeout(r.peer, r.cids, r.bytes, self.now),
                }
            }
            panic!("the round did not end in 10,000 steps");
        }

        /// Every block of the dataset stored exactly once, with its bytes.
        fn complete(&self) -> bool {
            let mut got: Vec<&Cid> = self.stored.iter().map(|b| b.cid()).collect();
            got.sort();
            let mut want: Vec<&Cid> = self.blocks.iter().map(|b| &b.0).collect();
            want.sort();
            got == want
        }

        fn asked_of(&self, peer: PeerId) -> Vec<&Request> {
            self.sent.iter().filter(|r| r.peer == peer).collect()
        }
    }

    fn opts() -> FetchOptions {
        FetchOptions {
            batch: 4,
            per_peer_inflight: 2,
            max_strikes: 3,
            ..FetchOptions::default()
        }
    }

    #[test]
    fn every_block_arrives_once_from_all_providers_within_the_byte_bound() {
        let (mut s, peers) = Swarm::new(100, &[Kind::Honest(all); 3]);
        let mut f = s.fetch(&peers, &opts());
        s.run(&mut f, None);
        assert!(s.complete());
        assert_eq!(f.missing(), 0);
        assert_eq!(
            (f.progress.items_done, f.used.len()),
            (100, 3),
            "every provider took a share"
        );
        assert!(s.peak_bytes <= MAX_INFLIGHT_BYTES);
        for p in &peers {
            assert!(f.links[p].total > 0);
        }
    }

    #[test]
    fn a_liar_is_banned_at_its_first_answer_and_the_others_deliver_its_blocks() {
        let (mut s, peers) = Swarm::new(40, &[Kind::Liar, Kind::Honest(all)]);
        let mut f = s.fetch(&peers, &opts());
        s.run(&mut f, Some(peers[1]));
        assert!(s.complete(), "the liar's blocks came from the honest provider");
        assert!(f.banned.contains(&peers[0]) && !f.providers.contains(&peers[0]));
        // Asked at most its first window (two requests) before the ban.
        assert!(s.asked_of(peers[0]).len() <= 2, "{}", s.asked_of(peers[0]).len());
        assert!(!f.used.contains(&peers[0]));
    }

    #[test]
    fn a_provider_is_not_asked_again_for_a_block_it_lacks() {
        let (mut s, peers) = Swarm::new(60, &[Kind::Honest(|i| i % 2 == 0), Kind::Honest(all)]);
        let mut f = s.fetch(&peers, &opts());
        s.run(&mut f, None);
        assert!(s.complete());
        let mut asked: HashMap<Cid, usize> = HashMap::new();
        for r in s.asked_of(peers[0]) {
            for c in &r.cids {
                *asked.entry(*c).or_default() += 1;
            }
        }
        let odd: HashSet<Cid> = s.blocks.iter().skip(1).step_by(2).map(|b| b.0).collect();
        for (c, n) in asked {
            assert!(n == 1 || !odd.contains(&c), "asked {n} times for a block it lacks");
        }
    }

    #[test]
    fn timeouts_strike_a_provider_out_and_its_work_goes_to_the_others() {
        let (mut s, peers) = Swarm::new(50, &[Kind::Silent, Kind::Honest(all)]);
        // One request at a time, so each timeout is one strike in turn.
        let one = FetchOptions {
            per_peer_inflight: 1,
            ..opts()
        };
        let mut f = s.fetch(&peers, &one);
        s.run(&mut f, None);
        assert!(s.complete());
        assert!(!f.providers.contains(&peers[0]), "dropped after its strikes");
        assert_eq!(s.asked_of(peers[0]).len(), 3, "three strikes, then no more requests");
        assert!(f.banned.is_empty(), "a silent provider is not a liar");
    }

    #[test]
    fn a_busy_provider_pauses_longer_each_time_then_serves() {
        let (mut s, peers) = Swarm::new(8, &[Kind::Busy(3)]);
        // One request at a time: each skipped answer is the next in a row
        // (an answer served resets the streak).
        let one = FetchOptions {
            per_peer_inflight: 1,
            ..opts()
        };
        let mut f = s.fetch(&peers, &one);
        let start = s.now;
        s.run(&mut f, None);
        assert!(s.complete());
        // Three skipped answers in a row: pauses of 100, 200 and 400 ms.
        assert!(
            s.now.duration_since(start) >= Duration::from_millis(700),
            "{:?}",
            s.now - start
        );
        assert!(f.providers.contains(&peers[0]), "busy is not a failure");
    }

    #[test]
    fn in_the_endgame_a_slow_providers_blocks_are_asked_of_one_more_at_most() {
        let (mut s, peers) = Swarm::new(40, &[Kind::Honest(all), Kind::Honest(all)]);
        let mut f = s.fetch(&peers, &opts());
        // The first provider's answers wait while the second's are due: the
        // second empties the queue, then asks for what the first owes.
        s.run(&mut f, Some(peers[0]));
        assert!(s.complete(), "each block stored once although some were asked twice");
        let mut askers: HashMap<Cid, HashSet<PeerId>> = HashMap::new();
        for r in &s.sent {
            for c in &r.cids {
                askers.entry(*c).or_default().insert(r.peer);
            }
        }
        assert!(askers.values().all(|a| a.len() <= 2));
        assert!(askers.values().any(|a| a.len() == 2), "the endgame hedged");
    }

    #[test]
    fn a_guessed_peer_that_holds_nothing_is_dropped_and_the_lookup_confirms_the_rest() {
        let (mut s, peers) = Swarm::new(20, &[Kind::Honest(|_| false), Kind::Honest(all)]);
        let guessed: HashSet<PeerId> = peers.iter().copied().collect();
        let mut f = DatasetFetch::new(s.blocks[0].0, peers.clone(), guessed, &opts());
        f.round(s.cids(), s.now);
        s.run(&mut f, Some(peers[1]));
        assert!(s.complete());
        assert!(!f.providers.contains(&peers[0]), "held none of what it was asked");
        // The DHT then names a third provider and not the second: the
        // second delivered, so it stays.
        let third = PeerId::random();
        f.confirmed(vec![third]);
        assert!(f.providers.contains(&peers[1]) && f.providers.contains(&third));
    }

    #[test]
    fn the_byte_budget_ends_the_fetch_at_the_block_that_passes_it() {
        let (mut s, peers) = Swarm::new(30, &[Kind::Honest(all)]);
        let per_block = s.blocks[0].1.len() as u64;
        let o = FetchOptions {
            max_bytes: Some(per_block * 5),
            ..opts()
        };
        let mut f = s.fetch(&peers, &o);
        assert_eq!(s.run(&mut f, None), Some(per_block * 5));
        assert_eq!(s.stored.len(), 5, "the block past the budget is not stored");
    }

    #[test]
    fn unsolicited_repeated_and_late_answers_are_ignored() {
        let (s, peers) = Swarm::new(4, &[Kind::Honest(all)]);
        let mut f = s.fetch(&peers, &opts());
        let r = f.assign(s.now).remove(0);
        let (c0, d0) = s.blocks[0].clone();
        let stranger = cid_of(RAW, b"a block nobody asked for");
        let resp = BlockResponse {
            answers: vec![
                (c0, Answer::Data(d0.clone())),
                (c0, Answer::Data(d0.clone())),
                (stranger, Answer::Data(Bytes::from_static(b"a block nobody asked for"))),
            ],
        };
        let a = f.on_answer(r.peer, r.cids.clone(), resp, r.bytes, Duration::from_millis(1), s.now);
        assert_eq!(a.blocks.len(), 1, "one block, once");
        assert!(!a.lied);
        // The rest of that request went unanswered: back in line, and a
        // late answer for the delivered block adds nothing.
        let late = BlockResponse {
            answers: vec![(c0, Answer::Data(d0))],
        };
        let again = f.assign(s.now).remove(0);
        assert!(!again.cids.contains(&c0));
        let a = f.on_answer(again.peer, vec![c0], late, again.bytes, Duration::from_millis(1), s.now);
        assert!(a.blocks.is_empty());
    }
}
