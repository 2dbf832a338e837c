//! The filesystem core: inode tables built from manifests, async reads
//! through a [`Blocks`] source, bounded prefetch. No fuser types.
//!
//! Invariants:
//! - Inode numbers are assigned when a dataset is first looked up and never
//!   change or get reused for the life of the mount.
//! - Once a dataset is loaded, `lookup`, `getattr` and `readdir` answer
//!   from memory; only `read` fetches blocks.
//! - Every block handed to a reader was verified by the source and has the
//!   length the manifest promises; otherwise the read fails with EIO.
//! - Prefetch never holds data in memory: it asks the source to fetch
//!   blocks (which lands them in the local store), at most
//!   `max_inflight_blocks` at once; excess prefetch work is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::future::try_join_all;
use futures::StreamExt;
use shoal_core::manifest::{Content, Entry, Manifest, Node};
use shoal_core::{chunk, cid, Block, Cid};
use tokio::sync::Semaphore;

pub const ROOT_INO: u64 = 1;
/// Manifest pages fetched at once while a dataset loads.
const PAGES_IN_FLIGHT: usize = 16;

/// Where the filesystem gets blocks and dataset names.
#[async_trait::async_trait]
pub trait Blocks: Send + Sync + 'static {
    /// The verified block `cid` of dataset `root` (local, else peers), within
    /// the source's deadline.
    async fn block(&self, cid: Cid, root: Cid) -> Result<Block, String>;
    /// Named datasets, listed at the mount root.
    fn names(&self) -> Vec<(String, Cid)>;
    /// Called when dataset `root` is first opened through the mount and on
    /// every open of one of its files (the daemon's popularity accounting).
    /// Must be quick: it runs on a FUSE thread.
    fn opened(&self, _root: Cid) {}
    /// The dataset whose UnixFS view is `view`, when known (a view's CID
    /// at the mount root opens its dataset).
    fn dataset_of_view(&self, _view: &Cid) -> Option<Cid> {
        None
    }
}

/// An error with the errno the kernel will see.
#[derive(Debug, Clone)]
pub struct FsError {
    pub errno: i32,
    pub msg: String,
}

impl FsError {
    fn new(errno: i32, msg: impl Into<String>) -> Self {
        Self { errno, msg: msg.into() }
    }
    fn enoent(what: impl std::fmt::Display) -> Self {
        Self::new(libc::ENOENT, format!("no such entry: {what}"))
    }
    fn eio(msg: impl Into<String>) -> Self {
        Self::new(libc::EIO, msg)
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.msg, self.errno)
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Chunk files prefetched ahead when a directory is read in order.
    pub readahead_files: usize,
    /// Prefetch blocks in flight at once (the memory/bandwidth budget).
    pub max_inflight_blocks: usize,
    /// Attribute/entry TTL for dataset content (immutable: long).
    pub ttl: Duration,
    /// Bytes of verified blocks kept in memory. The kernel reads in pieces
    /// smaller than a block (128 KiB to 1 MiB); without this cache every
    /// piece would re-read and re-hash the whole block.
    pub cache_bytes: usize,
    /// Memory for the key tables of loaded datasets (entries, inodes,
    /// directory maps; [`TABLE_BYTES_PER_KEY`] plus the key's length and 64
    /// bytes per block, per key). A dataset that would pass it is refused
    /// with ENOMEM while it loads, before its tables are built.
    pub table_bytes: usize,
}

/// Table memory of one key beyond its name and block list: its entry, its
/// inode and its slot in a directory map.
pub const TABLE_BYTES_PER_KEY: usize = 256;

fn table_cost(e: &Entry) -> usize {
    TABLE_BYTES_PER_KEY + e.key.len() + 64 * e.blocks().len()
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            readahead_files: 4,
            max_inflight_blocks: 32,
            ttl: Duration::from_secs(24 * 3600),
            cache_bytes: 64 << 20,
            table_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub is_dir: bool,
    /// A dataset name at the mount root: a symlink to its current CID.
    pub is_link: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub is_dir: bool,
    pub is_link: bool,
}

struct Dataset {
    root: Cid,
    manifest: Manifest,
    entries: Vec<Entry>,
    /// Table memory its keys take (what dropping it gives back).
    cost: usize,
}

