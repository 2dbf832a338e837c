//! Fetching over bitswap: the blocks of a DAG that IPFS nodes (helia,
//! kubo) hold, asked for with wantlists and received on the streams they
//! open to answer (read by this module's server half, [`super::serve`]).
//!
//! A [`Session`] knows nothing of UnixFS: it is given the CIDs to start
//! from and a callback that receives each verified block and names the
//! CIDs to fetch next. Every want goes to one peer at a time (the least
//! busy it has not tried), with `sendDontHave`; a DontHave moves the want
//! to the next peer; a stream that cannot be written or a peer silent for
//! [`STALL`] while it owes blocks (a peer that answers with wrong bytes is
//! silent: they are not delivered) drops that peer from the session and
//! moves its wants on; when every peer has failed a want, the session
//! ends with an error naming the block.
//!
//! Verification: the server half computes each received block's CID from
//! its bytes (under the prefix's hash function) and hands a block only to
//! the session that wants exactly that CID; anything else is counted as
//! unasked and dropped. A wanted CID is delivered once (the entry leaves
//! the table as it is delivered), so the session's channel, sized to its
//! window, never fills.
//!
//! Bounds: [`WINDOW`] wants in flight per session (blocks are <= the
//! 4 MiB frame, so <= 256 MiB owed, and inbound frames share the server's
//! 64 MiB read budget), [`MAX_SESSION_PEERS`] peers, [`MAX_SESSIONS`]
//! sessions at once, a deadline on every stream open and write.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use shoal_core::Cid;
use tokio::sync::{mpsc, Semaphore};

use super::wire::{self, Message, Presence, Want, WantType};
use super::{SEND_TIMEOUT, V110, V120};
use crate::shared::NetStats;

/// Wants in flight in one session.
pub const WINDOW: usize = 64;
/// Peers one session asks.
pub const MAX_SESSION_PEERS: usize = 64;
/// Sessions at once (more wait).
pub const MAX_SESSIONS: usize = 8;
/// A peer that owes blocks and sends nothing for this long leaves the
/// session (its wants go to the other peers).
pub const STALL: Duration = Duration::from_secs(20);

/// What the server half hands a session.
#[derive(Debug)]
pub(crate) enum Got {
    Block { cid: Cid, data: Bytes, peer: PeerId },
    DontHave { cid: Cid, peer: PeerId },
}

struct Wanted {
    session: u64,
    tx: mpsc::Sender<Got>,
    /// The peer asked now; a DontHave counts only from it, once.
    asked: Option<PeerId>,
}

/// The CIDs this node wants over bitswap, shared by the sessions (which
/// add them) and the server half (which delivers to them).
#[derive(Default)]
pub(crate) struct WantTable {
    wants: Mutex<HashMap<Cid, Wanted>>,
    len: AtomicUsize,
}

