//! The [`Store`]: blocks, pins, names, sessions, access clock.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableTable, ReadableTableMetadata};
use shoal_core::manifest::Manifest;
use shoal_core::{cid, Block, Cid};

use crate::error::{Error, Result};
use crate::index::{cid_from_key, Loc, BLOCKS, META, NAMES, PINS, REPLICAS, REPLICA_AUTHORS, SEGMENTS, VIEWS, VIEW_OF};
use crate::journal::{Entry, Journal};
pub(crate) use crate::pin::now_secs;
pub use crate::pin::{PinKind, PinKinds};
use crate::recover::{self, Recovery};
use crate::segment::{self, ActiveSegment, Readers, SEGMENT_MAX_BYTES};

#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Maximum bytes of block data; `None` = unlimited.
    pub quota: Option<u64>,
    /// Maximum bytes of read-through cache ([`Store::put_cache`]: blocks no
    /// pin, name or session holds); `None` = bounded by the quota only.
    pub cache_max: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PutStats {
    /// Blocks newly written.
    pub new_blocks: u64,
    /// Bytes newly written.
    pub new_bytes: u64,
    /// Blocks that were already present (deduplicated).
    pub dup_blocks: u64,
    /// Blocks evicted to make room.
    pub evicted_blocks: u64,
}

impl std::ops::AddAssign for PutStats {
    fn add_assign(&mut self, o: Self) {
        self.new_blocks += o.new_blocks;
        self.new_bytes += o.new_bytes;
        self.dup_blocks += o.dup_blocks;
        self.evicted_blocks += o.evicted_blocks;
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StatsReport {
    pub blocks: u64,
    pub live_bytes: u64,
    pub segment_bytes: u64,
    pub segments: u64,
    pub pins: u64,
    pub names: u64,
    pub quota: Option<u64>,
}

pub(crate) struct Writer {
    pub active: ActiveSegment,
}

/// Protection for blocks written by an operation in progress (an add, a
/// fetch) until it pins its root. GC and eviction treat the session's CIDs as
/// roots. Dropping the session releases them.
pub struct Session {
    id: u64,
    sessions: Arc<Mutex<HashMap<u64, HashSet<SessionKey>>>>,
}

/// What a session remembers of a block: its digest (32 bytes, where a
/// `Cid` value takes 96: an add of a million chunks protects a million
/// blocks). Two CIDs with one digest (another codec) both count as
/// protected: GC only ever keeps a little more.
pub(crate) type SessionKey = [u8; 32];

pub(crate) fn session_key(c: &Cid) -> SessionKey {
    let mut k = [0u8; 32];
    let d = c.hash().digest();
    let n = d.len().min(32);
    k[..n].copy_from_slice(&d[..n]);
    k
}

impl Session {
    pub fn protect(&self, cids: impl IntoIterator<Item = Cid>) {
        let mut s = self.sessions.lock().expect("sessions lock");
        s.entry(self.id)
            .or_default()
            .extend(cids.into_iter().map(|c| session_key(&c)));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.sessions.lock().expect("sessions lock").remove(&self.id);
    }
}

/// Index pages redb keeps cached.
pub const INDEX_CACHE_BYTES: usize = 64 << 20;

/// Access ticks kept in memory before a read writes them to the index.
pub const MAX_PENDING_TICKS: usize = 1 << 16;

pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) seg_dir: PathBuf,
    pub(crate) db: Database,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) readers: Readers,
    pub(crate) clock: AtomicU64,
    /// Access ticks not yet written to the index: written by every index
    /// write (GC, eviction), by [`Store::flush`] (the node calls it every
    /// minute and at shutdown), and by a read that finds
    /// [`MAX_PENDING_TICKS`] pending.
    pub(crate) touched: Mutex<HashMap<Cid, u64>>,
    pub(crate) sessions: Arc<Mutex<HashMap<u64, HashSet<SessionKey>>>>,
    next_session: AtomicU64,
    pub(crate) opts: StoreOptions,
    /// Read-through cache bytes, an upper estimate (None: not yet counted);
    /// made exact by every trim.
    pub(crate) cache_bytes: Mutex<Option<u64>>,
    /// The roots journal (what survives losing the index).
    pub(crate) journal: Mutex<Journal>,
    /// What opening had to recover from.
    recovery: Recovery,
    /// Backups in progress: compaction leaves old segment files in place
    /// while one runs (the next open removes them).
    pub(crate) backups: AtomicU64,
    /// Segment files compaction left for a running backup.
    pub(crate) deferred: Mutex<Vec<PathBuf>>,
    /// Index removals committed since open (see [`Store::removals`]).
    pub(crate) removals: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// A recorded replica target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaTarget {
    pub root: Cid,
    pub copies: u8,
    /// Unix seconds.
    pub set_at: u64,
    /// Peer id bytes of the peer it was heard from; None when the local
    /// user set it.
    pub author: Option<Vec<u8>>,
}