enum Kind {
    Dir(BTreeMap<String, u64>),
    File(usize),
    /// A dataset name: a symlink whose target (the name's current root
    /// CID) is read when the kernel follows it.
    Link(String),
}

struct Inode {
    parent: u64,
    kind: Kind,
    ds: Option<Arc<Dataset>>,
}

struct Tables {
    nodes: HashMap<u64, Inode>,
    next: u64,
    /// Mount-root CIDs -> dataset directory inode (loaded datasets).
    top: BTreeMap<String, u64>,
    /// Mount-root dataset names -> their symlink inode.
    links: BTreeMap<String, u64>,
    /// Table memory of the loaded datasets (see [`MountOptions::table_bytes`]).
    used: usize,
    /// The kernel's lookup count of each loaded dataset's directory: when
    /// the kernel forgets it (count 0), nothing below it is referenced
    /// either (a child's dentry pins its parent's), so the dataset's
    /// tables are dropped and rebuilt on the next lookup. Counted under
    /// the read lock with the lookup that hands the inode out, so a forget
    /// (under the write lock) never races a lookup of the same inode.
    lookups: HashMap<u64, AtomicU64>,
}

impl Tables {
    fn alloc(&mut self, node: Inode) -> u64 {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn attr(&self, ino: u64) -> FsResult<Attr> {
        let n = self
            .nodes
            .get(&ino)
            .ok_or_else(|| FsError::enoent(format!("inode {ino}")))?;
        Ok(match &n.kind {
            Kind::Dir(_) => Attr {
                ino,
                size: 0,
                is_dir: true,
                is_link: false,
            },
            Kind::File(i) => Attr {
                ino,
                size: n.ds.as_ref().map(|d| d.entries[*i].size).unwrap_or(0),
                is_dir: false,
                is_link: false,
            },
            // A CID's text is 59 bytes for every root shoal makes; the
            // kernel reads the target itself with readlink.
            Kind::Link(_) => Attr {
                ino,
                size: 59,
                is_dir: false,
                is_link: true,
            },
        })
    }
}

pub struct MountFs<B> {
    blocks: Arc<B>,
    tables: RwLock<Tables>,
    opts: MountOptions,
    /// One dataset load at a time per name (two lookups racing on a cold
    /// name must not build two trees).
    loading: tokio::sync::Mutex<()>,
    prefetch: Arc<Semaphore>,
    prefetch_queued: Arc<AtomicUsize>,
    prefetched: Mutex<HashSet<u64>>,
    last_read_in_dir: Mutex<HashMap<u64, u64>>,
    cache: Mutex<BlockCache>,
    pub started: SystemTime,
}

/// A byte-bounded LRU of verified blocks.
struct BlockCache {
    max: usize,
    used: usize,
    tick: u64,
    blocks: HashMap<Cid, (Block, u64)>,
    order: BTreeMap<u64, Cid>,
}

impl BlockCache {
    fn get(&mut self, cid: &Cid) -> Option<Block> {
        self.tick += 1;
        let (b, t) = self.blocks.get_mut(cid)?;
        self.order.remove(t);
        *t = self.tick;
        self.order.insert(self.tick, *cid);
        Some(b.clone())
    }

    fn put(&mut self, b: &Block) {
        if b.len() > self.max || self.blocks.contains_key(b.cid()) {
            return;
        }
        while self.used + b.len() > self.max {
            let Some((_, old)) = self.order.pop_first() else { break };
            if let Some((ob, _)) = self.blocks.remove(&old) {
                self.used -= ob.len();
            }
        }
        self.tick += 1;
        self.used += b.len();
        self.blocks.insert(*b.cid(), (b.clone(), self.tick));
        self.order.insert(self.tick, *b.cid());
    }
}

impl<B: Blocks> MountFs<B> {
    pub fn new(blocks: Arc<B>, opts: MountOptions) -> Self {
        let cache_bytes = opts.cache_bytes;
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Inode {
                parent: ROOT_INO,
                kind: Kind::Dir(BTreeMap::new()),
                ds: None,
            },
        );
        Self {
            blocks,
            tables: RwLock::new(Tables {
                nodes,
                next: ROOT_INO + 1,
                top: BTreeMap::new(),
                links: BTreeMap::new(),
                used: 0,
                lookups: HashMap::new(),
            }),
            prefetch: Arc::new(Semaphore::new(opts.max_inflight_blocks.max(1))),
            prefetch_queued: Arc::new(AtomicUsize::new(0)),
            opts,
            loading: tokio::sync::Mutex::new(()),
            prefetched: Mutex::new(HashSet::new()),
            last_read_in_dir: Mutex::new(HashMap::new()),
            cache: Mutex::new(BlockCache {
                max: cache_bytes,
                used: 0,
                tick: 0,
                blocks: HashMap::new(),
                order: BTreeMap::new(),
            }),
            started: SystemTime::now(),
        }
    }

