//! End-to-end mirroring: popularity gossip, mirror budgets, replica targets
//! and hostile gossip, with real daemons on loopback and short intervals.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// `[mirror]` settings with test-sized intervals.
fn mirror_cfg(budget: &str, threshold: u64, peer_cap: u64, max_popular: u8) -> String {
    format!(
        "budget = \"{budget}\"\nthreshold = {threshold}\npeer_cap = {peer_cap}\nmax_popular_replicas = {max_popular}\n\
         window = \"5m\"\ngossip_interval = \"1s\"\ncheck_interval = \"1s\"\n"
    )
}

fn start(mirror: String) -> Daemon {
    Daemon::start_opts(Opts {
        mirror,
        network: "provider_timeout = \"3s\"\n".into(),
        env: vec![("SHOAL_LOG".into(), "info,shoal::mirror=debug".into())],
        ..Default::default()
    })
}

/// Complete mirrors this daemon holds.
fn mirrored(d: &Daemon) -> Vec<String> {
    d.json(&["mirrors"])["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["complete"].as_bool().unwrap())
        .map(|m| m["root"].as_str().unwrap().to_string())
        .collect()
}

/// Waits (bounded) until each daemon has completed `n` more policy runs:
/// whatever the policy would still do, it has had the chance to.
fn policy_runs(ds: &[&Daemon], n: u64) {
    let runs = |d: &Daemon| d.json(&["mirrors"])["runs"].as_u64().unwrap();
    let start: Vec<u64> = ds.iter().map(|d| runs(d)).collect();
    wait_for(60, "more policy runs", || {
        ds.iter().zip(&start).all(|(d, s)| runs(d) >= s + n).then_some(())
    });
}

fn providers(d: &Daemon, root: &str) -> usize {
    d.json(&["providers", root])["providers"].as_array().unwrap().len()
}

/// Mounts on a fresh directory under `tmp`.
/// Opens and reads every file under `dir` (each open is a request the
/// daemon counts).
fn read_all(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += read_all(&p);
        } else {
            std::fs::read(&p).unwrap();
            n += 1;
        }
    }
    n
}

/// Opens one file `times` times.
fn open_repeatedly(file: &Path, times: usize) {
    for _ in 0..times {
        std::fs::read(file).unwrap();
    }
}

#[test]
fn a_dataset_read_repeatedly_is_mirrored_and_outlives_its_holder() {
    let ds = datasets().join("v3_zstd");
    // d0 holds the dataset; d1 and d2 read it (no budget); d3 and d4 have
    // budget. One source alone (cap 8) cannot reach the threshold (10).
    let holder = start(mirror_cfg("0", 10, 8, 2));
    let root = holder.add(&ds, None);
    let readers = [start(mirror_cfg("0", 10, 8, 2)), start(mirror_cfg("0", 10, 8, 2))];
    let spares = [start(mirror_cfg("1GiB", 10, 8, 2)), start(mirror_cfg("1GiB", 10, 8, 2))];
    let all: Vec<&Daemon> = std::iter::once(&holder).chain(&readers).chain(&spares).collect();
    // A star on the holder plus a ring, so the swarm stays connected
    // when the holder goes.
    for (i, d) in all.iter().enumerate().skip(1) {
        d.connect(&holder);
        if i > 1 {
            d.connect(all[i - 1]);
        }
    }
    all[4].connect(all[1]);

    let tmp = tempfile::tempdir().unwrap();
    let mounts: Vec<MountGuard> = readers
        .iter()
        .enumerate()
        .map(|(i, r)| mount(r, tmp.path(), &format!("r{i}")))
        .collect();
    let popular_at = Instant::now();
    for _ in 0..3 {
        for m in &mounts {
            assert!(read_all(&m.0.join(&root)) > 5);
        }
    }
    let (mirror, cold) = wait_for(90, "a daemon with budget to mirror the dataset", || {
        let m: Vec<bool> = spares.iter().map(|d| mirrored(d).contains(&root)).collect();
        match m[..] {
            [true, false] => Some((&spares[0], &spares[1])),
            [false, true] => Some((&spares[1], &spares[0])),
            [true, true] => panic!("both spare daemons mirrored a dataset that wants 2 copies"),
            _ => None,
        }
    });
    eprintln!(
        "mirrored {:.1}s after the reads began",
        popular_at.elapsed().as_secs_f64()
    );
    // Why it was mirrored is visible, with the popularity behind it.
    let v = mirror.json(&["mirrors"]);
    let entry = &v["mirrors"].as_array().unwrap()[0];
    assert_eq!(entry["why"]["reason"], "popular");
    assert!(entry["why"]["score"].as_u64().unwrap() >= 10, "{v}");
    // One source alone is capped below the threshold.
    assert!(entry["why"]["sources"].as_u64().unwrap() >= 2, "{v}");
    // Reports expire after three intervals and a loaded machine can delay
    // them, so the live view is polled rather than read once.
    wait_for(30, "the dataset in the mirror's popularity view", || {
        let v = mirror.json(&["mirrors"]);
        v["popular"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["root"] == root.as_str())
            .then_some(())
    });
    let text = mirror.cli_ok(&["mirrors"]);
    assert!(
        text.contains("MIRRORS") && text.contains(&root) && text.contains("popular"),
        "{text}"
    );
    let pins = mirror.json(&["pins"]);
    assert_eq!(pins[0]["kinds"], serde_json::json!(["mirror"]), "{pins}");

    // Both copies are findable and reachable from the cold daemon.
    wait_for(30, "two reachable providers", || {
        (providers(cold, &root) == 2).then_some(())
    });
    // The original holder dies; a daemon that never read the dataset
    // mounts it cold and reads all of it from the mirror.
    let mut holder = holder;
    holder.kill9();
    let m = mount(cold, tmp.path(), "cold");
    py_within("check_equal.py", &[&ds, &m.0.join(&root)], 120);
    drop(m);
    drop(mounts);
}

