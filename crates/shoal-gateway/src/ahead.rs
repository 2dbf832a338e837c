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

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, TryStreamExt};
use prometheus_client::metrics::counter::Counter;
use shoal_core::manifest::Content;
use shoal_core::Cid;
use shoal_node::{KeyReader, Node};

/// The bytes of a key read ahead, one piece per block, or why not.
type Loaded = Result<Arc<Vec<Bytes>>, String>;
/// A key being read ahead (or read): every request for it awaits the same.
pub type Slot = Shared<BoxFuture<'static, Loaded>>;

/// A slot nobody claimed for this long is dropped (and counted wasted).
pub const STALE: Duration = Duration::from_secs(10);
/// Keys ahead a dataset starts with.
const START_CREDIT: usize = 2;
/// Most keys ahead of a reader.
pub const MAX_AHEAD: usize = 8;
/// Datasets whose credit is remembered.
const DATASETS: usize = 64;

struct Held {
    slot: Slot,
    bytes: u64,
    since: Instant,
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
    seen: Instant,
}

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
/// Longest a read-ahead waits for the request that started it to have
/// read its own key (see [`Ahead::follow`]'s `gate`).
const GATE_MAX: Duration = Duration::from_millis(500);
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
    Slot(Slot),
    /// Held already, inline or empty.
    Skipped,
    /// Over the budget: no more keys now.
    Full,
}

pub struct Ahead {
    max_bytes: u64,
    state: Mutex<State>,
    /// Requests answered from a key read ahead (on /metrics).
    hits: Counter,
    /// Keys read ahead that nobody asked for before they were dropped.
    wasted: Counter,
}

impl Ahead {
    pub fn new(max_bytes: u64, hits: Counter, wasted: Counter) -> Ahead {
        Ahead {
            max_bytes,
            state: Mutex::new(State::default()),
            hits,
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

    /// The slot of `key` if it was read ahead (taken: a slot serves one
    /// request), and the dataset earns one more key ahead.
    pub fn take(&self, root: Cid, key: &str) -> Option<Slot> {
        if self.max_bytes == 0 {
            return None;
        }
        let mut st = self.state.lock().expect("ahead lock");
        let held = st.slots.remove(&(root, key.to_string()))?;
        st.bytes -= held.bytes;
        if let Some(r) = st.readers.get_mut(&root) {
            r.credit = (r.credit + 1).min(MAX_AHEAD);
        }
        self.hits.inc();
        Some(held.slot)
    }

    /// Starts reading ahead the chunks near `key` (a chunk key just asked
    /// for; `hit` when it was read ahead) that were not asked for lately,
    /// when the dataset is being read in order (this key was read ahead,
    /// is a neighbour of one asked for lately, or a request came in order
    /// within [`IN_ORDER_LATELY`]): as many as the dataset has earned,
    /// within the byte budget. The reads start once `gate` completes (the
    /// request's own key is read; at most [`GATE_MAX`]): a request not read
    /// ahead waits for its own blocks, and on two cores the read-ahead's
    /// blocks verified beside them made it wait for those too (2.5 ms to
    /// its first byte instead of 1 ms).
    pub async fn follow(
        self: &Arc<Self>,
        node: &Node,
        root: Cid,
        key: &str,
        hit: bool,
        blocks_ahead: usize,
        gate: Option<tokio::sync::oneshot::Receiver<()>>,
    ) {
        let near = shoal_core::key::chunk_neighbours(key);
        if self.max_bytes == 0 || near.is_empty() {
            return;
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
            if !in_order {
                return;
            }
            r.credit = r.credit.max(1);
            let near: Vec<String> = near
                .into_iter()
                .filter(|k| !r.recent.iter().any(|(j, at)| j == k && at.elapsed() < JUST_READ))
                .filter(|k| !slots.contains_key(&(root, k.clone())))
                .collect();
            (r.credit, near)
        };
        if want == 0 || near.is_empty() {
            return;
        }
        // The slots are held before this request is answered, so a client
        // that asks for the next key the moment this answer is in finds
        // it (the keys' lookup is normally in the decoded-manifest cache;
        // the reads run on tasks of their own). A lookup that needs more
        // than LOOKUP_WAIT (manifest pages from peers) finishes behind.
        let node = node.clone();
        let mut open = Box::pin(async move { node.datasets().open_existing(root, near, want).await });
        match tokio::time::timeout(LOOKUP_WAIT, &mut open).await {
            Ok(Ok(next)) => self.hold(root, next, blocks_ahead, gate),
            Ok(Err(_)) => {}
            Err(_) => {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Ok(next) = open.await {
                        me.hold(root, next, blocks_ahead, gate);
                    }
                });
            }
        }
    }

    /// Holds slots for `next` and starts their reads: one key after
    /// another, nearest first (the next key is ready soonest rather than
    /// all of them late together), the first once `gate` opens.
    fn hold(
        &self,
        root: Cid,
        next: Vec<KeyReader>,
        blocks_ahead: usize,
        mut gate: Option<tokio::sync::oneshot::Receiver<()>>,
    ) {
        let mut before: Option<Slot> = None;
        for r in next {
            match self.start(root, r, blocks_ahead, before.clone(), gate.take()) {
                Started::Slot(s) => before = Some(s),
                Started::Skipped => {}
                Started::Full => break,
            }
        }
    }

    /// Reads one key ahead, once `after` (the key before it) is read and
    /// `gate` open, unless it is held already, inline, or over the budget.
    /// The slot is held from now, so a request for the key waits for this
    /// read rather than reading it again.
    fn start(
        &self,
        root: Cid,
        r: KeyReader,
        blocks_ahead: usize,
        after: Option<Slot>,
        gate: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Started {
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
        let task = tokio::spawn(async move {
            if let Some(g) = gate {
                let _ = tokio::time::timeout(GATE_MAX, g).await;
            }
            if let Some(a) = after {
                let _ = a.await;
            }
            let pieces: Vec<Bytes> = r
                .ahead()
                .stream(0..size, blocks_ahead)
                .map_err(|e| e.to_string())
                .try_collect()
                .await?;
            Ok(Arc::new(pieces))
        });
        let slot = async move { task.await.unwrap_or_else(|e| Err(format!("read-ahead task: {e}"))) }
            .boxed()
            .shared();
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
                st.bytes -= h.bytes;
                self.wasted.inc();
                if let Some(r) = st.readers.get_mut(&k.0) {
                    r.credit = r.credit.saturating_sub(1);
                }
            }
        }
    }
}

/// The body of `range` from a key read ahead; if the read ahead failed,
/// the key is read again through `reader` (which reports the failure, if
/// it persists, as every read does).
pub fn body(slot: Slot, reader: KeyReader, range: Range<u64>, blocks_ahead: usize) -> crate::Pieces {
    futures::stream::once(slot)
        .flat_map(move |loaded| match loaded {
            Ok(pieces) => futures::stream::iter(
                slices(&pieces, range.clone())
                    .into_iter()
                    .map(Ok::<_, shoal_node::Error>),
            )
            .boxed(),
            Err(_) => reader.stream(range.clone(), blocks_ahead),
        })
        .boxed()
}

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
