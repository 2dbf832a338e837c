//! Pack segment files: append-only files of concatenated block bytes.
//!
//! A segment is only ever appended to while it is the active one, and is
//! deleted whole by compaction. Readers use positional reads (`pread`) on a
//! shared handle, so reads never contend with the writer.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

/// A segment is closed and a new one started past this size. 1 GiB keeps the
/// file count low (millions of chunks -> hundreds of files) while letting
/// compaction rewrite one segment at a time with bounded extra space.
pub const SEGMENT_MAX_BYTES: u64 = 1 << 30;

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:012}.pack"))
}

/// Parses `NNNNNNNNNNNN.pack` file names.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".pack")?.parse().ok()
}

/// The segment currently appended to.
pub struct ActiveSegment {
    pub id: u64,
    pub len: u64,
    file: File,
    dirty: bool,
}

impl ActiveSegment {
    /// Opens (creating if needed) segment `id`, truncated to `len`: bytes past
    /// the committed length were never indexed and are dropped.
    pub fn open(dir: &Path, id: u64, len: u64) -> Result<Self> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let on_disk = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if on_disk != len {
            file.set_len(len).map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        // The directory entry of a new file must be durable before an index
        // entry may point into it.
        sync_dir(dir)?;
        Ok(Self {
            id,
            len,
            file,
            dirty: false,
        })
    }

    /// Appends bytes; returns their offset. Not durable until [`Self::sync`].
    pub fn append(&mut self, dir: &Path, data: &[u8]) -> Result<u64> {
        let offset = self.len;
        if let Err(e) = self.file.write_all(data) {
            // Put the file back at its known length so a partial write does
            // not shift later appends.
            let _ = self.file.set_len(self.len);
            return Err(Error::io(segment_path(dir, self.id), e));
        }
        self.len += data.len() as u64;
        self.dirty = true;
        Ok(offset)
    }

    pub fn sync(&mut self, dir: &Path) -> Result<()> {
        if self.dirty {
            self.file
                .sync_data()
                .map_err(|e| Error::io(segment_path(dir, self.id), e))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Drops appended bytes that were not committed (after a failed batch).
    pub fn truncate(&mut self, dir: &Path, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io(segment_path(dir, self.id), e))?;
        self.len = len;
        Ok(())
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Shared read handles, opened lazily.
#[derive(Default)]
pub struct Readers {
    files: RwLock<HashMap<u64, Arc<File>>>,
}

impl Readers {
    pub fn read(&self, dir: &Path, id: u64, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let file = self.handle(dir, id)?;
        // Read into the vector's spare capacity: no zeroing of a buffer the
        // read is about to overwrite (it showed as memset in read profiles).
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = offset + buf.len() as u64;
            let got = rustix::io::pread(&*file, rustix::buffer::spare_capacity(&mut buf), at)?;
            if got == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("segment {id} ends before offset {} + {len}", offset),
                ));
            }
        }
        buf.truncate(len);
        Ok(buf)
    }

    fn handle(&self, dir: &Path, id: u64) -> std::io::Result<Arc<File>> {
        if let Some(f) = self.files.read().expect("readers lock").get(&id) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(segment_path(dir, id))?);
        self.files.write().expect("readers lock").insert(id, f.clone());
        Ok(f)
    }

    /// Forgets a handle (the segment is being deleted).
    pub fn forget(&self, id: u64) {
        self.files.write().expect("readers lock").remove(&id);
    }
}
