//! Bitswap with a real helia node (Node.js, from tests/js's lockfile):
//! it dials a daemon by multiaddr and reads a dataset's UnixFS view over
//! `/ipfs/bitswap/1.2.0` with @helia/unixfs, byte-identical to the source
//! files; a block the daemon lacks is answered DontHave. Hostile bitswap
//! peers (oversized frames, huge wantlists, floods of wants, unasked
//! blocks) are bounded while the daemon serves its shoal peers.

mod common;

use common::*;

fn view_of(d: &Daemon, target: &str) -> String {
    d.json(&["ls", target])["unixfs"].as_str().unwrap().to_string()
}

#[test]
fn helia_reads_a_dataset_over_bitswap_and_hears_dont_have() {
    // 256 KiB blocks: dist_v3's chunks (about 512 KiB) span several
    // blocks, so `cat` walks a File node's links too.
    let a = Daemon::start_opts(Opts {
        store: "block_size = \"256KiB\"\n".into(),
        ..Default::default()
    });
    let dist = datasets().join("dist_v3");
    a.add(&dist, Some("dist"));
    let chunk = "sst/c/3/0/0";
    assert!(std::fs::metadata(dist.join(chunk)).unwrap().len() > 256 << 10);
    let pair = |key: &str| format!("{key}={}", dist.join(key).display());
    // A CID nobody holds (blake3 of bytes never added).
    let missing = shoal_core::cid::cid_of(shoal_core::cid::RAW, b"not held by anyone").to_string();
    let out = js(
        "helia_bitswap.mjs",
        &[
            &a.addr(),
            &view_of(&a, "dist"),
            &missing,
            &pair("zarr.json"),
            &pair(chunk),
        ],
    );
    assert!(out.contains("ok 2"), "{out}");
    assert!(
        out.contains("ls sst,zarr.json") || out.contains("ls zarr.json,sst"),
        "{out}"
    );
    assert!(out.contains("missing: refused"), "{out}");
}