    pub fn options(&self) -> &MountOptions {
        &self.opts
    }

    fn read_tables(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().expect("tables lock")
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.read_tables().attr(ino)
    }

    /// Answers a lookup from memory when it can (`None`: the name is a
    /// dataset not loaded yet; call [`Self::lookup`]).
    pub fn lookup_cached(&self, parent: u64, name: &str) -> Option<FsResult<Attr>> {
        let t = self.read_tables();
        if parent == ROOT_INO {
            return t.top.get(name).map(|ino| {
                if let Some(c) = t.lookups.get(ino) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                t.attr(*ino)
            });
        }
        let Some(node) = t.nodes.get(&parent) else {
            return Some(Err(FsError::enoent(format!("inode {parent}"))));
        };
        Some(match &node.kind {
            Kind::Dir(children) => match children.get(name) {
                Some(ino) => t.attr(*ino),
                None => Err(FsError::enoent(name)),
            },
            Kind::File(_) | Kind::Link(_) => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        })
    }

    /// Lookup, loading a dataset's manifest (possibly from peers) when
    /// `name` is a dataset name or CID at the mount root.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        if let Some(r) = self.lookup_cached(parent, name) {
            return r;
        }
        let root = match cid::parse(name) {
            Ok(c) if c.codec() == cid::DAG_CBOR => c,
            Ok(c) if c.codec() == cid::DAG_PB => {
                self.blocks.dataset_of_view(&c).ok_or_else(|| FsError::enoent(name))?
            }
            // A dataset name is a symlink to its current CID directory: a
            // path through the name follows new versions, every CID
            // directory stays immutable.
            _ if self.blocks.names().iter().any(|(n, _)| n == name) => {
                let mut t = self.tables.write().expect("tables lock");
                let ino = match t.links.get(name) {
                    Some(i) => *i,
                    None => {
                        let i = t.alloc(Inode {
                            parent: ROOT_INO,
                            kind: Kind::Link(name.to_string()),
                            ds: None,
                        });
                        t.links.insert(name.to_string(), i);
                        i
                    }
                };
                return t.attr(ino);
            }
            _ => return Err(FsError::enoent(name)),
        };
        let _guard = self.loading.lock().await;
        if let Some(r) = self.lookup_cached(parent, name) {
            return r; // loaded while we waited
        }
        let room = self.opts.table_bytes.saturating_sub(self.read_tables().used);
        let (ds, cost) = self.load(root, room).await?;
        let ds = Arc::new(ds);
        self.blocks.opened(root);
        let mut t = self.tables.write().expect("tables lock");
        t.used += cost;
        let dir = t.alloc(Inode {
            parent: ROOT_INO,
            kind: Kind::Dir(BTreeMap::new()),
            ds: Some(ds.clone()),
        });
        for (i, e) in ds.entries.iter().enumerate() {
            let mut cur = dir;
            let parts: Vec<&str> = e.key.split('/').collect();
            let (file, dirs) = parts.split_last().expect("keys are non-empty");
            let mut ok = true;
            for p in dirs {
                let existing = match &t.nodes[&cur].kind {
                    Kind::Dir(c) => c.get(*p).copied(),
                    Kind::File(_) | Kind::Link(_) => {
                        ok = false;
                        break;
                    }
                };
                cur = match existing {
                    Some(ino) => ino,
                    None => {
                        let ino = t.alloc(Inode {
                            parent: cur,
                            kind: Kind::Dir(BTreeMap::new()),
                            ds: Some(ds.clone()),
                        });
                        if let Some(Kind::Dir(c)) = t.nodes.get_mut(&cur).map(|n| &mut n.kind) {
                            c.insert(p.to_string(), ino);
                        }
                        ino
                    }
                };
            }
            let clash = matches!(&t.nodes[&cur].kind, Kind::Dir(c) if c.contains_key(*file)) || !ok;
            if clash || !matches!(t.nodes[&cur].kind, Kind::Dir(_)) {
                tracing::warn!(root = %root, key = %e.key, "key clashes with a directory of the same name; hidden from the mount");
                continue;
            }
            let ino = t.alloc(Inode {
                parent: cur,
                kind: Kind::File(i),
                ds: Some(ds.clone()),
            });
            if let Some(Kind::Dir(c)) = t.nodes.get_mut(&cur).map(|n| &mut n.kind) {
                c.insert(file.to_string(), ino);
            }
        }
        t.top.insert(name.to_string(), dir);
        // This lookup hands the new directory out: its first reference.
        t.lookups.insert(dir, AtomicU64::new(1));
        t.attr(dir)
    }

    /// The kernel forgot `n` references to `ino` (or a reference counted by
    /// a lookup never reached it). A dataset directory whose count reaches
    /// zero takes its whole table with it; lookups at the mount root count
    /// the references they hand out.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut t = self.tables.write().expect("tables lock");
        let Some(c) = t.lookups.get_mut(&ino) else { return };
        let left = c.get_mut().saturating_sub(n);
        *c.get_mut() = left;
        if left > 0 {
            return;
        }
        t.lookups.remove(&ino);
        let Some(ds) = t.nodes.get(&ino).and_then(|n| n.ds.clone()) else {
            return;
        };
        t.nodes
            .retain(|_, n| !n.ds.as_ref().is_some_and(|d| Arc::ptr_eq(d, &ds)));
        t.top.retain(|_, i| *i != ino);
        t.used = t.used.saturating_sub(ds.cost);
        tracing::debug!(root = %ds.root, freed = ds.cost, "the kernel forgot a dataset: its tables are dropped");
    }

    /// Fetches the manifest root and every page (concurrently per level),
    /// counting the table memory its keys will take; more than `room` is
    /// ENOMEM, found while loading (the root's key count may lie).
    async fn load(&self, root: Cid, room: usize) -> FsResult<(Dataset, usize)> {
        let mut cost = 0usize;
        let mut count = |es: &[Entry]| -> FsResult<()> {
            cost += es.iter().map(table_cost).sum::<usize>();
            if cost > room {
                return Err(FsError::new(
                    libc::ENOMEM,
                    format!(
                        "dataset {root}: its key tables need more than the {room} bytes left of the mount's table memory; raise [mount] table_memory in config.toml or remount"
                    ),
                ));
            }
            Ok(())
        };
        let fetch = |c: Cid| {
            let blocks = self.blocks.clone();
            async move {
                blocks
                    .block(c, root)
                    .await
                    .map_err(|e| FsError::eio(format!("dataset {root}: {e}")))
            }
        };
        let rb = fetch(root).await?;
        let manifest = Manifest::decode(&rb).map_err(|e| FsError::eio(e.to_string()))?;
        count(&manifest.metadata)?;
        if let Node::Leaf(es) = &manifest.top {
            count(es)?;
        }
        let mut entries = manifest.metadata.clone();
        let mut level = vec![manifest.top.clone()];
        for _depth in 0..=shoal_core::manifest::MAX_DEPTH {
            let mut next = Vec::new();
            for node in level {
                match node {
                    Node::Leaf(es) => entries.extend(es),
                    Node::Inner(children) => {
                        // A few pages in flight, each decoded and counted as
                        // it arrives: raw pages never pile up in memory.
                        let futs: Vec<_> = children.iter().map(|c| fetch(c.cid)).collect();
                        let mut pages = futures::stream::iter(futs).buffered(PAGES_IN_FLIGHT);
                        let mut children = children.iter();
                        while let Some(page) = pages.next().await {
                            let child = children.next().expect("one child per page");
                            let node = manifest
                                .decode_page(&page?, child)
                                .map_err(|e| FsError::eio(e.to_string()))?;
                            if let Node::Leaf(es) = &node {
                                count(es)?;
                            }
                            next.push(node);
                        }
                    }
                }
            }
            if next.is_empty() {
                entries.sort_by(|a, b| a.key.cmp(&b.key));
                let ds = Dataset {
                    root,
                    manifest,
                    entries,
                    cost,
                };
                return Ok((ds, cost));
            }
            level = next;
        }
        Err(FsError::eio(format!("dataset {root}: manifest deeper than allowed")))
    }

    pub fn readdir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let t = self.read_tables();
        if ino == ROOT_INO {
            let mut out: BTreeMap<String, DirEntry> = BTreeMap::new();
            for (name, d) in &t.top {
                out.insert(
                    name.clone(),
                    DirEntry {
                        ino: *d,
                        name: name.clone(),
                        is_dir: true,
                        is_link: false,
                    },
                );
            }
            // Dataset names: symlinks to their CIDs. An inode not made yet
            // is a placeholder the kernel replaces on lookup.
            for (name, _) in self.blocks.names() {
                let ino = t.links.get(&name).copied().unwrap_or(u64::MAX);
                out.entry(name.clone()).or_insert(DirEntry {
                    ino,
                    name,
                    is_dir: false,
                    is_link: true,
                });
            }
            return Ok(out.into_values().collect());
        }
        Ok(self
            .readdir_page(ino, 0, usize::MAX)?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// Up to `max` entries of directory `ino` starting at index `skip`
    /// (not counting "." and ".."), with their attributes: the readdir and
    /// readdirplus pages. Not for the mount root (see [`Self::readdir`]).
    pub fn readdir_page(&self, ino: u64, skip: usize, max: usize) -> FsResult<Vec<(DirEntry, Attr)>> {
        let t = self.read_tables();
        let node = t
            .nodes
            .get(&ino)
            .ok_or_else(|| FsError::enoent(format!("inode {ino}")))?;
        let Kind::Dir(children) = &node.kind else {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        };
        children
            .iter()
            .skip(skip)
            .take(max)
            .map(|(name, c)| {
                let a = t.attr(*c)?;
                Ok((
                    DirEntry {
                        ino: *c,
                        name: name.clone(),
                        is_dir: a.is_dir,
                        is_link: a.is_link,
                    },
                    a,
                ))
            })
            .collect()
    }

    /// The target of a name's symlink: its current root CID (ENOENT once
    /// the name is gone).
    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let name = match self.read_tables().nodes.get(&ino).map(|n| &n.kind) {
            Some(Kind::Link(name)) => name.clone(),
            Some(_) => return Err(FsError::new(libc::EINVAL, "not a symlink")),
            None => return Err(FsError::enoent(format!("inode {ino}"))),
        };
        self.blocks
            .names()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.to_string())
            .ok_or_else(|| FsError::enoent(format!("the name {name} no longer exists")))
    }

    pub fn parent(&self, ino: u64) -> u64 {
        self.read_tables().nodes.get(&ino).map(|n| n.parent).unwrap_or(ROOT_INO)
    }

    fn file(&self, ino: u64) -> FsResult<(Arc<Dataset>, usize, u64)> {
        let t = self.read_tables();
        let n = t
            .nodes
            .get(&ino)
            .ok_or_else(|| FsError::enoent(format!("inode {ino}")))?;
        match (&n.kind, &n.ds) {
            (Kind::File(i), Some(ds)) => Ok((ds.clone(), *i, n.parent)),
            _ => Err(FsError::new(libc::EISDIR, "is a directory")),
        }
    }

    /// A file is opened: checks it is one and counts the open for its dataset.
    pub fn open(&self, ino: u64) -> FsResult<()> {
        let (ds, _, _) = self.file(ino)?;
        self.blocks.opened(ds.root);
        Ok(())
    }

    /// Reads `size` bytes at `offset` of a file.
    pub async fn read(self: &Arc<Self>, ino: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        tracing::trace!(ino, offset, size, "read");
        let (ds, idx, dir) = self.file(ino)?;
        let e = &ds.entries[idx];
        let end = (offset + u64::from(size)).min(e.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let cids = match &e.content {
            Content::Inline(d) => return Ok(d.slice(offset as usize..end as usize)),
            Content::Blocks(c) => c,
        };
        let bs = u64::from(ds.manifest.block_size);
        let (first, last) = (offset / bs, (end - 1) / bs);
        self.maybe_prefetch(ino, &ds, idx, dir, first..=last);
        let (size, block_size) = (e.size, ds.manifest.block_size);
        let got = try_join_all((first..=last).map(|bi| {
            let blocks = self.blocks.clone();
            let (cid, root, key) = (cids[bi as usize], ds.root, e.key.clone());
            let this = self.clone();
            async move {
                let cached = this.cache.lock().expect("cache lock").get(&cid);
                let b = match cached {
                    Some(b) => b,
                    None => {
                        let b = blocks
                            .block(cid, root)
                            .await
                            .map_err(|err| FsError::eio(format!("{root}/{key}: block {cid}: {err}")))?;
                        this.cache.lock().expect("cache lock").put(&b);
                        b
                    }
                };
                let want = chunk::block_len(size, block_size, bi);
                if b.len() as u64 != want {
                    return Err(FsError::eio(format!(
                        "{root}/{key}: block {cid} has {} bytes, manifest says {want}",
                        b.len()
                    )));
                }
                Ok(b)
            }
        }))
        .await?;
        if let [b] = got.as_slice() {
            // Within one block: a zero-copy slice.
            let block_start = first * bs;
            return Ok(b
                .data()
                .slice((offset - block_start) as usize..((end - block_start) as usize).min(b.len())));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (i, b) in got.iter().enumerate() {
            let block_start = (first + i as u64) * bs;
            let s = offset.saturating_sub(block_start) as usize;
            let t = ((end - block_start) as usize).min(b.len());
            out.extend_from_slice(&b.data()[s..t]);
        }
        Ok(out.freeze())
    }

    /// First read of a file: fetch the rest of it in the background. Reads
    /// that walk a directory in order: also the next few chunk files.
    fn maybe_prefetch(
        self: &Arc<Self>,
        ino: u64,
        ds: &Arc<Dataset>,
        idx: usize,
        dir: u64,
        demanded: std::ops::RangeInclusive<u64>,
    ) {
        if !self.prefetched.lock().expect("prefetch lock").insert(ino) {
            return;
        }
        let mut files = vec![idx];
        let sequential = {
            let mut last = self.last_read_in_dir.lock().expect("last-read lock");
            let prev = last.insert(dir, ino);
            prev.is_some_and(|p| self.next_file(dir, p) == Some(ino))
        };
        if sequential {
            let mut cur = ino;
            for _ in 0..self.opts.readahead_files {
                let Some(n) = self.next_file(dir, cur) else { break };
                if let Ok((_, i, _)) = self.file(n) {
                    files.push(i);
                }
                cur = n;
            }
        }
        for i in files {
            for (bi, cid) in ds.entries[i].blocks().to_vec().into_iter().enumerate() {
                if i == idx && demanded.contains(&(bi as u64)) {
                    continue; // the demand read is fetching it already
                }
                // Bounded: beyond 4x the in-flight budget, prefetch is dropped.
                if self.prefetch_queued.load(Ordering::Relaxed) >= self.opts.max_inflight_blocks * 4 {
                    return;
                }
                self.prefetch_queued.fetch_add(1, Ordering::Relaxed);
                let (sem, queued, blocks, root) = (
                    self.prefetch.clone(),
                    self.prefetch_queued.clone(),
                    self.blocks.clone(),
                    ds.root,
                );
                tokio::spawn(async move {
                    if let Ok(_permit) = sem.acquire().await {
                        let _ = blocks.block(cid, root).await;
                    }
                    queued.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }

    fn next_file(&self, dir: u64, after: u64) -> Option<u64> {
        let t = self.read_tables();
        let Kind::Dir(children) = &t.nodes.get(&dir)?.kind else {
            return None;
        };
        let mut it = children.values().skip_while(|c| **c != after);
        it.next()?;
        it.copied().find(|c| matches!(t.nodes[c].kind, Kind::File(_)))
    }
}

#[cfg(test)]
mod tests;
