//! End-to-end network tests: real daemons on 127.0.0.1 finding each other
//! through the DHT and exchanging verified blocks.

mod common;

use std::time::Duration;

use common::*;

fn opts_env(k: &str, v: &str) -> Opts {
    Opts {
        env: vec![(k.to_string(), v.to_string())],
        ..Default::default()
    }
}

fn bootstrap(to: &Daemon) -> Opts {
    Opts {
        network: format!("bootstrap = [\"{}\"]\n", to.addr()),
        ..Default::default()
    }
}

/// Blocks of dataset `root` that daemon `d` has served to peers (its own
/// request count, as `shoal mirrors` shows it).
fn served(d: &Daemon, root: &str) -> u64 {
    d.json(&["mirrors"])["popular"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["root"] == root)
        .map(|p| p["local"]["blocks"].as_u64().unwrap())
        .unwrap_or(0)
}

#[test]
fn pin_finds_a_provider_two_hops_away_through_the_dht() {
    let a = Daemon::start();
    let b = Daemon::start_opts(bootstrap(&a));
    let c = Daemon::start_opts(bootstrap(&b));
    let src = datasets().join("xr_v2");
    let root = a.add(&src, Some("xr"));
    // C knows only B; B knows A. C must find A through the DHT.
    let out = c.cli_within(&["pin", &root, "--name", "xr", "--json"], 120);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["fetched"]["peers_used"][0].as_str(),
        Some(a.peer_id().as_str()),
        "{r}"
    );
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("out");
    c.cli_ok(&["get", "xr", "-o", dest.to_str().unwrap()]);
    assert_same_tree(&src, &dest);
    assert!(py("check_equal.py", &[&src, &dest]).starts_with("ok"));
    assert!(c.cli(&["fsck"]).status.success());
    // C now provides it too.
    let providers = c.json(&["providers", &root]);
    assert!(providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p.as_str() == Some(c.peer_id().as_str())));
}

#[test]
fn provider_killed_mid_transfer_the_pin_completes_from_the_other() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("big");
    big_dataset(&src, 120, 7);
    // Both providers answer each request after 1s, so the transfer takes a
    // few seconds and A dies in the middle of it.
    let slow = opts_env("SHOAL_TEST_SERVE_DELAY_MS", "1000");
    let mut a = Daemon::start_opts(slow.clone());
    let b = Daemon::start_opts(slow);
    let c = Daemon::start();
    let root = a.add(&src, None);
    assert_eq!(b.add(&src, None), root);
    c.connect(&a);
    c.connect(&b);
    wait_providers(&c, &root, 2);
    let mut pin = c.spawn_cli(&["pin", &root, "--json"]);
    // Kill A once it has served part of the dataset (its own count of
    // blocks served), while the pin is still running.
    wait_for_every(30, 50, "A to serve part of the dataset", || {
        assert!(
            pin.try_wait().unwrap().is_none(),
            "pin finished before A served anything"
        );
        (served(&a, &root) > 0).then_some(())
    });
    assert!(
        pin.try_wait().unwrap().is_none(),
        "pin finished before the provider was killed; slow the providers down"
    );
    a.kill9();
    let out = pin.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let used = &report["fetched"]["peers_used"];
    assert!(
        used.as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str() == Some(b.peer_id().as_str())),
        "the pin did not complete from B: {report}"
    );
    let dest = work.path().join("out");
    c.cli_ok(&["get", &root, "-o", dest.to_str().unwrap()]);
    assert_same_tree(&src, &dest);
    assert!(c.cli(&["fsck"]).status.success());
}

