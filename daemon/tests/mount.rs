//! End-to-end mount tests: daemon B mounts datasets that only daemon A
//! holds; zarr-python, xarray and dask read them through the kernel.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A and B connected; B mounts on a fresh directory.
fn pair(b_opts: Opts) -> (Daemon, Daemon, tempfile::TempDir, MountGuard) {
    require_fuse();
    let a = Daemon::start();
    let b = Daemon::start_opts(b_opts);
    b.connect(&a);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    b.cli_ok(&["mount", mnt.to_str().unwrap()]);
    let mnt = std::fs::canonicalize(&mnt).unwrap();
    assert!(is_mounted(&mnt));
    (a, b, dir, MountGuard(mnt))
}

#[test]
fn zarr_xarray_and_dask_read_datasets_mounted_from_another_daemon() {
    let (a, b, _dir, mnt) = pair(Opts::default());
    for name in ["v2_blosc", "v3_zstd", "v3_sharded", "ints_v2", "xr_v2", "xr_v3"] {
        let src = datasets().join(name);
        let root = a.add(&src, Some(name));
        wait_providers(&b, &root, 1);
        let blocks_before = b.json(&["stats"])["blocks"].as_u64().unwrap();
        let out = py_within("check_equal.py", &[&src, &mnt.0.join(&root)], 300);
        assert!(out.starts_with("ok"), "{name}: {out}");
        // B held none of the blocks before and fetched them for the read.
        assert!(b.json(&["stats"])["blocks"].as_u64().unwrap() > blocks_before, "{name}");
    }
}

#[test]
fn ls_lr_lists_every_key_with_its_size_and_fetches_no_chunk() {
    let (a, b, _dir, mnt) = pair(Opts::default());
    let src = datasets().join("v2_blosc");
    let root = a.add(&src, None);
    wait_providers(&b, &root, 1);
    assert_eq!(b.json(&["stats"])["blocks"].as_u64(), Some(0));
    let listed: serde_json::Value =
        serde_json::from_str(&py_within("tree_sizes.py", &[&mnt.0.join(&root)], 120)).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&py_within("tree_sizes.py", &[&src], 60)).unwrap();
    assert_eq!(listed, expected);
    let ls = Command::new("ls").arg("-laR").arg(mnt.0.join(&root)).output().unwrap();
    assert!(ls.status.success());
    // Only the manifest root came over; no chunk block was fetched.
    assert_eq!(b.json(&["stats"])["blocks"].as_u64(), Some(1));
}

#[test]
fn sixteen_concurrent_readers_get_the_right_bytes() {
    let (a, b, _dir, mnt) = pair(Opts::default());
    let src = datasets().join("v3_zstd");
    let root = a.add(&src, None);
    wait_providers(&b, &root, 1);
    let out = py_within("concurrent_read.py", &[&src, &mnt.0.join(&root)], 300);
    assert!(out.starts_with("ok"), "{out}");
    // The daemon runs as root here: it raised the mount's readahead from
    // the kernel's 128 KiB to one block, so a sequential reader sends one
    // request per block.
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(&mnt.0).unwrap().dev();
    // Linux's dev_t split into major and minor.
    let (major, minor) = (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    );
    let ra = std::fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"));
    assert_eq!(ra.unwrap().trim(), "1024");
}

fn short_timeouts() -> Opts {
    Opts {
        network: "block_timeout = \"3s\"\nrequest_timeout = \"2s\"\nprovider_timeout = \"2s\"\n".into(),
        ..Default::default()
    }
}

#[test]
fn a_chunk_whose_only_provider_is_gone_is_eio_and_the_rest_still_works() {
    let (mut a, b, _dir, mnt) = pair(short_timeouts());
    let src = datasets().join("v2_blosc");
    let root = a.add(&src, None);
    wait_providers(&b, &root, 1);
    let ds = mnt.0.join(&root);
    let first = ds.join("temp/0.0.0");
    assert!(py_within("read_file.py", &[&first], 60).starts_with("ok"));
    a.kill9();
    // The read fails within block_timeout (3s); the 30s guard catches a hang.
    let out = py_within("read_file.py", &[&ds.join("temp/5.1.1")], 30);
    assert_eq!(out.trim(), format!("errno {}", libc_eio()), "{out}");
    // The rest of the mount keeps working: listing and already-read data.
    assert!(py_within("read_file.py", &[&first], 60).starts_with("ok"));
    assert!(py_within("tree_sizes.py", &[&ds], 60).contains("temp/5.1.1"));
    assert!(py_within("read_file.py", &[&ds.join("temp/.zarray")], 60).starts_with("ok"));
}

fn libc_eio() -> i32 {
    5
}

