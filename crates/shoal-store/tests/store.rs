//! Store behaviour: verified reads, dedup, pins/names/GC, corruption,
//! crash recovery, quota eviction.

mod common;

use common::{dataset, flip_byte, put};
use shoal_core::Block;
use shoal_store::{Error, PinKind, Store, StoreOptions};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

#[test]
fn smoke_interesting_sizes() {
    // Sizes around the block-size boundaries: empty, 1, bs-1, bs, bs+1, 2bs+1.
    let bs = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for size in [0usize, 1, bs - 1, bs, bs + 1, 2 * bs + 1] {
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let b = Block::raw(data.clone());
        if size <= bs {
            store.put_many(std::slice::from_ref(&b), None).unwrap();
            assert_eq!(store.get(b.cid()).unwrap().unwrap().data().as_ref(), &data[..]);
        }
    }
    let ds = dataset(1, &[0, 1, bs - 1, bs, bs + 1, 2 * bs + 1], bs as u32);
    put(&store, &ds, None);
    store.pin(&ds.root(), PinKind::User).unwrap();
    for b in ds.all() {
        assert_eq!(store.get(b.cid()).unwrap().unwrap(), b);
    }
}

#[test]
fn same_blocks_twice_store_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ds = dataset(7, &[1000, 5000, 300], 4096);
    let first = store.put_many(&ds.all(), None).unwrap();
    assert!(first.new_blocks > 0);
    let second = store.put_many(&ds.all(), None).unwrap();
    assert_eq!(second.new_blocks, 0);
    assert_eq!(second.dup_blocks as usize, ds.all().len());
}

#[test]
fn pin_of_incomplete_dataset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ds = dataset(3, &[100, 200], 4096);
    store.put_many(std::slice::from_ref(&ds.root), None).unwrap();
    let err = store.pin(&ds.root(), PinKind::User).unwrap_err();
    assert!(matches!(err, Error::Incomplete { missing: 2, .. }), "{err}");
    assert!(store.pins().unwrap().is_empty());
}

#[test]
fn gc_keeps_pinned_and_named_and_removes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dataset(1, &[3000; 4], 1024),
        dataset(2, &[3000; 4], 1024),
        dataset(3, &[3000; 4], 1024),
    );
    {
        let store = open(dir.path());
        for ds in [&a, &b, &c] {
            put(&store, ds, None);
        }
        store.pin(&a.root(), PinKind::User).unwrap();
        store.set_name("bee", &b.root()).unwrap();
        // Adds and pins move no block out: the removal count stays.
        assert_eq!(store.removals(), 0);
        let stats = store.gc().unwrap();
        assert_eq!(stats.removed_bytes, c.bytes());
        // A collection that removed blocks is counted; one that removed
        // nothing is not.
        let after = store.removals();
        assert!(after > 0);
        store.gc().unwrap();
        assert_eq!(store.removals(), after);
        for blk in a.all().iter().chain(b.all().iter()) {
            assert!(store.get(blk.cid()).unwrap().is_some());
        }
        for blk in c.all() {
            assert!(store.get(blk.cid()).unwrap().is_none());
        }
        // Rename: the name moves to c's root (re-added), b loses protection.
        put(&store, &c, None);
        store.set_name("bee", &c.root()).unwrap();
        store.gc().unwrap();
        assert!(store.get(&b.root()).unwrap().is_none());
        assert!(store.get(&c.root()).unwrap().is_some());
    }
    // Reopen: pins and names persist and GC still honours them.
    let store = open(dir.path());
    store.gc().unwrap();
    assert!(store.missing_blocks(&a.root()).unwrap().is_empty());
    assert!(store.missing_blocks(&c.root()).unwrap().is_empty());
    assert!(store.unpin(&a.root(), PinKind::User).unwrap());
    store.remove_name("bee").unwrap();
    store.gc().unwrap();
    assert_eq!(store.stats().unwrap().blocks, 0);
    assert_eq!(store.stats().unwrap().live_bytes, 0);
}

#[test]
fn sessions_protect_an_add_in_progress_from_gc() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ds = dataset(5, &[2000, 2000], 1024);
    let session = store.session();
    put(&store, &ds, Some(&session));
    store.gc().unwrap();
    assert!(store.missing_blocks(&ds.root()).unwrap().is_empty());
    drop(session);
    store.gc().unwrap();
    assert!(store.get(&ds.root()).unwrap().is_none());
}

