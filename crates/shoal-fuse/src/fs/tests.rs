//! Core tests without a kernel mount: an in-memory block source that counts
//! fetches and can fail chosen blocks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use shoal_core::manifest::{Content, Entry, ManifestBuilder};
use shoal_core::{chunk, Block, Cid};

use super::*;

#[derive(Default)]
struct MemBlocks {
    blocks: Mutex<HashMap<Cid, Block>>,
    names: Vec<(String, Cid)>,
    fetches: AtomicUsize,
    failing: Mutex<HashSet<Cid>>,
    /// Per-fetch delay, to observe concurrency.
    delay_ms: u64,
    current: AtomicUsize,
    max_concurrent: AtomicUsize,
    /// Answer `local` too (blocks "held here").
    local: bool,
    /// Blocks read through `local`.
    local_reads: AtomicUsize,
    /// Calls of `names` (a listing of every name).
    names_listed: AtomicUsize,
}

#[async_trait::async_trait]
impl Blocks for MemBlocks {
    async fn block(&self, cid: Cid, _root: Cid) -> Result<Block, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_concurrent.fetch_max(now, Ordering::SeqCst);
        if self.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        }
        self.current.fetch_sub(1, Ordering::SeqCst);
        if self.failing.lock().unwrap().contains(&cid) {
            return Err("no peer delivered it".into());
        }
        self.blocks
            .lock()
            .unwrap()
            .get(&cid)
            .cloned()
            .ok_or_else(|| "unknown block".into())
    }
    fn names(&self) -> Vec<(String, Cid)> {
        self.names_listed.fetch_add(1, Ordering::SeqCst);
        self.names.clone()
    }
    fn name(&self, name: &str) -> Option<Cid> {
        self.names.iter().find(|n| n.0 == name).map(|n| n.1)
    }
    fn local(&self, cid: &Cid) -> Option<Block> {
        if !self.local || self.failing.lock().unwrap().contains(cid) {
            return None;
        }
        self.local_reads.fetch_add(1, Ordering::SeqCst);
        self.blocks.lock().unwrap().get(cid).cloned()
    }
}

/// A dataset: metadata + `n` chunk files of `size` bytes, block size `bs`.
fn dataset(n: usize, size: usize, bs: u32, page_target: usize) -> (MemBlocks, Cid, HashMap<String, Vec<u8>>) {
    let mem = MemBlocks::default();
    let mut b = ManifestBuilder::new(3, bs).with_page_target(page_target);
    let mut files = HashMap::new();
    let meta = br#"{"zarr_format":3,"node_type":"group"}"#.to_vec();
    b.push(Entry {
        key: "zarr.json".into(),
        size: meta.len() as u64,
        content: Content::Inline(Bytes::from(meta.clone())),
    })
    .unwrap();
    files.insert("zarr.json".to_string(), meta);
    for i in 0..n {
        let key = format!("t/c/{}/{}", i / 10, i % 10);
        let data: Vec<u8> = (0..size).map(|j| ((j * 7 + i * 13) % 251) as u8).collect();
        let mut cids = Vec::new();
        for (s, e) in chunk::block_ranges(size as u64, bs) {
            let blk = Block::raw(Bytes::copy_from_slice(&data[s as usize..e as usize]));
            cids.push(*blk.cid());
            mem.blocks.lock().unwrap().insert(*blk.cid(), blk);
        }
        b.push(Entry {
            key: key.clone(),
            size: size as u64,
            content: Content::Blocks(cids),
        })
        .unwrap();
        files.insert(key, data);
    }
    let built = b.build().unwrap();
    for blk in built.blocks.iter().chain(std::iter::once(&built.root)) {
        mem.blocks.lock().unwrap().insert(*blk.cid(), blk.clone());
    }
    let root = *built.root.cid();
    (
        MemBlocks {
            names: vec![("ds".into(), root)],
            ..mem
        },
        root,
        files,
    )
}

/// The manifest pages among a source's blocks (DAG-CBOR, not the root).
fn pages_of(mem: &MemBlocks) -> usize {
    let blocks = mem.blocks.lock().unwrap();
    blocks
        .values()
        .filter(|b| b.cid().codec() == shoal_core::cid::DAG_CBOR)
        .count()
        - 1
}

