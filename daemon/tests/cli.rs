//! End-to-end tests of the Foundation capability through the real binary:
//! zarr-python datasets survive add/get byte-identical, dedup, crash safety,
//! corruption detection and repair, GC safety, quota.

mod common;

use common::*;

const DATASETS: &[&str] = &["v2_blosc", "v3_zstd", "v3_sharded", "ints_v2", "xr_v2", "xr_v3"];

#[test]
fn zarr_python_datasets_round_trip_byte_identical() {
    let d = Daemon::start();
    let out = tempfile::tempdir().unwrap();
    for name in DATASETS {
        let src = datasets().join(name);
        let root = d.add(&src, Some(name));
        assert!(root.starts_with("bafyr4i"), "{root}");
        let dest = out.path().join(name);
        d.cli_ok(&["get", name, "-o", dest.to_str().unwrap()]);
        assert_same_tree(&src, &dest);
        let got = py("check_equal.py", &[&src, &dest]);
        assert!(got.starts_with("ok"), "{got}");
        // The same data by CID.
        let by_cid = out.path().join(format!("{name}-by-cid"));
        d.cli_ok(&["get", &root, "-o", by_cid.to_str().unwrap()]);
        assert_same_tree(&src, &by_cid);
    }
    // ls and cat agree with the files.
    let ls = d.json(&["ls", "xr_v3"]);
    let src = datasets().join("xr_v3");
    for e in ls["entries"].as_array().unwrap() {
        let key = e["key"].as_str().unwrap();
        assert_eq!(
            e["size"].as_u64().unwrap(),
            std::fs::metadata(src.join(key)).unwrap().len(),
            "{key}"
        );
    }
    let cat = d.cli(&["cat", "xr_v3/sst/zarr.json"]);
    assert!(cat.status.success());
    assert_eq!(cat.stdout, std::fs::read(src.join("sst/zarr.json")).unwrap());
    let only_sst = d.json(&["ls", "xr_v3/sst"]);
    assert!(only_sst["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["key"].as_str().unwrap().starts_with("sst/")));
}

#[test]
fn same_tree_twice_stores_nothing_new_and_one_changed_chunk_stores_one_chunk() {
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("ds");
    copy_tree(&datasets().join("v2_blosc"), &src);
    let first = d.json(&["add", src.to_str().unwrap()]);
    let blocks_after_first = d.json(&["stats"])["blocks"].as_u64().unwrap();
    let again = d.json(&["add", src.to_str().unwrap()]);
    assert_eq!(first["root"], again["root"]);
    assert_eq!(again["new_blocks"].as_u64(), Some(0));
    assert_eq!(d.json(&["stats"])["blocks"].as_u64().unwrap(), blocks_after_first);

    py("change_one_chunk.py", &[&src]);
    let v2 = d.json(&["add", src.to_str().unwrap()]);
    assert_ne!(v2["root"], first["root"]);
    // One chunk file (< 1 MiB, so one block) plus the new manifest root;
    // in the store also the UnixFS view's two directory nodes on the
    // chunk's path (its array's and the root's).
    assert_eq!(v2["new_blocks"].as_u64(), Some(2), "{v2}");
    assert_eq!(d.json(&["stats"])["blocks"].as_u64().unwrap(), blocks_after_first + 4);
}

/// A daemon killed (SIGKILL) once a 400-chunk add has stored 20 blocks,
/// and restarted: the daemon, the work directory, the source, and what the
/// CLI running the add printed and exited with.
fn killed_mid_add() -> (Daemon, tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    let mut d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("big");
    big_dataset(&src, 400, 0);
    let add = std::process::Command::new(BIN)
        .arg("--home")
        .arg(&d.home)
        .args(["add", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_every(60, 20, "the add to store 20 blocks", || {
        (d.json(&["stats"])["blocks"].as_u64().unwrap() >= 20).then_some(())
    });
    d.kill9();
    let add_out = add.wait_with_output().unwrap();
    d.restart();
    (d, work, src, add_out)
}

#[test]
fn an_add_whose_daemon_is_killed_fails_saying_so() {
    let (_d, _work, _src, add) = killed_mid_add();
    assert!(!add.status.success(), "add should fail when the daemon dies");
    let msg = String::from_utf8_lossy(&add.stderr);
    assert!(msg.contains("daemon"), "{msg}");
}

#[test]
fn after_a_kill_mid_add_the_restarted_store_is_clean() {
    let (d, _work, _src, _) = killed_mid_add();
    let report = d.json(&["fsck"]);
    assert!(report["corrupt"].as_array().unwrap().is_empty(), "{report}");
    assert!(report["incomplete"].as_array().unwrap().is_empty(), "{report}");
}

#[test]
fn after_a_kill_mid_add_the_add_completes_and_gc_keeps_exactly_it() {
    let (d, work, src, _) = killed_mid_add();
    let root = d.add(&src, Some("big"));
    d.cli_ok(&["gc"]);
    let report = d.json(&["fsck"]);
    assert_eq!(report["unreferenced_blocks"].as_u64(), Some(0), "{report}");
    // 400 chunks + the manifest root + the UnixFS view (two directory
    // nodes, the two metadata documents as raw blocks).
    assert_eq!(d.json(&["stats"])["blocks"].as_u64(), Some(405));
    let out = work.path().join("out");
    d.cli_ok(&["get", &root, "-o", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
}

#[test]
fn a_flipped_byte_on_disk_is_caught_reported_and_repaired() {
    let d = Daemon::start();
    let src = datasets().join("v3_zstd");
    d.add(&src, Some("z"));
    let ls = d.json(&["ls", "z"]);
    let chunks: Vec<(String, String)> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["inline"].as_bool().unwrap())
        .take(2)
        .map(|e| {
            let key = e["key"].as_str().unwrap().to_string();
            (key, e["cids"][0].as_str().unwrap().to_string())
        })
        .collect();
    let [(read_key, read_cid), (left_key, left_cid)] = <[_; 2]>::try_from(chunks).unwrap();
    // Find two chunks' bytes in the pack segment and flip one byte in each:
    // one is met by a read, the other only by fsck.
    let seg = d.home.join("store/segments/000000000001.pack");
    let mut pack = std::fs::read(&seg).unwrap();
    for key in [&read_key, &left_key] {
        let chunk = std::fs::read(src.join(key)).unwrap();
        let at = pack
            .windows(chunk.len())
            .position(|w| w == chunk.as_slice())
            .expect("chunk bytes in pack");
        pack[at + chunk.len() / 2] ^= 0x55;
    }
    std::fs::write(&seg, &pack).unwrap();

    let out = d.cli(&["cat", &format!("z/{read_key}")]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "wrong bytes must never be returned");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&read_key) && err.contains(&read_cid),
        "error must name key and CID: {err}"
    );

    // The read dropped the copy it met (a repair fetches it again when a
    // provider exists; this daemon is alone), so fsck finds the dataset
    // incomplete and the other flipped block corrupt (which counts as
    // missing too: it cannot be read).
    let fsck = d.cli(&["fsck"]);
    assert!(!fsck.status.success());
    let text = String::from_utf8_lossy(&fsck.stdout);
    assert!(text.contains(&left_cid) && text.contains("corrupt"), "{text}");
    assert!(
        !text.contains(&read_cid),
        "the dropped copy is not reported again: {text}"
    );
    assert!(text.contains("(z) is missing 2 blocks"), "{text}");

    let repaired = d.cli(&["fsck", "--repair", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&repaired.stdout).unwrap();
    assert_eq!(report["removed_blocks"].as_u64(), Some(1), "{report}");
    assert_eq!(report["refetched_blocks"].as_u64(), Some(0), "{report}");
    assert_eq!(report["incomplete"][0]["names"][0].as_str(), Some("z"), "{report}");
    assert_eq!(report["incomplete"][0]["missing_blocks"].as_u64(), Some(2), "{report}");
    // After repair: nothing corrupt remains; the dataset is reported incomplete.
    let after = d.json_allow_fail(&["fsck"]);
    assert!(after["corrupt"].as_array().unwrap().is_empty());
    // Re-adding the source heals it.
    d.add(&src, Some("z"));
    assert!(d.cli(&["fsck"]).status.success());
}

#[test]
fn gc_never_removes_pinned_or_named_data() {
    let mut d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let a = d.add(&datasets().join("v2_blosc"), Some("a"));
    let b = d.add(&datasets().join("ints_v2"), None);
    let c = d.add(&datasets().join("xr_v2"), Some("c"));
    // Rename: a gets a second name, then the first name is dropped.
    d.cli_ok(&["pin", "a", "--name", "a2"]);
    d.cli_ok(&["unpin", "a"]); // drops pin + name "a"; "a2" still protects it
    let out = d.cli_ok(&["unpin", &c]); // unpin by CID: name "c" keeps it
    assert!(out.contains("still named c"), "{out}");
    d.cli_ok(&["unpin", &b]); // b: no pin, no name -> collectable
    d.cli_ok(&["gc"]);
    d.stop();
    d.restart();
    d.cli_ok(&["gc"]);
    for (target, src) in [(&a, "v2_blosc"), (&c, "xr_v2")] {
        let out = work.path().join(src);
        d.cli_ok(&["get", target, "-o", out.to_str().unwrap()]);
        assert_same_tree(&datasets().join(src), &out);
    }
    let gone = d.cli(&["ls", &b]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not in this store"));
    assert_eq!(d.json(&["fsck"])["unreferenced_blocks"].as_u64(), Some(0));
}

#[test]
fn quota_evicts_unpinned_lru_first_and_refuses_a_pin_that_cannot_fit() {
    // Three 40 MiB datasets under a 100 MiB quota.
    let d = Daemon::start_with(Some("[store]\nquota = \"100MiB\"\n"));
    let work = tempfile::tempdir().unwrap();
    let mk = |name: &str, seed: u64| {
        let p = work.path().join(name);
        big_dataset(&p, 40, seed);
        p
    };
    let (pa, pb, pc) = (mk("a", 1), mk("b", 2), mk("c", 3));
    let a = d.add(&pa, None);
    let b = d.add(&pb, None);
    d.cli_ok(&["unpin", &a]);
    d.cli_ok(&["unpin", &b]);
    // Read a so b becomes the least recently used.
    d.cli_ok(&["get", &a, "-o", work.path().join("a-out").to_str().unwrap()]);
    d.add(&pc, Some("c"));
    let stats = d.json(&["stats"]);
    assert!(stats["live_bytes"].as_u64().unwrap() <= 100 << 20, "{stats}");
    let get = |t: &str, o: &str| d.cli(&["get", t, "-o", work.path().join(o).to_str().unwrap()]);
    assert!(get(&a, "a-again").status.success(), "recently read a is kept whole");
    let out = get(&b, "b-out");
    assert!(!out.status.success(), "least recently used b is evicted first");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("incomplete here") && err.contains("no peer provides"),
        "{err}"
    );

    // 120 MiB cannot fit beside the pinned 40 MiB: a clear error, no pin.
    let pd = work.path().join("d");
    big_dataset(&pd, 120, 4);
    let out = d.cli(&["add", pd.to_str().unwrap(), "--name", "d"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quota"), "{err}");
    let pins = d.json(&["pins"]);
    assert!(
        pins.as_array()
            .unwrap()
            .iter()
            .all(|p| p["names"] != serde_json::json!(["d"])),
        "{pins}"
    );
    assert!(d.cli(&["fsck"]).status.success());
}

#[test]
fn commands_without_a_daemon_say_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--home")
        .arg(dir.path())
        .arg("pins")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no shoal daemon is running") && err.contains("shoal --home"),
        "{err}"
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("data.csv"), "a,b\n").unwrap();
    let out = d.cli(&["add", work.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Zarr hierarchy"));
    let out = d.cli(&["ls", "no-such-name"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a CID nor a dataset name"));
    let out = d.cli(&["add", "/does/not/exist"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/does/not/exist"));
    let out = d.cli(&[
        "add",
        datasets().join("ints_v2").to_str().unwrap(),
        "--name",
        "bad/name",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid name"));
    assert!(d.json(&["pins"]).as_array().unwrap().is_empty());
}

#[test]
fn a_full_disk_fails_the_add_clearly_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (disk, _guard) = tmpfs(work.path(), "32m");
    let mut d = Daemon::start_in(&disk.join("repo"), Opts::default());
    let small = d.add(&datasets().join("ints_v2"), Some("small"));
    let big = work.path().join("big");
    big_dataset(&big, 48, 21);
    let out = d.cli(&["add", big.to_str().unwrap(), "--name", "big"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("disk holding the repo is full"), "{err}");
    // Nothing half-way: no pin or name for the failed add, the store is
    // consistent, earlier data is intact, and GC frees the partial blocks.
    let pins = d.json(&["pins"]);
    assert_eq!(pins.as_array().unwrap().len(), 1, "{pins}");
    assert!(d.cli(&["fsck"]).status.success());
    d.cli_ok(&["gc"]);
    let dest = work.path().join("out");
    d.cli_ok(&["get", &small, "-o", dest.to_str().unwrap()]);
    assert_same_tree(&datasets().join("ints_v2"), &dest);
    // After a restart the store opens and accepts what fits.
    d.stop();
    d.restart();
    assert!(d.cli(&["fsck"]).status.success());
    d.add(&datasets().join("v3_zstd"), Some("fits"));
}

/// Issue 25: axum's default rejections answered malformed API requests in
/// plain text, which the CLI could only report as "daemon answered 400".
/// Every rejection carries `{error, kind}` like the node's own errors.
#[test]
fn a_malformed_api_request_is_answered_with_a_kind() {
    let d = Daemon::start();
    let sock = d.home.join("api.sock");
    let call = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--unix-socket", sock.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            serde_json::from_str::<serde_json::Value>(body).unwrap_or_default(),
        )
    };
    let (code, body) = call(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        "{not json",
        "http://shoal/v1/connect",
    ]);
    assert_eq!(code, "400");
    assert_eq!(body["kind"], "bad_request", "{body}");
    assert!(body["error"].as_str().unwrap().contains("malformed request"), "{body}");
    let (code, body) = call(&["http://shoal/v1/providers?nocid=1"]);
    assert_eq!(code, "400");
    assert_eq!(body["kind"], "bad_request", "{body}");
}
