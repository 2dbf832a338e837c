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
        (b["refused"].as_u64() >= Some(4) && b["unasked"].as_u64() >= Some(2)).then_some(s)
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