fn big(dir: &Path, name: &str, chunks: usize, seed: u64) -> PathBuf {
    let p = dir.join(name);
    big_dataset(&p, chunks, seed);
    p
}

#[test]
fn under_a_small_budget_the_less_requested_mirror_goes_first_and_user_pins_stay() {
    let tmp = tempfile::tempdir().unwrap();
    // Two 4 MiB datasets and a small one; the budget fits one big one.
    let (a_dir, b_dir, c_dir) = (
        big(tmp.path(), "a", 4, 1),
        big(tmp.path(), "b", 4, 2),
        big(tmp.path(), "c", 1, 3),
    );
    let holder = start(mirror_cfg("0", 10, 1000, 2));
    let (a, b, c) = (
        holder.add(&a_dir, None),
        holder.add(&b_dir, None),
        holder.add(&c_dir, None),
    );
    let reader = start(mirror_cfg("0", 10, 1000, 2));
    let m = start(mirror_cfg("6MiB", 10, 1000, 2));
    reader.connect(&holder);
    m.connect(&holder);
    m.connect(&reader);
    // A user pin on the mirroring daemon: outside the budget, never evicted.
    m.cli_ok(&["pin", &c]);

    let mnt = mount(&reader, tmp.path(), "mnt");
    open_repeatedly(&mnt.0.join(&b).join("x/0"), 15);
    wait_for(60, "the mirror of b", || mirrored(&m).contains(&b).then_some(()));

    // Now a is requested more than b: b is evicted to make room for a.
    open_repeatedly(&mnt.0.join(&a).join("x/0"), 40);
    wait_for(60, "a to replace b", || {
        let got = mirrored(&m);
        (got.contains(&a) && !got.contains(&b)).then_some(())
    });
    let v = m.json(&["mirrors"]);
    assert!(v["used"].as_u64().unwrap() <= v["budget"].as_u64().unwrap(), "{v}");
    assert!(m.log().contains("evicting mirror"), "{}", m.log());
    // b is gone from the store (unpinned and collected), c is untouched.
    let pins = m.json(&["pins"]);
    let kinds = |root: &str| {
        pins.as_array()
            .unwrap()
            .iter()
            .find(|p| p["root"] == root)
            .map(|p| p["kinds"].clone())
    };
    assert_eq!(kinds(&b), None, "{pins}");
    assert_eq!(kinds(&c), Some(serde_json::json!(["user"])), "{pins}");
    assert_eq!(kinds(&a), Some(serde_json::json!(["mirror"])), "{pins}");
    assert!(m.json_allow_fail(&["fsck"])["incomplete"]
        .as_array()
        .unwrap()
        .is_empty());
    drop(mnt);
}

