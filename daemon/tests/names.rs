//! Published names and follows between daemons on loopback: a dataset that
//! grows with xarray appends reaches its follower version by version moving
//! only new chunks; a follower serves the last version when the publisher
//! is offline; forged and replayed records are refused; a follower killed
//! in the middle of an update completes it after a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn grow(cmd: &str, path: &Path, days: u32) {
    py("grow.py", &[Path::new(cmd), path, Path::new(&days.to_string())]);
}

/// The follow of `local` on `d`.
fn follow_of(d: &Daemon, local: &str) -> serde_json::Value {
    d.json(&["follows"])
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["local"] == local)
        .cloned()
        .unwrap_or_else(|| panic!("{local} is not followed"))
}

fn seq_of(d: &Daemon, local: &str) -> u64 {
    follow_of(d, local)["seq"].as_u64().unwrap()
}

/// Creates a growing dataset of `days` days in `dir`, adds it on `a` as
/// `sst` and publishes it; returns its path and `PEERID/sst`.
fn publish_growing(a: &Daemon, dir: &Path, days: u32) -> (std::path::PathBuf, String) {
    let src = dir.join("sst.zarr");
    grow("create", &src, days);
    a.add(&src, Some("sst"));
    let p = a.json(&["publish", "sst"]);
    assert_eq!(
        (p["seq"].as_u64(), p["publisher"].as_str()),
        (Some(1), Some(a.peer_id().as_str()))
    );
    (src, format!("{}/sst", a.peer_id()))
}

fn live_bytes(d: &Daemon) -> u64 {
    d.json(&["stats"])["live_bytes"].as_u64().unwrap()
}

#[test]
fn a_growing_published_dataset_reaches_its_follower_version_by_version_with_only_new_chunks() {
    let (a, b) = (Daemon::start(), Daemon::start());
    b.connect(&a);
    let tmp = tempfile::tempdir().unwrap();
    let (src, target) = publish_growing(&a, tmp.path(), 20);
    let f = b.json(&["follow", &target]);
    assert_eq!(f["seq"], 1, "{f}");
    let mut days = 20;
    for v in 2..=4u64 {
        grow("append", &src, 5);
        days += 5;
        let before = live_bytes(&b);
        let started = Instant::now();
        a.add(&src, Some("sst"));
        wait_for(30, &format!("the follower to take version {v}"), || {
            (seq_of(&b, "sst") == v).then_some(())
        });
        eprintln!(
            "version {v} reached the follower {:.2}s after the add began",
            started.elapsed().as_secs_f64()
        );
        // What B stored for it: A's new blocks (new and changed chunks,
        // metadata, manifest), not the dataset again.
        let new_bytes = a.json(&["log", "sst"])[0]["new_bytes"].as_u64().unwrap();
        let grown = live_bytes(&b) - before;
        assert!(
            grown <= new_bytes * 3 / 2 + (1 << 20),
            "version {v}: the follower stored {grown} bytes for {new_bytes} new bytes"
        );
        assert_eq!(follow_of(&b, "sst")["root"], a.json(&["log", "sst"])[0]["root"]);
    }
    // The publisher's log, newest first; the follower's too.
    for d in [&a, &b] {
        let log = d.json(&["log", "sst"]);
        let numbers: Vec<u64> = log
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, [4, 3, 2, 1], "{log}");
    }
    let text = b.cli_ok(&["follows"]);
    assert!(text.contains("sst") && text.contains(&target), "{text}");
    // The follower's mount path NAME is the latest version.
    let m = mount(&b, tmp.path(), "mnt");
    grow("check", &m.0.join("sst"), days);
    drop(m);
    // Unfollowing keeps the versions; unpublishing stops announcing.
    b.cli_ok(&["unfollow", "sst"]);
    assert!(b.json(&["follows"]).as_array().unwrap().is_empty());
    assert_eq!(b.json(&["log", "sst"]).as_array().unwrap().len(), 4);
    assert_eq!(a.json(&["unpublish", "sst"])["changed"], true);
    assert_eq!(a.json(&["unpublish", "sst"])["changed"], false);
}

#[test]
fn a_follower_gets_the_last_version_from_another_follower_while_the_publisher_is_offline() {
    let (mut a, b, c) = (Daemon::start(), Daemon::start(), Daemon::start());
    b.connect(&a);
    let tmp = tempfile::tempdir().unwrap();
    let (src, target) = publish_growing(&a, tmp.path(), 10);
    b.cli_ok(&["follow", &target, "--as", "mirror"]);
    grow("append", &src, 5);
    let last = a.add(&src, Some("sst"));
    wait_for(30, "the follower to take version 2", || {
        (seq_of(&b, "mirror") == 2).then_some(())
    });
    // The publisher goes away; C knows only B.
    a.kill9();
    c.connect(&b);
    let f = c.json(&["follow", &target]);
    assert_eq!(
        (f["seq"].as_u64(), f["root"].as_str()),
        (Some(2), Some(last.as_str())),
        "{f}"
    );
    let out = tmp.path().join("c.zarr");
    c.cli_ok(&["get", "sst", "-o", out.to_str().unwrap()]);
    grow("check", &out, 15);
}

