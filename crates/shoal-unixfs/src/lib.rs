//! shoal-unixfs: the UnixFS view of a dataset, and CAR v1.
//!
//! A dataset's manifest is shoal's own DAG-CBOR; IPFS tools walk dag-pb
//! UnixFS. The view is a deterministic dag-pb DAG over the same bytes:
//! one directory node per directory of the Zarr hierarchy, whose links
//! point at the dataset's existing raw blocks (a key of one block is
//! linked directly, a key of several gets a UnixFS File node listing them
//! with their sizes), so no chunk byte is stored twice. Metadata documents
//! the manifest keeps inline become raw blocks of the view. A directory
//! whose links' names and CIDs pass [`SHARD_THRESHOLD`] bytes (kubo's
//! rule) is a HAMT shard (fanout 256, murmur3-x64-64 of the name, link
//! names of two upper-case hex digits plus the entry's name at leaves).
//! Every node is hashed with blake3 like everything else in shoal.
//!
//! - [`ViewBuilder`] builds the view from entries in key order (the order a
//!   manifest yields them), holding only the directories on the current
//!   path, and hands each new block to a callback.
//! - [`links`] and [`resolve`] walk view nodes (for GC, CAR export, paths).
//! - [`car`] writes and reads CAR v1 streams.

pub mod car;
pub mod ipfs;
pub mod pb;
pub mod walk;

use shoal_core::cid::{self, Cid, DAG_PB, RAW};
use shoal_core::manifest::{Content, Entry};

