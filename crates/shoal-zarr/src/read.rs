//! Reading keys back: a key's bytes from its blocks, and exporting a whole
//! dataset as a Zarr directory. Generic over where blocks come from (the
//! local store now, the network later) through a fetch function.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use shoal_core::manifest::{Content, Entry, Manifest};
use shoal_core::{chunk, Block, Cid};

use crate::error::{Error, Result};

/// Fetches a verified block.
pub type Fetch<'a> = dyn FnMut(&Cid) -> Result<Block> + 'a;

/// Assembles a key's bytes, checking each block has the expected length.
pub fn entry_bytes(m: &Manifest, entry: &Entry, fetch: &mut Fetch<'_>) -> Result<Bytes> {
    entry_range(m, entry, 0, entry.size, fetch)
}

/// The bytes of `entry` in `[start, end)` (clamped to its size), fetching
/// only the blocks that cover them and checking each block's length against
/// the manifest. A range inside one block is a slice of it (no copy).
pub fn entry_range(m: &Manifest, entry: &Entry, start: u64, end: u64, fetch: &mut Fetch<'_>) -> Result<Bytes> {
    let end = end.min(entry.size);
    if start >= end {
        return Ok(Bytes::new());
    }
    let cids = match &entry.content {
        Content::Inline(d) => return Ok(d.slice(start as usize..end as usize)),
        Content::Blocks(cids) => cids,
    };
    let bs = u64::from(m.block_size);
    let (first, last) = (start / bs, (end - 1) / bs);
    let mut out = BytesMut::new();
    for i in first..=last {
        let cid = cids.get(i as usize).ok_or_else(|| Error::BlockSize {
            key: entry.key.clone(),
            cid: cids.last().copied().unwrap_or(m.cid),
            got: 0,
            expected: chunk::block_len(entry.size, m.block_size, i),
        })?;
        let b = fetch(cid)?;
        let expected = chunk::block_len(entry.size, m.block_size, i);
        if b.len() as u64 != expected {
            return Err(Error::BlockSize {
                key: entry.key.clone(),
                cid: *cid,
                got: b.len(),
                expected,
            });
        }
        let from = start.saturating_sub(i * bs) as usize;
        let to = (end - i * bs).min(expected) as usize;
        if first == last {
            return Ok(b.into_data().slice(from..to));
        }
        if out.is_empty() {
            out.reserve((end - start) as usize);
        }
        out.extend_from_slice(&b.data()[from..to]);
    }
    Ok(out.freeze())
}

/// Looks a key up and returns its bytes.
pub fn key_bytes(m: &Manifest, key: &str, fetch: &mut Fetch<'_>) -> Result<Bytes> {
    let entry = m.lookup(key, fetch)?.ok_or_else(|| Error::NoSuchKey(key.to_string()))?;
    entry_bytes(m, &entry, fetch)
}

/// Writes every key of the dataset under `out` (which must not exist or be
/// empty, and must not be a symlink). Returns (keys, bytes) written.
///
/// Nothing is written through a symlink: every directory is created and
/// opened relative to its parent's descriptor without following links, and
/// every file is created new (`O_EXCL | O_NOFOLLOW`), so a link planted in
/// the output tree while the export runs (a shared `/tmp`) makes it fail
/// instead of writing elsewhere.
pub fn export(m: &Manifest, out: &Path, fetch: &mut Fetch<'_>, on_key: &mut dyn FnMut(&Entry)) -> Result<(u64, u64)> {
    use rustix::fs::{Mode, OFlags};
    let werr = |path: PathBuf| move |e: std::io::Error| Error::Write { path, source: e };
    if out.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Write {
            path: out.to_path_buf(),
            source: std::io::Error::other("the output path is a symlink; give the directory itself"),
        });
    }
    if out.exists() {
        let empty = std::fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty {
            return Err(Error::OutputExists(out.to_path_buf()));
        }
    }
    std::fs::create_dir_all(out).map_err(werr(out.to_path_buf()))?;
    let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let top = rustix::fs::open(out, dir_flags, Mode::empty()).map_err(|e| werr(out.to_path_buf())(e.into()))?;
    // The open descriptors of the directories on the current key's path
    // (component, fd), outermost first. Keys come sorted, so the keys under
    // one directory are contiguous: a directory left is never needed again
    // and its descriptor is closed, so an export holds O(depth) of them.
    let mut stack: Vec<(String, rustix::fd::OwnedFd)> = Vec::new();
    let entries = m.entries(fetch)?;
    let (mut keys, mut bytes) = (0, 0);
    for e in entries {
        // Keys were validated when the manifest was decoded: relative, no
        // '..' or empty components.
        let (parent, name) = e.key.rsplit_once('/').unwrap_or(("", e.key.as_str()));
        let comps: Vec<&str> = parent.split('/').filter(|c| !c.is_empty()).collect();
        let keep = stack.iter().zip(&comps).take_while(|(s, c)| s.0 == **c).count();
        stack.truncate(keep);
        for (i, comp) in comps.iter().enumerate().skip(keep) {
            let base = stack.last().map(|f| f.1.as_fd()).unwrap_or(top.as_fd());
            let here = || out.join(comps[..=i].join("/"));
            match rustix::fs::mkdirat(base, *comp, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(err) => return Err(werr(here())(err.into())),
            }
            let fd =
                rustix::fs::openat(base, *comp, dir_flags, Mode::empty()).map_err(|err| werr(here())(err.into()))?;
            stack.push((comp.to_string(), fd));
        }
        let path = out.join(&e.key);
        let data = entry_bytes(m, &e, fetch).map_err(|source| Error::Key {
            key: e.key.clone(),
            source: Box::new(source),
        })?;
        let base = stack.last().map(|f| f.1.as_fd()).unwrap_or(top.as_fd());
        let fd = rustix::fs::openat(
            base,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|err| werr(path.clone())(err.into()))?;
        let mut f = std::fs::File::from(fd);
        std::io::Write::write_all(&mut f, &data).map_err(werr(path.clone()))?;
        keys += 1;
        bytes += data.len() as u64;
        on_key(&e);
    }
    Ok((keys, bytes))
}
