//! The filesystem core: inode tables built lazily from manifests, one
//! directory at a time; async reads through a [`Blocks`] source; bounded
//! prefetch. No fuser types.
//!
//! Invariants:
//! - A directory's table (its children) is built when it is first opened
//!   or looked into, from the manifest pages whose key range meets its
//!   prefix; pages wholly inside one subdirectory are not read.
//! - Once a directory is listed, `lookup`, `getattr` and `readdir` in it
//!   answer from memory; only `read` fetches blocks.
//! - Inode numbers are never reused for the life of the mount. While the
//!   kernel references an inode, it keeps its number; a directory the
//!   kernel forgets (FUSE `forget`, lookup counts kept per inode) gives its
//!   table back and is listed again, under new numbers, when next used.
//! - Table memory past `table_bytes` asks the kernel (inval_entry) to
//!   forget the least recently used directories.
//! - Every block handed to a reader was verified by the source and has the
//!   length the manifest promises; otherwise the read fails with EIO.
//! - Read-ahead (the blocks of a file past a read; on a file's first read
//!   in the dataset's key order, the next files) reads blocks through the
//!   source (fetching them from peers into the store when not held here)
//!   into the verified-block cache, at most `max_inflight_blocks` at once
//!   and half the cache's bytes under way; excess work is dropped. A read
//!   that needs a block under way waits for it rather than read it twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::future::try_join_all;
use futures::StreamExt;
use shoal_core::manifest::{ChildRef, Content, Entry, Manifest, Node, PageCache};
use shoal_core::{chunk, cid, Block, Cid};
use tokio::sync::Semaphore;

pub const ROOT_INO: u64 = 1;
/// Listings of the mount root kept for open directory handles.
const MAX_ROOT_LISTS: usize = 64;
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
    /// The dataset a name points at now (a lookup of one name must not
    /// list them all: the root of a 100,000-dataset store has as many).
    fn name(&self, name: &str) -> Option<Cid> {
        self.names().into_iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
    /// Called when dataset `root` is first opened through the mount and on
    /// every open of one of its files (the daemon's popularity accounting).
    /// Must be quick: it runs on a FUSE thread.
    fn opened(&self, _root: Cid) {}
    /// The verified block `cid` if it is held locally, read without
    /// waiting on anything but the disk (`None`: not held, or unusable:
    /// then [`Self::block`] decides). Lets a read of local blocks be
    /// answered on the FUSE thread, with no hop through the runtime.
    fn local(&self, _cid: &Cid) -> Option<Block> {
        None
    }
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
    /// Chunk files read ahead when a dataset's files are read in key order.
    pub readahead_files: usize,
    /// Prefetch blocks in flight at once (the memory/bandwidth budget).
    pub max_inflight_blocks: usize,
    /// Attribute/entry TTL for dataset content (immutable: long).
    pub ttl: Duration,
    /// Bytes of verified blocks kept in memory. The kernel reads in pieces
    /// smaller than a block (128 KiB to 1 MiB); without this cache every
    /// piece would re-read and re-hash the whole block.
    pub cache_bytes: usize,
    /// Memory for the key tables of listed directories (entries, inodes,
    /// directory maps; [`TABLE_BYTES_PER_KEY`] plus twice the key and 96
    /// bytes per block, per key). Past it the least recently used
    /// directories are handed back to the kernel to forget; a directory
    /// that alone would pass it is refused with ENOMEM while it is listed.
    pub table_bytes: usize,
}

/// Table memory of one key beyond its name and block list: its entry, its
/// inode and its slot in a directory map.
pub const TABLE_BYTES_PER_KEY: usize = 320;

fn table_cost(e: &Entry) -> usize {
    TABLE_BYTES_PER_KEY + 2 * e.key.len() + 96 * e.blocks().len()
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            readahead_files: 4,
            max_inflight_blocks: 32,
            ttl: Duration::from_secs(24 * 3600),
            cache_bytes: 64 << 20,
            table_bytes: 256 << 20,
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
}

/// A directory's children, built when it is first listed or looked into.
struct Children {
    names: BTreeMap<Box<str>, u64>,
    /// Table memory they take (given back when the kernel forgets the
    /// directory).
    cost: usize,
}

enum Kind {
    /// A directory of a dataset (`prefix` is its key prefix with a
    /// trailing slash, empty at the dataset's top) or the mount root.
    /// `children` is `None` until listed; `name` is its name in its parent
    /// (what an invalidation names); `tick` when it was last used.
    Dir {
        name: Box<str>,
        prefix: Box<str>,
        children: Option<Children>,
        tick: AtomicU64,
    },
    File(Arc<Entry>),
    /// A dataset name: a symlink whose target (the name's current root
    /// CID) is read when the kernel follows it.
    Link(String),
}

struct Inode {
    parent: u64,
    kind: Kind,
    ds: Option<Arc<Dataset>>,
    /// The kernel's lookup count (lookups and readdirplus entries handed
    /// out, minus forgets). Counted under the read lock with the reply
    /// that hands the inode out, so a forget (under the write lock) never
    /// races it.
    lookups: AtomicU64,
}