pub use pb::Link;
pub use walk::{Walk, WalkLimits};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed dag-pb or UnixFS data: {0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no {0:?} in this directory")]
    NotFound(String),
    #[error("block {0} is not available")]
    Missing(Cid),
    /// A walk passed one of its [`WalkLimits`] (a DAG that expands past
    /// what it may stand for).
    #[error("the DAG is too large to walk: {0}")]
    Budget(String),
    #[error(transparent)]
    Core(#[from] shoal_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Names + CIDs of a directory's links beyond which it is sharded (kubo).
pub const SHARD_THRESHOLD: usize = 256 << 10;
/// HAMT fanout (8 bits of the name's hash per level).
pub const FANOUT: u64 = 256;
/// Levels a 64-bit hash gives at 8 bits per level.
const MAX_HAMT_DEPTH: usize = 8;

/// murmur3 x64 128 (seed 0), its first 64 bits: the HAMT's hash function
/// (`murmur3-x64-64`), as go-unixfs and js `@multiformats/murmur3` use it.
/// Levels consume its big-endian bytes, one per level.
pub fn murmur3_x64_64(data: &[u8]) -> u64 {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    fn fmix(mut k: u64) -> u64 {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
    let (mut h1, mut h2) = (0u64, 0u64);
    let blocks = data.len() / 16;
    for i in 0..blocks {
        let b = &data[i * 16..i * 16 + 16];
        let mut k1 = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let mut k2 = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = &data[blocks * 16..];
    let (mut k1, mut k2) = (0u64, 0u64);
    for i in (8..tail.len()).rev() {
        k2 ^= u64::from(tail[i]) << ((i - 8) * 8);
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    for i in (0..tail.len().min(8)).rev() {
        k1 ^= u64::from(tail[i]) << (i * 8);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1.wrapping_add(h2)
}

/// Where new view blocks go (the store, a CAR, a test's map).
pub type Put<'a> = dyn FnMut(Cid, Vec<u8>) -> Result<()> + 'a;

fn put_node(put: &mut Put, links: &[Link], data: &pb::UnixFs) -> Result<(Cid, u64)> {
    let node = pb::encode_node(links, &data.encode());
    let cid = cid::cid_of(DAG_PB, &node);
    let tsize = node.len() as u64 + links.iter().map(|l| l.tsize).sum::<u64>();
    put(cid, node)?;
    Ok((cid, tsize))
}

/// The link of one key's bytes: its raw block, a File node over its
/// blocks, or (inline metadata) a new raw block.
fn file_link(e: &Entry, name: &str, block_size: u64, put: &mut Put) -> Result<Link> {
    let (cid, tsize) = match &e.content {
        Content::Inline(b) => {
            let cid = cid::cid_of(RAW, b);
            put(cid, b.to_vec())?;
            (cid, b.len() as u64)
        }
        // An empty file (a `.done` marker, an empty README): a File node
        // with no links and no data, as kubo writes one.
        Content::Blocks(bs) if bs.is_empty() && e.size == 0 => {
            let data = pb::UnixFs {
                kind: pb::FILE,
                filesize: Some(0),
                ..Default::default()
            };
            put_node(put, &[], &data)?
        }
        Content::Blocks(bs) if bs.len() == 1 => (bs[0], e.size),
        Content::Blocks(bs) => {
            let n = bs.len() as u64;
            let last = e
                .size
                .checked_sub((n - 1) * block_size)
                .filter(|l| *l > 0 && *l <= block_size);
            let last = last
                .ok_or_else(|| Error::Invalid(format!("{}: {} bytes in {n} blocks of {block_size}", e.key, e.size)))?;
            let sizes: Vec<u64> = (0..n).map(|i| if i + 1 == n { last } else { block_size }).collect();
            let links: Vec<Link> = bs
                .iter()
                .zip(&sizes)
                .map(|(c, s)| Link {
                    cid: *c,
                    name: String::new(),
                    tsize: *s,
                })
                .collect();
            let data = pb::UnixFs {
                kind: pb::FILE,
                filesize: Some(e.size),
                blocksizes: sizes,
                ..Default::default()
            };
            put_node(put, &links, &data)?
        }
    };
    Ok(Link {
        cid,
        name: name.to_string(),
        tsize,
    })
}

/// A HAMT shard being built.
#[derive(Default)]
struct Shard {
    slots: std::collections::BTreeMap<u8, Slot>,
}

enum Slot {
    Leaf(Link, [u8; 8]),
    Sub(Shard),
}

impl Shard {
    fn insert(&mut self, link: Link, hash: [u8; 8], depth: usize) -> Result<()> {
        if depth >= MAX_HAMT_DEPTH {
            return Err(Error::Invalid(format!("a 64-bit hash collision on {:?}", link.name)));
        }
        let idx = hash[depth];
        let slot = match self.slots.remove(&idx) {
            None => Slot::Leaf(link, hash),
            Some(Slot::Leaf(other, h)) => {
                let mut sub = Shard::default();
                sub.insert(other, h, depth + 1)?;
                sub.insert(link, hash, depth + 1)?;
                Slot::Sub(sub)
            }
            Some(Slot::Sub(mut sub)) => {
                sub.insert(link, hash, depth + 1)?;
                Slot::Sub(sub)
            }
        };
        self.slots.insert(idx, slot);
        Ok(())
    }

    fn store(self, put: &mut Put) -> Result<(Cid, u64)> {
        let mut bitfield = [0u8; 32];
        let mut links = Vec::with_capacity(self.slots.len());
        for (idx, slot) in self.slots {
            bitfield[31 - usize::from(idx) / 8] |= 1 << (idx % 8);
            links.push(match slot {
                Slot::Leaf(l, _) => Link {
                    name: format!("{idx:02X}{}", l.name),
                    ..l
                },
                Slot::Sub(sub) => {
                    let (cid, tsize) = sub.store(put)?;
                    Link {
                        cid,
                        name: format!("{idx:02X}"),
                        tsize,
                    }
                }
            });
        }
        let data = pb::UnixFs {
            kind: pb::HAMT_SHARD,
            data: bitfield.to_vec(),
            hash_type: Some(pb::MURMUR3_X64_64),
            fanout: Some(FANOUT),
            ..Default::default()
        };
        put_node(put, &links, &data)
    }
}

/// Stores a directory of `links` (sorted here), sharded past the threshold.
fn store_dir(mut links: Vec<Link>, put: &mut Put) -> Result<(Cid, u64)> {
    links.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    if let Some(w) = links.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(Error::Invalid(format!(
            "{:?} is both a file and a directory",
            w[0].name
        )));
    }
    let weight: usize = links.iter().map(|l| l.name.len() + l.cid.to_bytes().len()).sum();
    if weight <= SHARD_THRESHOLD {
        let data = pb::UnixFs {
            kind: pb::DIRECTORY,
            ..Default::default()
        };
        return put_node(put, &links, &data);
    }
    let mut shard = Shard::default();
    for l in links {
        let hash = murmur3_x64_64(l.name.as_bytes()).to_be_bytes();
        shard.insert(l, hash, 0)?;
    }
    shard.store(put)
}

/// Builds a view from entries in key order. Only the directories on the
/// path of the current key are held.
pub struct ViewBuilder<'a> {
    put: &'a mut Put<'a>,
    block_size: u64,
    /// Open directories: (name, links so far); `[0]` is the root.
    stack: Vec<(String, Vec<Link>)>,
    last: Option<String>,
}

impl<'a> ViewBuilder<'a> {
    pub fn new(block_size: u32, put: &'a mut Put<'a>) -> Self {
        ViewBuilder {
            put,
            block_size: u64::from(block_size),
            stack: vec![(String::new(), Vec::new())],
            last: None,
        }
    }

    /// Closes open directories down to `depth` (the root is depth 1).
    fn close_to(&mut self, depth: usize) -> Result<()> {
        while self.stack.len() > depth {
            let (name, links) = self.stack.pop().expect("deeper than depth");
            let (cid, tsize) = store_dir(links, self.put)?;
            self.stack
                .last_mut()
                .expect("the root stays")
                .1
                .push(Link { cid, name, tsize });
        }
        Ok(())
    }

    /// Adds the next key (keys must come in strictly increasing order).
    pub fn add(&mut self, e: &Entry) -> Result<()> {
        if self.last.as_deref().is_some_and(|l| l >= e.key.as_str()) {
            return Err(Error::Invalid(format!("keys out of order at {:?}", e.key)));
        }
        let parts: Vec<&str> = e.key.split('/').collect();
        let (file, dirs) = parts.split_last().expect("split yields one part at least");
        let common = self.stack[1..]
            .iter()
            .zip(dirs)
            .take_while(|(open, d)| open.0 == **d)
            .count();
        self.close_to(common + 1)?;
        for d in &dirs[common..] {
            self.stack.push((d.to_string(), Vec::new()));
        }
        let link = file_link(e, file, self.block_size, self.put)?;
        self.stack.last_mut().expect("the root stays").1.push(link);
        self.last = Some(e.key.clone());
        Ok(())
    }

    /// Closes every directory; the view's root CID.
    pub fn finish(mut self) -> Result<Cid> {
        self.close_to(1)?;
        let (_, links) = self.stack.pop().expect("the root");
        Ok(store_dir(links, self.put)?.0)
    }
}

/// The CIDs a view block links to (none for a raw block).
pub fn links(cid: &Cid, data: &[u8]) -> Result<Vec<Cid>> {
    if cid.codec() != DAG_PB {
        return Ok(Vec::new());
    }
    Ok(pb::decode_node(data)?.links.into_iter().map(|l| l.cid).collect())
}

/// One step of looking a name up in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The entry's CID.
    Found(Cid),
    /// A HAMT shard one level down: read it and step again.
    Shard(Cid),
    /// No such entry (or the node is not a directory).
    Absent,
}

/// What a link of a HAMT shard holds: the entry's name after the two hex
/// digits of its slot, or None for a link to a shard one level down. A
/// name that does not start with two hex digits is malformed (names come
/// from untrusted nodes: no slicing inside a character).
pub fn shard_entry(l: &Link) -> Result<Option<&str>> {
    let b = l.name.as_bytes();
    if b.len() < 2 || !b[..2].iter().all(u8::is_ascii_hexdigit) {
        return Err(Error::Malformed(format!(
            "a HAMT link named {:?} has no slot prefix",
            l.name
        )));
    }
    // The two ASCII digits end on a character boundary.
    Ok((b.len() > 2).then(|| &l.name[2..]))
}

/// One link of a directory node, as walks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirLink {
    /// An entry (a HAMT leaf's name without its slot prefix).
    Entry(Link),
    /// A HAMT shard one level down, whose links are entries of the same
    /// directory.
    Shard(Cid),
}

/// The links of a directory node (a plain directory or one HAMT shard), or
/// None when the node is not a directory. The one reading of directories
/// that listings, CAR import and the gateway share.
pub fn dir_links(bytes: &[u8]) -> Result<Option<Vec<DirLink>>> {
    let node = pb::decode_node(bytes)?;
    let fs = pb::UnixFs::decode(&node.data)?;
    match fs.kind {
        pb::DIRECTORY => Ok(Some(node.links.into_iter().map(DirLink::Entry).collect())),
        pb::HAMT_SHARD => {
            let mut out = Vec::with_capacity(node.links.len());
            for l in node.links {
                out.push(match shard_entry(&l)? {
                    None => DirLink::Shard(l.cid),
                    Some(name) => DirLink::Entry(Link {
                        name: name.to_string(),
                        ..l
                    }),
                });
            }
            Ok(Some(out))
        }
        _ => Ok(None),
    }
}

/// What a UnixFS file node holds: bytes inside the node, then its links
/// with the size each stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    pub data: Vec<u8>,
    pub links: Vec<(Cid, u64)>,
}

/// Reads a file node (File or Raw UnixFS type), or None when the node is
/// not a file. Checks that every link has its block size.
pub fn file_node(c: &Cid, bytes: &[u8]) -> Result<Option<FileNode>> {
    let node = pb::decode_node(bytes)?;
    let fs = pb::UnixFs::decode(&node.data)?;
    if !matches!(fs.kind, pb::FILE | pb::RAW) {
        return Ok(None);
    }
    if !node.links.is_empty() && fs.blocksizes.len() != node.links.len() {
        return Err(Error::Malformed(format!(
            "{c}: {} links, {} block sizes",
            node.links.len(),
            fs.blocksizes.len()
        )));
    }
    Ok(Some(FileNode {
        data: fs.data,
        links: node.links.iter().map(|l| l.cid).zip(fs.blocksizes).collect(),
    }))
}

/// Looks `name` up in the directory node `bytes`: a plain directory, or
/// the HAMT shard at `level` of one (0 = the directory's own node). The
/// one lookup rule both the blocking and the async walks use.
pub fn step(bytes: &[u8], name: &str, level: usize) -> Result<Step> {
    let node = pb::decode_node(bytes)?;
    let fs = pb::UnixFs::decode(&node.data)?;
    Ok(match fs.kind {
        pb::DIRECTORY if level == 0 => node
            .links
            .binary_search_by(|l| l.name.as_bytes().cmp(name.as_bytes()))
            .map_or(Step::Absent, |i| Step::Found(node.links[i].cid)),
        pb::HAMT_SHARD if level < MAX_HAMT_DEPTH => {
            let prefix = format!("{:02X}", murmur3_x64_64(name.as_bytes()).to_be_bytes()[level]);
            match node.links.iter().find(|l| l.name.starts_with(&prefix)) {
                None => Step::Absent,
                Some(l) => match shard_entry(l)? {
                    None => Step::Shard(l.cid),
                    Some(n) if n == name => Step::Found(l.cid),
                    Some(_) => Step::Absent,
                },
            }
        }
        _ => Step::Absent,
    })
}

/// Resolves `path` (segments) from a view node: the CID of every segment's
/// node in order (the root's first), as `X-Ipfs-Roots` lists them. `get`
/// fetches a block's bytes. Plain directories and HAMT shards are walked.
pub fn resolve(root: Cid, path: &[&str], get: &mut dyn FnMut(&Cid) -> Result<Vec<u8>>) -> Result<Vec<Cid>> {
    let mut out = vec![root];
    let mut cur = root;
    for seg in path {
        let (mut node, mut level) = (cur, 0);
        cur = loop {
            if node.codec() != DAG_PB {
                return Err(Error::NotFound(seg.to_string()));
            }
            match step(&get(&node)?, seg, level)? {
                Step::Found(c) => break c,
                Step::Shard(c) => (node, level) = (c, level + 1),
                Step::Absent => return Err(Error::NotFound(seg.to_string())),
            }
        };
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
