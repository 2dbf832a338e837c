//! Read-ahead for readers going through an array's chunks in order.
//!
//! xarray, dask and zarr-python ask for a variable's chunks one request at
//! a time per thread (in C order of the chunk grid, in reverse, or in
//! dask's blocks of neighbouring chunks), and wait for each
//! response before decoding it: every millisecond between the request and
//! its last byte (reading the blocks, verifying them) is a millisecond that
//! thread does nothing. nginx answers from the page cache with `sendfile`;
//! we verify every block, which costs more. So when a chunk key is asked
//! for, the chunks near it in its grid (that [`Datasets::open_existing`]
//! finds) are read and verified now, while the client decodes, and their
//! requests are answered from memory.
//!
//! Bounds: bytes held or under way (`[gateway] readahead`; keys larger
//! than a quarter of it are never read ahead), slots unclaimed for
//! [`STALE`] are dropped, and only a dataset read in order reads ahead (the
//! key asked for was read ahead, or is a grid neighbour of a key asked for
//! lately), each such request as many nearby keys as the dataset has
//! earned: [`START_CREDIT`] at first, one more per claimed slot (up to
//! [`MAX_AHEAD`]), one less per slot dropped unclaimed (never below one
//! while it is read in order).
//!
//! [`Datasets::open_existing`]: shoal_node::Datasets::open_existing

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use prometheus_client::metrics::counter::Counter;
use shoal_core::manifest::Content;
use shoal_core::Cid;
use shoal_node::{KeyReader, Node};

use crate::hot::Hot;

/// The bytes of a key read ahead, one piece per block, or why not.
type Loaded = Result<Arc<Vec<Bytes>>, String>;

/// A key being read ahead. Nobody waits on one: a request that finds it
/// read is answered from it, one that finds it under way reads the key
/// itself (see [`Claim::Late`]). So the read wakes nobody when it ends.
pub struct Slot {
    state: Mutex<SlotState>,
}

enum SlotState {
    Pending,
    /// Claimed (or dropped) before it was read: not read any more.
    Gone,
    Read(Loaded),
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().expect("slot lock")
    }

    /// Whether somebody may still claim it (its read is worth doing).
    fn wanted(&self) -> bool {
        matches!(*self.lock(), SlotState::Pending)
    }

    fn finish(&self, got: Loaded) {
        let mut s = self.lock();
        if matches!(*s, SlotState::Pending) {
            *s = SlotState::Read(got);
        }
    }

    /// What was read, if it was; either way nobody reads it after this.
    fn claim(&self) -> Option<Loaded> {
        match std::mem::replace(&mut *self.lock(), SlotState::Gone) {
            SlotState::Read(got) => Some(got),
            _ => None,
        }
    }
}

/// A slot nobody claimed for this long is dropped (and counted wasted).
pub const STALE: Duration = Duration::from_secs(10);
/// Keys ahead a dataset starts with.
const START_CREDIT: usize = 2;
/// Most keys ahead of a reader.
pub const MAX_AHEAD: usize = 8;
/// Datasets whose credit is remembered.
const DATASETS: usize = 64;

struct Held {
    slot: Arc<Slot>,
    bytes: u64,
    since: Instant,
}

/// What [`Ahead::take`] found for a key.
pub enum Claim {
    /// Read ahead: the request is answered from memory.
    Ready(Arc<Vec<Bytes>>),
    /// Read ahead but not read yet (or the read failed): the request reads
    /// the key itself, at its own priority, rather than wait on threads
    /// that yield to every other process (on a machine whose cores the
    /// client keeps busy they lag by milliseconds). The read ahead is
    /// dropped.
    Late,
    /// Not read ahead.
    Miss,
}

/// What is known of one dataset's reader(s).
struct Reading {
    /// Keys it may have read ahead and unclaimed at once.
    credit: usize,
    /// When a request last came in order by itself (see
    /// [`IN_ORDER_LATELY`]).
    ordered: Option<Instant>,
    /// The last keys asked for (is the next request their successor?).
    recent: std::collections::VecDeque<(String, Instant)>,
    /// The chunk keys asked for in this pass over the dataset (hashed):
    /// not read ahead again. dask reads a dataset's chunks in blocks of
    /// neighbours, and the neighbours of a block include chunks of blocks
    /// read seconds ago; read again, such a key was never asked for and
    /// held its share of the budget until [`STALE`]. (A cold xarray read of
    /// bench/gateway.sh's cf dataset read 33 of its 400 chunks ahead a
    /// second time this way, and with the budget held, up to 95 chunks
    /// asked for next had not been read ahead.) A key asked for again
    /// starts a new pass (a reader going over the dataset again, or a
    /// second reader), as does the key past [`PASS_KEYS`].
    pass: HashSet<u64>,
    seen: Instant,
}