struct Tables {
    nodes: HashMap<u64, Inode>,
    next: u64,
    /// Mount-root CIDs -> dataset directory inode (loaded datasets).
    top: BTreeMap<String, u64>,
    /// Mount-root dataset names -> their symlink inode.
    links: BTreeMap<String, u64>,
    /// Table memory of the listed directories (see
    /// [`MountOptions::table_bytes`]).
    used: usize,
}

fn dir_node(parent: u64, name: &str, prefix: &str, ds: Option<Arc<Dataset>>) -> Inode {
    Inode {
        parent,
        kind: Kind::Dir {
            name: name.into(),
            prefix: prefix.into(),
            children: None,
            tick: AtomicU64::new(0),
        },
        ds,
        lookups: AtomicU64::new(0),
    }
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
            Kind::Dir { .. } => Attr {
                ino,
                size: 0,
                is_dir: true,
                is_link: false,
            },
            Kind::File(e) => Attr {
                ino,
                size: e.size,
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

    /// Hands `ino` out to the kernel: one more lookup reference.
    fn counted(&self, ino: u64) -> FsResult<Attr> {
        if let Some(n) = self.nodes.get(&ino) {
            n.lookups.fetch_add(1, Ordering::Relaxed);
        }
        self.attr(ino)
    }

    /// Drops the children of directory `ino` (and theirs), giving their
    /// table memory back.
    fn unload(&mut self, ino: u64) {
        let Some(Kind::Dir { children, .. }) = self.nodes.get_mut(&ino).map(|n| &mut n.kind) else {
            return;
        };
        let Some(c) = children.take() else { return };
        self.used = self.used.saturating_sub(c.cost);
        let mut stack: Vec<u64> = c.names.into_values().collect();
        while let Some(d) = stack.pop() {
            if let Some(Inode {
                kind: Kind::Dir { children: Some(c), .. },
                ..
            }) = self.nodes.remove(&d)
            {
                self.used = self.used.saturating_sub(c.cost);
                stack.extend(c.names.into_values());
            }
        }
    }
}

/// Asks the kernel to drop its entries `(parent, name)` (and so, once
/// unused, to forget them and everything below them). Called with the
/// tables locked: it must not wait for the kernel.
pub type Invalidate = Box<dyn Fn(Vec<(u64, String)>) + Send + Sync>;

/// Decoded manifest pages kept for directory listings (a parent's listing
/// and its children's read the same pages).
const PAGE_CACHE: usize = 8;
/// Files remembered as prefetched, and datasets' read orders (both only
/// steer read-ahead; forgotten past these counts).
const PREFETCH_MEMORY: usize = 1 << 16;

/// A directory's children as its listing finds them.
struct Listing<'a> {
    prefix: &'a str,
    room: usize,
    root: Cid,
    files: Vec<(String, Arc<Entry>)>,
    dirs: std::collections::BTreeSet<String>,
    cost: usize,
}

impl Listing<'_> {
    /// The subdirectory of the listed one that `key` lies in.
    fn subdir<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix)?.split_once('/').map(|(d, _)| d)
    }

    fn entry(&mut self, e: &Entry) -> FsResult<()> {
        let Some(rest) = e.key.strip_prefix(self.prefix) else {
            return Ok(());
        };
        match rest.split_once('/') {
            Some((d, _)) => self.dir(d),
            None => {
                self.cost += table_cost(e);
                self.files.push((rest.to_string(), Arc::new(e.clone())));
                self.check()
            }
        }
    }

    fn dir(&mut self, d: &str) -> FsResult<()> {
        if !self.dirs.contains(d) {
            self.cost += TABLE_BYTES_PER_KEY + d.len();
            self.dirs.insert(d.to_string());
        }
        self.check()
    }

    fn check(&self) -> FsResult<()> {
        if self.cost <= self.room {
            return Ok(());
        }
        Err(FsError::new(
            libc::ENOMEM,
            format!(
                "dataset {}: directory '{}' needs more than the mount's {} bytes of table memory; raise [mount] table_memory in config.toml",
                self.root, self.prefix, self.room
            ),
        ))
    }
}

pub struct MountFs<B> {
    blocks: Arc<B>,
    tables: RwLock<Tables>,
    opts: MountOptions,
    /// One directory load at a time (two lookups racing on a cold
    /// directory must not build two tables).
    loading: tokio::sync::Mutex<()>,
    prefetch: Arc<Semaphore>,
    /// Prefetch work queued or running (blocks, and next-file look-ups).
    prefetch_queued: Arc<AtomicUsize>,
    prefetched: Mutex<HashSet<u64>>,
    /// Listings of the mount root by directory handle: taken once when the
    /// root is opened and paged from, so a root of 100,000 names is not
    /// listed again for every page the kernel asks for.
    root_lists: Mutex<BTreeMap<u64, Arc<Vec<DirEntry>>>>,
    root_handles: AtomicU64,
    /// Per dataset: the file whose first read came last, and the files read
    /// ahead after it (a reader of those reads in order).
    order: Mutex<HashMap<Cid, ReadOrder>>,
    /// Blocks being read ahead (the FUSE thread waits for one that is
    /// under way instead of reading it a second time).
    ahead: Mutex<HashMap<Cid, Arc<Loading>>>,
    /// Bytes of the blocks in `ahead`.
    ahead_bytes: AtomicUsize,
    /// Where read-ahead runs (the runtime the mount was made in; none in
    /// code without one, which then reads nothing ahead).
    rt: Option<tokio::runtime::Handle>,
    cache: Mutex<BlockCache>,
    pages: PageCache,
    /// Set by the FUSE adapter: how table memory past its budget is given
    /// back (the kernel forgets what it no longer uses).
    invalidate: std::sync::OnceLock<Invalidate>,
    clock: AtomicU64,
    pub started: SystemTime,
}

