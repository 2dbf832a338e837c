//! The write-behind of the block source: verified blocks fetched for
//! readers are handed to one writer task that stores them in batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::{Block, Cid};
use shoal_store::Store;

use super::blocking;

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
pub(super) struct WriteBehind {
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

impl WriteBehind {
    /// Waits (at most `limit`) until every block handed over is stored, or
    /// dropped if storing it failed.
    pub(super) async fn settle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let room = self.room.notified();
                if !self.state.lock().expect("write-behind lock").writing {
                    return;
                }
                room.await;
            }
        })
        .await;
    }

    /// A block fetched and verified but maybe not stored yet.
    pub(super) fn pending(&self, cid: &Cid) -> Option<Block> {
        self.state.lock().expect("write-behind lock").pending.get(cid).cloned()
    }

    /// Queues a verified block (waiting while the queue is full) and
    /// starts the writer if none runs.
    pub(super) async fn push(self: &Arc<Self>, b: Block, store: &Arc<Store>) {
        loop {
            let room = self.room.notified();
            {
                let mut st = self.state.lock().expect("write-behind lock");
                if st.bytes == 0 || st.bytes + b.len() <= WRITE_BEHIND_BYTES {
                    st.bytes += b.len();
                    if let Some(old) = st.pending.insert(*b.cid(), b) {
                        st.bytes -= old.len();
                    }
                    if !st.writing {
                        st.writing = true;
                        tokio::spawn(writer(self.clone(), store.clone()));
                    }
                    return;
                }
            }
            room.await;
        }
    }
}

/// The write-behind's writer: stores what is pending in batches until
/// nothing is, then marks itself gone (under the lock, so a reader that
/// queues a block afterwards starts a new writer).
async fn writer(behind: Arc<WriteBehind>, store: Arc<Store>) {
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
