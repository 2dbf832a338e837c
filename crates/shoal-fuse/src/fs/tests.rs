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
        self.names.clone()
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

#[tokio::test]
async fn tree_matches_the_manifest_and_metadata_never_fetches_after_load() {
    // Small pages so the manifest is a multi-level tree.
    let (mem, root, files) = dataset(120, 3000, 1024, 1024);
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    let ds = path(&fs, "ds").await.unwrap();
    assert!(ds.is_dir);
    let after_load = fs.blocks.fetches.load(Ordering::SeqCst);
    // Walk everything: lookups, getattr, readdir.
    let mut seen = 0;
    let mut stack = vec![(ds.ino, String::new())];
    while let Some((ino, prefix)) = stack.pop() {
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
    assert_eq!(seen, files.len());
    assert_eq!(
        fs.blocks.fetches.load(Ordering::SeqCst),
        after_load,
        "metadata touched the block source"
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
async fn an_unavailable_block_is_eio_and_the_rest_keeps_working() {
    let (mem, _, files) = dataset(5, 2000, 1024, 1 << 20);
    let fs = Arc::new(MountFs::new(Arc::new(mem), MountOptions::default()));
    let bad = path(&fs, "ds/t/c/0/2").await.unwrap();
    let good = path(&fs, "ds/t/c/0/3").await.unwrap();
    // Fail the first block of the bad file.
    let (ds, idx, _) = fs.file(bad.ino).unwrap();
    fs.blocks.failing.lock().unwrap().insert(ds.entries[idx].blocks()[0]);
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
async fn a_dataset_whose_key_tables_pass_the_budget_is_refused_while_loading() {
    // 2,000 keys in small pages: about 2,000 x (256 + key + 64) bytes.
    let (big, big_root, _) = dataset(2000, 10, 1024, 2048);
    let (small, small_root, files) = dataset(5, 10, 1024, 2048);
    let mut blocks = big.blocks.into_inner().unwrap();
    blocks.extend(small.blocks.into_inner().unwrap());
    let mem = MemBlocks {
        blocks: Mutex::new(blocks),
        names: vec![("big".into(), big_root), ("small".into(), small_root)],
        ..Default::default()
    };
    let opts = MountOptions {
        table_bytes: 100_000,
        ..Default::default()
    };
    let fs = Arc::new(MountFs::new(Arc::new(mem), opts));
    let e = path(&fs, "big").await.unwrap_err();
    assert_eq!(e.errno, libc::ENOMEM, "{e}");
    assert!(e.msg.contains("[mount] table_memory"), "{e}");
    // Refused before all pages were fetched: the loader stopped counting
    // at the budget, and nothing of it is in the tables.
    let fetched = fs.blocks.fetches.load(Ordering::SeqCst);
    assert!(fetched < 2000 / 10, "{fetched} pages fetched");
    assert_eq!(fs.read_tables().used, 0);
    // A dataset that fits still loads and reads.
    let a = path(&fs, "small/t/c/0/3").await.unwrap();
    let got = fs.read(a.ino, 0, 10).await.unwrap();
    assert_eq!(&got[..], &files["t/c/0/3"][..]);
    assert!(fs.read_tables().used > 0 && fs.read_tables().used <= 100_000);
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
    assert_eq!(fs.read_tables().used, 0);
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
