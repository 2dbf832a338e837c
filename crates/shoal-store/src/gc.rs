//! Garbage collection, compaction and quota eviction.
//!
//! All three run with the writer lock held, so no block can be written
//! between marking and sweeping. Marking starts from every pin, every name
//! and every open session. A root whose manifest (or one of its pages) is
//! missing keeps what can still be reached and is reported; GC goes on.

use std::collections::HashSet;

use redb::ReadableTable;
use shoal_core::{cid, Block, Cid};

use crate::error::{Error, Result};
use crate::index::{cid_from_key, Loc, BLOCKS, META, SEGMENTS};
use crate::segment;
use crate::store::{session_key, PinKind, SessionKey, Store, Writer};

/// What GC keeps: every block reachable from its roots, and every block an
/// operation in progress protects (by digest).
struct Marked {
    cids: HashSet<Cid>,
    sessions: HashSet<SessionKey>,
}

impl Marked {
    fn contains(&self, c: &Cid) -> bool {
        self.cids.contains(c) || self.sessions.contains(&session_key(c))
    }
}

/// Segments whose live fraction falls below this are rewritten by GC. One
/// half bounds wasted disk at 2x live data while copying each byte at most
/// about once per halving.
const COMPACT_BELOW_LIVE_FRACTION: f64 = 0.5;

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct GcStats {
    pub removed_blocks: u64,
    pub removed_bytes: u64,
    pub compacted_segments: u64,
    pub reclaimed_disk_bytes: u64,
    /// Pinned or named datasets missing part of their manifest (collected
    /// around; `shoal pin ROOT` restores them).
    #[serde(default)]
    pub incomplete: Vec<String>,
}

impl Store {
    /// Roots that GC keeps: all pins, all names, all sessions.
    fn gc_roots(&self, user_only: bool) -> Result<Vec<Cid>> {
        let mut roots: Vec<Cid> = self
            .pins()?
            .into_iter()
            .filter(|(_, k, _)| !user_only || k.contains(PinKind::User))
            .map(|p| p.0)
            .collect();
        roots.extend(self.names()?.into_iter().map(|n| n.1));
        Ok(roots)
    }

    /// Everything reachable from the roots, and the roots whose manifest is
    /// missing a node. Such a dataset keeps what can still be reached; what
    /// only its missing pages would name cannot be told apart from garbage
    /// (it is re-fetched by `shoal pin`). It is reported, never a reason to
    /// stop collecting: one broken dataset must not block GC and quota
    /// eviction for all the others.
    fn mark(&self, roots: &[Cid]) -> Result<(Marked, Vec<Cid>)> {
        let mut marked = HashSet::new();
        let mut incomplete = Vec::new();
        for root in roots {
            let mut missing = Vec::new();
            self.closure_into(root, &mut marked, &mut missing)?;
            if let Some(node) = missing.iter().find(|c| c.codec() == cid::DAG_CBOR) {
                tracing::warn!(
                    %root, %node,
                    "dataset is missing a manifest block; collecting around it (re-fetch it with `shoal pin {root}`)"
                );
                incomplete.push(*root);
            }
        }
        let marked = Marked {
            cids: marked,
            sessions: self.session_keys(),
        };
        Ok((marked, incomplete))
    }

    /// Mark and sweep, then compact sparse segments.
    pub fn gc(&self) -> Result<GcStats> {
        let mut w = self.writer.lock().expect("writer lock");
        let (marked, incomplete) = self.mark(&self.gc_roots(false)?)?;
        let dead = self.unmarked(&marked)?;
        let mut stats = GcStats {
            incomplete: incomplete.iter().map(|r| r.to_string()).collect(),
            removed_blocks: dead.len() as u64,
            removed_bytes: dead.iter().map(|d| d.1.len).sum(),
            ..Default::default()
        };
        self.remove_entries(&dead)?;
        // What was cache is gone (sessions may hold some: count again).
        *self.cache_bytes.lock().expect("cache lock") = None;
        let (n, bytes) = self.compact(&mut w)?;
        stats.compacted_segments = n;
        stats.reclaimed_disk_bytes = bytes;
        Ok(stats)
    }