/// Walks `p` from the mount root as the kernel does, following a dataset
/// name's symlink to its CID directory.
async fn path(fs: &MountFs<MemBlocks>, p: &str) -> FsResult<Attr> {
    let mut cur = ROOT_INO;
    let mut attr = fs.getattr(ROOT_INO)?;
    for part in p.split('/') {
        attr = fs.lookup(cur, part).await?;
        if attr.is_link {
            let target = fs.readlink(attr.ino)?;
            attr = fs.lookup(ROOT_INO, &target).await?;
        }
        cur = attr.ino;
    }
    Ok(attr)
}

/// Walks every directory under `top` as `find` does (open, read, look
/// up each entry), checking sizes against `files`; returns the files seen.
async fn walk(fs: &MountFs<MemBlocks>, top: u64, files: &HashMap<String, Vec<u8>>) -> usize {
    let mut seen = 0;
    let mut stack = vec![(top, String::new())];
    while let Some((ino, prefix)) = stack.pop() {
        fs.list(ino).await.unwrap();
        for e in fs.readdir(ino).unwrap() {
            let key = if prefix.is_empty() {
                e.name.clone()
            } else {
                format!("{prefix}/{}", e.name)
            };
            let a = fs.lookup(ino, &e.name).await.unwrap();
            assert_eq!(a.ino, e.ino);
            assert_eq!(fs.getattr(a.ino).unwrap(), a);
            if e.is_dir {
                stack.push((e.ino, key));
            } else {
                assert_eq!(a.size as usize, files[&key].len(), "{key}");
                seen += 1;
            }
        }
    }
    seen
}

#[tokio::test]
async fn tree_matches_the_manifest_and_listed_directories_never_fetch_again() {
    // Small pages so the manifest is a multi-level tree.
    let (mem, root, files) = dataset(120, 3000, 1024, 1024);
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    let ds = path(&fs, "ds").await.unwrap();
    assert!(ds.is_dir);
    assert_eq!(walk(&fs, ds.ino, &files).await, files.len());
    let after_walk = fs.blocks.fetches.load(Ordering::SeqCst);
    // Walked again: every directory answers from its table.
    assert_eq!(walk(&fs, ds.ino, &files).await, files.len());
    assert_eq!(
        fs.blocks.fetches.load(Ordering::SeqCst),
        after_walk,
        "metadata of listed directories touched the block source"
    );
    // The same dataset by CID is a second top-level entry; unknown names fail.
    assert!(path(&fs, &root.to_string()).await.unwrap().is_dir);
    assert_eq!(fs.lookup(ROOT_INO, "nope").await.unwrap_err().errno, libc::ENOENT);
    let names: Vec<String> = fs.readdir(ROOT_INO).unwrap().into_iter().map(|e| e.name).collect();
    assert!(names.contains(&"ds".to_string()) && names.contains(&root.to_string()));
    // Inodes are stable.
    assert_eq!(
        path(&fs, "ds/t/c/3/4").await.unwrap(),
        path(&fs, "ds/t/c/3/4").await.unwrap()
    );
}

#[tokio::test]
async fn reads_at_every_boundary_return_the_right_bytes() {
    let bs = 1024u32;
    let (mem, _, files) = dataset(3, 3 * 1024 + 17, bs, 1 << 20);
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    let f = path(&fs, "ds/t/c/0/1").await.unwrap();
    let data = &files["t/c/0/1"];
    let n = data.len() as u64;
    for (off, size) in [
        (0, 1),
        (0, 4096),
        (1023, 2),
        (1024, 1024),
        (1000, 3000),
        (n - 1, 10),
        (n, 10),
        (n + 5, 1),
        (0, u32::MAX),
    ] {
        let got = fs.read(f.ino, off, size).await.unwrap();
        let s = (off as usize).min(data.len());
        let e = (off as usize).saturating_add(size as usize).min(data.len());
        assert_eq!(&got[..], &data[s..e], "offset {off} size {size}");
    }
    let meta = path(&fs, "ds/zarr.json").await.unwrap();
    assert_eq!(&fs.read(meta.ino, 0, 4096).await.unwrap()[..], &files["zarr.json"][..]);
}