impl Reading {
    /// Notes `key` as asked for in this pass.
    fn asked(&mut self, key: &str) {
        let h = pass_hash(key);
        if !self.pass.insert(h) || self.pass.len() > PASS_KEYS {
            self.pass.clear();
            self.pass.insert(h);
        }
    }

    fn asked_in_this_pass(&self, key: &str) -> bool {
        self.pass.contains(&pass_hash(key))
    }
}

/// A key as remembered in a pass (two keys hashing alike: the second is
/// not read ahead; it is read when asked for).
fn pass_hash(key: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key)
}

/// Chunk keys remembered per dataset per pass (8 bytes each, so at most
/// 64 KiB or so a dataset, for [`DATASETS`] datasets).
const PASS_KEYS: usize = 4096;

/// Keys asked for lately, remembered per dataset: a key near one of them
/// is being read in order.
const RECENT: usize = 64;
/// Keys asked for this recently are not read ahead again (the reader has
/// them; a new pass over the dataset comes later than this).
const JUST_READ: Duration = Duration::from_secs(1);
/// A dataset read in order this recently has the neighbours of any chunk
/// asked for read ahead, not only of chunks next to recent ones: dask
/// goes through a reduction's chunks in blocks of neighbours and jumps
/// from one block to the next, and the first chunk of each block is
/// otherwise a miss followed by another (its neighbour, asked before any
/// read-ahead started).
const IN_ORDER_LATELY: Duration = Duration::from_secs(1);
/// Longest a request waits for the lookup of the keys it reads ahead.
const LOOKUP_WAIT: Duration = Duration::from_millis(20);

#[derive(Default)]
struct State {
    slots: HashMap<(Cid, String), Held>,
    bytes: u64,
    readers: HashMap<Cid, Reading>,
}

/// What [`Ahead::start`] did with a key.
enum Started {
    Slot(Arc<Slot>),
    /// Held already, inline or empty.
    Skipped,
    /// Over the budget: no more keys now.
    Full,
}

pub struct Ahead {
    max_bytes: u64,
    /// Keys kept whole in memory are answered from there: not read ahead.
    hot: Arc<Hot>,
    state: Mutex<State>,
    /// Requests answered from a key read ahead (on /metrics).
    hits: Counter,
    /// Requests for a key read ahead that came before its read ended.
    late: Counter,
    /// Keys read ahead that nobody asked for before they were dropped.
    wasted: Counter,
}

impl Ahead {
    pub fn new(max_bytes: u64, hot: Arc<Hot>, hits: Counter, late: Counter, wasted: Counter) -> Ahead {
        Ahead {
            max_bytes,
            hot,
            state: Mutex::new(State::default()),
            hits,
            late,
            wasted,
        }
    }