    /// Removes index entries (the bytes become dead space in their segment).
    pub(crate) fn remove_entries(&self, dead: &[(Cid, Loc)]) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        self.flush_touched(&txn)?;
        {
            let mut t = txn.open_table(BLOCKS)?;
            let mut segs = txn.open_table(SEGMENTS)?;
            let mut removed = 0;
            for (cid, loc) in dead {
                if t.remove(cid.to_bytes().as_slice())?.is_some() {
                    removed += loc.len;
                    let cur = segs.get(&loc.segment)?.map(|v| v.value());
                    if let Some((len, live)) = cur {
                        segs.insert(&loc.segment, (len, live.saturating_sub(loc.len)))?;
                    }
                }
            }
            let mut meta = txn.open_table(META)?;
            let live = meta.get("live_bytes")?.map(|v| v.value()).unwrap_or(0);
            meta.insert("live_bytes", live.saturating_sub(removed))?;
        }
        txn.commit()?;
        // After the commit: a reader that sees the old count read the
        // index before this removal.
        self.removals.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Rewrites sparse closed segments into the active one and deletes empty
    /// ones. Returns (segments removed, disk bytes reclaimed).
    pub(crate) fn compact(&self, w: &mut Writer) -> Result<(u64, u64)> {
        let segments: Vec<(u64, (u64, u64))> = {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(SEGMENTS)?;
            let mut v = Vec::new();
            for row in t.iter()? {
                let (k, val) = row?;
                v.push((k.value(), val.value()));
            }
            v
        };
        // A sparse active segment is sealed first so it can be compacted too;
        // otherwise GC right after deleting most data would reclaim nothing.
        if let Some((_, (len, live))) = segments.iter().find(|s| s.0 == w.active.id) {
            if *len > 0 && (*live as f64) < COMPACT_BELOW_LIVE_FRACTION * *len as f64 {
                self.roll_segment(w, &mut Vec::new())?;
            }
        }
        let mut removed = 0;
        let mut reclaimed = 0;
        for (id, (len, live)) in segments {
            if id == w.active.id || len == 0 {
                continue;
            }
            if live > 0 && (live as f64) >= COMPACT_BELOW_LIVE_FRACTION * len as f64 {
                continue;
            }
            if live > 0 {
                // Copy the live blocks forward; each is verified on the way.
                let mut entries = Vec::new();
                {
                    let txn = self.db.begin_read()?;
                    for row in txn.open_table(BLOCKS)?.iter()? {
                        let (k, v) = row?;
                        let loc = Loc::from_tuple(v.value());
                        if loc.segment == id {
                            entries.push((cid_from_key(k.value())?, loc));
                        }
                    }
                }
                let mut blocks = Vec::new();
                let mut corrupt = Vec::new();
                for (cid, loc) in &entries {
                    match self.read_verified(cid, loc) {
                        Ok(b) => blocks.push(b),
                        Err(e) => {
                            tracing::warn!(%cid, error = %e, "dropping corrupt block during compaction");
                            corrupt.push((*cid, *loc));
                        }
                    }
                }
                self.remove_entries(&corrupt)?;
                let refs: Vec<&Block> = blocks.iter().collect();
                for chunk in refs.chunks(256) {
                    self.relocate(w, chunk)?;
                }
            }
            // The segment is now unreferenced: forget it, then delete it.
            let txn = self.db.begin_write()?;
            txn.open_table(SEGMENTS)?.remove(&id)?;
            txn.commit()?;
            self.readers.forget(id);
            let p = segment::segment_path(&self.seg_dir, id);
            if self.backups.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                // A backup may still be copying it.
                self.deferred.lock().expect("deferred lock").push(p);
            } else {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
            removed += 1;
            reclaimed += len - live;
        }
        Ok((removed, reclaimed))
    }