#[test]
fn a_lying_peer_is_caught_banned_and_never_stored() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("big");
    big_dataset(&src, 80, 11);
    let honest = Daemon::start();
    let liar = Daemon::start_opts(opts_env("SHOAL_TEST_CORRUPT_SERVED_BLOCKS", "1"));
    let c = Daemon::start();
    let root = honest.add(&src, None);
    assert_eq!(liar.add(&src, None), root);
    c.connect(&honest);
    c.connect(&liar);
    wait_providers(&c, &root, 2);
    let out = c.cli_within(&["pin", &root, "--json"], 120);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let liar_id = liar.peer_id();
    assert_eq!(r["fetched"]["banned"], serde_json::json!([liar_id]), "{r}");
    assert!(c.log().contains(&liar_id), "the ban is logged with the peer id");
    // Nothing wrong was stored: every block verifies, the copy is exact.
    assert!(c.cli(&["fsck"]).status.success());
    let dest = work.path().join("out");
    c.cli_ok(&["get", &root, "-o", dest.to_str().unwrap()]);
    assert_same_tree(&src, &dest);
    // The liar is disconnected.
    let peers = c.json(&["peers"]);
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["peer_id"].as_str() != Some(liar_id.as_str())),
        "{peers}"
    );
}

const KEY1: &str =
    "/key/swarm/psk/1.0.0/\n/base16/\n6b5b1e9f2f3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5\n";
const KEY2: &str =
    "/key/swarm/psk/1.0.0/\n/base16/\n0000000000000000000000000000000000000000000000000000000000000001\n";

fn keyed(key: &str) -> Opts {
    Opts {
        network: "swarm_key = \"swarm.key\"\n".into(),
        files: vec![("swarm.key".into(), key.into())],
        ..Default::default()
    }
}

#[test]
fn a_daemon_with_another_swarm_key_cannot_connect_or_fetch() {
    let a = Daemon::start_opts(keyed(KEY1));
    let member = Daemon::start_opts(keyed(KEY1));
    let outsider = Daemon::start_opts(keyed(KEY2));
    let open = Daemon::start();
    let root = a.add(&datasets().join("ints_v2"), None);
    for stranger in [&outsider, &open] {
        let out = stranger.cli_within(&["connect", &a.addr()], 60);
        assert!(!out.status.success(), "a peer without the swarm key connected");
        let out = stranger.cli_within(&["pin", &root], 60);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no peer provides"));
    }
    member.connect(&a);
    let out = member.cli_within(&["pin", &root], 60);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_daemon_off_the_allow_list_cannot_connect_or_fetch() {
    let friend = Daemon::start();
    let stranger = Daemon::start();
    let a = Daemon::start_opts(Opts {
        network: format!("allow_peers = [\"{}\"]\n", friend.peer_id()),
        ..Default::default()
    });
    let root = a.add(&datasets().join("ints_v2"), None);
    let out = stranger.cli_within(&["connect", &a.addr()], 60);
    assert!(!out.status.success(), "a peer off the allow-list connected");
    let out = stranger.cli_within(&["pin", &root], 60);
    assert!(!out.status.success());
    friend.connect(&a);
    let out = friend.cli_within(&["pin", &root], 60);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_fetching_daemon_killed_mid_pin_resumes_with_only_what_is_missing() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("big");
    big_dataset(&src, 120, 13);
    let a = Daemon::start_opts(opts_env("SHOAL_TEST_SERVE_DELAY_MS", "1000"));
    let mut c = Daemon::start();
    let root = a.add(&src, None);
    c.connect(&a);
    wait_providers(&c, &root, 1);
    let mut pin = c.spawn_cli(&["pin", &root]);
    // Kill C once some blocks have been written (bounded wait).
    wait_for_every(60, 50, "the pin to store 30 blocks", || {
        assert!(
            pin.try_wait().unwrap().is_none(),
            "pin finished before it could be interrupted"
        );
        (c.json(&["stats"])["blocks"].as_u64().unwrap() >= 30).then_some(())
    });
    c.kill9();
    let _ = pin.wait();
    c.restart();
    assert!(c.cli(&["fsck"]).status.success());
    c.connect(&a);
    let out = c.cli_within(&["pin", &root, "--json"], 120);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fetched = r["fetched"]["blocks_fetched"].as_u64().unwrap();
    assert!(
        fetched < 121,
        "re-run fetched {fetched} blocks: it should fetch only what is missing"
    );
    assert!(c.cli(&["fsck"]).status.success());
    let dest = work.path().join("out");
    c.cli_ok(&["get", &root, "-o", dest.to_str().unwrap()]);
    assert_same_tree(&src, &dest);
}

#[test]
fn pin_of_a_cid_nobody_provides_fails_clearly_in_bounded_time() {
    let a = Daemon::start();
    let b = Daemon::start_opts(bootstrap(&a));
    // A valid dataset CID that no daemon holds.
    let nobody = "bafyr4ieu4kt3evw4avmjq73e5mfh5e3h2o5xaud7efsz6dwuggtabrbcwe";
    let out = b.cli_within(&["pin", nobody], 60);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no peer provides dataset") && err.contains(nobody),
        "{err}"
    );
    // With no peers at all it fails at once with the same message.
    let lonely = Daemon::start();
    let out = lonely.cli_within(&["pin", nobody], 30);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 connected peers"));
}