    /// Drops unclaimed slots every half [`STALE`] while the gateway lives
    /// (not only when the next chunk is asked for), so a reader that stops
    /// leaves nothing held.
    pub fn sweep(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(STALE / 2).await;
                let Some(me) = me.upgrade() else { break };
                let mut st = me.state.lock().expect("ahead lock");
                me.drop_stale(&mut st);
            }
        });
    }

    /// Whether `key` was read ahead (the slot is taken either way: a slot
    /// serves one request), and the dataset earns one more key ahead.
    pub fn take(&self, root: Cid, key: &str) -> Claim {
        if self.max_bytes == 0 {
            return Claim::Miss;
        }
        let mut st = self.state.lock().expect("ahead lock");
        let Some(held) = st.slots.remove(&(root, key.to_string())) else {
            tracing::trace!(%root, key, "read-ahead miss");
            return Claim::Miss;
        };
        st.bytes -= held.bytes;
        if let Some(r) = st.readers.get_mut(&root) {
            r.credit = (r.credit + 1).min(MAX_AHEAD);
        }
        match held.slot.claim() {
            Some(Ok(pieces)) => {
                self.hits.inc();
                Claim::Ready(pieces)
            }
            Some(Err(_)) => Claim::Late,
            None => {
                self.late.inc();
                Claim::Late
            }
        }
    }

    /// Reads ahead the chunks near `key` (a chunk key just asked for;
    /// `hit` when it was read ahead) that were not asked for in the last
    /// [`JUST_READ`] or earlier in this pass over the dataset, when
    /// the dataset is being read in order (this key was read ahead, is a
    /// neighbour of one asked for lately, or a request came in order within
    /// [`IN_ORDER_LATELY`]): as many as the dataset has earned, within the
    /// byte budget. Their slots are held before this returns; their reads
    /// start when the returned [`Chain`] is dropped. A request not read
    /// ahead drops it once its own key is read: it waits for its own
    /// blocks, and on two cores the read-ahead's blocks verified beside
    /// them made it wait for those too (2.5 ms to its first byte instead
    /// of 1 ms).
    pub async fn follow(self: &Arc<Self>, node: &Node, root: Cid, key: &str, hit: bool, blocks_ahead: usize) -> Chain {
        let near = shoal_core::key::chunk_neighbours(key);
        if self.max_bytes == 0 || near.is_empty() {
            return Chain::default();
        }
        let (want, near) = {
            let mut guard = self.state.lock().expect("ahead lock");
            let st = &mut *guard;
            self.drop_stale(st);
            if st.readers.len() >= DATASETS && !st.readers.contains_key(&root) {
                // Forget the dataset read longest ago.
                if let Some(old) = st.readers.iter().min_by_key(|(_, r)| r.seen).map(|(c, _)| *c) {
                    st.readers.remove(&old);
                }
            }
            let slots = &st.slots;
            let r = st.readers.entry(root).or_insert_with(|| Reading {
                credit: START_CREDIT,
                ordered: None,
                recent: Default::default(),
                pass: HashSet::new(),
                seen: Instant::now(),
            });
            // Only a request in order by itself renews `ordered`: a reader
            // jumping about stays "lately in order" for a second at most.
            let follows = hit || r.recent.iter().any(|(k, _)| near.contains(k));
            let in_order = follows || r.ordered.is_some_and(|t| t.elapsed() < IN_ORDER_LATELY);
            if follows {
                r.ordered = Some(Instant::now());
            }
            r.seen = Instant::now();
            if r.recent.len() >= RECENT {
                r.recent.pop_front();
            }
            r.recent.push_back((key.to_string(), Instant::now()));
            r.asked(key);
            if !in_order {
                tracing::trace!(%root, key, "not read in order: no read-ahead");
                return Chain::default();
            }
            r.credit = r.credit.max(1);
            let near: Vec<String> = near
                .into_iter()
                .filter(|k| !r.recent.iter().any(|(j, at)| j == k && at.elapsed() < JUST_READ))
                .filter(|k| !r.asked_in_this_pass(k))
                .filter(|k| !slots.contains_key(&(root, k.clone())))
                .filter(|k| !self.hot.contains(root, k))
                .collect();
            (r.credit, near)
        };
        tracing::trace!(%root, key, want, ?near, "read-ahead candidates");
        if want == 0 || near.is_empty() {
            return Chain::default();
        }
        // The slots are held before this request is answered, so a client
        // that asks for the next key the moment this answer is in finds
        // it (the keys' lookup is normally in the decoded-manifest cache).
        // A lookup that needs more than LOOKUP_WAIT (manifest pages from
        // peers) finishes behind, and its reads start when it does.
        let node = node.clone();
        let mut open = Box::pin(async move { node.datasets().open_existing(root, near, want).await });
        match tokio::time::timeout(LOOKUP_WAIT, &mut open).await {
            Ok(Ok(next)) => self.hold(root, next, blocks_ahead),
            Ok(Err(_)) => Chain::default(),
            Err(_) => {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Ok(next) = open.await {
                        drop(me.hold(root, next, blocks_ahead));
                    }
                });
                Chain::default()
            }
        }
    }

    /// Holds slots for `next` (until the budget is spent), to be read one
    /// after another, nearest first (the next key is ready soonest rather
    /// than all of them late together).
    fn hold(&self, root: Cid, next: Vec<KeyReader>, blocks_ahead: usize) -> Chain {
        let mut keys = Vec::new();
        for r in next {
            match self.start(root, &r) {
                Started::Slot(slot) => keys.push((slot, r)),
                Started::Skipped => {}
                Started::Full => break,
            }
        }
        tracing::trace!(%root, held = ?keys.iter().map(|(_, r)| &r.entry().key).collect::<Vec<_>>(), "read ahead");
        Chain(Keys {
            keys,
            blocks_ahead,
            rt: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Holds a slot for one key unless it is held already, inline, or over
    /// the budget. From now a request for the key claims the slot rather
    /// than reading the key on its own.
    fn start(&self, root: Cid, r: &KeyReader) -> Started {
        let size = r.size();
        if matches!(r.entry().content, Content::Inline(_)) || size == 0 {
            return Started::Skipped;
        }
        if size > self.max_bytes / 4 {
            return Started::Full;
        }
        let mut st = self.state.lock().expect("ahead lock");
        let k = (root, r.entry().key.clone());
        if st.slots.contains_key(&k) {
            return Started::Skipped;
        }
        if st.bytes + size > self.max_bytes {
            return Started::Full;
        }
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Pending),
        });
        st.bytes += size;
        st.slots.insert(
            k,
            Held {
                slot: slot.clone(),
                bytes: size,
                since: Instant::now(),
            },
        );
        Started::Slot(slot)
    }

    fn drop_stale(&self, st: &mut State) {
        let now = Instant::now();
        let stale: Vec<(Cid, String)> = st
            .slots
            .iter()
            .filter(|(_, h)| now.duration_since(h.since) > STALE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(h) = st.slots.remove(&k) {
                h.slot.claim();
                st.bytes -= h.bytes;
                self.wasted.inc();
                if let Some(r) = st.readers.get_mut(&k.0) {
                    r.credit = r.credit.saturating_sub(1);
                }
            }
        }
    }
}