#[test]
fn a_block_corrupted_in_the_local_store_is_refetched_or_fails_with_eio() {
    let (mut a, b, _dir, mnt) = pair(short_timeouts());
    let src = datasets().join("v2_blosc");
    let root = a.add(&src, None);
    wait_providers(&b, &root, 1);
    b.cli_ok(&["pin", &root]);
    let ds = mnt.0.join(&root);
    let sha = |p: &Path| format!("ok {}", sha256(&std::fs::read(p).unwrap()));
    // With the provider up: the bad local copy is replaced by a verified one.
    corrupt_local_copy(&b, &std::fs::read(src.join("temp/1.0.1")).unwrap());
    assert_eq!(
        py_within("read_file.py", &[&ds.join("temp/1.0.1")], 60).trim(),
        sha(&src.join("temp/1.0.1"))
    );
    assert!(b.cli(&["fsck"]).status.success(), "the corrupt copy was replaced");
    // With no provider: EIO, never wrong bytes.
    corrupt_local_copy(&b, &std::fs::read(src.join("temp/2.1.0")).unwrap());
    a.kill9();
    let out = py_within("read_file.py", &[&ds.join("temp/2.1.0")], 60);
    assert_eq!(out.trim(), "errno 5", "{out}");
}

fn sha256(data: &[u8]) -> String {
    let out = Command::new(python())
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn stopping_the_daemon_unmounts_and_a_killed_one_is_cleaned_up_on_restart() {
    require_fuse();
    let mut d = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    d.cli_ok(&["mount", mnt.to_str().unwrap()]);
    let mnt = std::fs::canonicalize(&mnt).unwrap();
    let _guard = MountGuard(mnt.clone());
    assert!(is_mounted(&mnt));
    assert!(d.stop().success());
    assert!(!is_mounted(&mnt), "SIGTERM left the mount behind");

    d.restart();
    d.cli_ok(&["mount", mnt.to_str().unwrap()]);
    assert!(is_mounted(&mnt));
    d.kill9();
    d.restart();
    assert!(!is_mounted(&mnt), "restart did not clean up the stale mount");
    // And the directory can be mounted again.
    d.cli_ok(&["mount", mnt.to_str().unwrap()]);
    assert!(is_mounted(&mnt));
    d.cli_ok(&["unmount", mnt.to_str().unwrap()]);
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_name_is_a_symlink_to_its_current_version() {
    require_fuse();
    let d = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    d.cli_ok(&["mount", mnt.to_str().unwrap()]);
    let mnt = MountGuard(std::fs::canonicalize(&mnt).unwrap());
    let src = dir.path().join("ds");
    copy_tree(&datasets().join("xr_v2"), &src);
    let v1 = d.add(&src, Some("sst"));
    let link = mnt.0.join("sst");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&v1));
    // xarray opens the path through the name.
    let out = py_within("check_equal.py", &[&src, &link], 120);
    assert!(out.starts_with("ok"), "{out}");
    // A new version: the same path now leads to it; the old CID directory
    // is unchanged.
    std::fs::write(src.join("notes.txt"), b"version 2").unwrap();
    let v2 = d.add(&src, Some("sst"));
    assert_ne!(v1, v2);
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&v2));
    assert_eq!(std::fs::read(link.join("notes.txt")).unwrap(), b"version 2");
    assert!(!mnt.0.join(&v1).join("notes.txt").exists());
    // The root lists the name as a symlink.
    let listed = std::fs::read_dir(&mnt.0)
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == "sst")
        .expect("the name is listed");
    assert!(listed.file_type().unwrap().is_symlink());
}

/// The kernel forgets a dataset's directory (page cache and dentries
/// dropped): the daemon drops the dataset's key tables, and the next walk
/// loads them again and reads the same bytes.
#[test]
fn a_dataset_the_kernel_forgets_leaves_the_daemons_tables_and_reads_again() {
    let d = Daemon::start_opts(Opts {
        env: vec![("SHOAL_LOG".into(), "info,shoal_fuse=debug".into())],
        ..Default::default()
    });
    let src = datasets().join("xr_v3");
    d.add(&src, Some("xr"));
    let tmp = tempfile::tempdir().unwrap();
    let m = mount(&d, tmp.path(), "mnt");
    py("check_equal.py", &[&src, &m.0.join("xr")]);
    let forgot = |d: &Daemon| d.log().matches("the kernel forgot a dataset").count();
    wait_for(30, "the kernel to forget the dataset", || {
        // Drop dentries and inodes: the kernel sends FORGET for them.
        std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        (forgot(&d) > 0).then_some(())
    });
    py("check_equal.py", &[&src, &m.0.join("xr")]);
    drop(m);
}
