//! CAR files in and out (`shoal get --car`, `shoal add FILE.car`).
//!
//! Export writes a dataset's UnixFS view as a CAR v1, depth first from the
//! view's root (what `ipfs dag import` takes). Import reads a CAR holding a
//! UnixFS directory (as `ipfs-car pack` or `ipfs dag export` write them:
//! CIDv1, sha2-256 or blake3, raw or dag-pb leaves): a first pass reads
//! every section, verifies the block against its CID and notes where it
//! lies in the file; the directory tree is then rebuilt from the root in a
//! scratch directory beside the store, each block read back from the CAR
//! at its offset (a block the CAR lacks is an error naming it), and added
//! like any Zarr directory, so a CAR with no Zarr inside is refused by the
//! same checks. Nothing is stored before the whole tree is rebuilt, and the
//! scratch directory is removed whatever happens.

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use shoal_core::cid::{Cid, DAG_PB, RAW};
use shoal_unixfs::{car, pb, DirLink, Walk, WalkLimits};

use crate::config::Limits;
use crate::error::{Error, Result};

/// Checks `data` against `c`: blake3 (shoal's) or sha2-256 (IPFS's
/// default), raw or dag-pb.
fn verify(c: &Cid, data: &[u8]) -> Result<()> {
    shoal_unixfs::ipfs::verify(c, data).map_err(|e| Error::BadRequest(format!("the CAR's block {e}")))
}

/// Reads every block of the CAR at `car_path` into `work/blocks` (each
/// verified), then rebuilds the root's directory tree under `work/tree`.
/// Returns the tree's path.
pub(crate) fn unpack(car_path: &Path, work: &Path, limits: &Limits) -> Result<PathBuf> {
    let file = std::fs::File::open(car_path)
        .map_err(|e| Error::BadRequest(format!("cannot read {}: {e}", car_path.display())))?;
    let file2 = file.try_clone().map_err(|e| Error::Internal(e.to_string()))?;
    let bad = |e: shoal_unixfs::Error| Error::BadRequest(format!("{}: {e}", car_path.display()));
    let mut r = car::Reader::new(BufReader::new(file)).map_err(bad)?;
    let root = match r.roots[..] {
        [root] => root,
        _ => {
            return Err(Error::BadRequest(format!(
                "{}: a CAR to add has exactly one root (this one has {})",
                car_path.display(),
                r.roots.len()
            )))
        }
    };
    // Where each verified block lies in the file.
    let mut at: std::collections::HashMap<Cid, (u64, usize)> = std::collections::HashMap::new();
    while let Some((c, data)) = r.next_block().map_err(bad)? {
        verify(&c, &data)?;
        at.insert(c, (r.offset - data.len() as u64, data.len()));
    }
    let tree = work.join("tree");
    let get = |c: &Cid| -> Result<Vec<u8>> {
        let (off, len) = *at
            .get(c)
            .ok_or_else(|| Error::BadRequest(format!("{}: the CAR lacks block {c}", car_path.display())))?;
        let mut buf = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&file2, &mut buf, off)
            .map_err(|e| Error::Internal(format!("re-reading {}: {e}", car_path.display())))?;
        Ok(buf)
    };
    let node = pb::decode_node(&get(&root)?).map_err(bad)?;
    let fs = pb::UnixFs::decode(&node.data).map_err(bad)?;
    if root.codec() != DAG_PB || !matches!(fs.kind, pb::DIRECTORY | pb::HAMT_SHARD) {
        return Err(Error::BadRequest(format!(
            "{}: the CAR's root is not a UnixFS directory (a Zarr hierarchy is one)",
            car_path.display()
        )));
    }
    std::fs::create_dir_all(&tree).map_err(|e| Error::Internal(e.to_string()))?;
    // The rebuilt tree may stand for at most `expansion` times the bytes
    // the CAR holds (identical chunks are linked, not repeated, so a real
    // dataset expands a little; a bomb expands by its fan-out).
    let distinct: u64 = at.values().map(|(_, len)| *len as u64).sum();
    let mut walk = Walk::new(WalkLimits {
        bytes: limits.walk.bytes.min(distinct.saturating_mul(limits.car_expansion)),
        ..limits.walk
    });
    write_dir(&root, &tree, &get, &mut walk, 0)?;
    let tree = unwrap_single(tree);
    if !ZARR_TOP.iter().any(|m| tree.join(m).exists()) {
        return Err(Error::BadRequest(format!(
            "{}: no Zarr hierarchy inside (no zarr.json, .zgroup or .zarray at its top; note that ipfs-car pack leaves out names starting with '.' unless given --hidden)",
            car_path.display()
        )));
    }
    Ok(tree)
}

/// Files that mark the top of a Zarr hierarchy.
pub(crate) const ZARR_TOP: [&str; 3] = ["zarr.json", ".zgroup", ".zarray"];

/// `ipfs-car pack DIR` wraps DIR in a directory of its own: a top without
/// Zarr metadata whose only entry is a directory stands for that directory.
fn unwrap_single(mut tree: PathBuf) -> PathBuf {
    for _ in 0..4 {
        let zarr = ZARR_TOP.iter().any(|m| tree.join(m).exists());
        let entries: Vec<PathBuf> = match std::fs::read_dir(&tree) {
            Ok(d) => d.flatten().map(|e| e.path()).collect(),
            Err(_) => return tree,
        };
        match &entries[..] {
            [only] if !zarr && only.is_dir() => tree = only.clone(),
            _ => return tree,
        }
    }
    tree
}

