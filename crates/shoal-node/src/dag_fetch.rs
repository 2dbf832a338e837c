//! The state of fetching a UnixFS directory that IPFS nodes hold, block
//! by block, into a CAR beside the store (`shoal pin CID` of a dag-pb
//! CID): no I/O to the network here, so it is tested on its own.
//!
//! Each block the network hands in (already verified against its CID) is
//! counted against the walk budget (every distinct block once: no block is
//! expanded twice; depth bounded; bytes bounded), appended to the CAR
//! (flushed, so a killed daemon keeps it), and its links become the next
//! CIDs to fetch. Once nothing is left, the CAR goes to the CAR import,
//! which rebuilds the tree under its own expansion budget and adds it, so
//! the result is exactly what `shoal add FILE.car` makes.
//!
//! Resumable: a CAR left by an earlier attempt is read first (each block
//! verified again, a torn last section cut off), and the blocks it holds
//! are expanded from it instead of being fetched.
//!
//! Refused early, before the rest is fetched: a root that is not a UnixFS
//! directory, and a plain directory root with no Zarr metadata at its top
//! that is not a single directory wrapping one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shoal_core::cid::{Cid, DAG_PB};
use shoal_unixfs::{car, ipfs, pb, Walk};

use crate::car::ZARR_TOP;
use crate::config::Limits;
use crate::error::{Error, Result};

/// Largest block taken (a CAR section's limit, less its CID).
const MAX_BLOCK: usize = car::MAX_SECTION - 128;

pub(crate) struct DagFetch {
    root: Cid,
    path: PathBuf,
    file: File,
    /// Where the CAR ends (the next section goes there).
    end: u64,
    walk: Walk,
    /// CIDs asked for (or held) and not yet expanded, with their depth.
    pending: HashMap<Cid, usize>,
    /// Blocks the CAR held when this fetch began: where they lie.
    held: HashMap<Cid, (u64, usize)>,
    /// Blocks taken from the CAR of an earlier attempt.
    pub resumed: u64,
    /// Blocks and bytes fetched now.
    pub blocks: u64,
    pub bytes: u64,
}

