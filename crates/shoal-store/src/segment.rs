//! Pack segment files: append-only files of framed blocks.
//!
//! A segment is only ever appended to while it is the active one, and is
//! deleted whole by compaction. Readers use positional reads (`pread`) on a
//! shared handle, so reads never contend with the writer.
//!
//! Each block is framed so a segment describes itself (format 3 on): the
//! index can be rebuilt from the segments alone ([`scan`]).
//!
//! ```text
//! "SHB" 0x01 | CID length (u8) | CID bytes | data length (u32 LE) | data
//! ```
//!
//! The index points at the data, so reads do not look at frames; a frame
//! is only trusted once its data hashes to its CID. Segments written before
//! format 3 (ids below the index's `framed_from`) hold bare bytes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use shoal_core::{Block, Cid};

use crate::error::{Error, Result};

/// The first bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"SHB\x01";

/// A frame's header for `cid` and `len` bytes of data.
pub fn frame_header(cid: &Cid, len: usize) -> Vec<u8> {
    let c = cid.to_bytes();
    let mut h = Vec::with_capacity(4 + 1 + c.len() + 4);
    h.extend_from_slice(&FRAME_MAGIC);
    h.push(u8::try_from(c.len()).expect("a CID is shorter than 256 bytes"));
    h.extend_from_slice(&c);
    h.extend_from_slice(&u32::try_from(len).expect("blocks are below 4 GiB").to_le_bytes());
    h
}

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

    /// Appends a block in its frame; returns the offset of its data. Not
    /// durable until [`Self::sync`].
    pub fn append(&mut self, dir: &Path, block: &Block) -> Result<u64> {
        let header = frame_header(block.cid(), block.len());
        let written = self
            .file
            .write_all(&header)
            .and_then(|()| self.file.write_all(block.data()));
        if let Err(e) = written {
            // Put the file back at its known length so a partial write does
            // not shift later appends.
            let _ = self.file.set_len(self.len);
            return Err(Error::io(segment_path(dir, self.id), e));
        }
        let offset = self.len + header.len() as u64;
        self.len = offset + block.len() as u64;
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

/// Shared read handles, opened lazily, and the buffers reads go into.
#[derive(Default)]
pub struct Readers {
    files: RwLock<HashMap<u64, Arc<File>>>,
    pool: Arc<Pool>,
}

/// Read buffers given back when the last `Bytes` of a block read into one
/// is dropped, and read into again. A megabyte the allocator has given
/// back to the OS is a megabyte the kernel faults in and zeroes page by
/// page: a profile of a gateway serving chunks nobody read ahead had
/// `clear_page_erms` at 13% of the daemon's samples, more than the copy out
/// of the page cache (4.7% with the pool). Buffers come in size classes
/// ([`class`]), so a file's last block, of any size, finds one too (with
/// exact sizes only, the read-ahead of a dataset of 1.5 MB chunks still
/// spent 9.5% of the daemon's samples zeroing pages). Reads under
/// [`POOL_MIN`] are not pooled; at most [`POOL_KEPT`] buffers wait here.
#[derive(Default)]
struct Pool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// Reads smaller than this get their own allocation.
const POOL_MIN: usize = 128 << 10;
/// Buffers kept for reuse (16 MiB of 1 MiB blocks).
const POOL_KEPT: usize = 16;

/// A pooled buffer behind a `Bytes` (its first `len` bytes): back to the
/// pool on drop.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// The size of the pooled buffer a read of `len` bytes takes: `len`
/// rounded up to an eighth of the power of two at or above it (8 classes
/// a doubling: at most 1/8 of that power unused; a 1 MiB block exact).
fn class(len: usize) -> usize {
    let step = (len.next_power_of_two() / 8).max(1);
    len.div_ceil(step) * step
}

impl Pool {
    /// A buffer for a read of `len` (>= [`POOL_MIN`]) bytes, of its
    /// [`class`], initialised (zeroed when new, so reads into it need no
    /// unsafe code; a kept one is not zeroed again).
    fn take(&self, len: usize) -> Vec<u8> {
        let size = class(len);
        let mut free = self.free.lock().expect("pool lock");
        match free.iter().rposition(|b| b.len() == size) {
            Some(i) => free.remove(i),
            None => {
                drop(free);
                vec![0; size]
            }
        }
    }

    /// Keeps `buf` for reuse, the oldest kept one dropped when full (the
    /// sizes read most stay).
    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().expect("pool lock");
        if free.len() >= POOL_KEPT {
            free.remove(0);
        }
        free.push(buf);
    }
}