#[test]
fn compaction_reclaims_disk_and_keeps_live_blocks_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let keep = dataset(1, &[50_000; 4], 16_384);
    let drop_ = dataset(2, &[50_000; 40], 16_384);
    put(&store, &keep, None);
    put(&store, &drop_, None);
    store.pin(&keep.root(), PinKind::User).unwrap();
    let before = store.stats().unwrap();
    let stats = store.gc().unwrap();
    assert_eq!(stats.removed_bytes, drop_.bytes());
    let after = store.stats().unwrap();
    assert_eq!(after.live_bytes, keep.bytes());
    assert!(stats.reclaimed_disk_bytes >= drop_.bytes(), "{stats:?}");
    assert!(
        after.segment_bytes < before.segment_bytes / 5,
        "{before:?} -> {after:?}"
    );
    for b in keep.all() {
        assert_eq!(store.get(b.cid()).unwrap().unwrap(), b);
    }
}

#[test]
fn a_flipped_byte_is_never_returned_and_fsck_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ds = dataset(9, &[5000, 5000], 4096);
    put(&store, &ds, None);
    store.pin(&ds.root(), PinKind::User).unwrap();
    store.set_name("nine", &ds.root()).unwrap();
    let victim = *ds.blocks[0].cid();
    flip_byte(&store, &victim);
    let err = store.get(&victim).unwrap_err();
    assert!(matches!(err, Error::Corrupt { cid, .. } if cid == victim), "{err}");
    assert!(err.to_string().contains(&victim.to_string()));

    let report = store.fsck(false).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].cid, victim.to_string());
    assert_eq!(report.incomplete.len(), 1);
    assert_eq!(report.incomplete[0].names, vec!["nine".to_string()]);

    let report = store.fsck(true).unwrap();
    assert!(report.repaired);
    assert_eq!(report.removed_blocks, 1);
    assert_eq!(report.incomplete[0].missing_blocks, 1);
    assert!(store.get(&victim).unwrap().is_none());
    // After repair only the incompleteness remains; re-adding heals it.
    put(&store, &ds, None);
    assert!(store.fsck(false).unwrap().is_clean());
}

#[test]
fn uncommitted_segment_tail_is_cut_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(4, &[3000, 3000], 1024);
    let seg_len;
    {
        let store = open(dir.path());
        put(&store, &ds, None);
        store.pin(&ds.root(), PinKind::User).unwrap();
        seg_len = store.stats().unwrap().segment_bytes;
    }
    // Simulate a crash after bytes were appended but before the index
    // committed: garbage past the committed length, and an orphan segment.
    let seg = dir.path().join("segments/000000000001.pack");
    let mut data = std::fs::read(&seg).unwrap();
    data.extend_from_slice(&[0xAB; 777]);
    std::fs::write(&seg, &data).unwrap();
    std::fs::write(dir.path().join("segments/000000000009.pack"), b"orphan").unwrap();
    let store = open(dir.path());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), seg_len);
    assert!(!dir.path().join("segments/000000000009.pack").exists());
    let report = store.fsck(false).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let more = dataset(5, &[100], 1024);
    put(&store, &more, None);
    assert_eq!(store.get(more.blocks[0].cid()).unwrap().unwrap(), more.blocks[0]);
}

#[test]
fn second_open_of_a_store_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

#[test]
fn quota_evicts_least_recently_used_unpinned_data_first() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dataset(1, &[10_000; 10], 10_000),
        dataset(2, &[10_000; 10], 10_000),
        dataset(3, &[10_000; 10], 10_000),
    );
    let quota = a.bytes() * 2 + a.bytes() / 2;
    let store = Store::open(
        dir.path(),
        StoreOptions {
            quota: Some(quota),
            ..Default::default()
        },
    )
    .unwrap();
    put(&store, &a, None);
    store.pin(&a.root(), PinKind::Cache).unwrap();
    put(&store, &b, None);
    store.pin(&b.root(), PinKind::Cache).unwrap();
    // Touch a: b is now the least recently used.
    for blk in a.all() {
        store.get(blk.cid()).unwrap();
    }
    let stats = store.put_many(&c.all(), None).unwrap();
    assert!(stats.evicted_blocks > 0);
    assert!(store.stats().unwrap().live_bytes <= quota);
    assert!(
        store.missing_blocks(&a.root()).unwrap().is_empty(),
        "recently used a survives"
    );
    assert!(
        !store.missing_blocks(&b.root()).unwrap().is_empty(),
        "least recently used b is evicted"
    );
    // b's cache pin is dropped: it is no longer complete.
    assert!(store.pin_kinds(&b.root()).unwrap().is_empty());
}