impl DagFetch {
    /// Opens the CAR at `path` for `root` (created, or resumed when an
    /// earlier attempt left one).
    pub(crate) fn open(path: &Path, root: Cid, limits: &Limits) -> Result<Self> {
        ipfs::check(&root).map_err(|e| Error::BadRequest(e.to_string()))?;
        if root.codec() != DAG_PB {
            return Err(Error::BadRequest(format!(
                "{root} is a raw block, not a UnixFS directory (a Zarr hierarchy is one)"
            )));
        }
        let io = |e: std::io::Error| Error::Internal(format!("{}: {e}", path.display()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut held = HashMap::new();
        let mut end = 0;
        if let Ok(mut r) = car::Reader::new(BufReader::new(file.try_clone().map_err(io)?)) {
            if r.roots == [root] {
                end = r.offset;
                // Sections up to the first torn or wrong one.
                while let Ok(Some((c, data))) = r.next_block() {
                    if ipfs::verify(&c, &data).is_err() {
                        break;
                    }
                    held.insert(c, (r.offset - data.len() as u64, data.len()));
                    end = r.offset;
                }
            }
        }
        if end == 0 {
            let h = car::header(&[root]);
            file.set_len(0).map_err(io)?;
            file.write_all_at(&h, 0).map_err(io)?;
            end = h.len() as u64;
        } else {
            file.set_len(end).map_err(io)?;
        }
        Ok(DagFetch {
            root,
            path: path.to_path_buf(),
            file,
            end,
            walk: Walk::new(limits.walk),
            pending: HashMap::new(),
            held,
            resumed: 0,
            blocks: 0,
            bytes: 0,
        })
    }

    /// The CIDs to fetch first (the root, or what the resumed CAR lacks).
    pub(crate) fn start(&mut self) -> Result<Vec<Cid>> {
        let mut out = Vec::new();
        self.offer(self.root, 0, &mut out)?;
        Ok(out)
    }

    /// Takes a block the network fetched (verified against `cid`):
    /// counted, appended to the CAR, and expanded. Returns the CIDs to
    /// fetch next.
    pub(crate) fn on_block(&mut self, cid: Cid, data: &[u8]) -> Result<Vec<Cid>> {
        let Some(depth) = self.pending.remove(&cid) else {
            return Ok(Vec::new());
        };
        if data.len() > MAX_BLOCK {
            return Err(Error::BadRequest(format!(
                "block {cid} holds {} bytes; blocks over {MAX_BLOCK} are refused",
                data.len()
            )));
        }
        self.walk.spend(data.len() as u64).map_err(budget)?;
        let section = car::section(&cid, data);
        let io = |e: std::io::Error| Error::Internal(format!("{}: {e}", self.path.display()));
        self.file.write_all_at(&section, self.end).map_err(io)?;
        self.end += section.len() as u64;
        self.blocks += 1;
        self.bytes += data.len() as u64;
        let mut out = Vec::new();
        self.expand(cid, data, depth, &mut out)?;
        Ok(out)
    }

    /// The CAR, complete: nothing pending.
    pub(crate) fn finish(mut self) -> Result<PathBuf> {
        if let Some(c) = self.pending.keys().next() {
            return Err(Error::Internal(format!("block {c} was never fetched")));
        }
        self.file
            .flush()
            .map_err(|e| Error::Internal(format!("{}: {e}", self.path.display())))?;
        Ok(self.path)
    }

    /// A reference to `c` at `depth`: counted; the first one is expanded
    /// from the CAR when held, else queued to fetch.
    fn offer(&mut self, c: Cid, depth: usize, out: &mut Vec<Cid>) -> Result<()> {
        ipfs::check(&c).map_err(|e| Error::BadRequest(format!("not a UnixFS DAG: {e}")))?;
        self.walk.enter(depth).map_err(budget)?;
        if !self.walk.first(&c) {
            return Ok(());
        }
        match self.held.get(&c).copied() {
            Some((off, len)) => {
                let mut data = vec![0u8; len];
                self.file
                    .read_exact_at(&mut data, off)
                    .map_err(|e| Error::Internal(format!("{}: {e}", self.path.display())))?;
                self.walk.spend(len as u64).map_err(budget)?;
                self.resumed += 1;
                self.expand(c, &data, depth, out)
            }
            None => {
                self.pending.insert(c, depth);
                out.push(c);
                Ok(())
            }
        }
    }

    fn expand(&mut self, c: Cid, data: &[u8], depth: usize, out: &mut Vec<Cid>) -> Result<()> {
        if c.codec() != DAG_PB {
            return Ok(());
        }
        let bad = |e: shoal_unixfs::Error| Error::BadRequest(format!("block {c}: {e}"));
        let node = pb::decode_node(data).map_err(bad)?;
        if c == self.root {
            check_root(c, &node)?;
        }
        for l in node.links {
            self.offer(l.cid, depth + 1, out)?;
        }
        Ok(())
    }
}

/// A root that cannot hold a Zarr hierarchy is refused before the rest is
/// fetched: not a directory, or a plain directory with no Zarr metadata
/// at its top that is not one directory wrapping another (`ipfs-car pack`
/// and helia's `addAll` wrap; a HAMT root is left to the import's check).
fn check_root(c: Cid, node: &pb::Node) -> Result<()> {
    let fs = pb::UnixFs::decode(&node.data).map_err(|e| Error::BadRequest(format!("block {c}: {e}")))?;
    match fs.kind {
        pb::HAMT_SHARD => Ok(()),
        pb::DIRECTORY => {
            let zarr = node.links.iter().any(|l| ZARR_TOP.contains(&l.name.as_str()));
            let wrapper = node.links.len() == 1 && node.links[0].cid.codec() == DAG_PB;
            match zarr || wrapper {
                true => Ok(()),
                false => Err(Error::BadRequest(format!(
                    "{c} holds no Zarr hierarchy (no zarr.json, .zgroup or .zarray at its top); nothing was kept"
                ))),
            }
        }
        _ => Err(Error::BadRequest(format!(
            "{c} is not a UnixFS directory (a Zarr hierarchy is one)"
        ))),
    }
}

fn budget(e: shoal_unixfs::Error) -> Error {
    Error::BadRequest(format!(
        "the DAG expands past its walk budget ({e}; see [limits] walk_*); nothing was kept"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::cid::RAW;
    use shoal_unixfs::ipfs::{cid_for, SHA2_256};

    fn dir(entries: &[(&str, Cid)]) -> (Cid, Vec<u8>) {
        let links: Vec<pb::Link> = entries
            .iter()
            .map(|(n, c)| pb::Link {
                cid: *c,
                name: n.to_string(),
                tsize: 1,
            })
            .collect();
        let data = pb::UnixFs {
            kind: pb::DIRECTORY,
            ..Default::default()
        }
        .encode();
        let b = pb::encode_node(&links, &data);
        (cid_for(1, DAG_PB, SHA2_256, &b).unwrap(), b)
    }

    fn leaf(b: &[u8]) -> Cid {
        cid_for(1, RAW, SHA2_256, b).unwrap()
    }

    /// Fetches everything `f` asks for from `blocks`, stopping after
    /// `stop_after` blocks (an interrupted attempt) when given.
    fn drive(f: &mut DagFetch, blocks: &HashMap<Cid, Vec<u8>>, stop_after: Option<usize>) -> Result<usize> {
        let mut todo = f.start()?;
        let mut n = 0;
        while let Some(c) = todo.pop() {
            if stop_after == Some(n) {
                return Ok(n);
            }
            todo.extend(f.on_block(c, &blocks[&c])?);
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn fetches_every_block_once_and_resumes_from_the_car() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (leaf(b"{\"zarr_format\":3}"), leaf(b"chunk"));
        let (sub, sub_b) = dir(&[("0", b), ("1", b)]);
        let (root, root_b) = dir(&[("zarr.json", a), ("c", sub)]);
        let blocks: HashMap<Cid, Vec<u8>> = [
            (a, b"{\"zarr_format\":3}".to_vec()),
            (b, b"chunk".to_vec()),
            (sub, sub_b),
            (root, root_b),
        ]
        .into();
        let path = tmp.path().join("x.car");
        let limits = Limits::default();
        let mut f = DagFetch::open(&path, root, &limits).unwrap();
        assert_eq!(drive(&mut f, &blocks, Some(2)).unwrap(), 2);
        drop(f);
        // A torn section at the end (a kill mid-write) is cut off.
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[0x40, 1, 2])
            .unwrap();
        let mut f = DagFetch::open(&path, root, &limits).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        // The shared leaf is fetched once though linked twice.
        assert_eq!(drive(&mut f, &blocks, None).unwrap(), 2);
        assert_eq!(f.resumed, 2);
        let path = f.finish().unwrap();
        let mut r = car::Reader::new(std::fs::File::open(path).unwrap()).unwrap();
        let mut n = 0;
        while let Some((c, d)) = r.next_block().unwrap() {
            assert_eq!(blocks[&c], d);
            n += 1;
        }
        assert_eq!(n, 4);
    }

    #[test]
    fn a_root_without_zarr_is_refused_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (x, y) = (leaf(b"x"), leaf(b"y"));
        let (root, root_b) = dir(&[("a.txt", x), ("b.txt", y)]);
        let blocks: HashMap<Cid, Vec<u8>> = [(root, root_b)].into();
        let mut f = DagFetch::open(&tmp.path().join("x.car"), root, &Limits::default()).unwrap();
        let e = drive(&mut f, &blocks, None).unwrap_err();
        assert!(e.to_string().contains("no Zarr hierarchy"), "{e}");
        // A raw root is not a directory.
        assert!(DagFetch::open(&tmp.path().join("y.car"), x, &Limits::default()).is_err());
    }

    #[test]
    fn a_deep_chain_stops_at_the_depth_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let mut blocks = HashMap::new();
        let (mut c, b) = dir(&[("zarr.json", leaf(b"{}"))]);
        blocks.insert(c, b);
        for _ in 0..100 {
            let (p, b) = dir(&[("zarr.json", leaf(b"{}")), ("d", c)]);
            blocks.insert(p, b);
            c = p;
        }
        blocks.insert(leaf(b"{}"), b"{}".to_vec());
        let mut f = DagFetch::open(&tmp.path().join("x.car"), c, &Limits::default()).unwrap();
        let e = drive(&mut f, &blocks, None).unwrap_err();
        assert!(e.to_string().contains("walk budget"), "{e}");
    }
}