impl Readers {
    /// `len` bytes at `offset` of segment `id`; from [`POOL_MIN`] up, in a
    /// buffer that goes back to the pool when the last `Bytes` of it is
    /// dropped.
    pub fn read(&self, dir: &Path, id: u64, offset: u64, len: usize) -> std::io::Result<bytes::Bytes> {
        let file = self.handle(dir, id)?;
        let short = || {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("segment {id} ends before offset {offset} + {len}"),
            )
        };
        if len < POOL_MIN {
            // Into the vector's spare capacity: no zeroing of a buffer the
            // read is about to overwrite.
            let mut buf = Vec::with_capacity(len);
            while buf.len() < len {
                let at = offset + buf.len() as u64;
                if rustix::io::pread(&*file, rustix::buffer::spare_capacity(&mut buf), at)? == 0 {
                    return Err(short());
                }
            }
            return Ok(buf.into());
        }
        let mut buf = self.pool.take(len);
        let mut filled = 0;
        while filled < len {
            match rustix::io::pread(&*file, &mut buf[filled..len], offset + filled as u64)? {
                0 => {
                    self.pool.give(buf);
                    return Err(short());
                }
                got => filled += got,
            }
        }
        Ok(bytes::Bytes::from_owner(Pooled {
            buf,
            len,
            pool: self.pool.clone(),
        }))
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

/// A block found by [`scan`]: verified against its CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub cid: Cid,
    /// Offset of the data (what the index records).
    pub offset: u64,
    pub len: u64,
}

/// What [`scan`] saw in one segment.
#[derive(Debug, Default)]
pub struct Scan {
    pub found: Vec<Found>,
    /// Frames whose data does not hash to their CID, or that end early.
    pub bad_frames: u64,
    /// Bytes skipped looking for the next frame after damage.
    pub skipped_bytes: u64,
    /// Offset just past the last whole frame.
    pub end: u64,
}

/// Bytes [`scan`] holds at once: a window slid along the file.
const SCAN_WINDOW: usize = 64 << 20;
/// The longest frame: header with the longest CID, and the largest block.
const MAX_FRAME: usize = 9 + 255 + shoal_core::MAX_BLOCK_SIZE as usize;

/// Reads a framed segment from start to end, verifying every block. After
/// damage (a bad header, data that fails its CID) it looks for the next
/// frame byte by byte, so one flipped bit loses one block, not the rest of
/// the segment. Holds at most [`SCAN_WINDOW`] bytes in memory.
pub fn scan(path: &Path) -> Result<Scan> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let read = |base: u64| -> Result<Vec<u8>> {
        let want = (size - base).min(SCAN_WINDOW.max(2 * MAX_FRAME) as u64) as usize;
        let mut v = vec![0u8; want];
        let n = rustix::io::pread(&file, &mut v, base).map_err(|e| Error::io(path, e.into()))?;
        v.truncate(n);
        Ok(v)
    };
    let mut out = Scan::default();
    let mut base = 0u64;
    let mut buf = read(0)?;
    let mut at = 0usize;
    loop {
        let more = base + (buf.len() as u64) < size;
        if more && at + MAX_FRAME > buf.len() {
            base += at as u64;
            buf = read(base)?;
            at = 0;
            continue;
        }
        if at + FRAME_MAGIC.len() > buf.len() {
            break;
        }
        let from = match frame_at(&buf, at) {
            Some(Ok((mut found, next))) => {
                found.offset += base;
                out.found.push(found);
                out.end = base + next as u64;
                at = next;
                continue;
            }
            Some(Err(())) => {
                out.bad_frames += 1;
                at + 1
            }
            None => at + 1,
        };
        // Look for the next frame; without one in this window, keep its
        // last bytes (a magic may straddle the edge) and slide.
        let next = match resync(&buf, from) {
            Some(n) => n,
            None if more => buf.len() - (FRAME_MAGIC.len() - 1),
            None => buf.len(),
        };
        out.skipped_bytes += (next.max(at) - at) as u64;
        at = next.max(at + 1);
    }
    Ok(out)
}

