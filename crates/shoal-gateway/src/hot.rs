//! Keys served lately, kept in memory as the verified pieces they were
//! served from (`[gateway] hot_cache` bytes, least recently used out
//! first), so a notebook that reads a dataset again, or many that read the
//! same one, are answered without reading the store or hashing the blocks
//! again. xpublish keeps decoded chunks in memory the same way (cachey);
//! nginx leans on the page cache, which we cannot serve from without
//! verifying each block again (DESIGN: every block is verified before it
//! is served; decision 0025).
//!
//! Only whole keys are kept (a ranged request reads what it asks for), and
//! none larger than an eighth of the budget. Bytes are counted by length:
//! a block read from the store sits in a buffer of its size class, at most
//! an eighth larger; one from a peer in a buffer of its own. The key is
//! the dataset root and the Zarr key: both name immutable bytes, so an
//! entry never goes stale; a dataset removed by GC is no longer found by
//! the lookup that comes before the cache, and its entries age out.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shoal_core::Cid;

type Key = (Cid, String);

struct Entry {
    pieces: Arc<Vec<Bytes>>,
    bytes: u64,
    used: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    /// Entries by when they were last used (a tick), oldest first.
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
}

pub struct Hot {
    max_bytes: u64,
    state: Mutex<State>,
    /// Requests answered from the cache, and bytes kept (on /metrics).
    hits: Counter,
    held: Gauge,
}

impl Hot {
    pub fn new(max_bytes: u64, hits: Counter, held: Gauge) -> Hot {
        Hot {
            max_bytes,
            state: Mutex::new(State::default()),
            hits,
            held,
        }
    }

    /// Whether a whole key of `bytes` may be kept: not empty, and at most
    /// an eighth of the budget.
    fn admits(&self, bytes: u64) -> bool {
        bytes > 0 && bytes <= self.max_bytes / 8
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("hot cache lock")
    }