/// Keys whose slots are held, read when this is dropped: one after another
/// on the low-priority read-ahead threads ([`speculative`]), each from the
/// local store and verified there, skipping keys claimed meanwhile. A key
/// not all held here (fetched from peers) is read, with the rest of the
/// chain, through the async block source. No task waits on the reads.
///
/// [`speculative`]: shoal_net::fetch::speculative
#[derive(Default)]
pub struct Chain(Keys);

/// A chain's keys with what reading them needs. Unlike [`Chain`], dropping
/// it reads nothing: a job dropped unrun (a runtime shutting down) leaves
/// its slots to expire instead of handing them on again.
#[derive(Default)]
struct Keys {
    keys: Vec<(Arc<Slot>, KeyReader)>,
    blocks_ahead: usize,
    rt: Option<tokio::runtime::Handle>,
}

impl Keys {
    /// Reads the keys on the calling thread, as far as the local store
    /// holds them; from the first it does not, the rest goes to the async
    /// block source.
    fn read(self) {
        let mut keys = self.keys.into_iter();
        for (slot, r) in keys.by_ref() {
            if !slot.wanted() {
                continue;
            }
            match r.read_local() {
                Some(got) => slot.finish(got.map(Arc::new).map_err(|e| e.to_string())),
                None => {
                    let rest: Vec<_> = std::iter::once((slot, r)).chain(keys).collect();
                    let Some(rt) = self.rt else { return };
                    rt.spawn(fetch(rest, self.blocks_ahead));
                    return;
                }
            }
        }
    }
}

/// Reads `keys` through the block source (fetching from peers).
async fn fetch(keys: Vec<(Arc<Slot>, KeyReader)>, blocks_ahead: usize) {
    for (slot, r) in keys {
        if !slot.wanted() {
            continue;
        }
        let size = r.size();
        let got: Result<Vec<Bytes>, _> = r.ahead().stream(0..size, blocks_ahead).try_collect().await;
        slot.finish(got.map(Arc::new).map_err(|e| e.to_string()));
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let keys = std::mem::take(&mut self.0);
        if !keys.keys.is_empty() {
            shoal_node::run_ahead(move || keys.read());
        }
    }
}

/// The body of `range` from the pieces of a key read ahead, handed to
/// hyper at most [`WRITE`] bytes at a time (the client reads one while the
/// next is copied), then `chain` started (see [`then_start`]).
pub fn body(pieces: Arc<Vec<Bytes>>, range: Range<u64>, chain: Chain) -> crate::Pieces {
    let parts: Vec<Bytes> = slices(&pieces, range)
        .into_iter()
        .flat_map(|p| {
            (0..p.len())
                .step_by(WRITE)
                .map(move |at| p.slice(at..(at + WRITE).min(p.len())))
        })
        .collect();
    then_start(
        futures::stream::iter(parts.into_iter().map(Ok::<_, shoal_node::Error>)).boxed(),
        chain,
    )
}

