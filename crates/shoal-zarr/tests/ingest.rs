//! Ingest behaviour on hand-made trees: refusals leave nothing referenced,
//! re-adds dedup, a changed chunk stores only its own blocks, and export
//! reproduces the tree byte for byte.

use std::path::Path;

use shoal_store::{PinKind, Store, StoreOptions};
use shoal_zarr::{ingest, read, Error, IngestOptions};

fn write(root: &Path, key: &str, data: &[u8]) {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A small v2 hierarchy: a group with one array of 3 chunks, 2.5 blocks each.
fn v2_tree(root: &Path, chunk1: u8) {
    write(root, ".zgroup", br#"{"zarr_format": 2}"#);
    write(root, ".zattrs", br#"{"title": "t"}"#);
    write(root, "t/.zarray", br#"{"zarr_format": 2, "shape": [30], "chunks": [10], "dtype": "<f8", "compressor": null, "fill_value": "NaN", "filters": null, "order": "C"}"#);
    write(root, "t/.zattrs", br#"{"_ARRAY_DIMENSIONS": ["x"]}"#);
    for (i, fill) in [(0, 1u8), (1, chunk1), (2, 3u8)] {
        // Non-uniform so no two blocks of a chunk are equal.
        let data: Vec<u8> = (0..2560u32).map(|j| fill ^ (j % 251) as u8).collect();
        write(root, &format!("t/{i}"), &data);
    }
}

fn opts() -> IngestOptions {
    IngestOptions {
        block_size: 1024,
        threads: 2,
        prior: None,
    }
}

fn add(store: &Store, dir: &Path) -> shoal_zarr::Result<shoal_zarr::IngestReport> {
    let session = store.session();
    let r = ingest(store, dir, &opts(), &session, &|_| {})?;
    store.pin(&r.root, PinKind::User)?;
    Ok(r)
}

#[test]
fn round_trip_dedup_and_one_changed_chunk() {
    let src = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let store = Store::open(repo.path(), StoreOptions::default()).unwrap();
    v2_tree(src.path(), 2);
    let a = add(&store, src.path()).unwrap();
    assert_eq!(a.zarr_format, 2);
    assert_eq!(a.keys, 7);
    let again = add(&store, src.path()).unwrap();
    assert_eq!(again.root, a.root);
    assert_eq!(again.stats.new_blocks, 0);

    // Change one chunk: only its blocks (3) and the manifest root are new.
    v2_tree(src.path(), 9);
    let b = add(&store, src.path()).unwrap();
    assert_ne!(b.root, a.root);
    assert_eq!(b.stats.new_blocks, 3 + 1, "{:?}", b.stats);

    // Export reproduces the tree.
    let out = tempfile::tempdir().unwrap();
    let m = store.manifest(&b.root).unwrap();
    let dest = out.path().join("copy");
    let (keys, _) = read::export(&m, &dest, &mut |c| Ok(store.require(c)?), &mut |_| {}).unwrap();
    assert_eq!(keys, 7);
    for key in [".zgroup", ".zattrs", "t/.zarray", "t/0", "t/1", "t/2"] {
        assert_eq!(
            std::fs::read(dest.join(key)).unwrap(),
            std::fs::read(src.path().join(key)).unwrap(),
            "{key}"
        );
    }
    // Refuses to overwrite a non-empty directory.
    assert!(matches!(
        read::export(&m, &dest, &mut |c| Ok(store.require(c)?), &mut |_| {}),
        Err(Error::OutputExists(_))
    ));
}

fn refused(setup: impl FnOnce(&Path)) -> Error {
    let src = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    setup(src.path());
    let store = Store::open(repo.path(), StoreOptions::default()).unwrap();
    let err = add(&store, src.path()).unwrap_err();
    // Refused before a single block was written (no GC needed to hide
    // anything): no block, no segment bytes, no pin.
    let stats = store.stats().unwrap();
    assert_eq!((stats.blocks, stats.segment_bytes), (0, 0), "{stats:?}");
    assert!(store.pins().unwrap().is_empty());
    err
}

#[test]
fn not_a_zarr_hierarchy() {
    let err = refused(|p| write(p, "data.bin", b"hello"));
    assert!(matches!(err, Error::NotZarr { .. }), "{err}");
    assert!(err.to_string().contains("zarr.json"));
}

#[test]
fn invalid_json_metadata() {
    let err = refused(|p| {
        v2_tree(p, 2);
        write(p, "t/.zattrs", b"{not json");
    });
    assert!(matches!(err, Error::BadMetadata { .. }), "{err}");
    assert!(err.to_string().contains("t/.zattrs"), "{err}");
}

#[test]
fn v3_array_metadata_missing_fields() {
    let err = refused(|p| {
        write(p, "zarr.json", br#"{"zarr_format": 3, "node_type": "group"}"#);
        write(
            p,
            "a/zarr.json",
            br#"{"zarr_format": 3, "node_type": "array", "shape": [1]}"#,
        );
    });
    assert!(err.to_string().contains("data_type"), "{err}");
}

#[test]
fn symlink_leaving_the_directory() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"x").unwrap();
    let target = outside.path().join("secret");
    let err = refused(|p| {
        v2_tree(p, 2);
        std::os::unix::fs::symlink(&target, p.join("t/3")).unwrap();
    });
    assert!(matches!(err, Error::SymlinkEscapes { .. }), "{err}");
}

#[test]
fn symlink_inside_the_directory_is_followed() {
    let src = tempfile::tempdir().unwrap();
    v2_tree(src.path(), 2);
    std::os::unix::fs::symlink(src.path().join("t/0"), src.path().join("t/3")).unwrap();
    let repo = tempfile::tempdir().unwrap();
    let store = Store::open(repo.path(), StoreOptions::default()).unwrap();
    let r = add(&store, src.path()).unwrap();
    assert_eq!(r.keys, 8);
}

#[test]
fn unreadable_file_dangling_symlink() {
    let err = refused(|p| {
        v2_tree(p, 2);
        std::os::unix::fs::symlink(p.join("nowhere"), p.join("t/3")).unwrap();
    });
    assert!(matches!(err, Error::Unreadable { .. }), "{err}");
}

#[test]
fn special_file_fifo() {
    let err = refused(|p| {
        v2_tree(p, 2);
        let ok = std::process::Command::new("mkfifo")
            .arg(p.join("t/3"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
    });
    assert!(matches!(err, Error::SpecialFile { .. }), "{err}");
}

/// Regression (hardening 10): `get -o DIR` never writes through a symlink
/// planted in the output tree while it runs (keys are written in order:
/// .zattrs, .zgroup, t/.zarray, t/.zattrs, t/0, t/1, t/2).
#[test]
fn export_never_writes_through_a_planted_symlink() {
    let src = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let store = Store::open(repo.path(), StoreOptions::default()).unwrap();
    v2_tree(src.path(), 2);
    let r = add(&store, src.path()).unwrap();
    let m = store.manifest(&r.root).unwrap();
    for plant in ["t", "t/1", ".zgroup"] {
        let work = tempfile::tempdir().unwrap();
        let victim = work.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let out = work.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut written = 0;
        let res = read::export(&m, &out, &mut |c| Ok(store.require(c)?), &mut |_| {
            written += 1;
            // After the first key, an attacker plants a link where a
            // later key will go.
            if written == 1 {
                let target = if plant == "t" {
                    victim.clone()
                } else {
                    victim.join("file")
                };
                if let Some(parent) = out.join(plant).parent() {
                    std::fs::create_dir_all(parent).unwrap();
                }
                std::os::unix::fs::symlink(&target, out.join(plant)).unwrap();
            }
        });
        assert!(matches!(res, Err(Error::Write { .. })), "plant {plant}: {res:?}");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "wrote through {plant}");
    }
    // The output path itself being a link is refused up front.
    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(work.path(), work.path().join("link")).unwrap();
    let res = read::export(
        &m,
        &work.path().join("link"),
        &mut |c| Ok(store.require(c)?),
        &mut |_| {},
    );
    assert!(matches!(res, Err(Error::Write { .. })), "{res:?}");
    // And a clean export still reproduces the tree.
    let out = work.path().join("clean");
    read::export(&m, &out, &mut |c| Ok(store.require(c)?), &mut |_| {}).unwrap();
    assert_eq!(
        std::fs::read(out.join("t/1")).unwrap(),
        std::fs::read(src.path().join("t/1")).unwrap()
    );
}

#[test]
fn re_adding_reads_only_changed_files_and_builds_the_same_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    v2_tree(&src, 1);
    let store = Store::open(tmp.path().join("store"), Default::default()).unwrap();
    let first = add(&store, &src).unwrap();
    assert_eq!(first.reused_files, 0);
    let chunks = first.record.len() as u64;
    assert!(chunks > 1, "the record holds every chunk file");
    let with = |prior: &shoal_zarr::Prior| IngestOptions {
        prior: Some(std::sync::Arc::new(prior.clone())),
        ..opts()
    };
    let again = |prior: &shoal_zarr::Prior| {
        let session = store.session();
        ingest(&store, &src, &with(prior), &session, &|_| {}).unwrap()
    };
    // Nothing changed: nothing read, the same root.
    let r = again(&first.record);
    assert_eq!((r.root, r.reused_files, r.stats.new_blocks), (first.root, chunks, 0));
    // One chunk rewritten (new size): only it is read; the root is what a
    // full read of the new tree gives.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&src, "t/1", &vec![7u8; 2000]);
    let r = again(&first.record);
    assert_eq!(r.reused_files, chunks - 1);
    let full = add(
        &Store::open(tmp.path().join("store2"), Default::default()).unwrap(),
        &src,
    )
    .unwrap();
    assert_eq!(r.root, full.root);
    // Blocks the store no longer has are never assumed: a record from
    // another store reads everything.
    let other = Store::open(tmp.path().join("store3"), Default::default()).unwrap();
    let session = other.session();
    let r = ingest(&other, &src, &with(&full.record), &session, &|_| {}).unwrap();
    assert_eq!((r.reused_files, r.root), (0, full.root));
    // A record cut at another block size is not used.
    let session = store.session();
    let o = IngestOptions {
        block_size: 512,
        ..with(&r.record)
    };
    assert_eq!(ingest(&store, &src, &o, &session, &|_| {}).unwrap().reused_files, 0);
}

/// Bytes this process has read through read(2)-like calls (page cache
/// hits included), from /proc/self/io.
fn rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    let line = io.lines().find(|l| l.starts_with("rchar:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn an_unchanged_tree_re_added_reads_no_chunk_content() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, ".zgroup", br#"{"zarr_format": 2}"#);
    write(&src, "x/.zarray", br#"{"zarr_format": 2, "shape": [1048576], "chunks": [131072], "dtype": "<f8", "compressor": null, "fill_value": 0.0, "filters": null, "order": "C"}"#);
    for i in 0..8u8 {
        let data: Vec<u8> = (0..1u32 << 20).map(|j| i ^ (j % 253) as u8).collect();
        write(&src, &format!("x/{i}"), &data);
    }
    let store = Store::open(tmp.path().join("store"), Default::default()).unwrap();
    let session = store.session();
    let o = IngestOptions {
        block_size: 1 << 20,
        ..opts()
    };
    let first = ingest(&store, &src, &o, &session, &|_| {}).unwrap();
    let before = rchar();
    let again = IngestOptions {
        prior: Some(std::sync::Arc::new(first.record.clone())),
        ..o.clone()
    };
    let r = ingest(&store, &src, &again, &session, &|_| {}).unwrap();
    let read = rchar() - before;
    assert_eq!((r.root, r.reused_files), (first.root, 8));
    // 8 MiB of chunks: none of it read (metadata and the index are).
    assert!(read < 1 << 20, "{read} bytes read to re-add an unchanged 8 MiB tree");
    // --rehash (no prior) reads every chunk.
    let before = rchar();
    ingest(&store, &src, &o, &session, &|_| {}).unwrap();
    assert!(rchar() - before >= 8 << 20);
}