    /// Appends already-indexed blocks again and repoints their entries,
    /// keeping their access ticks.
    fn relocate(&self, w: &mut Writer, blocks: &[&Block]) -> Result<()> {
        let mut moves = Vec::with_capacity(blocks.len());
        let mut seg_updates = Vec::new();
        for b in blocks {
            if w.active.len > 0 && w.active.len + b.len() as u64 > segment::SEGMENT_MAX_BYTES {
                self.roll_segment(w, &mut seg_updates)?;
            }
            let offset = w.active.append(&self.seg_dir, b)?;
            moves.push((*b.cid(), w.active.id, offset, b.len() as u64));
            seg_updates.push((w.active.id, w.active.len, b.len() as u64));
        }
        w.active.sync(&self.seg_dir)?;
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(BLOCKS)?;
            let mut segs = txn.open_table(SEGMENTS)?;
            for (cid, seg, offset, len) in &moves {
                let key = cid.to_bytes();
                let old = t.get(key.as_slice())?.map(|v| Loc::from_tuple(v.value()));
                let Some(old) = old else { continue };
                t.insert(
                    key.as_slice(),
                    Loc {
                        segment: *seg,
                        offset: *offset,
                        len: *len,
                        tick: old.tick,
                    }
                    .tuple(),
                )?;
                let o = segs.get(&old.segment)?.map(|v| v.value());
                if let Some((l, live)) = o {
                    segs.insert(&old.segment, (l, live.saturating_sub(*len)))?;
                }
            }
            for (id, len, live) in &seg_updates {
                let cur = segs.get(id)?.map(|v| v.value()).unwrap_or((0, 0));
                segs.insert(id, ((*len).max(cur.0), cur.1 + live))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Frees space for `needed` more bytes under `quota` by evicting data not
    /// reachable from user pins, names or sessions, least recently used
    /// first. Fails without evicting anything if that cannot be enough.
    pub(crate) fn make_room(&self, w: &mut Writer, needed: u64, quota: u64) -> Result<u64> {
        let live = self.live_bytes()?;
        if live + needed <= quota {
            return Ok(0);
        }
        let (protected, _) = self.mark(&self.gc_roots(true)?)?;
        let candidates = self.unmarked(&protected)?;
        let available: u64 = candidates.iter().map(|c| c.1.len).sum();
        if live - available + needed > quota {
            return Err(Error::QuotaExceeded {
                needed,
                available: quota.saturating_sub(live - available),
                quota,
                protected: live - available,
            });
        }
        // Evict a little beyond the need (5% of quota) so a stream of small
        // writes does not rescan the index on every batch.
        let target = quota.saturating_sub(needed).saturating_sub(quota / 20);
        let (evict, cur) = oldest_until(candidates, live, target);
        tracing::info!(
            blocks = evict.len(),
            bytes = live - cur,
            "evicting least recently used data to stay under quota"
        );
        self.remove_entries(&evict)?;
        self.drop_broken_soft_pins()?;
        self.compact(w)?;
        Ok(evict.len() as u64)
    }

    /// Evicts read-through cache (blocks no pin, name or session holds),
    /// least recently used first, until `needed` more bytes fit under `max`
    /// (5% below, so a stream of reads does not rescan the index on every
    /// batch). Returns (blocks evicted, cache bytes left).
    pub(crate) fn trim_cache(&self, w: &mut Writer, needed: u64, max: u64) -> Result<(u64, u64)> {
        let (held, _) = self.mark(&self.gc_roots(false)?)?;
        let cache = self.unmarked(&held)?;
        let bytes: u64 = cache.iter().map(|c| c.1.len).sum();
        if bytes + needed <= max {
            return Ok((0, bytes));
        }
        let target = max.saturating_sub(needed).saturating_sub(max / 20);
        let (evict, bytes) = oldest_until(cache, bytes, target);
        tracing::info!(
            blocks = evict.len(),
            cache_max = max,
            "evicting least recently read cache"
        );
        self.remove_entries(&evict)?;
        self.compact(w)?;
        Ok((evict.len() as u64, bytes))
    }

    /// Every indexed block `marked` does not hold, with its latest access
    /// tick (the pending ones included): what eviction chooses from.
    fn unmarked(&self, marked: &Marked) -> Result<Vec<(Cid, Loc)>> {
        let touched = self.touched.lock().expect("touched lock").clone();
        let mut out = Vec::new();
        let txn = self.db.begin_read()?;
        for row in txn.open_table(BLOCKS)?.iter()? {
            let (k, v) = row?;
            let cid = cid_from_key(k.value())?;
            if !marked.contains(&cid) {
                let mut loc = Loc::from_tuple(v.value());
                if let Some(t) = touched.get(&cid) {
                    loc.tick = loc.tick.max(*t);
                }
                out.push((cid, loc));
            }
        }
        Ok(out)
    }

    /// Removes mirror/cache pins whose datasets are no longer complete.
    fn drop_broken_soft_pins(&self) -> Result<()> {
        for (root, kinds, _) in self.pins()? {
            if kinds.contains(PinKind::User) || self.missing_blocks(&root)?.is_empty() {
                continue;
            }
            for k in [PinKind::Mirror, PinKind::Cache] {
                self.unpin(&root, k)?;
            }
        }
        Ok(())
    }
}

/// The least recently used of `candidates`, in that order, until `bytes`
/// (which they count towards) is at most `target`: those to evict, and the
/// bytes left.
fn oldest_until(mut candidates: Vec<(Cid, Loc)>, mut bytes: u64, target: u64) -> (Vec<(Cid, Loc)>, u64) {
    candidates.sort_by_key(|c| c.1.tick);
    let mut evict = Vec::new();
    for c in candidates {
        if bytes <= target {
            break;
        }
        bytes -= c.1.len;
        evict.push(c);
    }
    (evict, bytes)
}