/// The frame at `at`: None if no frame starts there, Err if one does but
/// its data is short or does not hash to its CID.
fn frame_at(data: &[u8], at: usize) -> Option<Result<(Found, usize), ()>> {
    if data.get(at..at + 4)? != FRAME_MAGIC {
        return None;
    }
    let clen = *data.get(at + 4)? as usize;
    let cid = Cid::try_from(data.get(at + 5..at + 5 + clen)?).ok()?;
    let lb = data.get(at + 5 + clen..at + 9 + clen)?;
    let len = u32::from_le_bytes(lb.try_into().ok()?) as usize;
    let start = at + 9 + clen;
    let Some(bytes) = data.get(start..start + len) else {
        return Some(Err(()));
    };
    match Block::verified(cid, bytes.to_vec().into()) {
        Ok(_) => Some(Ok((
            Found {
                cid,
                offset: start as u64,
                len: len as u64,
            },
            start + len,
        ))),
        Err(_) => Some(Err(())),
    }
}

/// The next offset from `from` where a frame's magic starts.
fn resync(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(FRAME_MAGIC.len())
        .position(|w| w == FRAME_MAGIC)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_buffer_is_read_into_again_once_its_last_bytes_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(segment_path(dir.path(), 7), &data).unwrap();
        let r = Readers::default();
        let mb = 1 << 20;
        let a = r.read(dir.path(), 7, 0, mb).unwrap();
        assert_eq!(&a[..], &data[..mb]);
        let (ptr, copy) = (a.as_ptr(), a.slice(10..20));
        drop(a);
        // A slice still holds the buffer: the next read gets another.
        let b = r.read(dir.path(), 7, mb as u64, mb).unwrap();
        assert_ne!(b.as_ptr(), ptr);
        assert_eq!(&b[..], &data[mb..2 * mb]);
        drop(copy);
        // Both given back; a read of another size class allocates, one of
        // the same class (a block of any length rounding up to it) reads
        // into a kept buffer (the most recent first).
        let b_ptr = b.as_ptr();
        drop(b);
        let odd = r.read(dir.path(), 7, 5, mb / 2 - 5).unwrap();
        assert!(odd.as_ptr() != ptr && odd.as_ptr() != b_ptr);
        assert_eq!(&odd[..], &data[5..mb / 2]);
        let c = r.read(dir.path(), 7, 2 * mb as u64, mb).unwrap();
        assert!(c.as_ptr() == b_ptr, "a kept buffer is read into again");
        assert_eq!(&c[..], &data[2 * mb..3 * mb]);
        drop(c);
        let last = r.read(dir.path(), 7, 2 * mb as u64 + 7, mb - 100_000).unwrap();
        assert!(last.as_ptr() == b_ptr, "a shorter block of the same class reuses it");
        assert_eq!(&last[..], &data[2 * mb + 7..3 * mb - 100_000 + 7]);
        drop(last);
        // Classes: 8 a doubling, a power of two exact.
        assert_eq!(class(mb), mb);
        assert_eq!(class(mb + 1), mb + mb / 4);
        assert_eq!(class(600_000), 640 << 10);
        assert!((POOL_MIN..4 * mb).all(|n| class(n) >= n && class(n) - n < n / 4));
        // Small reads are never pooled; at most POOL_KEPT buffers are kept.
        let small = r.read(dir.path(), 7, 0, 100).unwrap();
        assert_eq!(&small[..], &data[..100]);
        let many: Vec<_> = (0..POOL_KEPT + 4)
            .map(|_| r.read(dir.path(), 7, 0, mb).unwrap())
            .collect();
        drop(many);
        assert_eq!(r.pool.free.lock().unwrap().len(), POOL_KEPT);
        // Reading past the end of the segment is an error, not a short block.
        assert!(r.read(dir.path(), 7, 3 << 20, 10).is_err());
    }
}