#[test]
fn a_replica_target_of_three_is_reached_and_restored_after_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = big(tmp.path(), "d", 3, 7);
    // A threshold no test reaches: only the target drives mirroring.
    let cfg = || mirror_cfg("1GiB", 1_000_000, 1000, 2);
    let mut ds_: Vec<Daemon> = (0..5).map(|_| start(cfg())).collect();
    for i in 1..5 {
        ds_[i].connect(&ds_[0]);
        ds_[i].connect(&ds_[i - 1]);
    }
    ds_[4].connect(&ds_[1]);
    let root = ds_[0].add(&ds, None);
    let out = ds_[0].cli_ok(&["pin", &root, "--replicas", "3"]);
    assert!(out.contains("replica target: 3 copies"), "{out}");

    let holders = |ds_: &[Daemon], alive: &[usize]| -> Vec<usize> {
        alive
            .iter()
            .copied()
            .filter(|&i| i == 0 && alive.contains(&0) || mirrored(&ds_[i]).contains(&root))
            .collect()
    };
    let mut alive: Vec<usize> = (0..5).collect();
    let first = wait_for(90, "3 reachable providers", || {
        (providers(&ds_[0], &root) == 3).then(|| holders(&ds_, &alive))
    });
    assert_eq!(first.len(), 3, "holders {first:?}");
    // No overshoot: three more policy runs on every daemon later, still 3.
    policy_runs(&alive.iter().map(|&i| &ds_[i]).collect::<Vec<_>>(), 3);
    assert_eq!(holders(&ds_, &alive).len(), 3);
    let t = ds_[0].json(&["mirrors"]);
    assert_eq!(t["targets"][0]["copies"], 3, "{t}");

    // Kill a volunteer: the swarm returns to 3 with another one.
    let victim = first.iter().copied().find(|&i| i != 0).unwrap();
    ds_[victim].kill9();
    alive.retain(|&i| i != victim);
    let after = wait_for(90, "3 providers again after a volunteer died", || {
        let h = holders(&ds_, &alive);
        (h.len() == 3 && providers(&ds_[0], &root) == 3).then_some(h)
    });
    assert!(!after.contains(&victim));

    // Kill the daemon that set the target: the volunteers carry it on.
    ds_[0].kill9();
    alive.retain(|&i| i != 0);
    let watcher = alive[0];
    wait_for(90, "3 providers again after the origin died", || {
        let h = holders(&ds_, &alive);
        (h.len() == 3 && providers(&ds_[watcher], &root) == 3).then_some(())
    });
    policy_runs(&alive.iter().map(|&i| &ds_[i]).collect::<Vec<_>>(), 3);
    assert_eq!(holders(&ds_, &alive).len(), 3, "overshoot after re-replication");
    let _ = &mut ds_;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_peer_flooding_gossip_or_sending_garbage_stays_bounded_and_capped() {
    use shoal_net::gossip::Report;
    let tmp = tempfile::tempdir().unwrap();
    let x_dir = big(tmp.path(), "x", 2, 11);
    let holder = start(mirror_cfg("0", 10, 8, 2));
    let x = holder.add(&x_dir, None);
    let victim = start(mirror_cfg("1GiB", 10, 8, 2));
    victim.connect(&holder);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let evil = raw_peer(&rt);
    rt.block_on(evil.dial(victim.addr().parse().unwrap())).unwrap();
    let root: shoal_core::Cid = x.parse().unwrap();
    let report = |n: u32| Report {
        version: 1,
        every: 1,
        window: 60,
        spare: 0,
        // The dataset "requested" four billion times, plus filler roots
        // just under the per-peer cap (8): were they loud too, all 64 would
        // tie with the dataset at the cap and the status's top 20, ordered
        // by CID among ties, would show it or not by chance.
        counts: std::iter::once((root, u32::MAX, u32::MAX, n))
            .chain((0..63u32).map(|i| {
                let c = *shoal_core::Block::dag_cbor((n * 64 + i).to_be_bytes().to_vec()).cid();
                (c, 7, 0, 0)
            }))
            .collect(),
        targets: vec![],
        fetching: vec![],
    };
    let score_of_x = |v: &serde_json::Value| {
        v["popular"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["root"] == x.as_str())
            .map(|p| p["score"].as_u64().unwrap())
    };
    // Until the victim hears the hostile peer at all.
    wait_for(30, "the victim to hear the hostile peer", || {
        rt.block_on(evil.publish(report(0).encode())).unwrap();
        score_of_x(&victim.json(&["mirrors"]))
    });
    let before = rss_kib(victim.pid());

    // Flood for five seconds: valid reports as fast as we can, garbage and
    // oversized messages in between.
    let until = Instant::now() + Duration::from_secs(5);
    let mut sent = 0u32;
    rt.block_on(async {
        while Instant::now() < until {
            sent += 1;
            let msg = match sent % 3 {
                0 => report(sent).encode(),
                1 => vec![0xa5; shoal_net::gossip::MAX_REPORT_BYTES],
                _ => (0..2048u32).flat_map(|i| (i * sent).to_le_bytes()).collect(),
            };
            evil.publish(msg).await.unwrap();
        }
    });
    eprintln!("hostile peer published {sent} messages");
    // Right after the flood its last accepted report is still fresh (it
    // expires after three of its 1 s intervals): its influence is exactly
    // its capped share, below the threshold.
    let v = victim.json(&["mirrors"]);
    let after = rss_kib(victim.pid());
    eprintln!("victim RSS {before} KiB -> {after} KiB; gossip {}", v["peers"]);
    assert_eq!(score_of_x(&v), Some(8), "{v}");
    assert!(v["peers"]["rejected"].as_u64().unwrap() > 0, "{v}");
    assert!(v["popular"].as_array().unwrap().len() <= 20);
    // Nothing is mirrored however loud it was: two policy runs later.
    rt.block_on(evil.publish(report(sent + 1).encode())).unwrap();
    policy_runs(&[&victim], 2);
    assert!(
        mirrored(&victim).is_empty(),
        "the flood made the victim mirror something"
    );
    // Memory stays bounded (generous: allocator noise, not a timing figure).
    assert!(after < before + 64 * 1024, "RSS grew from {before} KiB to {after} KiB");
    // And the victim still works normally.
    assert!(victim.json(&["ls", &x])["keys"].as_u64().unwrap() > 0);

    // Junk replica targets (64 datasets nobody holds, 16 copies each,
    // repeated every second) do not starve a real one.
    let junk = Report {
        counts: vec![],
        targets: (0..64u32)
            .map(|i| {
                let c = *shoal_core::Block::dag_cbor((1_000_000 + i).to_be_bytes().to_vec()).cid();
                (c, 16, 1)
            })
            .collect(),
        ..report(0)
    }
    .encode();
    let spam = {
        let evil = evil.clone();
        rt.spawn(async move {
            loop {
                let _ = evil.publish(junk.clone()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    // Until the victim knows the junk targets.
    wait_for(30, "the junk targets to be heard", || {
        (victim.json(&["mirrors"])["peers"]["targets_known"].as_u64().unwrap() >= 64).then_some(())
    });
    holder.cli_ok(&["pin", &x, "--replicas", "2"]);
    wait_for(90, "the victim to honour the real target despite the junk", || {
        mirrored(&victim).contains(&x).then_some(())
    });
    assert!(victim.json(&["mirrors"])["peers"]["targets_known"].as_u64().unwrap() >= 64);
    spam.abort();
}

#[test]
fn unpinning_cancels_a_replica_target_across_the_swarm_and_bad_targets_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = big(tmp.path(), "d", 1, 21);
    let cfg = || mirror_cfg("1GiB", 1_000_000, 1000, 2);
    let (a, b) = (start(cfg()), start(cfg()));
    b.connect(&a);
    let root = a.add(&ds, None);
    for bad in ["0", "17", "x"] {
        let out = a.cli(&["pin", &root, "--replicas", bad]);
        assert_eq!(out.status.code(), Some(2), "--replicas {bad} should be a usage error");
    }
    a.cli_ok(&["pin", &root, "--replicas", "2"]);
    wait_for(60, "b to volunteer", || mirrored(&b).contains(&root).then_some(()));
    let target = |d: &Daemon| d.json(&["mirrors"])["targets"][0]["copies"].as_u64();
    assert_eq!(target(&b), Some(2));
    // The volunteer's user did not set the target: unpinning there does
    // not cancel it.
    let out = b.cli_ok(&["unpin", &root]);
    assert!(out.contains("was not pinned"), "{out}");
    assert_eq!(target(&a), Some(2));
    // The origin's unpin cancels it everywhere; b keeps an ordinary mirror.
    let out = a.cli_ok(&["unpin", &root]);
    assert!(out.contains("replica target cancelled"), "{out}");
    wait_for(30, "the cancellation to reach b", || {
        (target(&b) == Some(0)).then_some(())
    });
    assert!(mirrored(&b).contains(&root));
}

#[test]
fn a_volunteer_whose_disk_fills_up_fails_cleanly_and_another_takes_over() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = big(tmp.path(), "d", 12, 31);
    let holder = start(mirror_cfg("0", 1_000_000, 1000, 2));
    let root = holder.add(&ds, None);
    // S believes it has room (fixed budget) but sits on an 8 MiB disk.
    let (disk, _guard) = tmpfs(tmp.path(), "8m");
    let small = Daemon::start_in(
        &disk.join("repo"),
        Opts {
            mirror: mirror_cfg("1GiB", 1_000_000, 1000, 2),
            network: "provider_timeout = \"3s\"\n".into(),
            ..Default::default()
        },
    );
    small.connect(&holder);
    holder.cli_ok(&["pin", &root, "--replicas", "2"]);
    // S is the only volunteer: it tries, the disk fills, it fails cleanly.
    let failed = wait_for(60, "the small daemon's mirror to fail", || {
        let v = small.json(&["mirrors"]);
        v["failed"]
            .as_array()
            .unwrap()
            .first()
            .map(|f| f["error"].as_str().unwrap().to_string())
    });
    assert!(failed.contains("disk filled up"), "{failed}");
    assert!(mirrored(&small).is_empty());
    assert!(small.json(&["pins"]).as_array().unwrap().is_empty());
    assert!(small.cli(&["fsck"]).status.success());
    // The partial copy was collected: the small daemon can still add data.
    small.add(&datasets().join("ints_v2"), Some("mine"));
    let text = small.cli_ok(&["mirrors"]);
    assert!(text.contains("FAILED HERE"), "{text}");

    // A daemon with room joins; whatever the ranking, it ends up holding
    // the second copy (S backs off; the window widens past it).
    let roomy = start(mirror_cfg("1GiB", 1_000_000, 1000, 2));
    roomy.connect(&holder);
    roomy.connect(&small);
    wait_for(90, "the roomy daemon to take over", || {
        mirrored(&roomy).contains(&root).then_some(())
    });
    wait_for(30, "2 reachable providers", || {
        (providers(&holder, &root) == 2).then_some(())
    });
    assert!(mirrored(&small).is_empty());
}

/// Issue 29: a daemon holding a complete copy that nothing pins (its cache,
/// after a `get`) counted itself as one more copy than its peers counted;
/// first in the volunteer ranking, it stood down while the others waited
/// for it, and the copy was made only when the window widened, by the
/// wrong daemon. Now it counts as no copy, is chosen, and pins its blocks.
#[test]
fn a_cached_copy_is_no_replica_until_its_daemon_is_chosen_and_pins_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = big(tmp.path(), "d", 2, 29);
    let cfg = || mirror_cfg("1GiB", 1_000_000, 1000, 2);
    let (a, b, c) = (start(cfg()), start(cfg()), start(cfg()));
    b.connect(&a);
    c.connect(&a);
    c.connect(&b);
    let root = a.add(&ds, None);
    // The volunteer every daemon ranks first (blake3 of root and peer id,
    // as the policy ranks) gets the cached copy.
    let rank = |d: &Daemon| {
        let mut h = blake3::Hasher::new();
        h.update(&shoal_core::cid::parse(&root).unwrap().to_bytes());
        h.update(&d.peer_id().parse::<shoal_net::PeerId>().unwrap().to_bytes());
        *h.finalize().as_bytes()
    };
    let (first, second) = if rank(&b) < rank(&c) { (&b, &c) } else { (&c, &b) };
    first.cli_ok(&["get", &root, "-o", tmp.path().join("copy").to_str().unwrap()]);
    a.cli_ok(&["pin", &root, "--replicas", "2"]);
    wait_for(60, "the first-ranked daemon (a cached copy) to mirror", || {
        mirrored(first).contains(&root).then_some(())
    });
    // Two copies: the other volunteer has no reason to fetch.
    policy_runs(&[second], 8);
    assert!(
        !mirrored(second).contains(&root),
        "the second-ranked daemon mirrored too"
    );
}