impl WantTable {
    /// Whether any session wants anything (else blocks peers send are
    /// dropped unhashed).
    pub(crate) fn active(&self) -> bool {
        self.len.load(Ordering::Relaxed) > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Cid, Wanted>> {
        self.wants.lock().expect("bitswap want table lock")
    }

    /// Records that `session` wants `cid` from `peer`. False when another
    /// session wants it already (this one waits for its own copy later).
    fn ask(&self, session: u64, tx: &mpsc::Sender<Got>, cid: Cid, peer: PeerId) -> bool {
        let mut w = self.lock();
        match w.get_mut(&cid) {
            Some(e) if e.session != session => false,
            Some(e) => {
                e.asked = Some(peer);
                true
            }
            None => {
                w.insert(
                    cid,
                    Wanted {
                        session,
                        tx: tx.clone(),
                        asked: Some(peer),
                    },
                );
                self.len.store(w.len(), Ordering::Relaxed);
                true
            }
        }
    }

    /// Drops every want of `session`.
    fn forget(&self, session: u64) {
        let mut w = self.lock();
        w.retain(|_, e| e.session != session);
        self.len.store(w.len(), Ordering::Relaxed);
    }

    /// Hands a message's blocks and DontHaves to the sessions wanting
    /// them. Returns (blocks delivered, blocks nobody wanted).
    pub(crate) fn deliver(
        &self,
        peer: PeerId,
        blocks: Vec<(Cid, Bytes)>,
        presences: &[(Cid, Presence)],
    ) -> (usize, usize) {
        let (mut delivered, mut unasked) = (0, 0);
        let mut w = self.lock();
        for (cid, data) in blocks {
            match w.remove(&cid) {
                // Sized to the session's window, and each want is delivered
                // once: the send finds room unless the session has ended.
                Some(e) => {
                    let _ = e.tx.try_send(Got::Block { cid, data, peer });
                    delivered += 1;
                }
                None => unasked += 1,
            }
        }
        for (cid, p) in presences {
            if *p != Presence::DontHave {
                continue;
            }
            if let Some(e) = w.get_mut(cid) {
                if e.asked == Some(peer) {
                    e.asked = None;
                    let _ = e.tx.try_send(Got::DontHave { cid: *cid, peer });
                }
            }
        }
        self.len.store(w.len(), Ordering::Relaxed);
        (delivered, unasked)
    }
}

/// The bitswap client: opens sessions. Cheap to clone.
#[derive(Clone)]
pub struct Bitswap {
    pub(crate) control: libp2p_stream::Control,
    pub(crate) table: Arc<WantTable>,
    pub(crate) stats: Arc<NetStats>,
    pub(crate) sessions: Arc<Semaphore>,
    pub(crate) next_id: Arc<AtomicUsize>,
}

impl Bitswap {
    pub(crate) fn new(control: libp2p_stream::Control, table: Arc<WantTable>, stats: Arc<NetStats>) -> Self {
        Bitswap {
            control,
            table,
            stats,
            sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
            next_id: Arc::new(AtomicUsize::new(1)),
        }
    }
}

/// What a session did.
#[derive(Debug, Clone, Default)]
pub struct SessionReport {
    pub blocks: u64,
    pub bytes: u64,
    /// Peers that sent blocks.
    pub peers_used: Vec<PeerId>,
    /// Wants moved to another peer (DontHave, silence, a dead stream).
    pub retried: u64,
}

/// Why a session stopped.
#[derive(Debug, thiserror::Error)]
pub enum SessionError<E> {
    #[error("no peer to ask over bitswap (give one with --from MULTIADDR, or connect to one)")]
    NoPeers,
    #[error("block {cid} is not available over bitswap: {why}")]
    Unavailable { cid: Cid, why: String },
    /// The callback refused a block (its error).
    #[error("{0}")]
    Stopped(E),
}

struct Inflight {
    peer: usize,
    /// Peers (by index) that failed this want.
    tried: u64,
}

struct Peer {
    id: PeerId,
    stream: Option<Stream>,
    owed: usize,
    last_heard: Instant,
    dead: bool,
}

impl Bitswap {
    /// Fetches `start` and whatever `on_block` names next from `peers`
    /// (at most [`MAX_SESSION_PEERS`]), each block verified before
    /// `on_block` sees it. Returns when nothing is left to fetch.
    pub async fn fetch<E>(
        &self,
        peers: Vec<PeerId>,
        start: Vec<Cid>,
        mut on_block: impl FnMut(Cid, Bytes) -> Result<Vec<Cid>, E>,
    ) -> Result<SessionReport, SessionError<E>> {
        let mut seen = HashSet::new();
        let mut peers: Vec<Peer> = peers
            .into_iter()
            .filter(|p| seen.insert(*p))
            .take(MAX_SESSION_PEERS)
            .map(|id| Peer {
                id,
                stream: None,
                owed: 0,
                last_heard: Instant::now(),
                dead: false,
            })
            .collect();
        if peers.is_empty() {
            return Err(SessionError::NoPeers);
        }
        let _slot = self.sessions.acquire().await.map_err(|_| SessionError::NoPeers)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        let (tx, mut rx) = mpsc::channel(WINDOW * 2);
        let _forget = Forget(&self.table, id);
        let mut control = self.control.clone();
        let mut queue: VecDeque<Cid> = start.into();
        let mut inflight: HashMap<Cid, Inflight> = HashMap::new();
        // Wants another session holds: tried again each round.
        let mut deferred: Vec<Cid> = Vec::new();
        let mut report = SessionReport::default();
        let mut used = HashSet::new();
        let outcome: Result<(), SessionError<E>> = async {
        loop {
            // Fill the window, a batch of wants per peer.
            let mut batches: HashMap<usize, Vec<Cid>> = HashMap::new();
            queue.extend(deferred.drain(..));
            while inflight.len() < WINDOW {
                let Some(cid) = queue.pop_front() else { break };
                if inflight.contains_key(&cid) {
                    continue;
                }
                let Some(p) = pick(&peers, 0) else {
                    return Err(unavailable(cid, &peers));
                };
                if !self.table.ask(id, &tx, cid, peers[p].id) {
                    deferred.push(cid);
                    continue;
                }
                peers[p].owed += 1;
                inflight.insert(cid, Inflight { peer: p, tried: 0 });
                batches.entry(p).or_default().push(cid);
            }
            for (p, cids) in batches {
                if peers[p].owed == cids.len() {
                    // It owed nothing before: its silence counts from now.
                    peers[p].last_heard = Instant::now();
                }
                if !send_wants(&mut control, &mut peers[p], &cids, false).await {
                    peers[p].dead = true;
                    tracing::debug!(peer = %peers[p].id, "bitswap: cannot write wants; the peer's wants go elsewhere");
                }
            }
            // Wants of dead peers move on.
            let dead: Vec<Cid> = inflight
                .iter()
                .filter(|(_, f)| peers[f.peer].dead)
                .map(|(c, _)| *c)
                .collect();
            for cid in dead {
                self.retry(id, &tx, cid, &mut inflight, &mut peers, &mut control, &mut report)
                    .await?;
            }
            if inflight.is_empty() && queue.is_empty() {
                if deferred.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let got = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
            match got {
                Ok(Some(Got::Block { cid, data, peer })) => {
                    let Some(f) = inflight.remove(&cid) else { continue };
                    peers[f.peer].owed -= 1;
                    if let Some(p) = peers.iter_mut().find(|p| p.id == peer) {
                        p.last_heard = Instant::now();
                    }
                    used.insert(peer);
                    report.blocks += 1;
                    report.bytes += data.len() as u64;
                    self.stats.received(data.len());
                    self.stats.bitswap_blocks_received.fetch_add(1, Ordering::Relaxed);
                    let next = on_block(cid, data).map_err(SessionError::Stopped)?;
                    queue.extend(next);
                }
                Ok(Some(Got::DontHave { cid, peer })) => {
                    if let Some(p) = peers.iter_mut().find(|p| p.id == peer) {
                        p.last_heard = Instant::now();
                    }
                    if inflight.contains_key(&cid) {
                        self.retry(id, &tx, cid, &mut inflight, &mut peers, &mut control, &mut report)
                            .await?;
                    }
                }
                Ok(None) => unreachable!("the session holds a sender"),
                Err(_) => {}
            }
            // A peer silent too long while owing blocks leaves the session
            // (its wants move on at the top of the loop).
            let now = Instant::now();
            for p in peers.iter_mut().filter(|p| !p.dead && p.owed > 0) {
                if now - p.last_heard > STALL {
                    tracing::debug!(peer = %p.id, owed = p.owed, "bitswap: no answer; the peer leaves this session");
                    p.dead = true;
                }
            }
        }
        Ok(())
        }
        .await;
        // Live peers hear which wants are withdrawn (a failed session);
        // the streams this session opened are closed.
        for (i, p) in peers.iter_mut().enumerate() {
            let owed: Vec<Cid> = inflight.iter().filter(|(_, f)| f.peer == i).map(|(c, _)| *c).collect();
            if !p.dead && !owed.is_empty() {
                send_wants(&mut control, p, &owed, true).await;
            }
            if let Some(mut s) = p.stream.take() {
                let _ = tokio::time::timeout(SEND_TIMEOUT, s.close()).await;
            }
        }
        outcome?;
        report.peers_used = used.into_iter().collect();
        Ok(report)
    }

    /// Moves a want from the peer that failed it to the next untried one.
    #[allow(clippy::too_many_arguments)]
    async fn retry<E>(
        &self,
        id: u64,
        tx: &mpsc::Sender<Got>,
        cid: Cid,
        inflight: &mut HashMap<Cid, Inflight>,
        peers: &mut [Peer],
        control: &mut libp2p_stream::Control,
        report: &mut SessionReport,
    ) -> Result<(), SessionError<E>> {
        loop {
            let f = inflight.get_mut(&cid).expect("a want in flight");
            peers[f.peer].owed = peers[f.peer].owed.saturating_sub(1);
            f.tried |= 1 << f.peer;
            let Some(p) = pick(peers, f.tried) else {
                return Err(unavailable(cid, peers));
            };
            f.peer = p;
            report.retried += 1;
            peers[p].owed += 1;
            if peers[p].owed == 1 {
                peers[p].last_heard = Instant::now();
            }
            self.table.ask(id, tx, cid, peers[p].id);
            if send_wants(control, &mut peers[p], &[cid], false).await {
                return Ok(());
            }
            peers[p].dead = true;
        }
    }
}

/// The least busy live peer not in `tried`.
fn pick(peers: &[Peer], tried: u64) -> Option<usize> {
    (0..peers.len())
        .filter(|&i| !peers[i].dead && tried & (1 << i) == 0)
        .min_by_key(|&i| peers[i].owed)
}

fn unavailable<E>(cid: Cid, peers: &[Peer]) -> SessionError<E> {
    SessionError::Unavailable {
        cid,
        why: format!(
            "each of the {} peers asked answered DontHave, went silent for {}s or could not be reached",
            peers.len(),
            STALL.as_secs()
        ),
    }
}

/// Writes wants (or their cancellation) to a peer on this side's stream,
/// opened (1.2.0, else 1.1.0) when needed; a failed write is tried once
/// on a new stream. False when the peer cannot be written to.
async fn send_wants(control: &mut libp2p_stream::Control, peer: &mut Peer, cids: &[Cid], cancel: bool) -> bool {
    let mut sent = true;
    for part in cids.chunks(wire::MAX_WANTS) {
        let msg = Message {
            wants: part
                .iter()
                .map(|c| Want {
                    cid: c.to_bytes(),
                    cancel,
                    kind: WantType::Block,
                    send_dont_have: !cancel,
                })
                .collect(),
            ..Default::default()
        };
        let frame = wire::frame(&msg.encode(false));
        sent &= write_frame(control, peer, &frame).await;
    }
    sent
}

async fn write_frame(control: &mut libp2p_stream::Control, peer: &mut Peer, frame: &[u8]) -> bool {
    for _ in 0..2 {
        if peer.stream.is_none() {
            for proto in [V120, V110] {
                if let Ok(Ok(s)) = tokio::time::timeout(SEND_TIMEOUT, control.open_stream(peer.id, proto)).await {
                    peer.stream = Some(s);
                    break;
                }
            }
        }
        let Some(s) = peer.stream.as_mut() else { return false };
        let wrote = tokio::time::timeout(SEND_TIMEOUT, async {
            s.write_all(frame).await?;
            s.flush().await
        })
        .await;
        if matches!(wrote, Ok(Ok(()))) {
            return true;
        }
        peer.stream = None;
    }
    false
}

/// Drops a session's wants when it ends, however it ends.
struct Forget<'a>(&'a WantTable, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(data: &[u8]) -> Cid {
        *shoal_core::Block::raw(data.to_vec()).cid()
    }