impl Store {
    /// Opens or creates a store in `dir`, recovering from an unclean stop:
    /// segment bytes past their committed length are cut off and segment
    /// files the index does not know are deleted. A missing index is
    /// rebuilt from the segments and the roots journal; the blocks of a
    /// segment file that is gone are dropped from the index (they read as
    /// missing, to be fetched again). [`Store::recovery`] says what was done.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let seg_dir = dir.join("segments");
        std::fs::create_dir_all(&seg_dir).map_err(|e| Error::io(&seg_dir, e))?;
        let db_path = dir.join("index.redb");
        let rebuild = recover::needs_rebuild(&dir, &seg_dir)?;
        // redb caches index pages up to 1 GiB by default, and keeps what it
        // cached: a long-running daemon's memory would follow the largest
        // add it ever did. The index's hot pages fit in far less.
        let db = redb::Builder::new()
            .set_cache_size(INDEX_CACHE_BYTES)
            .create(&db_path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked {
                    path: dir.display().to_string(),
                },
                e => Error::Index(format!("opening {}: {e}", db_path.display())),
            })?;
        let mut recovery = Recovery::default();
        if rebuild {
            recovery.index_rebuilt = Some(recover::rebuild(&db, &dir, &seg_dir)?);
        }
        let txn = db.begin_write()?;
        let (mut segments, clock) = {
            txn.open_table(BLOCKS)?;
            txn.open_table(PINS)?;
            txn.open_table(NAMES)?;
            txn.open_table(REPLICAS)?;
            txn.open_table(REPLICA_AUTHORS)?;
            txn.open_table(VIEWS)?;
            txn.open_table(VIEW_OF)?;
            let mut meta = txn.open_table(META)?;
            let clock = meta.get("clock")?.map(|v| v.value()).unwrap_or(0);
            // The format version: a store without one predates it (format
            // 1, whose tables are all still read; the new ones were just
            // created), one newer than this code is refused untouched.
            let found = meta.get("format")?.map(|v| v.value()).unwrap_or(1);
            if found > crate::FORMAT {
                return Err(Error::NewerFormat {
                    path: dir.display().to_string(),
                    found,
                    supported: crate::FORMAT,
                });
            }
            if found < crate::FORMAT {
                tracing::info!(from = found, to = crate::FORMAT, "store format migrated");
                meta.insert("format", crate::FORMAT)?;
            }
            let mut segs = txn.open_table(SEGMENTS)?;
            let mut segments = Vec::new();
            for row in segs.iter()? {
                let (k, v) = row?;
                segments.push((k.value(), v.value().0));
            }
            // Segments from before format 3 hold bare bytes: appends go to
            // a new segment, framed from its first byte.
            if meta.get("framed_from")?.is_none() {
                let last = segments.iter().map(|s| s.0).max();
                let first_framed = match last {
                    Some(id) if segments.iter().any(|s| s.1 > 0) => {
                        segs.insert(id + 1, (0, 0))?;
                        segments.push((id + 1, 0));
                        id + 1
                    }
                    _ => 0,
                };
                meta.insert("framed_from", first_framed)?;
            }
            (segments, clock)
        };
        txn.commit()?;

        // Delete segment files the index does not know (a crash after a new
        // segment was created but before its first batch committed, or after
        // compaction committed but before the old file was removed).
        let known: HashSet<u64> = segments.iter().map(|s| s.0).collect();
        for ent in std::fs::read_dir(&seg_dir).map_err(|e| Error::io(&seg_dir, e))? {
            let ent = ent.map_err(|e| Error::io(&seg_dir, e))?;
            if let Some(id) = ent.file_name().to_str().and_then(segment::parse_segment_name) {
                if !known.contains(&id) {
                    tracing::info!(segment = id, "removing unindexed segment file");
                    std::fs::remove_file(ent.path()).map_err(|e| Error::io(ent.path(), e))?;
                }
            }
        }
        let active_id = segments.iter().map(|s| s.0).max().unwrap_or(1);
        recovery.lost_segments = recover::drop_lost_segments(&db, &seg_dir, active_id)?;
        if !recovery.lost_segments.is_empty() {
            let txn = db.begin_read()?;
            let t = txn.open_table(SEGMENTS)?;
            segments.clear();
            for row in t.iter()? {
                let (k, v) = row?;
                segments.push((k.value(), v.value().0));
            }
        }
        let active_len = segments.iter().find(|s| s.0 == active_id).map(|s| s.1).unwrap_or(0);
        // Older segments may also carry an uncommitted tail if a crash hit
        // while they were active; trim them all to their committed lengths.
        for (id, len) in &segments {
            if *id != active_id {
                let p = segment::segment_path(&seg_dir, *id);
                match std::fs::metadata(&p) {
                    Ok(m) if m.len() > *len => {
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&p)
                            .map_err(|e| Error::io(&p, e))?;
                        f.set_len(*len).map_err(|e| Error::io(&p, e))?;
                    }
                    _ => {} // short ones were handled above
                }
            }
        }
        let active = ActiveSegment::open(&seg_dir, active_id, active_len)?;
        let mut journal = Journal::open(&dir)?;
        // The journal is rewritten from the index at open (so it starts
        // its growth from what is held, and a store from before the journal
        // gets one), then whenever it has doubled.
        {
            let txn = db.begin_read()?;
            journal.rewrite(&recover::snapshot(&txn)?)?;
        }
        Ok(Self {
            dir,
            seg_dir,
            db,
            writer: Mutex::new(Writer { active }),
            readers: Readers::default(),
            clock: AtomicU64::new(clock),
            touched: Mutex::new(HashMap::new()),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            next_session: AtomicU64::new(1),
            opts,
            cache_bytes: Mutex::new(None),
            journal: Mutex::new(journal),
            recovery,
            backups: AtomicU64::new(0),
            deferred: Mutex::new(Vec::new()),
            removals: AtomicU64::new(0),
        })
    }

    /// What opening the store had to recover from (empty after a clean
    /// stop or an ordinary crash).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Records changes to what the store keeps in the roots journal; call
    /// before the index transaction that makes them and hold the guard
    /// until it commits: a rewrite of the journal from the index (when it
    /// has doubled) then never misses a change on its way in.
    pub(crate) fn journal(&self, entries: &[Entry]) -> Result<std::sync::MutexGuard<'_, Journal>> {
        let mut j = self.journal.lock().expect("journal lock");
        if j.grown() {
            let txn = self.db.begin_read()?;
            j.rewrite(&recover::snapshot(&txn)?)?;
        }
        j.append(entries)?;
        Ok(j)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn quota(&self) -> Option<u64> {
        self.opts.quota
    }

    /// Starts a session that protects the blocks it is told about.
    pub fn session(&self) -> Session {
        Session {
            id: self.next_session.fetch_add(1, Ordering::Relaxed),
            sessions: self.sessions.clone(),
        }
    }

    pub(crate) fn session_keys(&self) -> HashSet<SessionKey> {
        let s = self.sessions.lock().expect("sessions lock");
        s.values().flatten().copied().collect()
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// How many times blocks have left the index since the store opened
    /// (GC, eviction, a corrupt copy dropped), counted once each removal is
    /// committed. A caller that read it before finding a block here knows
    /// the block is still here while it has not moved.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    pub fn has(&self, cid: &Cid) -> Result<bool> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BLOCKS)?;
        Ok(t.get(cid.to_bytes().as_slice())?.is_some())
    }

    /// Size of a stored block, if present.
    pub fn block_len(&self, cid: &Cid) -> Result<Option<u64>> {
        Ok(self.loc(cid)?.map(|l| l.len))
    }

    pub(crate) fn loc(&self, cid: &Cid) -> Result<Option<Loc>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BLOCKS)?;
        Ok(t.get(cid.to_bytes().as_slice())?.map(|v| Loc::from_tuple(v.value())))
    }

    /// Reads and verifies a block. `Ok(None)` if it is not stored; an
    /// [`Error::Corrupt`] if the bytes on disk do not hash to `cid`.
    pub fn get(&self, cid: &Cid) -> Result<Option<Block>> {
        let Some(loc) = self.loc(cid)? else {
            return Ok(None);
        };
        let block = match self.read_verified(cid, &loc) {
            Ok(b) => b,
            // Compaction may have moved the block and deleted its old
            // segment between the lookup and the read: look again. Only a
            // failure at the block's current place is corruption.
            Err(e) => match self.loc(cid)? {
                None => return Ok(None),
                Some(now) if now != loc => self.read_verified(cid, &now)?,
                Some(_) => return Err(e),
            },
        };
        self.touch(cid);
        Ok(Some(block))
    }

    /// Drops the index entry of a block whose local copy failed
    /// verification, so a verified copy fetched elsewhere can replace it.
    /// Does nothing if the stored copy verifies.
    pub fn drop_if_corrupt(&self, cid: &Cid) -> Result<bool> {
        let _w = self.writer.lock().expect("writer lock");
        let Some(loc) = self.loc(cid)? else {
            return Ok(false);
        };
        if self.read_verified(cid, &loc).is_ok() {
            return Ok(false);
        }
        tracing::warn!(%cid, segment = loc.segment, offset = loc.offset, "dropping corrupt local copy");
        self.remove_entries(&[(*cid, loc)])?;
        Ok(true)
    }

    /// Like [`Self::get`] but a missing block is an error.
    pub fn require(&self, cid: &Cid) -> Result<Block> {
        self.get(cid)?.ok_or(Error::Missing(*cid))
    }

    pub(crate) fn read_verified(&self, cid: &Cid, loc: &Loc) -> Result<Block> {
        let corrupt = |reason: String| Error::Corrupt {
            cid: *cid,
            segment: loc.segment,
            offset: loc.offset,
            reason,
        };
        let data = self
            .readers
            .read(&self.seg_dir, loc.segment, loc.offset, loc.len as usize)
            .map_err(|e| corrupt(format!("read failed: {e}")))?;
        Block::verified(*cid, data).map_err(|e| corrupt(e.to_string()))
    }

    /// Bytes of block data the index counts as stored.
    pub(crate) fn live_bytes(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let v = txn.open_table(META)?.get("live_bytes")?.map(|v| v.value()).unwrap_or(0);
        Ok(v)
    }

    /// Stores blocks fetched for readers as evictable cache, within
    /// `cache_max` (least recently used cache evicted first); a batch larger
    /// than the whole cap is not stored. What readers read through the
    /// mount or the gateway can therefore never fill the disk, whatever the
    /// quota says.
    pub fn put_cache(&self, blocks: &[Block]) -> Result<PutStats> {
        let mut stats = PutStats::default();
        if let Some(max) = self.opts.cache_max {
            let needed: u64 = blocks.iter().map(|b| b.len() as u64).sum();
            if needed > max {
                return Ok(stats);
            }
            let mut w = self.writer.lock().expect("writer lock");
            let mut known = self.cache_bytes.lock().expect("cache lock");
            if known.is_none() {
                // Every stored byte is an upper bound of the cache: while
                // the whole store fits under the cap, no mark is needed
                // (the first read after a start does not walk every pin).
                let live = self.live_bytes()?;
                if live + needed <= max {
                    *known = Some(live);
                }
            }
            if known.is_none_or(|c| c + needed > max) {
                let (evicted, left) = self.trim_cache(&mut w, needed, max)?;
                stats.evicted_blocks = evicted;
                *known = Some(left);
            }
        }
        let put = self.put_many(blocks, None)?;
        if let Some(c) = self.cache_bytes.lock().expect("cache lock").as_mut() {
            *c += put.new_bytes;
        }
        stats += put;
        Ok(stats)
    }

    /// Stores blocks (already verified by construction). Blocks already
    /// present are skipped. All new bytes are fsynced, then indexed in one
    /// transaction. Under a quota, unprotected data is evicted first; if that
    /// is not enough, nothing is written and [`Error::QuotaExceeded`] is
    /// returned.
    pub fn put_many(&self, blocks: &[Block], session: Option<&Session>) -> Result<PutStats> {
        if let Some(s) = session {
            s.protect(blocks.iter().map(|b| *b.cid()));
        }
        let mut w = self.writer.lock().expect("writer lock");
        let mut stats = PutStats::default();
        // Which blocks are new (dedup against the index and within the batch).
        let mut fresh: Vec<&Block> = Vec::new();
        {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(BLOCKS)?;
            let mut seen = HashSet::new();
            for b in blocks {
                if !seen.insert(*b.cid()) || t.get(b.cid().to_bytes().as_slice())?.is_some() {
                    stats.dup_blocks += 1;
                } else {
                    fresh.push(b);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(stats);
        }
        let needed: u64 = fresh.iter().map(|b| b.len() as u64).sum();
        if let Some(quota) = self.opts.quota {
            stats.evicted_blocks = self.make_room(&mut w, needed, quota)?;
        }
        let start = (w.active.id, w.active.len);
        match self.append_and_index(&mut w, &fresh) {
            Ok(()) => {}
            Err(e) => {
                // Nothing was indexed; drop the unindexed tail if it is still
                // in the segment we started in.
                if w.active.id == start.0 {
                    let _ = w.active.truncate(&self.seg_dir, start.1);
                }
                return Err(e);
            }
        }
        stats.new_blocks = fresh.len() as u64;
        stats.new_bytes = needed;
        Ok(stats)
    }

    fn append_and_index(&self, w: &mut Writer, fresh: &[&Block]) -> Result<()> {
        let mut locs = Vec::with_capacity(fresh.len());
        // Segments touched in this batch: id -> (new committed len, added live bytes).
        let mut seg_updates: Vec<(u64, u64, u64)> = Vec::new();
        for b in fresh {
            if w.active.len > 0 && w.active.len + b.len() as u64 > SEGMENT_MAX_BYTES {
                self.roll_segment(w, &mut seg_updates)?;
            }
            let offset = w.active.append(&self.seg_dir, b)?;
            locs.push((
                *b.cid(),
                Loc {
                    segment: w.active.id,
                    offset,
                    len: b.len() as u64,
                    tick: self.tick(),
                },
            ));
            match seg_updates.last_mut() {
                Some(u) if u.0 == w.active.id => {
                    u.1 = w.active.len;
                    u.2 += b.len() as u64;
                }
                _ => seg_updates.push((w.active.id, w.active.len, b.len() as u64)),
            }
        }
        w.active.sync(&self.seg_dir)?;
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(BLOCKS)?;
            for (cid, loc) in &locs {
                t.insert(cid.to_bytes().as_slice(), loc.tuple())?;
            }
            let mut segs = txn.open_table(SEGMENTS)?;
            for (id, len, live) in &seg_updates {
                let old = segs.get(id)?.map(|v| v.value()).unwrap_or((0, 0));
                segs.insert(id, (*len, old.1 + live))?;
            }
            let added: u64 = locs.iter().map(|l| l.1.len).sum();
            let mut meta = txn.open_table(META)?;
            let live = meta.get("live_bytes")?.map(|v| v.value()).unwrap_or(0);
            meta.insert("live_bytes", live + added)?;
            meta.insert("clock", self.clock.load(Ordering::Relaxed))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Closes the active segment (syncing it) and starts the next one.
    pub(crate) fn roll_segment(&self, w: &mut Writer, seg_updates: &mut Vec<(u64, u64, u64)>) -> Result<()> {
        w.active.sync(&self.seg_dir)?;
        let next = w.active.id + 1;
        w.active = ActiveSegment::open(&self.seg_dir, next, 0)?;
        seg_updates.push((next, 0, 0));
        Ok(())
    }

    // ---- pins and names --------------------------------------------------

    /// Pins `root` with `kind`. The dataset must be complete locally: a pin
    /// never marks half a dataset as held.
    ///
    /// Check and pin happen under the writer lock, the lock GC, compaction
    /// and eviction hold: nothing can be swept between the check that the
    /// dataset is complete and the pin that protects it.
    pub fn pin(&self, root: &Cid, kind: PinKind) -> Result<()> {
        let _w = self.writer.lock().expect("writer lock");
        let missing = self.missing_blocks(root)?;
        if let Some(first) = missing.first() {
            return Err(Error::Incomplete {
                root: *root,
                missing: missing.len(),
                first: *first,
            });
        }
        let _journal = self.journal(&[Entry::Pin(kind, *root)])?;
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(PINS)?;
            let key = root.to_bytes();
            let (bits, created) = t.get(key.as_slice())?.map(|v| v.value()).unwrap_or((0, now_secs()));
            t.insert(key.as_slice(), (bits | kind.bit(), created))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes `kind` from `root`'s pins; returns whether it was pinned so.
    pub fn unpin(&self, root: &Cid, kind: PinKind) -> Result<bool> {
        if !self.pin_kinds(root)?.contains(kind) {
            return Ok(false);
        }
        let _journal = self.journal(&[Entry::Unpin(kind, *root)])?;
        let txn = self.db.begin_write()?;
        let was = {
            let mut t = txn.open_table(PINS)?;
            let key = root.to_bytes();
            let cur = t.get(key.as_slice())?.map(|v| v.value());
            match cur {
                Some((bits, created)) if bits & kind.bit() != 0 => {
                    let left = bits & !kind.bit();
                    if left == 0 {
                        t.remove(key.as_slice())?;
                    } else {
                        t.insert(key.as_slice(), (left, created))?;
                    }
                    true
                }
                _ => false,
            }
        };
        txn.commit()?;
        Ok(was)
    }

    pub fn pin_kinds(&self, root: &Cid) -> Result<PinKinds> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PINS)?;
        Ok(PinKinds(
            t.get(root.to_bytes().as_slice())?.map(|v| v.value().0).unwrap_or(0),
        ))
    }

    /// All pins: (root, kinds, created unix seconds).
    pub fn pins(&self) -> Result<Vec<(Cid, PinKinds, u64)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PINS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let (bits, created) = v.value();
            out.push((cid_from_key(k.value())?, PinKinds(bits), created));
        }
        Ok(out)
    }

    pub fn set_name(&self, name: &str, root: &Cid) -> Result<()> {
        validate_name(name)?;
        let _journal = self.journal(&[Entry::Name(name.to_string(), *root)])?;
        let txn = self.db.begin_write()?;
        txn.open_table(NAMES)?.insert(name, root.to_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn remove_name(&self, name: &str) -> Result<Option<Cid>> {
        if self.resolve_name(name)?.is_none() {
            return Ok(None);
        }
        let _journal = self.journal(&[Entry::Unname(name.to_string())])?;
        let txn = self.db.begin_write()?;
        let old = {
            let mut t = txn.open_table(NAMES)?;
            let old = t.remove(name)?.map(|v| cid_from_key(v.value()));
            old.transpose()?
        };
        txn.commit()?;
        Ok(old)
    }

    pub fn resolve_name(&self, name: &str) -> Result<Option<Cid>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(NAMES)?;
        t.get(name)?.map(|v| cid_from_key(v.value())).transpose()
    }

    pub fn names(&self) -> Result<Vec<(String, Cid)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(NAMES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), cid_from_key(v.value())?));
        }
        Ok(out)
    }

    /// Records `view` (a dag-pb root whose nodes are stored) as the UnixFS
    /// view of dataset `root`: GC and completeness checks then treat the
    /// view's blocks as the dataset's, and the view's CID resolves to it.
    pub fn set_view(&self, root: &Cid, view: &Cid) -> Result<()> {
        if self.view(root)? == Some(*view) {
            return Ok(());
        }
        let _journal = self.journal(&[Entry::View(*root, *view)])?;
        let txn = self.db.begin_write()?;
        txn.open_table(VIEWS)?
            .insert(root.to_bytes().as_slice(), view.to_bytes().as_slice())?;
        txn.open_table(VIEW_OF)?
            .insert(view.to_bytes().as_slice(), root.to_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// The UnixFS view of dataset `root`, if one was built here.
    pub fn view(&self, root: &Cid) -> Result<Option<Cid>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(VIEWS)?;
        t.get(root.to_bytes().as_slice())?
            .map(|v| cid_from_key(v.value()))
            .transpose()
    }

    /// The dataset whose UnixFS view is `view`, if known here.
    pub fn dataset_of_view(&self, view: &Cid) -> Result<Option<Cid>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(VIEW_OF)?;
        t.get(view.to_bytes().as_slice())?
            .map(|v| cid_from_key(v.value()))
            .transpose()
    }

    /// Records the local user's replica target for `root` (see the mirror
    /// policy): no peer's claim replaces it.
    pub fn set_replica_target(&self, root: &Cid, copies: u8, set_at: u64) -> Result<()> {
        self.put_replica_target(root, copies, set_at, None)
    }

    /// Records a replica target heard from `author` (peer id bytes), which
    /// this daemon carries for a copy it holds.
    pub fn set_carried_target(&self, root: &Cid, copies: u8, set_at: u64, author: &[u8]) -> Result<()> {
        self.put_replica_target(root, copies, set_at, Some(author))
    }

    fn put_replica_target(&self, root: &Cid, copies: u8, set_at: u64, author: Option<&[u8]>) -> Result<()> {
        let key = root.to_bytes();
        let _journal = self.journal(&[Entry::Replica {
            root: *root,
            copies,
            set_at,
            author: author.map(<[u8]>::to_vec),
        }])?;
        let txn = self.db.begin_write()?;
        txn.open_table(REPLICAS)?.insert(key.as_slice(), (copies, set_at))?;
        {
            let mut authors = txn.open_table(REPLICA_AUTHORS)?;
            match author {
                Some(a) => authors.insert(key.as_slice(), a).map(drop)?,
                None => authors.remove(key.as_slice()).map(drop)?,
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn remove_replica_target(&self, root: &Cid) -> Result<()> {
        let key = root.to_bytes();
        let _journal = self.journal(&[Entry::Unreplica(*root)])?;
        let txn = self.db.begin_write()?;
        txn.open_table(REPLICAS)?.remove(key.as_slice())?;
        txn.open_table(REPLICA_AUTHORS)?.remove(key.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Every recorded replica target with its author (None: the local user).
    pub fn authored_replica_targets(&self) -> Result<Vec<ReplicaTarget>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(REPLICAS)?;
        let authors = txn.open_table(REPLICA_AUTHORS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let (copies, set_at) = v.value();
            out.push(ReplicaTarget {
                root: cid_from_key(k.value())?,
                copies,
                set_at,
                author: authors.get(k.value())?.map(|a| a.value().to_vec()),
            });
        }
        Ok(out)
    }

    /// Every recorded replica target: (root, copies, set-at unix seconds).
    pub fn replica_targets(&self) -> Result<Vec<(Cid, u8, u64)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(REPLICAS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let (n, at) = v.value();
            out.push((cid_from_key(k.value())?, n, at));
        }
        Ok(out)
    }

    // ---- dataset graph ---------------------------------------------------

    /// Loads and decodes a manifest root from the store.
    pub fn manifest(&self, root: &Cid) -> Result<Manifest> {
        let block = self.require(root)?;
        Ok(Manifest::decode(&block)?)
    }

    /// Adds `root` and everything it links to (that can be read locally) to
    /// `out`; CIDs that are absent are added to `missing`. A raw root is a
    /// single block.
    pub(crate) fn closure_into(&self, root: &Cid, out: &mut HashSet<Cid>, missing: &mut Vec<Cid>) -> Result<()> {
        if !out.insert(*root) {
            return Ok(());
        }
        if root.codec() != cid::DAG_CBOR {
            if !self.has(root)? {
                missing.push(*root);
            }
            return Ok(());
        }
        let Some(block) = self.get(root)? else {
            missing.push(*root);
            return Ok(());
        };
        let m = Manifest::decode(&block)?;
        let mut fetch = |c: &Cid| -> Result<Block> { self.require(c) };
        let links = match m.all_links(&mut fetch) {
            Ok(l) => l,
            Err(Error::Missing(c)) => {
                missing.push(c);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BLOCKS)?;
        for c in links {
            if out.insert(c) && t.get(c.to_bytes().as_slice())?.is_none() {
                missing.push(c);
            }
        }
        drop((t, txn));
        // Its UnixFS view: dag-pb nodes (walked) over the dataset's blocks
        // and a few raw blocks of its own.
        if let Some(view) = self.view(root)? {
            let mut todo = vec![view];
            while let Some(c) = todo.pop() {
                if !out.insert(c) {
                    continue;
                }
                if c.codec() != cid::DAG_PB {
                    if !self.has(&c)? {
                        missing.push(c);
                    }
                    continue;
                }
                match self.get(&c)? {
                    None => missing.push(c),
                    Some(b) => match shoal_unixfs::links(&c, b.data()) {
                        Ok(l) => todo.extend(l),
                        Err(e) => tracing::warn!(%c, error = %e, "a view node does not decode"),
                    },
                }
            }
        }
        Ok(())
    }

    /// The blocks of `root`'s dataset that are not stored locally.
    pub fn missing_blocks(&self, root: &Cid) -> Result<Vec<Cid>> {
        let mut missing = Vec::new();
        self.closure_into(root, &mut HashSet::new(), &mut missing)?;
        Ok(missing)
    }

    pub fn stats(&self) -> Result<StatsReport> {
        let txn = self.db.begin_read()?;
        let blocks = txn.open_table(BLOCKS)?.len()?;
        let live_bytes = txn.open_table(META)?.get("live_bytes")?.map(|v| v.value()).unwrap_or(0);
        let segs = txn.open_table(SEGMENTS)?;
        let mut segment_bytes = 0;
        for row in segs.iter()? {
            segment_bytes += row?.1.value().0;
        }
        Ok(StatsReport {
            blocks,
            live_bytes,
            segment_bytes,
            segments: segs.len()?,
            pins: txn.open_table(PINS)?.len()?,
            names: txn.open_table(NAMES)?.len()?,
            quota: self.opts.quota,
        })
    }

    /// Every stored block CID (for tests and tools).
    pub fn all_cids(&self) -> Result<Vec<Cid>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BLOCKS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            out.push(cid_from_key(row?.0.value())?);
        }
        Ok(out)
    }

    /// Where a block lives on disk: (segment file, offset, length). For
    /// diagnostics and fault-injection tests.
    pub fn locate(&self, cid: &Cid) -> Result<Option<(PathBuf, u64, u64)>> {
        Ok(self
            .loc(cid)?
            .map(|l| (segment::segment_path(&self.seg_dir, l.segment), l.offset, l.len)))
    }

    /// Writes pending access ticks into the index (part of any write txn).
    pub(crate) fn flush_touched(&self, txn: &redb::WriteTransaction) -> Result<()> {
        let touched = std::mem::take(&mut *self.touched.lock().expect("touched lock"));
        let mut t = txn.open_table(BLOCKS)?;
        for (cid, tick) in touched {
            let key = cid.to_bytes();
            let cur = t.get(key.as_slice())?.map(|v| Loc::from_tuple(v.value()));
            if let Some(mut loc) = cur {
                loc.tick = loc.tick.max(tick);
                t.insert(key.as_slice(), loc.tuple())?;
            }
        }
        txn.open_table(META)?
            .insert("clock", self.clock.load(Ordering::Relaxed))?;
        Ok(())
    }

    /// Records a read for LRU eviction; keeps the pending ticks bounded.
    fn touch(&self, cid: &Cid) {
        let pending = {
            let mut t = self.touched.lock().expect("touched lock");
            t.insert(*cid, self.tick());
            t.len()
        };
        if pending < MAX_PENDING_TICKS {
            return;
        }
        // Write them now, unless a writer is busy (it writes them with its
        // own commit); past twice the bound they are dropped: ticks are an
        // eviction hint, memory is not.
        let flushed = match self.writer.try_lock() {
            Ok(_w) => self
                .db
                .begin_write()
                .map_err(Error::from)
                .and_then(|txn| {
                    self.flush_touched(&txn)?;
                    Ok(txn.commit()?)
                })
                .is_ok(),
            Err(_) => false,
        };
        if !flushed && pending >= 2 * MAX_PENDING_TICKS {
            *self.touched.lock().expect("touched lock") = HashMap::new();
        }
    }

    /// Access ticks read but not yet written to the index.
    pub fn pending_ticks(&self) -> usize {
        self.touched.lock().expect("touched lock").len()
    }

    /// Persists access ticks; called on clean shutdown and periodically.
    pub fn flush(&self) -> Result<()> {
        let _w = self.writer.lock().expect("writer lock");
        let txn = self.db.begin_write()?;
        self.flush_touched(&txn)?;
        txn.commit()?;
        Ok(())
    }
}

pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 255 {
        return bad("must be 1 to 255 bytes");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return bad("use letters, digits, '-', '_' and '.', not starting with '.'");
    }
    if cid::parse(name).is_ok() {
        return bad("a name may not be a CID");
    }
    Ok(())
}