/// A block being read ahead: readers that need it wait for `done`.
#[derive(Default)]
struct Loading {
    /// Set while a worker reads it from the local store (before that, a
    /// reader reads it itself rather than wait behind the queue; a block
    /// fetched from peers is never waited for on a FUSE thread).
    started: std::sync::atomic::AtomicBool,
    done: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Loading {
    fn finish(&self) {
        *self.done.lock().expect("loading lock") = true;
        self.cv.notify_all();
    }

    /// The block is not held here: it will come from peers, and readers
    /// should not wait for it on a FUSE thread.
    fn stop_waiting(&self) {
        let _done = self.done.lock().expect("loading lock");
        self.started.store(false, Ordering::Release);
        self.cv.notify_all();
    }

    /// Waits (bounded) for the local read under way to end.
    fn wait(&self) {
        let done = self.done.lock().expect("loading lock");
        let _ = self.cv.wait_timeout_while(done, Duration::from_secs(10), |d| {
            !*d && self.started.load(Ordering::Acquire)
        });
    }
}

/// What tells an in-order reader of a dataset's files.
#[derive(Default)]
struct ReadOrder {
    /// The key whose first read came last.
    last: String,
    /// The keys read ahead after it.
    ahead: Vec<String>,
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
    fn contains(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }

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
        nodes.insert(ROOT_INO, dir_node(ROOT_INO, "", "", None));
        Self {
            blocks,
            tables: RwLock::new(Tables {
                nodes,
                next: ROOT_INO + 1,
                top: BTreeMap::new(),
                links: BTreeMap::new(),
                used: 0,
            }),
            prefetch: Arc::new(Semaphore::new(opts.max_inflight_blocks.max(1))),
            prefetch_queued: Arc::new(AtomicUsize::new(0)),
            opts,
            loading: tokio::sync::Mutex::new(()),
            prefetched: Mutex::new(HashSet::new()),
            root_lists: Mutex::new(BTreeMap::new()),
            root_handles: AtomicU64::new(0),
            order: Mutex::new(HashMap::new()),
            ahead: Mutex::new(HashMap::new()),
            ahead_bytes: AtomicUsize::new(0),
            rt: tokio::runtime::Handle::try_current().ok(),
            cache: Mutex::new(BlockCache {
                max: cache_bytes,
                used: 0,
                tick: 0,
                blocks: HashMap::new(),
                order: BTreeMap::new(),
            }),
            pages: PageCache::new(PAGE_CACHE),
            invalidate: std::sync::OnceLock::new(),
            clock: AtomicU64::new(0),
            started: SystemTime::now(),
        }
    }

    pub fn options(&self) -> &MountOptions {
        &self.opts
    }

    /// Installs how the mount asks the kernel to drop entries (once).
    pub fn set_invalidate(&self, f: Invalidate) {
        let _ = self.invalidate.set(f);
    }

    /// Table memory of the listed directories.
    pub fn table_used(&self) -> usize {
        self.read_tables().used
    }

    fn read_tables(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().expect("tables lock")
    }

    fn write_tables(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().expect("tables lock")
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.read_tables().attr(ino)
    }

    /// Answers a lookup from memory when it can (`None`: the name is a
    /// dataset not loaded yet, or its directory is not listed yet; call
    /// [`Self::lookup`]). An answer hands the inode out: the kernel's
    /// lookup count goes up.
    pub fn lookup_cached(&self, parent: u64, name: &str) -> Option<FsResult<Attr>> {
        let t = self.read_tables();
        if parent == ROOT_INO {
            return t.top.get(name).map(|ino| t.counted(*ino));
        }
        let Some(node) = t.nodes.get(&parent) else {
            return Some(Err(FsError::enoent(format!("inode {parent}"))));
        };
        Some(match &node.kind {
            Kind::Dir { children: None, .. } => return None,
            Kind::Dir {
                children: Some(c),
                tick,
                ..
            } => {
                tick.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                match c.names.get(name) {
                    Some(ino) => t.counted(*ino),
                    None => Err(FsError::enoent(name)),
                }
            }
            Kind::File(_) | Kind::Link(_) => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        })
    }