    #[test]
    fn a_wanted_block_is_delivered_once_and_only_the_asked_peer_says_dont_have() {
        let table = WantTable::default();
        let (tx, mut rx) = mpsc::channel(4);
        let (p1, p2) = (PeerId::random(), PeerId::random());
        let (a, b) = (cid(b"a"), cid(b"b"));
        assert!(!table.active());
        assert!(table.ask(1, &tx, a, p1));
        assert!(table.ask(1, &tx, b, p1));
        // Another session waits for its own turn.
        assert!(!table.ask(2, &tx, a, p2));
        assert!(table.active());
        // A DontHave from a peer not asked is ignored; from the asked one,
        // delivered once.
        table.deliver(p2, Vec::new(), &[(b, Presence::DontHave)]);
        table.deliver(p1, Vec::new(), &[(b, Presence::DontHave), (b, Presence::DontHave)]);
        assert!(matches!(rx.try_recv(), Ok(Got::DontHave { cid, peer }) if cid == b && peer == p1));
        assert!(rx.try_recv().is_err());
        // The block from anyone, once; a second copy and an unknown block
        // are unasked.
        let data = Bytes::from_static(b"a");
        let (delivered, unasked) =
            table.deliver(p2, vec![(a, data.clone()), (a, data), (cid(b"x"), Bytes::new())], &[]);
        assert_eq!((delivered, unasked), (1, 2));
        assert!(matches!(rx.try_recv(), Ok(Got::Block { cid, .. }) if cid == a));
        table.forget(1);
        assert!(!table.active());
    }
}