    /// The pieces of `key` if kept (now the most recently used).
    pub fn get(&self, root: Cid, key: &str) -> Option<Arc<Vec<Bytes>>> {
        if self.max_bytes == 0 {
            return None;
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        st.tick += 1;
        let tick = st.tick;
        let e = st.entries.get_mut(&(root, key.to_string()))?;
        let k = st.order.remove(&e.used).expect("every entry is in the order");
        e.used = tick;
        st.order.insert(tick, k);
        self.hits.inc();
        Some(e.pieces.clone())
    }

    /// Whether `key` is kept (without using it).
    pub fn contains(&self, root: Cid, key: &str) -> bool {
        self.max_bytes > 0 && self.lock().entries.contains_key(&(root, key.to_string()))
    }

    /// Keeps the pieces of a whole key (verified: read from the store or
    /// from peers through the block source), dropping the least recently
    /// used keys to make room. A key larger than an eighth of the budget is
    /// not kept.
    pub fn put(&self, root: Cid, key: &str, pieces: Arc<Vec<Bytes>>) {
        let bytes: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        if !self.admits(bytes) {
            return;
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        let k = (root, key.to_string());
        if st.entries.contains_key(&k) {
            return;
        }
        while st.bytes + bytes > self.max_bytes {
            let Some((_, old)) = st.order.pop_first() else { break };
            if let Some(e) = st.entries.remove(&old) {
                st.bytes -= e.bytes;
            }
        }
        st.tick += 1;
        let used = st.tick;
        st.order.insert(used, k.clone());
        st.entries.insert(k, Entry { pieces, bytes, used });
        st.bytes += bytes;
        self.held.set(st.bytes as i64);
    }

    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// `read`, the whole of a key (`size` bytes), kept in `hot` once its last
/// piece has gone by (a response cut short keeps nothing).
pub fn keep(read: crate::Pieces, hot: Arc<Hot>, root: Cid, key: String, size: u64) -> crate::Pieces {
    if !hot.admits(size) {
        return read;
    }
    let mut got = Vec::new();
    let mut seen = 0u64;
    read.map(move |piece| {
        if let Ok(p) = &piece {
            got.push(p.clone());
            seen += p.len() as u64;
            if seen == size {
                hot.put(root, &key, Arc::new(std::mem::take(&mut got)));
            }
        }
        piece
    })
    .boxed()
}

/// The default budget: a gigabyte, or an eighth of the machine's memory
/// when that is less (read from `/proc/meminfo`; a gigabyte where it
/// cannot be read).
pub fn auto_bytes() -> u64 {
    const GIB: u64 = 1 << 30;
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    total.map_or(GIB, |t| (t / 8).min(GIB))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(n: usize) -> Arc<Vec<Bytes>> {
        Arc::new(vec![Bytes::from(vec![7u8; n])])
    }

    #[test]
    fn the_least_recently_used_key_leaves_first_and_the_budget_holds() {
        let root = *shoal_core::Block::raw(Bytes::from_static(b"root")).cid();
        let hot = Hot::new(800, Counter::default(), Gauge::default());
        hot.put(root, "a", pieces(100));
        hot.put(root, "b", pieces(100));
        hot.put(root, "c", pieces(100));
        assert_eq!(hot.bytes(), 300);
        // Using `a` makes `b` the oldest.
        assert!(hot.get(root, "a").is_some());
        for k in ["d", "e", "f", "g", "h", "i"] {
            hot.put(root, k, pieces(100));
        }
        assert_eq!(hot.bytes(), 800);
        assert_eq!(hot.held.get(), 800);
        assert!(!hot.contains(root, "b"), "the least recently used key left");
        assert!(hot.contains(root, "a") && hot.contains(root, "c"));
        let got = hot.get(root, "a").expect("kept");
        assert_eq!(got[0].len(), 100);
        assert_eq!(hot.hits.get(), 2);
        // Larger than an eighth of the budget: not kept, nothing dropped.
        hot.put(root, "big", pieces(101));
        assert!(!hot.contains(root, "big"));
        assert_eq!(hot.bytes(), 800);
        // Another dataset's key of the same name is another entry.
        let other = *shoal_core::Block::raw(Bytes::from_static(b"other")).cid();
        assert!(hot.get(other, "a").is_none());
    }

    #[tokio::test]
    async fn a_body_read_whole_is_kept_and_one_cut_short_is_not() {
        use futures::TryStreamExt;
        let root = *shoal_core::Block::raw(Bytes::from_static(b"root")).cid();
        let hot = Arc::new(Hot::new(1 << 20, Counter::default(), Gauge::default()));
        let parts = || futures::stream::iter([Ok(Bytes::from_static(b"abc")), Ok(Bytes::from_static(b"de"))]).boxed();
        let got: Vec<Bytes> = keep(parts(), hot.clone(), root, "k".into(), 5)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), b"abcde", "the body goes by unchanged");
        assert_eq!(hot.get(root, "k").expect("kept").concat(), b"abcde");
        // A body that fails (or the client leaves) part-way keeps nothing.
        let failing = futures::stream::iter([
            Ok(Bytes::from_static(b"abc")),
            Err(shoal_node::Error::NotFound("gone".into())),
        ])
        .boxed();
        let _ = keep(failing, hot.clone(), root, "cut".into(), 5)
            .try_collect::<Vec<Bytes>>()
            .await;
        let mut first = keep(parts(), hot.clone(), root, "left".into(), 5);
        assert!(first.next().await.is_some());
        drop(first);
        assert!(!hot.contains(root, "cut") && !hot.contains(root, "left"));
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let root = *shoal_core::Block::raw(Bytes::from_static(b"root")).cid();
        let hot = Hot::new(0, Counter::default(), Gauge::default());
        hot.put(root, "a", pieces(1));
        assert!(hot.get(root, "a").is_none());
        assert_eq!(hot.bytes(), 0);
    }

    #[test]
    fn the_default_budget_is_at_most_a_gigabyte() {
        let b = auto_bytes();
        assert!(b > 0 && b <= 1 << 30);
    }
}