    /// Lookup, loading a dataset's manifest root (possibly from peers) when
    /// `name` is a dataset name or CID at the mount root, or listing the
    /// parent directory when it has not been listed yet.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        if let Some(r) = self.lookup_cached(parent, name) {
            return r;
        }
        if parent != ROOT_INO {
            self.list(parent).await?;
            return self
                .lookup_cached(parent, name)
                .unwrap_or_else(|| Err(FsError::eio("directory table dropped while it was read")));
        }
        let root = match cid::parse(name) {
            Ok(c) if c.codec() == cid::DAG_CBOR => c,
            Ok(c) if c.codec() == cid::DAG_PB => {
                self.blocks.dataset_of_view(&c).ok_or_else(|| FsError::enoent(name))?
            }
            // A dataset name is a symlink to its current CID directory: a
            // path through the name follows new versions, every CID
            // directory stays immutable.
            _ if self.blocks.name(name).is_some() => {
                let mut t = self.write_tables();
                let ino = match t.links.get(name) {
                    Some(i) => *i,
                    None => {
                        let i = t.alloc(Inode {
                            parent: ROOT_INO,
                            kind: Kind::Link(name.to_string()),
                            ds: None,
                            lookups: AtomicU64::new(0),
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
        let rb = self.fetch(root, root).await?;
        let manifest = Manifest::decode(&rb).map_err(|e| FsError::eio(e.to_string()))?;
        let ds = Arc::new(Dataset { root, manifest });
        self.blocks.opened(root);
        let mut t = self.write_tables();
        let dir = t.alloc(dir_node(ROOT_INO, name, "", Some(ds)));
        t.top.insert(name.to_string(), dir);
        t.counted(dir)
    }

    async fn fetch(&self, c: Cid, root: Cid) -> FsResult<Block> {
        self.blocks
            .block(c, root)
            .await
            .map_err(|e| FsError::eio(format!("dataset {root}: {e}")))
    }

    /// A manifest page, decoded (from the small cache when a neighbouring
    /// directory's listing just read it).
    async fn page(&self, ds: &Dataset, child: &ChildRef) -> FsResult<Arc<Node>> {
        if let Some(n) = self.pages.get(&child.cid) {
            return Ok(n);
        }
        let block = self.fetch(child.cid, ds.root).await?;
        let node = Arc::new(
            ds.manifest
                .decode_page(&block, child)
                .map_err(|e| FsError::eio(e.to_string()))?,
        );
        self.pages.put(child.cid, node.clone());
        Ok(node)
    }

    /// Makes sure directory `ino` is listed: its children built from the
    /// manifest entries under its prefix, fetching only the pages whose key
    /// range meets it. Past the table budget, the least recently used
    /// directories are handed back to the kernel to forget.
    pub async fn list(&self, ino: u64) -> FsResult<()> {
        let loaded = |t: &Tables| -> FsResult<Option<(Arc<Dataset>, String)>> {
            let n = t
                .nodes
                .get(&ino)
                .ok_or_else(|| FsError::enoent(format!("inode {ino}")))?;
            match (&n.kind, &n.ds) {
                (Kind::Dir { children: Some(_), .. }, _) => Ok(None),
                (Kind::Dir { prefix, .. }, Some(ds)) => Ok(Some((ds.clone(), prefix.to_string()))),
                (Kind::Dir { .. }, None) => Ok(None), // the mount root
                _ => Err(FsError::new(libc::ENOTDIR, "not a directory")),
            }
        };
        if loaded(&self.read_tables())?.is_none() {
            return Ok(());
        }
        let _guard = self.loading.lock().await;
        let Some((ds, prefix)) = loaded(&self.read_tables())? else {
            return Ok(()); // listed while we waited
        };
        let (files, dirs, cost) = self.scan(&ds, &prefix).await?;
        let mut t = self.write_tables();
        // Forgotten while we read: nothing to attach the children to.
        if !matches!(
            t.nodes.get(&ino).map(|n| &n.kind),
            Some(Kind::Dir { children: None, .. })
        ) {
            return Ok(());
        }
        let mut names = BTreeMap::new();
        for d in dirs {
            let child = t.alloc(dir_node(ino, &d, &format!("{prefix}{d}/"), Some(ds.clone())));
            names.insert(d.into_boxed_str(), child);
        }
        for (name, e) in files {
            if names.contains_key(name.as_str()) {
                tracing::warn!(root = %ds.root, key = %e.key, "key clashes with a directory of the same name; hidden from the mount");
                continue;
            }
            let child = t.alloc(Inode {
                parent: ino,
                kind: Kind::File(e),
                ds: Some(ds.clone()),
                lookups: AtomicU64::new(0),
            });
            names.insert(name.into_boxed_str(), child);
        }
        t.used += cost;
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(Kind::Dir { children, tick, .. }) = t.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            *children = Some(Children { names, cost });
            *tick.get_mut() = now;
        }
        if t.used > self.opts.table_bytes {
            self.shed(&t, ino);
        }
        Ok(())
    }

    /// The entries directly under `prefix`: files (name, entry) and
    /// subdirectory names, with their table cost. More than the whole
    /// table budget is ENOMEM (the manifest's counts may lie: counted as
    /// pages arrive).
    async fn scan(&self, ds: &Dataset, prefix: &str) -> FsResult<(Vec<(String, Arc<Entry>)>, Vec<String>, usize)> {
        let mut l = Listing {
            prefix,
            room: self.opts.table_bytes,
            root: ds.root,
            files: Vec::new(),
            dirs: Default::default(),
            cost: 0,
        };
        ds.manifest.metadata.iter().try_for_each(|e| l.entry(e))?;
        self.walk(ds, &ds.manifest.top, &mut l, 0).await?;
        Ok((l.files, l.dirs.into_iter().collect(), l.cost))
    }

    /// Feeds the entries under `node` that meet the listing's prefix to
    /// it, in key order, depth first: a few pages in flight, each leaf
    /// taken as it arrives (a listing never holds the level's pages).
    fn walk<'a>(
        &'a self,
        ds: &'a Dataset,
        node: &'a Node,
        l: &'a mut Listing<'_>,
        depth: usize,
    ) -> futures::future::BoxFuture<'a, FsResult<()>> {
        Box::pin(async move {
            let children = match node {
                Node::Leaf(es) => return es.iter().try_for_each(|e| l.entry(e)),
                Node::Inner(c) => c,
            };
            if depth >= shoal_core::manifest::MAX_DEPTH {
                return Err(FsError::eio(format!(
                    "dataset {}: manifest deeper than allowed",
                    ds.root
                )));
            }
            let prefix = l.prefix;
            let meets =
                |c: &ChildRef| c.last.as_str() >= prefix && (c.first.as_str() <= prefix || c.first.starts_with(prefix));
            let mut futs = Vec::new();
            for c in children.iter().filter(|c| meets(c)) {
                // A page whose first and last keys lie in the same
                // subdirectory holds nothing else: the name is enough, the
                // page is not read.
                match (l.subdir(&c.first), l.subdir(&c.last)) {
                    (Some(a), Some(b)) if a == b => {
                        let d = a.to_string();
                        l.dir(&d)?
                    }
                    _ => futs.push(self.page(ds, c)),
                }
            }
            let mut pages = futures::stream::iter(futs).buffered(PAGES_IN_FLIGHT);
            while let Some(page) = pages.next().await {
                let page = page?;
                self.walk(ds, &page, l, depth + 1).await?;
            }
            Ok(())
        })
    }

    /// Table memory is past its budget: asks the kernel to drop the least
    /// recently used listed directories (not `keep`, just listed) until
    /// about half the budget would be left. Their memory comes back when
    /// the kernel forgets them (a directory still in use stays).
    fn shed(&self, t: &Tables, keep: u64) {
        let Some(inval) = self.invalidate.get() else { return };
        let mut listed: Vec<(u64, usize, u64)> = t
            .nodes
            .iter()
            .filter_map(|(ino, n)| match &n.kind {
                Kind::Dir {
                    children: Some(c),
                    tick,
                    ..
                } if *ino != keep && *ino != ROOT_INO => Some((tick.load(Ordering::Relaxed), c.cost, *ino)),
                _ => None,
            })
            .collect();
        listed.sort_unstable();
        let mut over = t.used.saturating_sub(self.opts.table_bytes / 2);
        let mut drop = Vec::new();
        for (_, cost, ino) in listed {
            if over == 0 {
                break;
            }
            let n = &t.nodes[&ino];
            if let Kind::Dir { name, .. } = &n.kind {
                drop.push((n.parent, name.to_string()));
            }
            over = over.saturating_sub(cost);
        }
        tracing::debug!(
            dirs = drop.len(),
            used = t.used,
            "mount tables past their budget: asking the kernel to forget"
        );
        inval(drop);
    }

    /// The kernel forgot `n` references to `ino`. At zero, a directory's
    /// children go (nothing below it can still be referenced: a child's
    /// dentry pins its parent's), and a dataset's top directory goes with
    /// its dataset; the directory is listed again when next used.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut t = self.write_tables();
        let Some(node) = t.nodes.get_mut(&ino) else { return };
        let c = node.lookups.get_mut();
        *c = c.saturating_sub(n);
        if *c > 0 || ino == ROOT_INO || !matches!(node.kind, Kind::Dir { .. }) {
            return;
        }
        let top = node.parent == ROOT_INO;
        t.unload(ino);
        // A map keeps its capacity: after a large directory goes, give
        // the slots back too.
        let left = t.nodes.len();
        if t.nodes.capacity() > 4 * left + 1024 {
            t.nodes.shrink_to(2 * left);
        }
        if top {
            t.nodes.remove(&ino);
            t.top.retain(|_, i| *i != ino);
            tracing::debug!(
                ino,
                used = t.used,
                "the kernel forgot a dataset: its tables are dropped"
            );
        } else {
            tracing::trace!(
                ino,
                used = t.used,
                "the kernel forgot a directory: its table is dropped"
            );
        }
    }

    /// Opens the mount root for listing: its entries now, kept under the
    /// handle returned until [`Self::close_root`] (the oldest of more than
    /// [`MAX_ROOT_LISTS`] open listings is dropped; paging one again lists
    /// the root afresh).
    pub fn open_root(&self) -> FsResult<u64> {
        let list = Arc::new(self.readdir(ROOT_INO)?);
        let fh = self.root_handles.fetch_add(1, Ordering::Relaxed) + 1;
        let mut lists = self.root_lists.lock().expect("root lists lock");
        lists.insert(fh, list);
        while lists.len() > MAX_ROOT_LISTS {
            lists.pop_first();
        }
        Ok(fh)
    }

    /// The root listing of handle `fh` (from [`Self::open_root`]), or the
    /// root listed now when that handle holds none.
    pub fn root_listing(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        if let Some(l) = self.root_lists.lock().expect("root lists lock").get(&fh) {
            return Ok(l.clone());
        }
        Ok(Arc::new(self.readdir(ROOT_INO)?))
    }

    pub fn close_root(&self, fh: u64) {
        self.root_lists.lock().expect("root lists lock").remove(&fh);
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
        drop(t);
        Ok(self
            .readdir_page(ino, 0, usize::MAX, false)?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// Up to `max` entries of directory `ino` starting at index `skip`
    /// (not counting "." and ".."), with their attributes: the readdir and
    /// readdirplus pages. Not for the mount root (see [`Self::readdir`]).
    /// The directory must be listed ([`Self::list`], on open). `count`:
    /// the entries are handed to the kernel with their attributes
    /// (readdirplus), each a lookup reference; an entry the reply could
    /// not take is given back with [`Self::forget`].
    pub fn readdir_page(&self, ino: u64, skip: usize, max: usize, count: bool) -> FsResult<Vec<(DirEntry, Attr)>> {
        let t = self.read_tables();
        let node = t
            .nodes
            .get(&ino)
            .ok_or_else(|| FsError::enoent(format!("inode {ino}")))?;
        let children = match &node.kind {
            Kind::Dir {
                children: Some(c),
                tick,
                ..
            } => {
                tick.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                c
            }
            Kind::Dir { children: None, .. } => {
                return Err(FsError::eio(format!("directory {ino} read before it was opened")))
            }
            _ => return Err(FsError::new(libc::ENOTDIR, "not a directory")),
        };
        children
            .names
            .iter()
            .skip(skip)
            .take(max)
            .map(|(name, c)| {
                let a = if count { t.counted(*c)? } else { t.attr(*c)? };
                Ok((
                    DirEntry {
                        ino: *c,
                        name: name.to_string(),
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
            .name(&name)
            .map(|c| c.to_string())
            .ok_or_else(|| FsError::enoent(format!("the name {name} no longer exists")))
    }

    pub fn parent(&self, ino: u64) -> u64 {
        self.read_tables().nodes.get(&ino).map(|n| n.parent).unwrap_or(ROOT_INO)
    }

    fn file(&self, ino: u64) -> FsResult<(Arc<Dataset>, Arc<Entry>)> {
        let t = self.read_tables();
        let n = t
            .nodes
            .get(&ino)
            .ok_or_else(|| FsError::enoent(format!("inode {ino}")))?;
        match (&n.kind, &n.ds) {
            (Kind::File(e), Some(ds)) => Ok((ds.clone(), e.clone())),
            _ => Err(FsError::new(libc::EISDIR, "is a directory")),
        }
    }

    /// A file is opened: checks it is one and counts the open for its dataset.
    pub fn open(&self, ino: u64) -> FsResult<()> {
        let (ds, _) = self.file(ino)?;
        self.blocks.opened(ds.root);
        Ok(())
    }

    /// What a read of `size` bytes at `offset` of file `ino` needs: the
    /// answer itself (past the end, inline content), or the range of the
    /// file's blocks `first..=last` to read, ending at byte `end`.
    fn span(&self, ino: u64, offset: u64, size: u32) -> FsResult<Span> {
        let (ds, e) = self.file(ino)?;
        let end = (offset + u64::from(size)).min(e.size);
        if offset >= end {
            return Ok(Span::Done(Bytes::new()));
        }
        if let Content::Inline(d) = &e.content {
            return Ok(Span::Done(d.slice(offset as usize..end as usize)));
        }
        let bs = u64::from(ds.manifest.block_size);
        let (first, last) = (offset / bs, (end - 1) / bs);
        Ok(Span::Blocks(Want {
            ds,
            e,
            end,
            first,
            last,
        }))
    }

    /// Reads `size` bytes at `offset` of a file when every block it needs
    /// is in the cache or the local store, without waiting on the network
    /// (`None`: some block is not here; use [`Self::read`]). The FUSE
    /// thread answers such reads itself.
    /// Blocks ahead of the read are read and verified on the runtime's
    /// blocking pool meanwhile ([`Self::maybe_prefetch`]), so a reader in
    /// order finds them in the cache and this thread only copies.
    pub fn read_now(self: &Arc<Self>, ino: u64, offset: u64, size: u32) -> Option<FsResult<Bytes>> {
        let Want {
            ds,
            e,
            end,
            first,
            last,
        } = match self.span(ino, offset, size).ok()? {
            Span::Done(b) => return Some(Ok(b)),
            Span::Blocks(w) => w,
        };
        self.maybe_prefetch(ino, &ds, &e, first..=last);
        let mut got = Vec::with_capacity((last - first + 1) as usize);
        for &cid in &e.blocks()[first as usize..=last as usize] {
            let b = match self.cached(&cid) {
                Some(b) => b,
                None => {
                    let b = self.blocks.local(&cid)?;
                    self.cache.lock().expect("cache lock").put(&b);
                    b
                }
            };
            got.push(b);
        }
        Some(assemble(&ds, &e, offset, end, first, got))
    }

    /// A verified block from the cache, after waiting for its read-ahead
    /// when one is under way.
    fn cached(&self, cid: &Cid) -> Option<Block> {
        if let Some(b) = self.cache.lock().expect("cache lock").get(cid) {
            return Some(b);
        }
        let loading = self.ahead.lock().expect("ahead lock").get(cid).cloned();
        if let Some(l) = loading.filter(|l| l.started.load(Ordering::Acquire)) {
            l.wait();
            return self.cache.lock().expect("cache lock").get(cid);
        }
        None
    }

    /// Reads `size` bytes at `offset` of a file.
    pub async fn read(self: &Arc<Self>, ino: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        tracing::trace!(ino, offset, size, "read");
        let Want {
            ds,
            e,
            end,
            first,
            last,
        } = match self.span(ino, offset, size)? {
            Span::Done(b) => return Ok(b),
            Span::Blocks(w) => w,
        };
        self.maybe_prefetch(ino, &ds, &e, first..=last);
        let got = try_join_all(e.blocks()[first as usize..=last as usize].iter().map(|&cid| {
            let blocks = self.blocks.clone();
            let (root, key) = (ds.root, e.key.clone());
            let this = self.clone();
            async move {
                let cached = this.cache.lock().expect("cache lock").get(&cid);
                match cached {
                    Some(b) => Ok(b),
                    None => {
                        let b = blocks
                            .block(cid, root)
                            .await
                            .map_err(|err| FsError::eio(format!("{root}/{key}: block {cid}: {err}")))?;
                        this.cache.lock().expect("cache lock").put(&b);
                        Ok(b)
                    }
                }
            }
        }))
        .await?;
        assemble(&ds, &e, offset, end, first, got)
    }

    /// Read-ahead, bounded in blocks ([`MountOptions::max_inflight_blocks`]
    /// at once, four times that queued) and bytes (half the block cache):
    /// the blocks of this file past the read, up to a quarter of the cache;
    /// and on a file's first read, when the files are being read in the
    /// dataset's key order (this file is the one after the last first
    /// read, or one already read ahead), the next
    /// [`MountOptions::readahead_files`] files. Blocks not held here are
    /// fetched from peers (landing in the store); every block read ahead
    /// waits in the cache for its reader.
    fn maybe_prefetch(
        self: &Arc<Self>,
        ino: u64,
        ds: &Arc<Dataset>,
        entry: &Arc<Entry>,
        demanded: std::ops::RangeInclusive<u64>,
    ) {
        let Some(rt) = self.rt.clone() else { return };
        let bs = ds.manifest.block_size as usize;
        let window = (self.opts.cache_bytes / 4 / bs.max(1)).max(1);
        self.entry_ahead(&rt, ds, entry, *demanded.end() as usize + 1, window);
        {
            let mut done = self.prefetched.lock().expect("prefetch lock");
            if done.len() >= PREFETCH_MEMORY {
                done.clear(); // at worst a file is read ahead twice (its blocks are cached or local by then)
            }
            if !done.insert(ino) || self.opts.readahead_files == 0 {
                return;
            }
        }
        self.prefetch_queued.fetch_add(1, Ordering::Relaxed);
        let (this, ds, entry) = (self.clone(), ds.clone(), entry.clone());
        rt.clone().spawn(async move {
            if let Some(next) = this.next_in_order(&ds, &entry).await {
                for e in next {
                    this.entry_ahead(&rt, &ds, &e, 0, usize::MAX);
                }
            }
            this.prefetch_queued.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// When `e` is read in the dataset's key order, the files after it to
    /// read ahead (recorded, so the next of them continues the run). In
    /// order: `e` was read ahead after the previous first read, or is the
    /// key right after it.
    async fn next_in_order(&self, ds: &Dataset, e: &Entry) -> Option<Vec<Entry>> {
        let (prev, ahead) = {
            let mut order = self.order.lock().expect("order lock");
            if order.len() >= PREFETCH_MEMORY && !order.contains_key(&ds.root) {
                order.clear();
            }
            let o = order.entry(ds.root).or_default();
            let prev = std::mem::replace(&mut o.last, e.key.clone());
            (prev, o.ahead.contains(&e.key))
        };
        let in_order = ahead
            || (!prev.is_empty()
                && prev < e.key
                && self
                    .after(ds, &prev, 1)
                    .await
                    .is_ok_and(|n| n.first().is_some_and(|n| n.key == e.key)));
        if !in_order {
            return None;
        }
        let next = self.after(ds, &e.key, self.opts.readahead_files).await.ok()?;
        if let Some(o) = self.order.lock().expect("order lock").get_mut(&ds.root) {
            if o.last == e.key {
                o.ahead = next.iter().map(|n| n.key.clone()).collect();
            }
        }
        Some(next)
    }

    /// Up to `n` files after `key` in the dataset's key order, reading the
    /// manifest pages on the way (cached).
    async fn after(&self, ds: &Dataset, key: &str, n: usize) -> FsResult<Vec<Entry>> {
        enum Need {
            Page(ChildRef),
            Bad(shoal_core::Error),
        }
        impl From<shoal_core::Error> for Need {
            fn from(e: shoal_core::Error) -> Self {
                Need::Bad(e)
            }
        }
        // Each missing page is fetched and the walk tried again; a walk
        // needs at most a few pages per level.
        for _ in 0..64 {
            let r = ds.manifest.after_in::<Need>(key, n, &mut |c| {
                self.pages.get(&c.cid).ok_or_else(|| Need::Page(c.clone()))
            });
            match r {
                Ok(entries) => return Ok(entries),
                Err(Need::Page(c)) => {
                    self.page(ds, &c).await?;
                }
                Err(Need::Bad(e)) => return Err(FsError::eio(e.to_string())),
            }
        }
        Err(FsError::eio(format!("dataset {}: too many pages after {key}", ds.root)))
    }

    /// Reads ahead up to `take` blocks of `e` from its block `skip` on.
    fn entry_ahead(self: &Arc<Self>, rt: &tokio::runtime::Handle, ds: &Dataset, e: &Entry, skip: usize, take: usize) {
        for (i, cid) in e.blocks().iter().enumerate().skip(skip).take(take) {
            let len = chunk::block_len(e.size, ds.manifest.block_size, i as u64) as usize;
            self.load_ahead(rt, ds.root, *cid, len);
        }
    }

    /// Reads (or fetches) one block ahead into the cache, unless it is
    /// there or under way, or the read-ahead budget is spent.
    fn load_ahead(self: &Arc<Self>, rt: &tokio::runtime::Handle, root: Cid, cid: Cid, len: usize) {
        if self.cache.lock().expect("cache lock").contains(&cid) {
            return;
        }
        let loading = {
            let mut ahead = self.ahead.lock().expect("ahead lock");
            if ahead.contains_key(&cid)
                || self.ahead_bytes.load(Ordering::Relaxed) + len > self.opts.cache_bytes / 2
                || self.prefetch_queued.load(Ordering::Relaxed) >= self.opts.max_inflight_blocks * 4
            {
                return;
            }
            let l = Arc::new(Loading::default());
            ahead.insert(cid, l.clone());
            self.ahead_bytes.fetch_add(len, Ordering::Relaxed);
            self.prefetch_queued.fetch_add(1, Ordering::Relaxed);
            l
        };
        let this = self.clone();
        rt.spawn(async move {
            if let Ok(_permit) = this.prefetch.acquire().await {
                if !this.cache.lock().expect("cache lock").contains(&cid) {
                    // A block held here is read and verified on the blocking
                    // pool, and a reader may wait for it; one fetched from
                    // peers is not waited for on a FUSE thread.
                    loading.started.store(true, Ordering::Release);
                    let src = this.blocks.clone();
                    let local = tokio::task::spawn_blocking(move || src.local(&cid))
                        .await
                        .ok()
                        .flatten();
                    let b = match local {
                        Some(b) => Some(b),
                        None => {
                            loading.stop_waiting();
                            this.blocks.block(cid, root).await.ok()
                        }
                    };
                    if let Some(b) = b {
                        this.cache.lock().expect("cache lock").put(&b);
                    }
                }
            }
            this.ahead.lock().expect("ahead lock").remove(&cid);
            loading.finish();
            this.ahead_bytes.fetch_sub(len, Ordering::Relaxed);
            this.prefetch_queued.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// What [`MountFs::span`] found a read needs: its answer, or blocks.
enum Span {
    Done(Bytes),
    Blocks(Want),
}

/// The blocks `first..=last` of file `e` a read ending at byte `end`
/// needs.
struct Want {
    ds: Arc<Dataset>,
    e: Arc<Entry>,
    end: u64,
    first: u64,
    last: u64,
}

/// The bytes `[offset, end)` of file `e` from its blocks `first..` (each
/// checked to have the length the manifest promises): a zero-copy slice
/// within one block.
fn assemble(ds: &Dataset, e: &Entry, offset: u64, end: u64, first: u64, got: Vec<Block>) -> FsResult<Bytes> {
    let bs = u64::from(ds.manifest.block_size);
    for (i, b) in got.iter().enumerate() {
        let want = chunk::block_len(e.size, ds.manifest.block_size, first + i as u64);
        if b.len() as u64 != want {
            return Err(FsError::eio(format!(
                "{}/{}: block {} has {} bytes, manifest says {want}",
                ds.root,
                e.key,
                b.cid(),
                b.len()
            )));
        }
    }
    if let [b] = got.as_slice() {
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

#[cfg(test)]
mod tests;