#[tokio::test]
async fn reads_of_local_blocks_are_answered_at_once_and_the_rest_wait() {
    let bs = 1024u32;
    let (mut mem, _, files) = dataset(3, 5000, bs, 1 << 20);
    mem.local = true;
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    let a = path(&fs, "ds/t/c/0/1").await.unwrap();
    let data = &files["t/c/0/1"];
    for (off, len) in [
        (0u64, 10u32),
        (1000, 100),
        (1020, 2000),
        (4090, 100),
        (0, 5000),
        (5000, 10),
    ] {
        let now = fs.read_now(a.ino, off, len).expect("every block is local").unwrap();
        let end = (off as usize + len as usize).min(data.len());
        assert_eq!(&now[..], &data[(off as usize).min(end)..end], "{off}+{len}");
        assert_eq!(now, fs.read(a.ino, off, len).await.unwrap());
    }
    // A block not held here: the read goes the async way (and fails there).
    let (_, e) = fs.file(a.ino).unwrap();
    fs.blocks.failing.lock().unwrap().insert(e.blocks()[4]);
    {
        let mut c = fs.cache.lock().unwrap();
        c.blocks.clear();
        c.order.clear();
        c.used = 0;
    }
    assert!(fs.read_now(a.ino, 4096, 10).is_none());
    assert!(fs.read_now(a.ino, 0, 10).is_some());
    assert_eq!(fs.read(a.ino, 4096, 10).await.unwrap_err().errno, libc::EIO);
}

#[tokio::test]
async fn an_unavailable_block_is_eio_and_the_rest_keeps_working() {
    let (mem, _, files) = dataset(5, 2000, 1024, 1 << 20);
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    let bad = path(&fs, "ds/t/c/0/2").await.unwrap();
    let good = path(&fs, "ds/t/c/0/3").await.unwrap();
    // Fail the first block of the bad file.
    let (_, e) = fs.file(bad.ino).unwrap();
    fs.blocks.failing.lock().unwrap().insert(e.blocks()[0]);
    let err = fs.read(bad.ino, 0, 100).await.unwrap_err();
    assert_eq!(err.errno, libc::EIO);
    assert!(err.msg.contains("t/c/0/2"), "{err}");
    assert_eq!(&fs.read(good.ino, 0, 4096).await.unwrap()[..], &files["t/c/0/3"][..]);
}

