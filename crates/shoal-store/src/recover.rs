//! Recovery at open: an index rebuilt from the segments and the roots
//! journal when it is gone, and index entries dropped for segment files
//! that are gone or cut short. What was found is kept in a [`Recovery`]
//! for the node to report; the blocks lost are fetched again by the node's
//! repair from the datasets' providers.

use std::collections::HashMap;
use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata};

use crate::error::{Error, Result};
use crate::index::{cid_from_key, Loc, BLOCKS, META, NAMES, PINS, REPLICAS, REPLICA_AUTHORS, SEGMENTS, VIEWS, VIEW_OF};
use crate::journal::{self, Entry};
use crate::pin::PinKind;
use crate::segment;

/// What opening the store had to recover from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recovery {
    /// The index was missing and was rebuilt.
    pub index_rebuilt: Option<Rebuilt>,
    /// Segment files the index knew that are gone or shorter than it said.
    pub lost_segments: Vec<LostSegment>,
}

impl Recovery {
    pub fn is_empty(&self) -> bool {
        self.index_rebuilt.is_none() && self.lost_segments.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rebuilt {
    pub segments_scanned: u64,
    pub blocks_found: u64,
    pub bytes_found: u64,
    /// Frames whose data failed its CID (dropped; fetched again).
    pub bad_frames: u64,
    /// Segments without frames (written before format 3): their blocks
    /// cannot be indexed from them.
    pub unframed_segments: Vec<u64>,
    /// Journal entries replayed, and lines that did not parse.
    pub journal_entries: u64,
    pub journal_bad_lines: u64,
    pub pins: u64,
    pub names: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LostSegment {
    pub segment: u64,
    /// True when the file is gone; false when it is shorter than indexed.
    pub missing: bool,
    pub blocks: u64,
    pub bytes: u64,
}

/// Whether an index must be rebuilt: there is none, but segments or a
/// journal show this was a store.
pub fn needs_rebuild(dir: &Path, seg_dir: &Path) -> Result<bool> {
    if dir.join("index.redb").exists() {
        return Ok(false);
    }
    if dir.join(journal::FILE).exists() {
        return Ok(true);
    }
    Ok(segment_files(seg_dir)?.iter().any(|(_, len)| *len > 0))
}

fn segment_files(seg_dir: &Path) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(seg_dir).map_err(|e| Error::io(seg_dir, e))? {
        let ent = ent.map_err(|e| Error::io(seg_dir, e))?;
        if let Some(id) = ent.file_name().to_str().and_then(segment::parse_segment_name) {
            let len = ent.metadata().map_err(|e| Error::io(ent.path(), e))?.len();
            out.push((id, len));
        }
    }
    out.sort();
    Ok(out)
}

/// Fills the empty index `db` from the segment files (every frame
/// verified; a later copy of a block wins) and replays the journal.
pub fn rebuild(db: &Database, dir: &Path, seg_dir: &Path) -> Result<Rebuilt> {
    let mut r = Rebuilt::default();
    let (entries, bad) = journal::read(dir)?;
    r.journal_entries = entries.len() as u64;
    r.journal_bad_lines = bad;
    // Entries go straight into the index as each segment is scanned (no
    // table of every block in memory); a later copy of a block replaces an
    // earlier one, whose segment then counts those bytes as dead.
    let txn = db.begin_write()?;
    {
        let mut t = txn.open_table(BLOCKS)?;
        let mut segs: Vec<(u64, u64)> = Vec::new();
        let mut live: HashMap<u64, u64> = HashMap::new();
        for (id, len) in segment_files(seg_dir)? {
            let scan = segment::scan(&segment::segment_path(seg_dir, id))?;
            r.segments_scanned += 1;
            r.bad_frames += scan.bad_frames;
            if scan.found.is_empty() && len > 0 {
                tracing::warn!(
                    segment = id,
                    bytes = len,
                    "segment has no frames (written before format 3?): its blocks cannot be indexed from it"
                );
                r.unframed_segments.push(id);
            }
            if scan.bad_frames > 0 {
                tracing::warn!(
                    segment = id,
                    bad = scan.bad_frames,
                    "frames that fail their CID were dropped"
                );
            }
            for f in &scan.found {
                let loc = Loc {
                    segment: id,
                    offset: f.offset,
                    len: f.len,
                    tick: 0,
                };
                let old = t
                    .insert(f.cid.to_bytes().as_slice(), loc.tuple())?
                    .map(|v| Loc::from_tuple(v.value()));
                match old {
                    Some(old) => {
                        *live.entry(old.segment).or_default() -= old.len;
                        r.bytes_found = r.bytes_found - old.len + f.len;
                    }
                    None => {
                        r.blocks_found += 1;
                        r.bytes_found += f.len;
                    }
                }
                *live.entry(id).or_default() += f.len;
            }
            // An unframed segment keeps its length (and no live bytes: the
            // next compaction removes it); a framed one ends after its
            // last frame.
            segs.push((id, if scan.found.is_empty() { len } else { scan.end }));
        }
        let mut s = txn.open_table(SEGMENTS)?;
        for (id, len) in &segs {
            s.insert(id, (*len, live.get(id).copied().unwrap_or(0)))?;
        }
        let mut meta = txn.open_table(META)?;
        meta.insert("live_bytes", r.bytes_found)?;
        meta.insert("format", crate::FORMAT)?;
        // Unframed segments hold no indexed block: every indexed block is
        // in a framed segment.
        meta.insert("framed_from", 0)?;
    }
    {
        replay(&txn, &entries)?;
        r.pins = txn.open_table(PINS)?.len()?;
        r.names = txn.open_table(NAMES)?.len()?;
    }
    txn.commit()?;
    tracing::warn!(
        segments = r.segments_scanned,
        blocks = r.blocks_found,
        bytes = r.bytes_found,
        bad_frames = r.bad_frames,
        pins = r.pins,
        names = r.names,
        "the index was missing: rebuilt from the segments and the roots journal"
    );
    Ok(r)
}

/// Applies journal entries to the index tables, in order.
fn replay(txn: &redb::WriteTransaction, entries: &[Entry]) -> Result<()> {
    let mut pins = txn.open_table(PINS)?;
    let mut names = txn.open_table(NAMES)?;
    let mut views = txn.open_table(VIEWS)?;
    let mut view_of = txn.open_table(VIEW_OF)?;
    let mut replicas = txn.open_table(REPLICAS)?;
    let mut authors = txn.open_table(REPLICA_AUTHORS)?;
    let now = crate::pin::now_secs();
    for e in entries {
        match e {
            Entry::Pin(k, c) | Entry::Unpin(k, c) => {
                let key = c.to_bytes();
                let (bits, created) = pins.get(key.as_slice())?.map(|v| v.value()).unwrap_or((0, now));
                let bits = if matches!(e, Entry::Pin(..)) {
                    bits | k.bit()
                } else {
                    bits & !k.bit()
                };
                if bits == 0 {
                    pins.remove(key.as_slice())?;
                } else {
                    pins.insert(key.as_slice(), (bits, created))?;
                }
            }
            Entry::Name(n, c) => {
                names.insert(n.as_str(), c.to_bytes().as_slice())?;
            }
            Entry::Unname(n) => {
                names.remove(n.as_str())?;
            }
            Entry::View(r, v) => {
                views.insert(r.to_bytes().as_slice(), v.to_bytes().as_slice())?;
                view_of.insert(v.to_bytes().as_slice(), r.to_bytes().as_slice())?;
            }
            Entry::Replica {
                root,
                copies,
                set_at,
                author,
            } => {
                let key = root.to_bytes();
                replicas.insert(key.as_slice(), (*copies, *set_at))?;
                match author {
                    Some(a) => authors.insert(key.as_slice(), a.as_slice()).map(drop)?,
                    None => authors.remove(key.as_slice()).map(drop)?,
                }
            }
            Entry::Unreplica(r) => {
                let key = r.to_bytes();
                replicas.remove(key.as_slice())?;
                authors.remove(key.as_slice())?;
            }
        }
    }
    Ok(())
}

/// What the index holds that the journal keeps, as entries (to rewrite
/// the journal from).
pub fn snapshot(txn: &redb::ReadTransaction) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for row in txn.open_table(PINS)?.iter()? {
        let (k, v) = row?;
        let c = cid_from_key(k.value())?;
        for kind in [PinKind::User, PinKind::Mirror] {
            if v.value().0 & kind.bit() != 0 {
                out.push(Entry::Pin(kind, c));
            }
        }
    }
    for row in txn.open_table(NAMES)?.iter()? {
        let (k, v) = row?;
        out.push(Entry::Name(k.value().to_string(), cid_from_key(v.value())?));
    }
    for row in txn.open_table(VIEWS)?.iter()? {
        let (k, v) = row?;
        out.push(Entry::View(cid_from_key(k.value())?, cid_from_key(v.value())?));
    }
    let authors = txn.open_table(REPLICA_AUTHORS)?;
    for row in txn.open_table(REPLICAS)?.iter()? {
        let (k, v) = row?;
        let (copies, set_at) = v.value();
        out.push(Entry::Replica {
            root: cid_from_key(k.value())?,
            copies,
            set_at,
            author: authors.get(k.value())?.map(|a| a.value().to_vec()),
        });
    }
    Ok(out)
}

/// Drops the index entries of blocks whose segment file is gone or cut
/// short, so they read as missing (and are fetched again) rather than as
/// corrupt on every read. `active` is the segment about to be appended to:
/// a lost active segment starts again empty.
pub fn drop_lost_segments(db: &Database, seg_dir: &Path, active: u64) -> Result<Vec<LostSegment>> {
    let mut short: HashMap<u64, (u64, bool)> = HashMap::new();
    {
        let txn = db.begin_read()?;
        for row in txn.open_table(SEGMENTS)?.iter()? {
            let (k, v) = row?;
            let (id, (len, _)) = (k.value(), v.value());
            match std::fs::metadata(segment::segment_path(seg_dir, id)) {
                Ok(m) if m.len() >= len => {}
                Ok(m) => {
                    short.insert(id, (m.len(), false));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if len > 0 {
                        short.insert(id, (0, true));
                    }
                }
                Err(e) => return Err(Error::io(segment::segment_path(seg_dir, id), e)),
            }
        }
    }
    if short.is_empty() {
        return Ok(Vec::new());
    }
    let mut lost: HashMap<u64, LostSegment> = short
        .iter()
        .map(|(id, (_, missing))| {
            (
                *id,
                LostSegment {
                    segment: *id,
                    missing: *missing,
                    blocks: 0,
                    bytes: 0,
                },
            )
        })
        .collect();
    let txn = db.begin_write()?;
    {
        let mut dead = Vec::new();
        {
            let t = txn.open_table(BLOCKS)?;
            for row in t.iter()? {
                let (k, v) = row?;
                let loc = Loc::from_tuple(v.value());
                if let Some((have, _)) = short.get(&loc.segment) {
                    if loc.offset + loc.len > *have {
                        dead.push((k.value().to_vec(), loc));
                    }
                }
            }
        }
        let mut t = txn.open_table(BLOCKS)?;
        let mut removed = 0;
        for (key, loc) in &dead {
            t.remove(key.as_slice())?;
            removed += loc.len;
            let l = lost.get_mut(&loc.segment).expect("segment listed");
            l.blocks += 1;
            l.bytes += loc.len;
        }
        let mut segs = txn.open_table(SEGMENTS)?;
        for (id, (have, missing)) in &short {
            let live = segs.get(id)?.map(|v| v.value().1).unwrap_or(0);
            let live = live.saturating_sub(lost[id].bytes);
            if *missing && *id != active {
                segs.remove(id)?;
            } else {
                segs.insert(id, (*have, live))?;
            }
        }
        let mut meta = txn.open_table(META)?;
        let live = meta.get("live_bytes")?.map(|v| v.value()).unwrap_or(0);
        meta.insert("live_bytes", live.saturating_sub(removed))?;
    }
    txn.commit()?;
    let mut lost: Vec<LostSegment> = lost.into_values().collect();
    lost.sort_by_key(|l| l.segment);
    for l in &lost {
        tracing::warn!(
            segment = l.segment,
            missing = l.missing,
            blocks = l.blocks,
            bytes = l.bytes,
            "segment file {}: its blocks are dropped from the index and will be fetched again from providers",
            if l.missing {
                "is gone"
            } else {
                "is shorter than indexed"
            }
        );
    }
    Ok(lost)
}
