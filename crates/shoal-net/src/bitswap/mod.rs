//! Bitswap with IPFS nodes (helia, kubo) over the same swarm, on
//! `/ipfs/bitswap/1.2.0` (and 1.1.0 and 1.0.0 for kubo): they fetch the
//! blocks held here, and this node fetches UnixFS DAGs they hold
//! ([`client`]).
//!
//! A peer sends wantlists on a stream it opens; the answers (blocks,
//! Have/DontHave) go back on a stream this side opens, as the protocol
//! has it. Every block sent is read through the same verified path as
//! `/shoal/blocks` (the node's [`ServeFn`]): a corrupt local copy is never
//! sent, a block not held is DontHave (when the peer asked for one, so a
//! helia session does not wait for its timeout). Answers to this node's
//! own wants arrive the same way, on inbound streams read here: their
//! blocks are hashed and handed to the session wanting exactly that CID
//! (the [`client::WantTable`]); the rest are counted and dropped.
//!
//! Bounds: frames of at most [`wire::MAX_MESSAGE`] bytes, read into a
//! buffer taken from a global budget ([`READ_BUDGET`]); wantlists of at most
//! [`wire::MAX_WANTS`] entries; [`MAX_PEERS`] peers and
//! [`MAX_STREAMS_PER_PEER`] inbound streams each; [`MESSAGES_PER_SEC`] per
//! stream (a faster peer is slowed down, not queued for; a message that
//! answers this node's wants is not charged); blocks read for answers at
//! most [`LOOKUPS_IN_FLIGHT`] at once in all; every read and write has a
//! deadline. A private swarm (swarm key, allow-list) never lets an IPFS
//! node connect in the first place.

pub mod client;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use shoal_core::Cid;
use tokio::sync::{mpsc, Semaphore};

use crate::shared::{NetStats, ServeFn};
use client::WantTable;
pub use client::{Bitswap, SessionError, SessionReport};
use wire::{Message, Presence, WantType, MAX_MESSAGE};

pub const V120: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
pub const V110: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.1.0");
pub const V100: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.0.0");
pub const PROTOCOLS: [StreamProtocol; 3] = [V120, V110, V100];

/// Peers served at once.
pub const MAX_PEERS: usize = 256;
/// Inbound bitswap streams one peer may hold open (helia opens one per
/// message it sends, and they overlap).
pub const MAX_STREAMS_PER_PEER: usize = 64;
/// Messages one peer may send per second, over all its streams (bursts of
/// twice that).
pub const MESSAGES_PER_SEC: f64 = 50.0;
/// Bytes of inbound frames held at once, in all (frames are read whole).
pub const READ_BUDGET: usize = 64 << 20;
/// Blocks being read for answers at once, in all.
pub const LOOKUPS_IN_FLIGHT: usize = 64;
/// A stream that moved nothing for this long is closed.
pub const IDLE: Duration = Duration::from_secs(120);
/// Deadline of one frame's write, and of opening the answer stream.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// An answer stream with nothing more to write is closed after this.
pub const LINGER: Duration = Duration::from_secs(2);
/// Answers waiting to be written to one peer; more wait for room.
const OUT_QUEUE: usize = 8;
/// An answer message is cut before it reaches this size.
const ANSWER_TARGET: usize = MAX_MESSAGE - (64 << 10);

