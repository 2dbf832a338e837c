//! Scrub: every indexed block read back and verified against its CID, a
//! slice at a time, with the position kept in the index so a pass resumes
//! where it stopped after a restart. The node paces the slices (a rate
//! budget, paused while busy) and repairs what they find.

use redb::TableDefinition;
use shoal_core::Cid;

use crate::error::Result;
use crate::index::{cid_from_key, Loc, BLOCKS, META};
use crate::pin::now_secs;
use crate::store::Store;

/// The scrub's position: the key of the last block verified this pass.
pub(crate) const SCRUB: TableDefinition<&str, &[u8]> = TableDefinition::new("scrub");

/// Where the scrub is and what it has found, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScrubState {
    /// Passes completed since the store was made.
    pub passes: u64,
    /// Unix seconds the current pass started (0: none started yet).
    pub pass_started: u64,
    /// Unix seconds the last full pass ended (0: none yet).
    pub last_pass_done: u64,
    /// Blocks and bytes verified in the current pass.
    pub pass_blocks: u64,
    pub pass_bytes: u64,
    /// Corrupt blocks found, over all passes.
    pub corrupt_total: u64,
    /// True while a pass is under way (a position is kept).
    pub in_pass: bool,
}

/// What one [`Store::scrub_step`] did.
#[derive(Debug, Clone, Default)]
pub struct ScrubStep {
    pub blocks: u64,
    pub bytes: u64,
    /// Blocks whose stored copy failed verification: their index entries
    /// are dropped (they read as missing, to be fetched again).
    pub corrupt: Vec<Cid>,
    /// This step reached the end of the index: the pass is complete.
    pub pass_done: bool,
}

const KEYS: [&str; 6] = [
    "scrub_passes",
    "scrub_pass_started",
    "scrub_last_done",
    "scrub_pass_blocks",
    "scrub_pass_bytes",
    "scrub_corrupt_total",
];

impl Store {
    /// The scrub's kept state.
    pub fn scrub_state(&self) -> Result<ScrubState> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let mut v = [0u64; 6];
        for (i, k) in KEYS.iter().enumerate() {
            v[i] = meta.get(*k)?.map(|x| x.value()).unwrap_or(0);
        }
        let in_pass = match txn.open_table(SCRUB) {
            Ok(t) => t.get("cursor")?.is_some(),
            Err(redb::TableError::TableDoesNotExist(_)) => false,
            Err(e) => return Err(e.into()),
        };
        Ok(ScrubState {
            passes: v[0],
            pass_started: v[1],
            last_pass_done: v[2],
            pass_blocks: v[3],
            pass_bytes: v[4],
            corrupt_total: v[5],
            in_pass,
        })
    }

    /// Verifies the next blocks of the pass (starting one if none is under
    /// way) until `max_bytes` have been read; drops the entries of those
    /// that fail and keeps the position. Blocks are read in index order
    /// (CID order, spread over the segments), each slice sorted by place
    /// on disk.
    pub fn scrub_step(&self, max_bytes: u64) -> Result<ScrubStep> {
        let mut step = ScrubStep::default();
        let mut state = self.scrub_state()?;
        let cursor: Option<Vec<u8>> = {
            let txn = self.db.begin_read()?;
            match txn.open_table(SCRUB) {
                Ok(t) => t.get("cursor")?.map(|v| v.value().to_vec()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        if cursor.is_none() {
            state.pass_started = now_secs();
            state.pass_blocks = 0;
            state.pass_bytes = 0;
        }
        // The slice: entries after the cursor, up to the byte budget.
        let mut slice: Vec<(Vec<u8>, Loc)> = Vec::new();
        let mut end_reached = true;
        {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(BLOCKS)?;
            let iter = match &cursor {
                Some(c) => t.range::<&[u8]>((std::ops::Bound::Excluded(c.as_slice()), std::ops::Bound::Unbounded))?,
                None => t.range::<&[u8]>(..)?,
            };
            let mut bytes = 0;
            for row in iter {
                if bytes >= max_bytes.max(1) {
                    end_reached = false;
                    break;
                }
                let (k, v) = row?;
                let loc = Loc::from_tuple(v.value());
                bytes += loc.len;
                slice.push((k.value().to_vec(), loc));
            }
        }
        let last_key = slice.last().map(|s| s.0.clone());
        let mut by_place: Vec<&(Vec<u8>, Loc)> = slice.iter().collect();
        by_place.sort_by_key(|e| (e.1.segment, e.1.offset));
        for (key, loc) in by_place {
            let cid = cid_from_key(key)?;
            step.blocks += 1;
            step.bytes += loc.len;
            if self.read_verified(&cid, loc).is_err() && self.drop_if_corrupt(&cid)? {
                step.corrupt.push(cid);
            }
        }
        state.pass_blocks += step.blocks;
        state.pass_bytes += step.bytes;
        state.corrupt_total += step.corrupt.len() as u64;
        step.pass_done = end_reached;
        if end_reached {
            state.passes += 1;
            state.last_pass_done = now_secs();
        }
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let v = [
                state.passes,
                state.pass_started,
                state.last_pass_done,
                state.pass_blocks,
                state.pass_bytes,
                state.corrupt_total,
            ];
            for (k, x) in KEYS.iter().zip(v) {
                meta.insert(*k, x)?;
            }
            let mut t = txn.open_table(SCRUB)?;
            match (end_reached, last_key) {
                (false, Some(k)) => t.insert("cursor", k.as_slice()).map(drop)?,
                _ => t.remove("cursor").map(drop)?,
            }
        }
        txn.commit()?;
        Ok(step)
    }
}