#[test]
fn a_hostile_bitswap_peer_is_bounded_while_shoal_peers_are_served() {
    let a = Daemon::start();
    let b = Daemon::start();
    b.connect(&a);
    let src = datasets().join("v3_zstd");
    let root = a.add(&src, Some("z"));
    let ls = a.json(&["ls", "z"]);
    let held = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| !e["inline"].as_bool().unwrap())
        .unwrap()["cids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let blocks_before = a.json(&["stats"])["blocks"].as_u64().unwrap();
    // The attacks and a shoal peer's pin at the same time.
    let hostile = std::process::Command::new(node())
        .arg(workspace().join("tests/js/bitswap_hostile.mjs"))
        .args([&a.addr(), &held])
        .current_dir(workspace().join("tests/js"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pin = b.spawn_cli(&["pin", &root, "--name", "copy"]);
    let pinned = wait_within(pin, 120, "shoal pin during the attacks");
    assert!(pinned.status.success(), "{}", String::from_utf8_lossy(&pinned.stderr));
    let out = wait_within(hostile, 160, "bitswap_hostile.mjs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("honest want answered"), "{text}");
    let out_dir = tempfile::tempdir().unwrap();
    let copy = out_dir.path().join("copy");
    b.cli_ok(&["get", "copy", "-o", copy.to_str().unwrap()]);
    assert_same_tree(&src, &copy);
    // The streams are read in turn under the peer's rate limit: the
    // unasked blocks' message may be read after the honest want's answer.
    let stats = wait_for(60, "the bitswap counters", || {
        let s = a.json(&["stats"]);
        let b = &s["bitswap"];
        (b["refused"].as_u64() >= Some(4) && b["unasked"].as_u64() >= Some(2) && b["blocks_sent"].as_u64() >= Some(1))
            .then_some(s)
    });
    let bs = &stats["bitswap"];
    // The oversized frame, the 100k and 1,025-entry wantlists and the
    // garbage are refused; the two unasked blocks dropped, none stored.
    assert!(bs["refused"].as_u64().unwrap() >= 4, "{stats}");
    assert_eq!(bs["unasked"].as_u64(), Some(2), "{stats}");
    assert!(bs["blocks_sent"].as_u64().unwrap() >= 1, "{stats}");
    assert!(bs["dont_have"].as_u64().unwrap() >= 10, "{stats}");
    assert_eq!(
        stats["blocks"].as_u64(),
        Some(blocks_before),
        "nothing unasked was stored"
    );
    assert!(a.cli(&["fsck"]).status.success());
}

#[test]
fn a_private_swarm_stays_closed_to_ipfs_nodes() {
    let key = "/key/swarm/psk/1.0.0/\n/base16/\n6b5b1e9f2f3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5\n";
    let keyed = Daemon::start_opts(Opts {
        network: "swarm_key = \"swarm.key\"\n".into(),
        files: vec![("swarm.key".into(), key.into())],
        ..Default::default()
    });
    let friend = Daemon::start();
    let listed = Daemon::start_opts(Opts {
        network: format!("allow_peers = [\"{}\"]\n", friend.peer_id()),
        ..Default::default()
    });
    for d in [&keyed, &listed] {
        d.add(&datasets().join("ints_v2"), Some("i"));
        let out = js("helia_bitswap.mjs", &["--expect-closed", &d.addr(), &view_of(d, "i")]);
        assert!(out.contains("closed: "), "{out}");
        assert_eq!(d.json(&["stats"])["bitswap"]["blocks_sent"].as_u64(), Some(0));
    }
}

/// A JavaScript bitswap peer from tests/js (helia_serve.mjs: a helia node
/// serving a directory it added; bitswap_liar.mjs), stopped when dropped.
struct Helia {
    child: std::process::Child,
    addr: String,
    /// The root CID of what it added (helia_serve.mjs).
    root: String,
}

impl Helia {
    fn serve(dir: &std::path::Path, mode: Option<&str>) -> Helia {
        let mut args = vec![dir.to_str().unwrap()];
        args.extend(mode);
        Helia::spawn("helia_serve.mjs", &args, true)
    }

    fn spawn(script: &str, args: &[&str], with_root: bool) -> Helia {
        use std::io::BufRead;
        let mut child = std::process::Command::new(node())
            .arg(workspace().join("tests/js").join(script))
            .args(args)
            .current_dir(workspace().join("tests/js"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut root) = (None, None);
        while addr.is_none() || (with_root && root.is_none()) {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{script} printed its address within 60 s"));
            if let Some(a) = line.strip_prefix("addr ") {
                addr = Some(a.to_string());
            } else if let Some(r) = line.strip_prefix("root ") {
                root = Some(r.to_string());
            }
        }
        Helia {
            child,
            addr: addr.unwrap(),
            root: root.unwrap_or_default(),
        }
    }
}

impl Drop for Helia {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What is left in the daemon's scratch space for CAR and bitswap imports.
fn import_leftovers(d: &Daemon) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(d.home.join("store/import")) {
        Ok(r) => r.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn shoal_pins_a_zarr_directory_that_helia_added() {
    let a = Daemon::start();
    let out_dir = tempfile::tempdir().unwrap();
    // helia's defaults (CIDv1, raw leaves, sha2-256, 1 MiB chunks), and a
    // v2 store (dot-files) added as kubo does without --cid-version 1
    // (CIDv0, dag-pb leaves) with every directory a HAMT shard.
    for (src, mode) in [("v3_zstd", None), ("v2_blosc", Some("--v0-hamt"))] {
        let dir = datasets().join(src);
        let helia = Helia::serve(&dir, mode);
        let r = a.json(&["pin", &helia.root, "--from", &helia.addr, "--name", src]);
        assert_eq!(r["unixfs"].as_str(), Some(helia.root.as_str()), "{r}");
        assert!(r["fetched"]["blocks_fetched"].as_u64().unwrap() > 3, "{r}");
        assert_eq!(r["resumed_blocks"].as_u64(), Some(0), "{r}");
        // A dataset like any other: named, pinned, complete, readable.
        let copy = out_dir.path().join(src);
        a.cli_ok(&["get", src, "-o", copy.to_str().unwrap()]);
        py("check_equal.py", &[&dir, &copy]);
        assert_same_tree(&dir, &copy);
        assert_eq!(
            r["root"].as_str().unwrap(),
            a.json(&["ls", src])["root"].as_str().unwrap()
        );
        assert!(import_leftovers(&a).is_empty(), "{:?}", import_leftovers(&a));
    }
    // The text printed names both CIDs.
    let dir = datasets().join("ints_v2");
    let helia = Helia::serve(&dir, None);
    let text = a.cli_ok(&["pin", &helia.root, "--from", &helia.addr]);
    assert!(
        text.contains(&format!("pinned UnixFS directory {}", helia.root)),
        "{text}"
    );
    assert!(text.contains("over bitswap"), "{text}");
    assert!(a.cli(&["fsck"]).status.success());
}

#[test]
fn a_directory_without_zarr_is_refused_and_nothing_is_kept() {
    let a = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(plain.join("sub")).unwrap();
    std::fs::write(plain.join("notes.txt"), "not a Zarr store").unwrap();
    std::fs::write(plain.join("sub/data.bin"), vec![7u8; 300_000]).unwrap();
    let helia = Helia::serve(&plain, None);
    let before = a.json(&["stats"])["blocks"].as_u64();
    let out = a.cli(&["pin", &helia.root, "--from", &helia.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no Zarr hierarchy"), "{err}");
    assert_eq!(a.json(&["stats"])["blocks"].as_u64(), before);
    assert!(import_leftovers(&a).is_empty(), "{:?}", import_leftovers(&a));
    // A CID no peer has: every peer answers DontHave, and the pin says so
    // at once instead of waiting.
    let missing = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
    let t = std::time::Instant::now();
    let out = a.cli(&["pin", missing, "--from", &helia.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not available over bitswap"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(a.json(&["stats"])["blocks"].as_u64(), before);
}

#[test]
fn a_pin_over_bitswap_resumes_after_the_daemon_is_killed() {
    let mut a = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big");
    big_dataset(&src, 96, 27);
    let helia = Helia::serve(&src, None);
    let pin = a.spawn_cli(&["pin", &helia.root, "--from", &helia.addr, "--name", "big"]);
    // Killed once part of the DAG is in the CAR beside the store.
    let car = a.home.join(format!("store/import/unixfs-{}.car", helia.root));
    wait_for_every(120, 10, "part of the DAG fetched", || {
        (std::fs::metadata(&car).map(|m| m.len()).unwrap_or(0) > 8 << 20).then_some(())
    });
    a.kill9();
    let _ = wait_within(pin, 30, "the interrupted pin");
    a.restart();
    let r = a.json(&["pin", &helia.root, "--from", &helia.addr, "--name", "big"]);
    let resumed = r["resumed_blocks"].as_u64().unwrap();
    let fetched = r["fetched"]["blocks_fetched"].as_u64().unwrap();
    assert!(resumed >= 8, "{r}");
    // 96 chunk blocks, 2 directories and 2 metadata files: none twice.
    assert_eq!(resumed + fetched, 100, "{r}");
    let copy = tmp.path().join("copy");
    a.cli_ok(&["get", "big", "-o", copy.to_str().unwrap()]);
    assert_same_tree(&src, &copy);
    assert!(!car.exists());
}

#[test]
fn a_lying_bitswap_peer_gives_nothing_and_an_honest_one_gives_all() {
    let a = Daemon::start();
    let dir = datasets().join("v3_zstd");
    let helia = Helia::serve(&dir, None);
    let liar = Helia::spawn("bitswap_liar.mjs", &[], false);
    let before = a.json(&["stats"])["blocks"].as_u64().unwrap();
    // Both asked; the liar answers every want it gets with wrong bytes (and
    // a block nobody asked for) and never DontHave: its wants move to
    // helia once it has been silent past the stall deadline.
    let r = a.json(&[
        "pin",
        &helia.root,
        "--from",
        &liar.addr,
        "--from",
        &helia.addr,
        "--name",
        "z",
    ]);
    assert_eq!(r["unixfs"].as_str(), Some(helia.root.as_str()), "{r}");
    let used = r["fetched"]["peers_used"].as_array().unwrap();
    assert_eq!(used.len(), 1, "only the honest peer delivered: {r}");
    assert!(helia.addr.ends_with(used[0].as_str().unwrap()), "{r}");
    let copy = tempfile::tempdir().unwrap();
    let out = copy.path().join("z");
    a.cli_ok(&["get", "z", "-o", out.to_str().unwrap()]);
    assert_same_tree(&dir, &out);
    let stats = a.json(&["stats"]);
    // Every lie and every unasked block counted and dropped; what was
    // stored is the dataset (its blocks, its manifest and its view).
    assert!(stats["bitswap"]["unasked"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["blocks"].as_u64().unwrap() > before);
    assert!(a.cli(&["fsck"]).status.success());
}