#[test]
fn forged_and_replayed_records_are_rejected_and_the_follower_stays_on_the_right_version() {
    use shoal_net::names::{self, NameRecord};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = (Daemon::start(), Daemon::start());
    b.connect(&a);
    let tmp = tempfile::tempdir().unwrap();
    let (src, target) = publish_growing(&a, tmp.path(), 10);
    let publisher: shoal_net::PeerId = a.peer_id().parse().unwrap();
    b.cli_ok(&["follow", &target]);
    // A raw libp2p peer, connected to both, keeps version 1's record.
    let raw = raw_peer(&rt);
    for d in [&a, &b] {
        rt.block_on(raw.dial(d.addr().parse().unwrap())).unwrap();
    }
    let v1 = rt
        .block_on(raw.get_name(names::dht_key(&publisher, "sst"), Duration::from_secs(10)))
        .unwrap()
        .into_iter()
        .find(|r| names::verify(r).is_ok_and(|r| r.seq == 1))
        .expect("version 1's record on the DHT");
    grow("append", &src, 5);
    let v2 = a.add(&src, Some("sst"));
    wait_for(30, "the follower to take version 2", || {
        (seq_of(&b, "sst") == 2).then_some(())
    });
    // A record for A's name signed with another key, pointing elsewhere
    // with a higher sequence; and version 1's genuine record again.
    let other = shoal_net::Keypair::generate_ed25519();
    let elsewhere: shoal_core::Cid = b.add(&datasets().join("v3_zstd"), None).parse().unwrap();
    let forged = names::forge(&NameRecord::new(publisher, "sst", elsewhere, 99, 0), &other);
    assert!(names::verify(&forged).is_err());
    let topic = names::topic(&publisher, "sst");
    let rejected = |d: &Daemon| d.json(&["stats"])["names_rejected"].as_u64().unwrap();
    let before = rejected(&b);
    wait_for(30, "both bad records to be rejected", || {
        for r in [&forged, &v1] {
            rt.block_on(raw.publish_to(topic.clone(), r.clone())).unwrap();
        }
        (rejected(&b) >= before + 2).then_some(())
    });
    let f = follow_of(&b, "sst");
    assert_eq!(
        (f["seq"].as_u64(), f["root"].as_str()),
        (Some(2), Some(v2.as_str())),
        "{f}"
    );
    assert!(f["pending"].is_null(), "{f}");
    // The publisher's own next version still gets through.
    grow("append", &src, 5);
    a.add(&src, Some("sst"));
    wait_for(30, "the follower to take version 3", || {
        (seq_of(&b, "sst") == 3).then_some(())
    });
}

#[test]
fn a_follower_killed_in_the_middle_of_an_update_completes_it_after_a_restart() {
    // A serves slowly, so B is still fetching version 2 when it is killed.
    let a = Daemon::start_opts(Opts {
        env: vec![("SHOAL_TEST_SERVE_DELAY_MS".into(), "1500".into())],
        ..Default::default()
    });
    let mut b = Daemon::start();
    b.connect(&a);
    let tmp = tempfile::tempdir().unwrap();
    let (src, target) = publish_growing(&a, tmp.path(), 10);
    b.cli_ok(&["follow", &target]);
    let blocks = |d: &Daemon| d.json(&["stats"])["blocks"].as_u64().unwrap();
    let held_v1 = blocks(&b);
    grow("append", &src, 30);
    let v2 = a.add(&src, Some("sst"));
    wait_for(30, "the follower to hear of version 2", || {
        follow_of(&b, "sst")["pending"].as_u64().filter(|p| *p == 2)
    });
    // Each of A's answers takes 1.5 s and version 2 needs three rounds
    // (root, manifest pages, chunks): kill B once the first has landed.
    wait_for_every(30, 20, "the follower to store part of version 2", || {
        (blocks(&b) > held_v1).then_some(())
    });
    assert_ne!(seq_of(&b, "sst"), 2, "the update finished before the kill");
    b.kill9();
    b.restart();
    b.connect(&a);
    wait_for(60, "the restarted follower to take version 2", || {
        (seq_of(&b, "sst") == 2).then_some(())
    });
    assert_eq!(follow_of(&b, "sst")["root"], v2.as_str());
    let fsck = b.json(&["fsck"]);
    assert!(fsck["corrupt"].as_array().unwrap().is_empty(), "{fsck}");
    let out = tmp.path().join("b.zarr");
    b.cli_ok(&["get", "sst", "-o", out.to_str().unwrap()]);
    grow("check", &out, 40);
}
