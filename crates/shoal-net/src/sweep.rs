//! Providing by keyspace region (decision 0021), after kubo's sweep
//! provider.
//!
//! libp2p's Kademlia provides one key per query: a lookup of the key's
//! closest peers (about 20 requests) and an ADD_PROVIDER to each of them,
//! per dataset, per reprovide cycle, and again for every key whenever a
//! peer joins. A daemon holding 100,000 datasets made 100,000 lookups and
//! about 4 million requests an hour. Here the keys are grouped by the
//! region of the keyspace their hash falls in (the top `bits` bits, chosen
//! so a region holds about half a replication set of peers); one lookup
//! per region finds the peers closest to it, each key goes to the
//! [`REPLICATION`] closest of them, and each peer gets its keys in batches
//! of up to [`MAX_KEYS_PER_BATCH`] over `/shoal/provide/1.0.0`. A cycle
//! costs a lookup per region and a message per peer and batch, whatever
//! the number of keys; only the bytes grow with it.
//!
//! ```text
//! request  := u8 naddrs, naddrs × (u16 len, multiaddr bytes),
//!             u32 nkeys, nkeys × (u8 len, key bytes)     (inside a u32-length body)
//! response := u32 records stored
//! ```
//!
//! The receiver stores each key with the sending peer (authenticated by
//! the connection) as provider, in the same bounded store Kademlia's
//! GET_PROVIDERS answers from, so finding a dataset is an ordinary DHT
//! lookup and needs nothing new from the finder.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use libp2p::kad::{KBucketKey, QueryId, RecordKey};
use libp2p::request_response::OutboundRequestId;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use shoal_core::Cid;

use crate::codec::{bad, read_body, write_body};

pub const PROVIDE_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/provide/1.0.0");
/// Peers each key is stored on (Kademlia's k).
pub const REPLICATION: usize = 20;
/// Keys in one batch message (about 600 KB of 36-byte CIDs).
pub const MAX_KEYS_PER_BATCH: usize = 16_384;
/// Addresses of the provider a batch carries.
pub const MAX_ADDRS: usize = 8;
const MAX_ADDR_LEN: usize = 256;
const MAX_KEY_LEN: usize = 80;
/// Largest batch body.
pub const MAX_BATCH_BYTES: usize = 1 + MAX_ADDRS * (2 + MAX_ADDR_LEN) + 4 + MAX_KEYS_PER_BATCH * (1 + MAX_KEY_LEN);
/// The most regions a sweep splits the keyspace into (2^MAX_BITS).
const MAX_BITS: u32 = 12;

/// Keys a provider says it holds, and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvideBatch {
    pub addrs: Vec<Multiaddr>,
    pub keys: Vec<RecordKey>,
}

impl ProvideBatch {
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        if self.keys.len() > MAX_KEYS_PER_BATCH {
            return Err(bad("too many keys in one batch"));
        }
        let addrs: Vec<&Multiaddr> = self
            .addrs
            .iter()
            .filter(|a| a.as_ref().len() <= MAX_ADDR_LEN)
            .take(MAX_ADDRS)
            .collect();
        let mut out = Vec::with_capacity(5 + addrs.len() * 32 + self.keys.len() * 37);
        out.push(addrs.len() as u8);
        for a in addrs {
            out.extend((a.as_ref().len() as u16).to_be_bytes());
            out.extend(a.as_ref());
        }
        out.extend((self.keys.len() as u32).to_be_bytes());
        for k in &self.keys {
            let b = k.as_ref();
            if b.is_empty() || b.len() > MAX_KEY_LEN {
                return Err(bad(format!("key of {} bytes", b.len())));
            }
            out.push(b.len() as u8);
            out.extend(b);
        }
        Ok(out)
    }

    /// Parses a batch, every count and length checked before use.
    pub fn decode(body: &[u8]) -> io::Result<Self> {
        let mut r = Reader(body);
        let naddrs = r.u8()? as usize;
        if naddrs > MAX_ADDRS {
            return Err(bad(format!("{naddrs} addresses exceeds the limit of {MAX_ADDRS}")));
        }
        let mut addrs = Vec::with_capacity(naddrs);
        for _ in 0..naddrs {
            let len = r.u16()? as usize;
            if len > MAX_ADDR_LEN {
                return Err(bad(format!("address of {len} bytes")));
            }
            let a = Multiaddr::try_from(r.take(len)?.to_vec()).map_err(|e| bad(format!("bad address: {e}")))?;
            addrs.push(a);
        }
        let nkeys = r.u32()? as usize;
        if nkeys > MAX_KEYS_PER_BATCH {
            return Err(bad(format!("{nkeys} keys exceeds the limit of {MAX_KEYS_PER_BATCH}")));
        }
        let mut keys = Vec::with_capacity(nkeys);
        for _ in 0..nkeys {
            let len = r.u8()? as usize;
            if len == 0 || len > MAX_KEY_LEN {
                return Err(bad(format!("key of {len} bytes")));
            }
            keys.push(RecordKey::new(&r.take(len)?));
        }
        if !r.0.is_empty() {
            return Err(bad(format!("{} bytes after the batch", r.0.len())));
        }
        Ok(Self { addrs, keys })
    }
}

pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("batch ends early"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> io::Result<u16> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    pub(crate) fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub(crate) fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProvideCodec;

#[async_trait::async_trait]
impl libp2p::request_response::Codec for ProvideCodec {
    type Protocol = StreamProtocol;
    type Request = ProvideBatch;
    type Response = u32;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ProvideBatch> {
        ProvideBatch::decode(&read_body(io, MAX_BATCH_BYTES).await?)
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<u32> {
        let b = read_body(io, 4).await?;
        Ok(u32::from_be_bytes(
            b.try_into().map_err(|_| bad("response is not 4 bytes"))?,
        ))
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: ProvideBatch,
    ) -> io::Result<()> {
        write_body(io, &req.encode()?, MAX_BATCH_BYTES).await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        n: u32,
    ) -> io::Result<()> {
        write_body(io, &n.to_be_bytes(), 4).await
    }
}

/// Region bits for a network where `peers` are known: regions of about
/// half a replication set, so the lookup of any point in a region returns
/// every peer of it and its nearest neighbours.
pub fn region_bits(peers: usize) -> u32 {
    let regions = (2 * peers).div_ceil(REPLICATION).max(1);
    regions.next_power_of_two().trailing_zeros().min(MAX_BITS)
}

/// The region of `key`: the top `bits` bits of its Kademlia hash.
fn region_of(key: &KBucketKey<RecordKey>, bits: u32) -> u32 {
    if bits == 0 {
        return 0;
    }
    let h = key.hashed_bytes();
    let top = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    top >> (32 - bits)
}

/// Keys grouped by region, in region order.
pub fn by_region(keys: impl IntoIterator<Item = RecordKey>, bits: u32) -> BTreeMap<u32, Vec<RecordKey>> {
    let mut out: BTreeMap<u32, Vec<RecordKey>> = BTreeMap::new();
    for k in keys {
        let r = region_of(&KBucketKey::new(k.clone()), bits);
        out.entry(r).or_default().push(k);
    }
    out
}

/// Each key of a region to the [`REPLICATION`] closest of `peers` (those
/// the region's lookup found): the keys each peer is to hold.
pub fn assign(keys: &[RecordKey], peers: &[PeerId]) -> HashMap<PeerId, Vec<RecordKey>> {
    let peer_keys: Vec<(PeerId, KBucketKey<PeerId>)> = peers.iter().map(|p| (*p, KBucketKey::from(*p))).collect();
    let mut out: HashMap<PeerId, Vec<RecordKey>> = HashMap::new();
    let mut dist = Vec::with_capacity(peer_keys.len());
    for k in keys {
        let kk = KBucketKey::new(k.clone());
        dist.clear();
        dist.extend(peer_keys.iter().map(|(p, pk)| (kk.distance(pk), *p)));
        let n = REPLICATION.min(dist.len());
        if n < dist.len() {
            dist.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
        }
        for (_, p) in &dist[..n] {
            out.entry(*p).or_default().push(k.clone());
        }
    }
    out
}

/// When the next sweep runs and what the running one waits for.
pub(crate) struct Sweeper {
    interval: Duration,
    /// Keys provided since the last sweep began.
    pending: HashSet<RecordKey>,
    /// When the pending keys are swept.
    due: Option<Instant>,
    /// The next sweep of every key (the reprovide cycle, or sooner when a
    /// peer joined).
    next_full: Instant,
    last_full: Option<Instant>,
    running: Option<Running>,
}

struct Running {
    lookups: HashMap<QueryId, Vec<RecordKey>>,
    batches: HashSet<OutboundRequestId>,
    keys: usize,
    started: Instant,
}

/// The least time between whole sweeps a joining peer causes, per 1,000
/// keys held (at least 2 s, at most 10 minutes).
const JOIN_GAP_PER_1000: Duration = Duration::from_secs(2);
const JOIN_GAP_MAX: Duration = Duration::from_secs(600);

impl Sweeper {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            pending: HashSet::new(),
            due: None,
            next_full: Instant::now() + interval,
            last_full: None,
            running: None,
        }
    }

    /// When to look again (far off while a sweep runs: its end is an event).
    pub(crate) fn wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(86_400);
        if self.running.is_some() {
            return far;
        }
        self.due.unwrap_or(far).min(self.next_full)
    }

    /// A key provided anew, swept at `at` at the latest.
    pub(crate) fn add(&mut self, key: RecordKey, at: Instant) {
        self.pending.insert(key);
        if self.due.is_none() {
            self.due = Some(at);
        }
    }

    pub(crate) fn forget(&mut self, key: &RecordKey) {
        self.pending.remove(key);
    }

    /// The keys to sweep now, if a sweep is due and none runs: every
    /// provided key at a whole sweep, else the pending ones.
    pub(crate) fn due(&mut self, now: Instant, provided: &HashSet<Cid>) -> Option<Vec<RecordKey>> {
        if self.running.is_some() {
            return None;
        }
        if now >= self.next_full {
            self.next_full = now + self.interval;
            self.last_full = Some(now);
            self.pending.clear();
            self.due = None;
            return Some(provided.iter().map(|c| RecordKey::new(&c.to_bytes())).collect());
        }
        if self.due.is_some_and(|d| now >= d) {
            self.due = None;
            return Some(self.pending.drain().collect());
        }
        None
    }

    /// A peer joined while `keys` are provided: a whole sweep in 2 s, or
    /// once the gap since the last whole sweep has passed.
    pub(crate) fn peer_joined(&mut self, now: Instant, keys: usize) {
        let gap = (JOIN_GAP_PER_1000 * keys.div_ceil(1000).max(1) as u32).min(JOIN_GAP_MAX);
        let soon = now + Duration::from_secs(2);
        let at = self.last_full.map_or(soon, |t| (t + gap).max(soon));
        if at < self.next_full {
            self.next_full = at;
        }
    }

    pub(crate) fn start(&mut self, lookups: HashMap<QueryId, Vec<RecordKey>>, keys: usize) {
        self.running = Some(Running {
            lookups,
            batches: HashSet::new(),
            keys,
            started: Instant::now(),
        });
    }

    /// The keys of a finished region lookup (None: not a sweep's).
    pub(crate) fn lookup_done(&mut self, id: QueryId) -> Option<Vec<RecordKey>> {
        self.running.as_mut()?.lookups.remove(&id)
    }

    pub(crate) fn batch_sent(&mut self, id: OutboundRequestId) {
        if let Some(r) = &mut self.running {
            r.batches.insert(id);
        }
    }

    pub(crate) fn batch_done(&mut self, id: OutboundRequestId) {
        if let Some(r) = &mut self.running {
            r.batches.remove(&id);
        }
    }

    /// The running sweep's key count and duration, once every lookup and
    /// batch has ended.
    pub(crate) fn finish_if_done(&mut self) -> Option<(usize, Duration)> {
        let r = self.running.as_ref()?;
        if !r.lookups.is_empty() || !r.batches.is_empty() {
            return None;
        }
        let r = self.running.take()?;
        Some((r.keys, r.started.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> RecordKey {
        RecordKey::new(&shoal_core::Block::dag_cbor(i.to_be_bytes().to_vec()).cid().to_bytes())
    }

    #[test]
    fn a_batch_round_trips_and_hostile_ones_are_refused() {
        let b = ProvideBatch {
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            keys: (0..100).map(key).collect(),
        };
        assert_eq!(ProvideBatch::decode(&b.encode().unwrap()).unwrap(), b);
        // Counts beyond the bounds are refused before allocating.
        let mut evil = vec![0u8];
        evil.extend(u32::MAX.to_be_bytes());
        assert!(ProvideBatch::decode(&evil).is_err());
        assert!(ProvideBatch::decode(&[200]).is_err());
        // Truncated, trailing bytes, empty key.
        let enc = b.encode().unwrap();
        assert!(ProvideBatch::decode(&enc[..enc.len() - 1]).is_err());
        let mut longer = enc.clone();
        longer.push(0);
        assert!(ProvideBatch::decode(&longer).is_err());
        assert!(ProvideBatch::decode(&[0, 0, 0, 0, 1, 0]).is_err());
        // Too many keys cannot be sent either.
        let big = ProvideBatch {
            addrs: vec![],
            keys: (0..MAX_KEYS_PER_BATCH as u32 + 1).map(key).collect(),
        };
        assert!(big.encode().is_err());
        // The largest batch fits the body bound.
        let full = ProvideBatch {
            addrs: vec![],
            keys: (0..MAX_KEYS_PER_BATCH as u32).map(key).collect(),
        };
        assert!(full.encode().unwrap().len() <= MAX_BATCH_BYTES);
    }

    #[test]
    fn regions_hold_half_a_replication_set_and_keys_go_to_their_closest_peers() {
        assert_eq!(region_bits(0), 0);
        assert_eq!(region_bits(10), 0);
        assert_eq!(region_bits(100), 4);
        assert_eq!(region_bits(1_000_000), MAX_BITS);
        let keys: Vec<RecordKey> = (0..4000).map(key).collect();
        let regions = by_region(keys.clone(), 3);
        assert_eq!(regions.len(), 8);
        assert_eq!(regions.values().map(Vec::len).sum::<usize>(), 4000);
        // Each key goes to exactly its 20 closest peers.
        let peers: Vec<PeerId> = (0..50).map(|_| PeerId::random()).collect();
        let got = assign(&keys[..50], &peers);
        for k in &keys[..50] {
            let kk = KBucketKey::new(k.clone());
            let mut d: Vec<(libp2p::kad::KBucketDistance, PeerId)> =
                peers.iter().map(|p| (kk.distance(&KBucketKey::from(*p)), *p)).collect();
            d.sort();
            for (i, (_, p)) in d.iter().enumerate() {
                let holds = got.get(p).is_some_and(|v| v.contains(k));
                assert_eq!(holds, i < REPLICATION);
            }
        }
        // Fewer peers than the replication: all of them.
        let few = assign(&keys[..10], &peers[..3]);
        assert_eq!(few.len(), 3);
        assert!(few.values().all(|v| v.len() == 10));
    }
}
