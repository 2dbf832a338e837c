//! Consistency check: every indexed block is read and verified, every
//! pinned or named dataset is checked for completeness, and blocks no root
//! reaches are counted. `repair` drops corrupt entries and reports which
//! datasets that leaves incomplete.

use std::collections::HashSet;

use redb::ReadableTable;
use shoal_core::Cid;

use crate::error::{Error, Result};
use crate::index::{cid_from_key, Loc, BLOCKS};
use crate::store::Store;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BadBlock {
    pub cid: String,
    pub segment: u64,
    pub offset: u64,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IncompleteDataset {
    pub root: String,
    pub names: Vec<String>,
    pub missing_blocks: usize,
    /// Why a repair did not make it whole (set by the node's repair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FsckReport {
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub corrupt: Vec<BadBlock>,
    pub incomplete: Vec<IncompleteDataset>,
    pub unreferenced_blocks: u64,
    pub unreferenced_bytes: u64,
    pub repaired: bool,
    pub removed_blocks: u64,
    /// Blocks fetched again from providers by the repair (the node's).
    #[serde(default)]
    pub refetched_blocks: u64,
    /// Datasets the repair made whole again.
    #[serde(default)]
    pub repaired_datasets: Vec<String>,
}

impl FsckReport {
    /// Clean: nothing corrupt, every pinned/named dataset complete.
    /// Unreferenced blocks are not damage; `gc` removes them.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.incomplete.is_empty()
    }
}

impl Store {
    pub fn fsck(&self, repair: bool) -> Result<FsckReport> {
        let _w = self.writer.lock().expect("writer lock");
        let mut report = FsckReport::default();
        let mut entries = Vec::new();
        {
            let txn = self.db.begin_read()?;
            for row in txn.open_table(BLOCKS)?.iter()? {
                let (k, v) = row?;
                entries.push((cid_from_key(k.value())?, Loc::from_tuple(v.value())));
            }
        }
        // Read in disk order: sequential within each segment.
        entries.sort_by_key(|e| (e.1.segment, e.1.offset));
        let mut bad = Vec::new();
        for (cid, loc) in &entries {
            report.blocks_checked += 1;
            report.bytes_checked += loc.len;
            if let Err(e) = self.read_verified(cid, loc) {
                report.corrupt.push(BadBlock {
                    cid: cid.to_string(),
                    segment: loc.segment,
                    offset: loc.offset,
                    // The inner reason: the CID and place are fields already.
                    reason: match e {
                        Error::Corrupt { reason, .. } => reason,
                        other => other.to_string(),
                    },
                });
                bad.push((*cid, *loc));
            }
        }
        if repair && !bad.is_empty() {
            self.remove_entries(&bad)?;
            report.removed_blocks = bad.len() as u64;
            report.repaired = true;
        }
        let bad_set: HashSet<Cid> = bad.iter().map(|b| b.0).collect();

        // Completeness of every pinned or named dataset.
        let names = self.names()?;
        let mut roots: Vec<Cid> = self.pins()?.into_iter().map(|p| p.0).collect();
        roots.extend(names.iter().map(|n| n.1));
        roots.sort();
        roots.dedup();
        let protected = self.session_keys();
        let mut reachable = HashSet::new();
        for root in &roots {
            let mut missing = Vec::new();
            let mut seen = HashSet::new();
            match self.closure_into(root, &mut seen, &mut missing) {
                Ok(()) => {}
                Err(Error::Corrupt { cid, .. }) => missing.push(cid),
                Err(e) => return Err(e),
            }
            missing.extend(seen.iter().filter(|c| bad_set.contains(c)));
            missing.sort();
            missing.dedup();
            if !missing.is_empty() {
                report.incomplete.push(IncompleteDataset {
                    root: root.to_string(),
                    names: names.iter().filter(|n| n.1 == *root).map(|n| n.0.clone()).collect(),
                    missing_blocks: missing.len(),
                    reason: None,
                });
            }
            reachable.extend(seen);
        }
        for (cid, loc) in &entries {
            let removed_by_repair = repair && bad_set.contains(cid);
            let kept = reachable.contains(cid) || protected.contains(&crate::store::session_key(cid));
            if !kept && !removed_by_repair {
                report.unreferenced_blocks += 1;
                report.unreferenced_bytes += loc.len;
            }
        }
        Ok(report)
    }
}