#[test]
fn quota_never_evicts_user_pins_and_refuses_what_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let a = dataset(1, &[10_000; 10], 10_000);
    let big = dataset(2, &[10_000; 20], 10_000);
    let store = Store::open(
        dir.path(),
        StoreOptions {
            quota: Some(a.bytes() * 2),
            ..Default::default()
        },
    )
    .unwrap();
    put(&store, &a, None);
    store.pin(&a.root(), PinKind::User).unwrap();
    let err = store.put_many(&big.all(), None).unwrap_err();
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
    assert!(err.to_string().contains("quota"));
    assert!(store.missing_blocks(&a.root()).unwrap().is_empty());
    // Nothing of the refused batch was written.
    assert_eq!(store.stats().unwrap().live_bytes, a.bytes());
    assert!(store.pin(&big.root(), PinKind::User).is_err());
}

/// Regression (hardening 7): a read that looked up a block just before
/// compaction moved it and deleted its segment must find it at its new place,
/// not report it corrupt.
#[test]
fn reads_during_compaction_never_fail() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let keep: Vec<Block> = (0..64u32)
        .map(|i| Block::raw((0..16384u32).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>()))
        .collect();
    let session = store.session();
    store.put_many(&keep, Some(&session)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (store, stop, reads, keep) = (store.clone(), stop.clone(), reads.clone(), keep.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                for b in &keep {
                    match store.get(b.cid()) {
                        Ok(Some(got)) if got.data() == b.data() => {}
                        other => return Err(format!("{}: {other:?}", b.cid())),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    };
    let mut compacted = 0;
    for round in 0..400u32 {
        // Garbage outweighs the kept blocks: every gc rewrites their segment.
        let garbage: Vec<Block> = (0..80u32)
            .map(|i| Block::raw(vec![(round * 7 + i) as u8; 16384 + i as usize + round as usize * 200]))
            .collect();
        store.put_many(&garbage, None).unwrap();
        compacted += store.gc().unwrap().compacted_segments;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap().unwrap();
    assert!(compacted >= 400, "only {compacted} segments compacted");
    assert!(reads.load(Ordering::Relaxed) > 0);
    drop(session);
}

/// Regression (hardening 6): pin, unpin, add and gc race each other; a pin
/// never lands on a dataset GC swept half of, and GC keeps working.
#[test]
fn pin_unpin_add_and_gc_concurrently_leave_a_consistent_store() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let sets: Arc<Vec<common::Dataset>> =
        Arc::new((0..6).map(|s| dataset(100 + s, &[3000, 5000, 700], 1024)).collect());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut threads = Vec::new();
    for t in 0..3u64 {
        let (store, sets) = (store.clone(), sets.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = t as usize;
            while std::time::Instant::now() < deadline {
                let d = &sets[i % sets.len()];
                // Add without a session (its blocks are GC's to take until
                // pinned), then pin: either the pin sees it complete and
                // protects it, or it is refused as incomplete.
                store.put_many(&d.all(), None).unwrap();
                match store.pin(&d.root(), PinKind::User) {
                    Ok(()) | Err(Error::Incomplete { .. }) => {}
                    Err(e) => panic!("pin: {e}"),
                }
                if i.is_multiple_of(3) {
                    store.unpin(&d.root(), PinKind::User).unwrap();
                }
                i += 3;
            }
        }));
    }
    {
        let store = store.clone();
        threads.push(std::thread::spawn(move || {
            while std::time::Instant::now() < deadline {
                let stats = store.gc().unwrap();
                assert!(stats.incomplete.is_empty(), "a pinned dataset lost blocks: {stats:?}");
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    // Every pinned dataset is complete, fsck is clean, GC still works.
    for (root, _, _) in store.pins().unwrap() {
        assert!(
            store.missing_blocks(&root).unwrap().is_empty(),
            "pinned {root} is incomplete"
        );
    }
    assert!(store.fsck(false).unwrap().is_clean());
    store.gc().unwrap();
}

/// Regression (hardening 6): a pinned dataset that lost a manifest page
/// (a repaired corruption) is reported by GC, which keeps collecting.
#[test]
fn gc_collects_around_a_dataset_missing_a_manifest_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Small pages: the manifest has pages under its root.
    let mut b = shoal_core::manifest::ManifestBuilder::new(3, 1024).with_page_target(512);
    for i in 0..200 {
        b.push(shoal_core::manifest::Entry {
            key: format!("k/{i:04}"),
            size: 0,
            content: shoal_core::manifest::Content::Blocks(vec![]),
        })
        .unwrap();
    }
    let built = b.build().unwrap();
    assert!(built.blocks.len() > 1);
    let mut all = built.blocks.clone();
    all.push(built.root.clone());
    store.put_many(&all, None).unwrap();
    store.pin(built.root.cid(), PinKind::User).unwrap();
    let garbage = dataset(7, &[4000], 1024);
    store.put_many(&garbage.all(), None).unwrap();
    // Lose one page, as `fsck --repair` would after corruption.
    let page = built.blocks[0].clone();
    flip_byte(&store, page.cid());
    assert!(store.fsck(true).unwrap().repaired);
    let stats = store.gc().unwrap();
    assert_eq!(stats.incomplete, vec![built.root.cid().to_string()]);
    assert!(stats.removed_blocks >= garbage.all().len() as u64, "{stats:?}");
    // The rest of the dataset is kept: only what the lost page named is gone.
    assert!(store.has(built.root.cid()).unwrap());
}

/// Regression (hardening 8): access ticks of reads stay bounded in memory.
#[test]
fn access_ticks_of_many_reads_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let n = shoal_store::MAX_PENDING_TICKS + 5000;
    let blocks: Vec<Block> = (0..n as u32).map(|i| Block::raw(i.to_le_bytes().to_vec())).collect();
    store.put_many(&blocks, None).unwrap();
    for b in &blocks {
        store.get(b.cid()).unwrap().unwrap();
        assert!(store.pending_ticks() < shoal_store::MAX_PENDING_TICKS);
    }
    store.flush().unwrap();
    assert_eq!(store.pending_ticks(), 0);
}

/// Issue 24: a repo format version, written at open and checked: a store
/// from before the version is migrated, one from a newer shoal refused
/// untouched with a message saying so.
#[test]
fn the_format_version_is_recorded_and_a_newer_store_is_refused() {
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    let format = |dir: &std::path::Path| {
        let db = redb::Database::open(dir.join("index.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(META).unwrap();
        t.get("format").unwrap().map(|v| v.value())
    };
    let set = |dir: &std::path::Path, v: Option<u64>| {
        let db = redb::Database::open(dir.join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(META).unwrap();
            match v {
                Some(v) => t.insert("format", v).map(drop).unwrap(),
                None => t.remove("format").map(drop).unwrap(),
            }
        }
        txn.commit().unwrap();
    };
    drop(open(dir.path()));
    assert_eq!(format(dir.path()), Some(shoal_store::FORMAT));
    // A store from before the marker is migrated.
    set(dir.path(), None);
    drop(open(dir.path()));
    assert_eq!(format(dir.path()), Some(shoal_store::FORMAT));
    // A newer one is refused and left as it is.
    set(dir.path(), Some(shoal_store::FORMAT + 1));
    match Store::open(dir.path(), StoreOptions::default()) {
        Err(e @ Error::NewerFormat { .. }) => assert!(e.to_string().contains("newer"), "{e}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(format(dir.path()), Some(shoal_store::FORMAT + 1));
}

/// Issue 24 finding 7: with no quota (the default), blocks fetched for
/// readers were stored as cache without limit, so readers could fill the
/// disk. Read-through cache stays under `cache_max`, least recently read
/// evicted first; pinned data is never touched.
#[test]
fn regression_24_read_through_cache_stays_under_its_cap_and_pins_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            quota: None,
            cache_max: Some(1 << 20),
        },
    )
    .unwrap();
    let pinned = dataset(9, &[300_000, 300_000], 1 << 20);
    put(&store, &pinned, None);
    store.pin(&pinned.root(), PinKind::User).unwrap();
    let block = |i: u32| {
        Block::raw(
            (0..200_000u32)
                .map(|j| (i.wrapping_mul(31) ^ j) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    for i in 0..40 {
        store.put_cache(&[block(i)]).unwrap();
    }
    let stats = store.stats().unwrap();
    let cache = stats.live_bytes - pinned.bytes();
    assert!(cache <= 1 << 20, "{cache} bytes of cache");
    assert!(cache >= 600_000, "the cap is used, not emptied: {cache}");
    // The newest are kept, the oldest went; the pinned dataset is whole.
    assert!(store.get(block(39).cid()).unwrap().is_some());
    assert!(store.get(block(0).cid()).unwrap().is_none());
    assert!(store.fsck(false).unwrap().is_clean());
    // A batch larger than the whole cap is not stored at all.
    let huge = Block::raw(vec![7u8; 2 << 20]);
    store.put_cache(std::slice::from_ref(&huge)).unwrap();
    assert!(store.get(huge.cid()).unwrap().is_none());
}