/// Runs the bitswap server until the swarm's control is gone.
pub(crate) async fn serve(
    mut control: libp2p_stream::Control,
    serve: ServeFn,
    stats: Arc<NetStats>,
    wants: Arc<WantTable>,
) {
    let mut incoming = Vec::new();
    for p in PROTOCOLS {
        match control.accept(p.clone()) {
            Ok(s) => incoming.push(s.map(move |(peer, stream)| (peer, stream, p.clone())).boxed()),
            Err(e) => tracing::warn!(protocol = %p, error = ?e, "cannot serve bitswap"),
        }
    }
    let server = Arc::new(Server {
        control,
        serve,
        stats,
        wants,
        peers: Mutex::new(HashMap::new()),
        read_budget: Arc::new(Semaphore::new(READ_BUDGET >> 10)),
        lookups: Arc::new(Semaphore::new(LOOKUPS_IN_FLIGHT)),
    });
    let mut incoming = futures::stream::select_all(incoming);
    while let Some((peer, stream, protocol)) = incoming.next().await {
        if !server.admit(peer) {
            server.stats.bitswap_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "bitswap stream refused: peer or stream limit");
            continue; // dropping the stream resets it
        }
        let s = server.clone();
        tokio::spawn(async move {
            s.inbound(peer, stream, protocol).await;
            s.leave(peer);
        });
    }
}

struct Server {
    control: libp2p_stream::Control,
    serve: ServeFn,
    stats: Arc<NetStats>,
    /// What this node's sessions want (blocks they receive come in here).
    wants: Arc<WantTable>,
    peers: Mutex<HashMap<PeerId, PeerState>>,
    /// KiB of inbound frames held.
    read_budget: Arc<Semaphore>,
    lookups: Arc<Semaphore>,
}

struct PeerState {
    streams: usize,
    out: Option<mpsc::Sender<(StreamProtocol, Vec<u8>)>>,
    /// The peer's message allowance (a token bucket).
    tokens: f64,
    refilled: Instant,
}

impl Default for PeerState {
    fn default() -> Self {
        PeerState {
            streams: 0,
            out: None,
            tokens: MESSAGES_PER_SEC * 2.0,
            refilled: Instant::now(),
        }
    }
}

/// Why an inbound stream ended early.
#[derive(Debug)]
enum Stop {
    Eof,
    Refused(String),
}

impl Server {
    fn admit(&self, peer: PeerId) -> bool {
        let mut peers = self.peers.lock().expect("bitswap peers lock");
        if !peers.contains_key(&peer) && peers.len() >= MAX_PEERS {
            return false;
        }
        let st = peers.entry(peer).or_default();
        if st.streams >= MAX_STREAMS_PER_PEER {
            return false;
        }
        st.streams += 1;
        true
    }

    fn leave(&self, peer: PeerId) {
        let mut peers = self.peers.lock().expect("bitswap peers lock");
        if let Some(st) = peers.get_mut(&peer) {
            st.streams -= 1;
            if st.streams == 0 && st.out.as_ref().is_none_or(|o| o.is_closed()) {
                peers.remove(&peer);
            }
        }
    }