#[test]
fn a_greedy_peer_gets_skipped_and_busy_answers_beyond_the_inbound_bounds() {
    use shoal_net::codec::Answer;
    // Each block request and compute request takes 500 ms to serve here,
    // so a burst keeps the in-flight sets full.
    let a = Daemon::start_opts(opts_env("SHOAL_TEST_SERVE_DELAY_MS", "500"));
    let src = tempfile::tempdir().unwrap();
    big_dataset(src.path(), 2, 41);
    let root = a.add(src.path(), None);
    let ls = a.json(&["ls", &root]);
    let block: shoal_core::Cid = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["cids"].as_array().unwrap().first())
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let root_cid: shoal_core::Cid = root.parse().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let greedy = raw_peer(&rt);
    let peer = rt.block_on(greedy.dial(a.addr().parse().unwrap())).unwrap();
    // 200 single-block requests at once: one peer gets at most 128 blocks
    // served at a time (MAX_INBOUND_PER_PEER); the rest are answered
    // "skipped" at once.
    let per_peer = shoal_net::network::MAX_INBOUND_PER_PEER;
    let answers = rt.block_on(futures::future::join_all(
        (0..per_peer + 72).map(|_| greedy.request(peer, Some(root_cid), vec![block])),
    ));
    let (mut data, mut skipped) = (0, 0);
    for a in answers {
        match &a.unwrap().answers[0].1 {
            Answer::Data(_) => data += 1,
            Answer::Skipped => skipped += 1,
            Answer::DontHave => panic!("the block is there"),
        }
    }
    eprintln!(
        "{} block requests at once: {data} served, {skipped} skipped",
        per_peer + 72
    );
    assert!(
        data <= per_peer,
        "{data} served at once: the per-peer bound did not hold"
    );
    assert!(skipped >= 72, "only {skipped} skipped: the per-peer bound did not hold");
    // 6 compute requests at once: 2 run (MAX_COMPUTE_INFLIGHT), the rest
    // get the empty "busy" answer and would be reassigned.
    // Real requests (sum of chunk 0), each held 500 ms by the serve delay.
    let body = serde_json::to_vec(&shoal_query::wire::ComputeRequest {
        root: root.clone(),
        spec: shoal_query::QuerySpec::new("x", shoal_query::Op::Sum),
        chunks: vec![vec![0]],
    })
    .unwrap();
    let answers = rt.block_on(futures::future::join_all(
        (0..6).map(|_| greedy.compute(peer, body.clone(), Duration::from_secs(30))),
    ));
    let answers: Vec<Vec<u8>> = answers.into_iter().map(|r| r.unwrap()).collect();
    let busy = answers.iter().filter(|r| r.is_empty()).count();
    eprintln!("6 compute requests at once: {busy} busy");
    assert_eq!(
        busy,
        6 - shoal_net::network::MAX_COMPUTE_INFLIGHT,
        "the compute bound did not hold"
    );
    for a in answers.iter().filter(|r| !r.is_empty()) {
        let n = u32::from_le_bytes(a[..4].try_into().unwrap()) as usize;
        let h: shoal_query::wire::ComputeHeader = serde_json::from_slice(&a[4..4 + n]).unwrap();
        assert_eq!(
            (h.error, h.computed),
            (None, vec![0]),
            "a request that ran was not computed"
        );
    }
    // The daemon still serves normally afterwards.
    let r = rt.block_on(greedy.request(peer, Some(root_cid), vec![block])).unwrap();
    assert!(matches!(r.answers[0].1, Answer::Data(_)));
}
