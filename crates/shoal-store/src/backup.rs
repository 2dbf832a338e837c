//! Backup: a consistent copy of the store while it is in use.
//!
//! The copy is taken from one read transaction of the index (redb's
//! snapshot): each segment is copied up to the length that snapshot
//! committed (appends after it are not part of the copy), the index tables
//! are copied row by row from the snapshot into a new index, and the roots
//! journal is written from it. Writers go on meanwhile; compaction leaves
//! old segment files in place until the copy is done, so every segment the
//! snapshot names can still be read.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;

use redb::{ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::index::{BLOCKS, META, NAMES, PINS, REPLICAS, REPLICA_AUTHORS, SEGMENTS, VIEWS, VIEW_OF};
use crate::journal::Journal;
use crate::segment::{self, sync_dir};
use crate::store::Store;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupReport {
    pub segments: u64,
    pub segment_bytes: u64,
    pub blocks: u64,
    pub pins: u64,
    pub names: u64,
    /// Files copied from the extra directories.
    pub files: u64,
}

/// Releases the compaction hold and removes the segment files compaction
/// left for the backup.
struct Hold<'a>(&'a Store);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if self.0.backups.fetch_sub(1, Ordering::SeqCst) == 1 {
            for p in std::mem::take(&mut *self.0.deferred.lock().expect("deferred lock")) {
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove a compacted segment");
                }
            }
        }
    }
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &redb::ReadTransaction,
    dst: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64> {
    let s = match src.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut d = dst.open_table(def)?;
    let mut n = 0;
    for row in s.iter()? {
        let (k, v) = row?;
        d.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

impl Store {
    /// Writes a consistent copy of the store into `dst` (which must not
    /// exist or be empty), with the subdirectories of the store directory
    /// named in `also` (files the node keeps beside the store, each written
    /// whole by rename). `dst` opens as a store.
    pub fn backup(&self, dst: &Path, also: &[&str]) -> Result<BackupReport> {
        if dst.exists() && std::fs::read_dir(dst).map_err(|e| Error::io(dst, e))?.next().is_some() {
            return Err(Error::io(
                dst,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the backup destination is not empty"),
            ));
        }
        self.backups.fetch_add(1, Ordering::SeqCst);
        let _hold = Hold(self);
        let seg_dst = dst.join("segments");
        std::fs::create_dir_all(&seg_dst).map_err(|e| Error::io(&seg_dst, e))?;
        // Ticks are part of the index: persist them into the snapshot.
        self.flush()?;
        let snap = self.db.begin_read()?;
        let mut report = BackupReport::default();
        for row in snap.open_table(SEGMENTS)?.iter()? {
            let (k, v) = row?;
            let (id, len) = (k.value(), v.value().0);
            let from = segment::segment_path(&self.seg_dir, id);
            let to = segment::segment_path(&seg_dst, id);
            let copy = || -> std::io::Result<u64> {
                let mut out = File::create(&to)?;
                let n = std::io::copy(&mut File::open(&from)?.take(len), &mut out)?;
                out.sync_all()?;
                Ok(n)
            };
            let n = copy().map_err(|e| Error::io(&from, e))?;
            if n < len {
                return Err(Error::io(
                    &from,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("segment {id} is {n} bytes, the index says {len}"),
                    ),
                ));
            }
            report.segments += 1;
            report.segment_bytes += n;
        }
        sync_dir(&seg_dst)?;
        let db = redb::Database::create(dst.join("index.redb"))
            .map_err(|e| Error::Index(format!("creating the backup index: {e}")))?;
        let txn = db.begin_write()?;
        report.blocks = copy_table(&snap, &txn, BLOCKS)?;
        copy_table(&snap, &txn, SEGMENTS)?;
        report.pins = copy_table(&snap, &txn, PINS)?;
        report.names = copy_table(&snap, &txn, NAMES)?;
        copy_table(&snap, &txn, REPLICAS)?;
        copy_table(&snap, &txn, REPLICA_AUTHORS)?;
        copy_table(&snap, &txn, VIEWS)?;
        copy_table(&snap, &txn, VIEW_OF)?;
        copy_table(&snap, &txn, META)?;
        copy_table(&snap, &txn, crate::scrub::SCRUB)?;
        txn.commit()?;
        drop(db);
        Journal::open(dst)?.rewrite(&crate::recover::snapshot(&snap)?)?;
        drop(snap);
        for sub in also {
            report.files += copy_tree(&self.dir.join(sub), &dst.join(sub))?;
        }
        sync_dir(dst)?;
        Ok(report)
    }
}

/// Copies a directory tree of small files; a file that vanishes while it is
/// copied (replaced by rename) is copied as it is now.
fn copy_tree(from: &Path, to: &Path) -> Result<u64> {
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(from, e)),
    };
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let mut n = 0;
    for ent in entries {
        let ent = ent.map_err(|e| Error::io(from, e))?;
        let (src, dst) = (ent.path(), to.join(ent.file_name()));
        let ty = ent.file_type().map_err(|e| Error::io(&src, e))?;
        if ty.is_dir() {
            n += copy_tree(&src, &dst)?;
        } else if ty.is_file() {
            let bytes = match std::fs::read(&src) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&src, e)),
            };
            let mut f = File::create(&dst).map_err(|e| Error::io(&dst, e))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(&dst, e))?;
            n += 1;
        }
    }
    sync_dir(to)?;
    Ok(n)
}