    /// Takes one message from the peer's allowance; how long to wait
    /// first when it is spent.
    fn take_token(&self, peer: PeerId) -> Duration {
        let mut peers = self.peers.lock().expect("bitswap peers lock");
        let st = peers.entry(peer).or_default();
        let now = Instant::now();
        st.tokens = (st.tokens + (now - st.refilled).as_secs_f64() * MESSAGES_PER_SEC).min(MESSAGES_PER_SEC * 2.0);
        st.refilled = now;
        st.tokens -= 1.0;
        if st.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.tokens / MESSAGES_PER_SEC)
        }
    }

    fn refund_token(&self, peer: PeerId) {
        let mut peers = self.peers.lock().expect("bitswap peers lock");
        if let Some(st) = peers.get_mut(&peer) {
            st.tokens = (st.tokens + 1.0).min(MESSAGES_PER_SEC * 2.0);
        }
    }

    async fn inbound(&self, peer: PeerId, mut stream: Stream, protocol: StreamProtocol) {
        loop {
            let frame = match tokio::time::timeout(IDLE, self.read_frame(&mut stream)).await {
                Err(_) => break,
                Ok(Err(Stop::Eof)) => break,
                Ok(Err(Stop::Refused(why))) => {
                    self.stats.bitswap_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "bitswap stream closed: {why}");
                    break;
                }
                Ok(Ok(f)) => f,
            };
            // A peer over its rate waits, its streams unread.
            let wait = self.take_token(peer);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            // Blocks are hashed only while this node wants some: then each
            // block's CID is computed from its bytes and handed to the
            // session wanting exactly that CID; the rest are dropped.
            let wanting = self.wants.active();
            let decoded = match wanting {
                true => Message::decode(&frame.0).map(|m| (m, 0)),
                false => Message::decode_wants(&frame.0),
            };
            let (mut msg, mut unasked) = match decoded {
                Ok(m) => m,
                Err(e) => {
                    self.stats.bitswap_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, error = %e, "bitswap message refused; closing the stream");
                    break;
                }
            };
            drop(frame);
            if wanting && (!msg.blocks.is_empty() || !msg.presences.is_empty()) {
                let (delivered, not_wanted) = self
                    .wants
                    .deliver(peer, std::mem::take(&mut msg.blocks), &msg.presences);
                unasked += not_wanted;
                if delivered > 0 {
                    // Answers to this node's wants do not spend the
                    // peer's allowance.
                    self.refund_token(peer);
                }
            }
            self.stats.bitswap_unasked.fetch_add(unasked as u64, Ordering::Relaxed);
            self.answer(peer, &protocol, msg).await;
        }
        let _ = stream.close().await;
    }

    /// One frame, its buffer taken from the read budget.
    async fn read_frame(&self, stream: &mut Stream) -> Result<(Vec<u8>, tokio::sync::OwnedSemaphorePermit), Stop> {
        let mut len = 0u64;
        for i in 0..10 {
            let mut b = [0u8; 1];
            match stream.read(&mut b).await {
                Ok(0) if i == 0 => return Err(Stop::Eof),
                Ok(0) => return Err(Stop::Refused("the stream ended inside a length".into())),
                Ok(_) => {}
                Err(e) => return Err(Stop::Refused(e.to_string())),
            }
            len |= u64::from(b[0] & 0x7f) << (7 * i);
            if b[0] & 0x80 == 0 {
                break;
            }
            if i == 9 {
                return Err(Stop::Refused("a frame length over ten bytes".into()));
            }
        }
        let len = len as usize;
        if len > MAX_MESSAGE {
            return Err(Stop::Refused(format!(
                "a {len}-byte message (the limit is {MAX_MESSAGE})"
            )));
        }
        let permit = self
            .read_budget
            .clone()
            .acquire_many_owned(len.div_ceil(1024).max(1) as u32)
            .await
            .map_err(|_| Stop::Eof)?;
        let mut buf = vec![0u8; len];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| Stop::Refused(format!("reading a message: {e}")))?;
        Ok((buf, permit))
    }

    /// Answers a wantlist: blocks, Have and DontHave, in messages under
    /// the size limit, on this side's stream to the peer.
    async fn answer(&self, peer: PeerId, protocol: &StreamProtocol, msg: Message) {
        let v120 = *protocol == V120;
        let v100 = *protocol == V100;
        let wants: Vec<(Cid, wire::Want)> = msg
            .wants
            .into_iter()
            .filter(|w| !w.cancel)
            .filter_map(|w| Cid::try_from(w.cid.as_slice()).ok().map(|c| (c, w)))
            .collect();
        let mut out = Message::default();
        let mut size = 0usize;
        for batch in wants.chunks(16) {
            let permits = match self.lookups.acquire_many(batch.len() as u32).await {
                Ok(p) => p,
                Err(_) => return,
            };
            let (serve, cids) = (self.serve.clone(), batch.iter().map(|(c, _)| *c).collect::<Vec<_>>());
            let found = match tokio::task::spawn_blocking(move || serve(&peer, None, &cids)).await {
                Ok(f) => f,
                Err(_) => {
                    self.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
                    vec![None; batch.len()]
                }
            };
            drop(permits);
            for ((cid, want), data) in batch.iter().zip(found) {
                let have_only = v120 && want.kind == WantType::Have;
                match data {
                    Some(_) if have_only => {
                        out.presences.push((*cid, Presence::Have));
                        size += 64;
                    }
                    Some(data) => {
                        let cost = wire::block_cost(cid, &data);
                        if size + cost > ANSWER_TARGET && !out.blocks.is_empty() {
                            self.send(peer, protocol, std::mem::take(&mut out), v100).await;
                            size = 0;
                        }
                        self.stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
                        self.stats.bytes_sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                        self.stats.bitswap_blocks_sent.fetch_add(1, Ordering::Relaxed);
                        out.blocks.push((*cid, data));
                        size += cost;
                    }
                    None => {
                        self.stats.bitswap_dont_have.fetch_add(1, Ordering::Relaxed);
                        if v120 && want.send_dont_have {
                            out.presences.push((*cid, Presence::DontHave));
                            size += 64;
                        }
                    }
                }
            }
        }
        if !out.blocks.is_empty() || !out.presences.is_empty() {
            self.send(peer, protocol, out, v100).await;
        }
    }

    /// Queues an answer for the peer's writer (started when needed); waits
    /// while its queue is full.
    async fn send(&self, peer: PeerId, protocol: &StreamProtocol, msg: Message, v100: bool) {
        let frame = wire::frame(&msg.encode(v100));
        let tx = {
            let mut peers = self.peers.lock().expect("bitswap peers lock");
            let st = peers.entry(peer).or_default();
            match &st.out {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => {
                    let (tx, rx) = mpsc::channel(OUT_QUEUE);
                    tokio::spawn(writer(self.control.clone(), peer, rx));
                    st.out = Some(tx.clone());
                    tx
                }
            }
        };
        if tokio::time::timeout(SEND_TIMEOUT, tx.send((protocol.clone(), frame)))
            .await
            .is_err()
        {
            tracing::debug!(%peer, "bitswap answer dropped: the peer does not read");
        }
    }
}