#[tokio::test]
async fn sixteen_concurrent_readers_get_the_right_bytes() {
    let (mem, _, files) = dataset(40, 5000, 1024, 1 << 20);
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    path(&fs, "ds").await.unwrap();
    let mut tasks = Vec::new();
    for r in 0..16u64 {
        let fs = fs.clone();
        let files = files.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..20u64 {
                let i = (r * 7 + k * 3) % 40;
                let key = format!("t/c/{}/{}", i / 10, i % 10);
                let a = path(&fs, &format!("ds/{key}")).await.unwrap();
                let off = (k * 311) % 5000;
                let got = fs.read(a.ino, off, 1500).await.unwrap();
                let want = &files[&key][off as usize..(off as usize + 1500).min(5000)];
                assert_eq!(&got[..], want, "{key}@{off}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn settle(fs: &MountFs<MemBlocks>) {
    for _ in 0..500 {
        if fs.prefetch_queued.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("prefetch did not finish");
}

#[tokio::test]
async fn sequential_reads_prefetch_the_rest_of_the_file_and_the_next_files() {
    let (mem, _, _) = dataset(30, 4096, 1024, 1 << 20);
    let opts = MountOptions {
        readahead_files: 3,
        max_inflight_blocks: 16,
        ..Default::default()
    };
    let fs = Arc::new(MountFs::new(Arc::new(mem), opts));
    let a = path(&fs, "ds/t/c/0/0").await.unwrap();
    let b = path(&fs, "ds/t/c/0/1").await.unwrap();
    let before = fs.blocks.fetches.load(Ordering::SeqCst);
    fs.read(a.ino, 0, 1024).await.unwrap();
    settle(&fs).await;
    // Demand: 1 block; first read of the file: its other 3 blocks.
    assert_eq!(fs.blocks.fetches.load(Ordering::SeqCst) - before, 1 + 3);
    fs.read(b.ino, 0, 1024).await.unwrap();
    settle(&fs).await;
    // Sequential: b's other 3 blocks and files 2, 3, 4 (4 blocks each).
    assert_eq!(fs.blocks.fetches.load(Ordering::SeqCst) - before, 4 + 1 + 3 + 12);
    // A random jump reads ahead nothing beyond its own file.
    let z = path(&fs, "ds/t/c/2/7").await.unwrap();
    let mid = fs.blocks.fetches.load(Ordering::SeqCst);
    fs.read(z.ino, 0, 1024).await.unwrap();
    settle(&fs).await;
    assert_eq!(fs.blocks.fetches.load(Ordering::SeqCst) - mid, 1 + 3);
}

/// Issue 28: one reader of local blocks, file after file across
/// directories (c/0/9 then c/1/0), finds the next files' blocks read and
/// verified ahead in the cache; the FUSE thread only copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_in_key_order_finds_the_next_files_read_ahead() {
    let (mut mem, _, files) = dataset(30, 4096, 1024, 1 << 20);
    mem.local = true;
    let opts = MountOptions {
        readahead_files: 3,
        max_inflight_blocks: 16,
        ..Default::default()
    };
    let fs = Arc::new(MountFs::new(Arc::new(mem), opts));
    let mut inos = Vec::new();
    for k in ["t/c/0/9", "t/c/1/0", "t/c/1/1", "t/c/1/2", "t/c/1/3"] {
        inos.push(path(&fs, &format!("ds/{k}")).await.unwrap().ino);
    }
    let local = || fs.blocks.local_reads.load(Ordering::SeqCst);
    // The first file: only its own blocks past the read.
    let got = fs.read_now(inos[0], 0, 1024).unwrap().unwrap();
    assert_eq!(&got[..], &files["t/c/0/9"][..1024]);
    settle(&fs).await;
    assert_eq!(local(), 1 + 3, "c/0/9's block 0, then its blocks 1..3 ahead");
    // The key right after it: in order, so c/1/1..c/1/3 are read ahead.
    fs.read_now(inos[1], 0, 1024).unwrap().unwrap();
    settle(&fs).await;
    assert_eq!(local(), 4 + 1 + 3 + 3 * 4);
    // Their reads come from the cache: nothing is read again, and each
    // first read moves the run one file on (c/1/4's, then c/1/5's blocks).
    for (i, k) in ["t/c/1/1", "t/c/1/2"].iter().enumerate() {
        for off in (0..4096).step_by(1024) {
            let got = fs.read_now(inos[2 + i], off, 1024).unwrap().unwrap();
            assert_eq!(&got[..], &files[*k][off as usize..off as usize + 1024]);
        }
        settle(&fs).await;
    }
    assert_eq!(local(), 4 + 4 + 12 + 2 * 4);
    // Blocks held here never went to the network source.
    assert_eq!(fs.blocks.fetches.load(Ordering::SeqCst), 1, "the manifest root only");
}

#[tokio::test]
async fn prefetch_stays_within_its_in_flight_budget() {
    let (mut mem, _, _) = dataset(30, 8192, 1024, 1 << 20);
    mem.delay_ms = 5;
    let opts = MountOptions {
        readahead_files: 8,
        max_inflight_blocks: 2,
        ..Default::default()
    };
    let fs = Arc::new(MountFs::new(Arc::new(mem), opts));
    for i in 0..6 {
        let a = path(&fs, &format!("ds/t/c/0/{i}")).await.unwrap();
        fs.read(a.ino, 0, 1024).await.unwrap();
    }
    settle(&fs).await;
    // Two prefetches plus the one demand read at a time.
    let max = fs.blocks.max_concurrent.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} fetches at once");
    // Beyond 4x the budget, prefetch work is dropped, not queued.
    assert!(fs.blocks.fetches.load(Ordering::SeqCst) < 6 * 8 + 8 * 8);
}

#[tokio::test]
async fn a_directory_whose_table_passes_the_budget_is_refused_while_listing() {
    // 2,000 keys in small pages; t/c holds 200 directories, about 200 x
    // (256 + 3) bytes of table.
    let (big, big_root, _) = dataset(2000, 10, 1024, 2048);
    let (small, small_root, files) = dataset(5, 10, 1024, 2048);
    let big_pages = pages_of(&big);
    let mut blocks = big.blocks.into_inner().unwrap();
    blocks.extend(small.blocks.into_inner().unwrap());
    let mem = MemBlocks {
        blocks: Mutex::new(blocks),
        names: vec![("big".into(), big_root), ("small".into(), small_root)],
        ..Default::default()
    };
    let opts = MountOptions {
        table_bytes: 20_000,
        ..Default::default()
    };
    let fs = Arc::new(MountFs::new(Arc::new(mem), opts));
    // The dataset and its one-entry directories open; t/c is refused.
    path(&fs, "big/t").await.unwrap();
    let e = path(&fs, "big/t/c/7").await.unwrap_err();
    assert_eq!(e.errno, libc::ENOMEM, "{e}");
    assert!(e.msg.contains("[mount] table_memory") && e.msg.contains("t/c/"), "{e}");
    // Refused before all pages were fetched: the listing stopped counting
    // at the budget, and nothing of it is in the tables.
    let fetched = fs.blocks.fetches.load(Ordering::SeqCst);
    assert!(fetched < big_pages, "{fetched} of {big_pages} pages fetched");
    assert!(fs.table_used() < 1_000, "{}", fs.table_used());
    // A dataset that fits still loads and reads.
    let a = path(&fs, "small/t/c/0/3").await.unwrap();
    let got = fs.read(a.ino, 0, 10).await.unwrap();
    assert_eq!(&got[..], &files["t/c/0/3"][..]);
    assert!(fs.table_used() > 0 && fs.table_used() <= 20_000);
}

#[tokio::test]
async fn a_lookup_deep_in_a_large_dataset_reads_only_the_pages_on_its_way() {
    let (mem, _, files) = dataset(2000, 10, 1024, 2048);
    let pages = pages_of(&mem);
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    // The dataset's top and t/ hold one subdirectory each: every page
    // lies inside it, so their listings read no page at all.
    path(&fs, "ds/t/c").await.unwrap();
    assert_eq!(fs.blocks.fetches.load(Ordering::SeqCst), 1, "only the manifest root");
    // t/c's 200 subdirectories span every page: each is read once.
    path(&fs, "ds/t/c/150").await.unwrap();
    let before = fs.blocks.fetches.load(Ordering::SeqCst);
    assert!(before <= pages + 1, "{before} fetches for {pages} pages");
    // t/c/150 then needs only the pages of its own keys.
    let a = path(&fs, "ds/t/c/150/4").await.unwrap();
    let after = fs.blocks.fetches.load(Ordering::SeqCst);
    assert!(
        after - before <= 3,
        "{} page fetches for one directory of 10 keys",
        after - before
    );
    assert_eq!(&fs.read(a.ino, 0, 10).await.unwrap()[..], &files["t/c/150/4"][..]);
    // Only the directories on the path are tables: not the 2,000 keys.
    let t = fs.read_tables();
    assert!(t.nodes.len() < 250, "{} inodes", t.nodes.len());
}

#[tokio::test]
async fn past_the_budget_the_least_recently_used_directories_are_handed_to_the_kernel() {
    let (mem, _, files) = dataset(400, 10, 1024, 2048);
    // Each t/c/N holds 10 keys: about 10 x (256 + 8 + 64) = 3.3 KB.
    let fs = Arc::new(MountFs::new(
        Arc::new(mem),
        MountOptions {
            table_bytes: 30_000,
            ..Default::default()
        },
    ));
    let asked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let log = asked.clone();
    fs.set_invalidate(Box::new(move |batch| log.lock().unwrap().extend(batch)));
    let c = path(&fs, "ds/t/c").await.unwrap();
    for n in 0..20 {
        path(&fs, &format!("ds/t/c/{n}/0")).await.unwrap();
    }
    let asked = asked.lock().unwrap().clone();
    assert!(!asked.is_empty(), "nothing handed back at {} bytes", fs.table_used());
    // The oldest directories first, never the newest.
    let names: Vec<&str> = asked.iter().map(|(_, n)| n.as_str()).collect();
    assert!(!names.contains(&"19"), "{names:?}");
    assert!(
        names.contains(&"0") || names.contains(&"ds") || names.contains(&"t"),
        "{names:?}"
    );
    // The kernel forgets what it was asked to (each was looked up once):
    // the memory comes back, and a forgotten directory lists again.
    let mut t_ino = None;
    for (parent, name) in &asked {
        let ino = fs.lookup_cached(*parent, name).and_then(|r| r.ok()).map(|a| a.ino);
        if let Some(ino) = ino {
            if parent == &c.ino {
                t_ino = Some(ino);
            }
            fs.forget(ino, 2); // our lookup just now, and path()'s
        }
    }
    assert!(fs.table_used() <= 30_000, "{} bytes after the forgets", fs.table_used());
    if t_ino.is_some() {
        let a = path(&fs, "ds/t/c/0/7").await.unwrap();
        assert_eq!(&fs.read(a.ino, 0, 10).await.unwrap()[..], &files["t/c/0/7"][..]);
    }
}

#[tokio::test]
async fn a_dataset_the_kernel_forgets_gives_its_tables_back_and_loads_again() {
    let (mem, root, files) = dataset(200, 10, 1024, 2048);
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    let name = root.to_string();
    // Two lookups of the dataset directory (the kernel counts both), and
    // the tree walked below it.
    let dir = fs.lookup(ROOT_INO, &name).await.unwrap();
    assert_eq!(fs.lookup(ROOT_INO, &name).await.unwrap().ino, dir.ino);
    let a = path(&fs, &format!("{name}/t/c/0/3")).await.unwrap();
    assert_eq!(&fs.read(a.ino, 0, 10).await.unwrap()[..], &files["t/c/0/3"][..]);
    let loaded = fs.read_tables().used;
    assert!(loaded > 0);
    // path() looked the dataset up a third time. Forgetting fewer
    // references than were handed out keeps everything.
    fs.forget(dir.ino, 2);
    assert_eq!(fs.read_tables().used, loaded);
    assert!(fs.getattr(a.ino).is_ok());
    // The last one: the dataset's inodes and table memory go.
    fs.forget(dir.ino, 1);
    assert_eq!(fs.table_used(), 0);
    assert!(fs.getattr(a.ino).is_err() && fs.getattr(dir.ino).is_err());
    assert_eq!(fs.read_tables().nodes.len(), 1, "only the mount root is left");
    // Forgetting inodes that are gone or never counted changes nothing.
    fs.forget(dir.ino, 5);
    fs.forget(a.ino, 1);
    // Looked up again: loaded again under a new inode, same bytes.
    let again = path(&fs, &format!("{name}/t/c/0/3")).await.unwrap();
    assert_ne!(again.ino, a.ino);
    assert_eq!(fs.read_tables().used, loaded);
    assert_eq!(&fs.read(again.ino, 0, 10).await.unwrap()[..], &files["t/c/0/3"][..]);
}

/// Issue 29: a root of many names is listed once per open directory handle
/// and paged from that listing; looking up or reading one name's link lists
/// nothing.
#[tokio::test]
async fn the_root_is_listed_once_per_open_handle() {
    let (mut mem, root, _) = dataset(2, 100, 1024, 1024);
    mem.names = (0..5000).map(|i| (format!("n{i:05}"), root)).collect();
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    let listed = || fs.blocks.names_listed.load(Ordering::SeqCst);
    let fh = fs.open_root().unwrap();
    assert_eq!(listed(), 1);
    let mut paged = Vec::new();
    for page in 0..10 {
        let l = fs.root_listing(fh).unwrap();
        paged.extend(l.iter().skip(page * 500).take(500).map(|e| e.name.clone()));
    }
    assert_eq!(listed(), 1, "paging listed the root again");
    let want: Vec<String> = (0..5000).map(|i| format!("n{i:05}")).collect();
    assert_eq!(paged, want);
    // A dataset opened by CID while the handle is open: not in its listing
    // (the kernel pages one consistent listing), in the next one.
    assert!(path(&fs, &root.to_string()).await.unwrap().is_dir);
    assert_eq!(fs.root_listing(fh).unwrap().len(), 5000);
    let fh2 = fs.open_root().unwrap();
    assert_eq!(fs.root_listing(fh2).unwrap().len(), 5001);
    // Names are looked up and read one at a time.
    let before = listed();
    for i in (0..5000).step_by(50) {
        let a = fs.lookup(ROOT_INO, &format!("n{i:05}")).await.unwrap();
        assert!(a.is_link);
        assert_eq!(fs.readlink(a.ino).unwrap(), root.to_string());
    }
    assert_eq!(listed(), before, "a lookup listed every name");
    // Bounded: past MAX_ROOT_LISTS open handles the oldest is dropped, and
    // paging it lists the root afresh; a closed handle holds nothing.
    let more: Vec<u64> = (0..MAX_ROOT_LISTS).map(|_| fs.open_root().unwrap()).collect();
    assert_eq!(fs.root_lists.lock().unwrap().len(), MAX_ROOT_LISTS);
    let before = listed();
    assert_eq!(fs.root_listing(fh).unwrap().len(), 5001);
    assert_eq!(listed(), before + 1);
    for h in more {
        fs.close_root(h);
    }
    fs.close_root(fh2);
    assert!(fs.root_lists.lock().unwrap().is_empty());
}