/// `body`, then `chain` started once its last piece is taken: the reads
/// ahead do not take the cores from this response's own copy into the
/// socket and the client's decoding of it. (A hit's head once went out
/// alone, with the chain started right after it: one curl saw its first
/// byte 30-60 us sooner, but xarray reads were 1.5-3% slower; decision
/// 0024.)
pub fn then_start(body: crate::Pieces, chain: Chain) -> crate::Pieces {
    body.chain(futures::stream::once(async move { drop(chain) }).filter_map(|()| async { None }))
        .boxed()
}

/// Most bytes of a body read ahead handed to hyper at once.
const WRITE: usize = 256 << 10;

/// The parts of `pieces` (consecutive, from offset 0) inside `range`.
fn slices(pieces: &[Bytes], range: Range<u64>) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for p in pieces {
        let (lo, hi) = (at, at + p.len() as u64);
        at = hi;
        if hi <= range.start || lo >= range.end || range.start >= range.end {
            continue;
        }
        let from = range.start.saturating_sub(lo) as usize;
        let to = (range.end.min(hi) - lo) as usize;
        out.push(p.slice(from..to));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_claimed_before_it_is_read_is_not_read_and_one_read_is_served_once() {
        let slot = Slot {
            state: Mutex::new(SlotState::Pending),
        };
        assert!(slot.wanted());
        assert!(slot.claim().is_none(), "nothing read yet");
        assert!(!slot.wanted(), "a claimed slot is not read any more");
        slot.finish(Ok(Arc::new(vec![Bytes::from_static(b"late")])));
        assert!(slot.claim().is_none(), "a read ending after the claim is dropped");

        let slot = Slot {
            state: Mutex::new(SlotState::Pending),
        };
        slot.finish(Ok(Arc::new(vec![Bytes::from_static(b"abc")])));
        let got = slot.claim().expect("read").expect("ok");
        assert_eq!(got[0], "abc");
        assert!(slot.claim().is_none(), "a slot serves one request");
    }

    #[test]
    fn keys_asked_in_this_pass_are_not_read_ahead_until_one_is_asked_again() {
        let mut r = Reading {
            credit: START_CREDIT,
            ordered: None,
            recent: Default::default(),
            pass: HashSet::new(),
            seen: Instant::now(),
        };
        r.asked("sst/15.3.3");
        r.asked("sst/14.3.3");
        assert!(r.asked_in_this_pass("sst/15.3.3") && r.asked_in_this_pass("sst/14.3.3"));
        assert!(!r.asked_in_this_pass("sst/16.3.3"), "a key not asked for is read ahead");
        // Asked again: the reader goes over the dataset again, and every
        // key but this one is worth reading ahead once more.
        r.asked("sst/15.3.3");
        assert!(r.asked_in_this_pass("sst/15.3.3"));
        assert!(!r.asked_in_this_pass("sst/14.3.3"));
        // Bounded: past PASS_KEYS keys the pass starts over.
        for i in 0..PASS_KEYS {
            r.asked(&format!("sst/{i}.0.0"));
        }
        assert!(r.pass.len() <= PASS_KEYS);
        assert!(!r.asked_in_this_pass("sst/15.3.3"));
        assert!(r.asked_in_this_pass(&format!("sst/{}.0.0", PASS_KEYS - 1)));
    }

    #[tokio::test]
    async fn a_body_read_ahead_goes_out_in_bounded_pieces() {
        let big = Bytes::from((0..WRITE * 2 + 100).map(|i| i as u8).collect::<Vec<u8>>());
        let pieces = Arc::new(vec![big.clone(), Bytes::from_static(b"tail")]);
        let size = big.len() as u64 + 4;
        for range in [0..size, 10..size - 2, WRITE as u64 - 1..WRITE as u64 + 1] {
            let got: Vec<Bytes> = body(pieces.clone(), range.clone(), Chain::default())
                .try_collect()
                .await
                .unwrap();
            assert!(got.iter().all(|p| p.len() <= WRITE));
            let all = [big.clone(), Bytes::from_static(b"tail")].concat();
            assert_eq!(got.concat(), all[range.start as usize..range.end as usize]);
        }
    }

    #[test]
    fn a_range_takes_the_parts_of_the_pieces_inside_it() {
        let pieces = [
            Bytes::from_static(b"abcd"),
            Bytes::from_static(b"efgh"),
            Bytes::from_static(b"ij"),
        ];
        let got = |r: Range<u64>| slices(&pieces, r).concat();
        assert_eq!(got(0..10), b"abcdefghij");
        assert_eq!(got(3..9), b"defghi");
        assert_eq!(got(4..8), b"efgh");
        assert_eq!(got(9..10), b"j");
        assert!(slices(&pieces, 5..5).is_empty());
    }
}