/// Writes a peer's answers on a stream this side opens, kept open while
/// answers follow each other and closed after [`LINGER`] without one (helia
/// resets an inbound bitswap stream idle for 10 s, and a reset stream loses
/// the next answer); the task ends when idle for [`IDLE`].
async fn writer(mut control: libp2p_stream::Control, peer: PeerId, mut rx: mpsc::Receiver<(StreamProtocol, Vec<u8>)>) {
    let mut stream: Option<(StreamProtocol, Stream)> = None;
    loop {
        let wait = if stream.is_some() { LINGER } else { IDLE };
        let (protocol, frame) = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(_) if stream.is_some() => {
                if let Some((_, mut s)) = stream.take() {
                    let _ = s.close().await;
                }
                continue;
            }
            Err(_) => break,
        };
        if stream.as_ref().is_some_and(|(p, _)| *p != protocol) {
            if let Some((_, mut s)) = stream.take() {
                let _ = s.close().await;
            }
        }
        // An answer is written on an open stream, or on a new one; a write
        // that fails on a kept stream is tried once on a new one.
        for attempt in 0..2 {
            if stream.is_none() {
                stream = match tokio::time::timeout(SEND_TIMEOUT, control.open_stream(peer, protocol.clone())).await {
                    Ok(Ok(s)) => Some((protocol.clone(), s)),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "cannot open a bitswap stream to answer");
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "opening a bitswap stream to answer timed out");
                        break;
                    }
                };
            }
            let Some((_, s)) = stream.as_mut() else { break };
            let wrote = tokio::time::timeout(SEND_TIMEOUT, async {
                s.write_all(&frame).await?;
                s.flush().await
            })
            .await;
            if matches!(wrote, Ok(Ok(()))) {
                break;
            }
            stream = None;
            if attempt == 1 {
                tracing::debug!(%peer, "a bitswap answer could not be written");
            }
        }
    }
    if let Some((_, mut s)) = stream {
        let _ = s.close().await;
    }
}