/// A directory's entries (a HAMT's leaves, names without their prefix).
/// A shard linked twice within one directory is refused (a loop or a
/// bomb); every shard counts against the walk.
fn dir_entries(c: &Cid, get: Get, walk: &mut Walk, depth: usize) -> Result<Vec<pb::Link>> {
    let bad = |e: shoal_unixfs::Error| Error::BadRequest(format!("directory {c}: {e}"));
    let mut out = Vec::new();
    let mut shards = std::collections::HashSet::new();
    let mut todo = vec![(*c, depth)];
    while let Some((node, d)) = todo.pop() {
        walk.enter(d).map_err(bad)?;
        let links = shoal_unixfs::dir_links(&get(&node)?)
            .map_err(bad)?
            .ok_or_else(|| Error::BadRequest(format!("{node} is not a UnixFS directory")))?;
        for l in links {
            match l {
                DirLink::Entry(l) => out.push(l),
                DirLink::Shard(s) if shards.insert(s) => todo.push((s, d + 1)),
                DirLink::Shard(s) => return Err(Error::BadRequest(format!("directory {c} links shard {s} twice"))),
            }
        }
    }
    Ok(out)
}

type Get<'a> = &'a dyn Fn(&Cid) -> Result<Vec<u8>>;

fn write_dir(c: &Cid, dir: &Path, get: Get, walk: &mut Walk, depth: usize) -> Result<()> {
    for l in dir_entries(c, get, walk, depth)? {
        if l.name.is_empty() || l.name == "." || l.name == ".." || l.name.contains('/') || l.name.contains('\0') {
            return Err(Error::BadRequest(format!(
                "directory {c} holds an unsafe name {:?}",
                l.name
            )));
        }
        let path = dir.join(&l.name);
        let is_dir = l.cid.codec() == DAG_PB
            && shoal_unixfs::dir_links(&get(&l.cid)?)
                .map_err(|e| Error::BadRequest(format!("{}: {e}", l.cid)))?
                .is_some();
        if is_dir {
            std::fs::create_dir(&path).map_err(|e| Error::BadRequest(format!("{}: {e}", path.display())))?;
            write_dir(&l.cid, &path, get, walk, depth + 1)?;
        } else {
            let f = std::fs::File::create(&path).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
            let mut w = BufWriter::new(f);
            write_file(&l.cid, &mut w, get, walk, depth + 1)?;
            w.flush().map_err(|e| Error::Internal(e.to_string()))?;
        }
    }
    Ok(())
}

/// Writes the file under `c`; every node reference and every byte is
/// counted against the walk before it is written.
fn write_file(c: &Cid, w: &mut dyn Write, get: Get, walk: &mut Walk, depth: usize) -> Result<()> {
    let budget = |e: shoal_unixfs::Error| {
        Error::BadRequest(format!(
            "the CAR's tree expands past its budget ({e}); a CAR's files may stand for at most `[limits] car_expansion` times the bytes of its distinct blocks, nothing was added"
        ))
    };
    walk.enter(depth).map_err(budget)?;
    let data = get(c)?;
    let io = |e: std::io::Error| Error::Internal(e.to_string());
    if c.codec() == RAW {
        walk.spend(data.len() as u64).map_err(budget)?;
        return w.write_all(&data).map_err(io);
    }
    let node = shoal_unixfs::file_node(c, &data)
        .map_err(|e| Error::BadRequest(format!("file {c}: {e}")))?
        .ok_or_else(|| Error::BadRequest(format!("{c} is a UnixFS node that is not a file")))?;
    walk.spend(node.data.len() as u64).map_err(budget)?;
    w.write_all(&node.data).map_err(io)?;
    for (l, _) in &node.links {
        write_file(l, w, get, walk, depth + 1)?;
    }
    Ok(())
}

/// Writes the view rooted at `view` as a CAR v1 at `out` (written beside it
/// and renamed into place), blocks read with `get`. Returns blocks and
/// bytes written.
pub(crate) fn write_car(view: Cid, out: &Path, get: &dyn Fn(&Cid) -> Result<Vec<u8>>) -> Result<(u64, u64)> {
    let tmp = out.with_extension("car.partial");
    let io = |e: std::io::Error| Error::Internal(format!("{}: {e}", out.display()));
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = BufWriter::new(file);
    let r = (|| {
        w.write_all(&car::header(&[view])).map_err(io)?;
        let (mut blocks, mut bytes) = (0u64, 0u64);
        let mut seen = std::collections::HashSet::new();
        let mut todo = vec![view];
        while let Some(c) = todo.pop() {
            if !seen.insert(c) {
                continue;
            }
            let data = get(&c)?;
            let links = shoal_unixfs::links(&c, &data).map_err(|e| Error::Corrupt(format!("view node {c}: {e}")))?;
            todo.extend(links.into_iter().rev());
            let s = car::section(&c, &data);
            w.write_all(&s).map_err(io)?;
            blocks += 1;
            bytes += s.len() as u64;
        }
        w.flush().map_err(io)?;
        w.get_ref().sync_all().map_err(io)?;
        Ok((blocks, bytes))
    })();
    match r {
        Ok(v) => {
            std::fs::rename(&tmp, out).map_err(io)?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
