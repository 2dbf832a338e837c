//! The HTTP gateway with real clients: xarray and zarr-python through
//! fsspec's HTTP filesystem (aiohttp), `requests` for the HTTP semantics,
//! dask with 16 threads, and prometheus_client's text parser, against a
//! daemon that holds nothing (every block comes from a peer).

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn gateway(d: &Daemon) -> String {
    d.json(&["id"])["gateway"]
        .as_str()
        .expect("the gateway is on")
        .to_string()
}

fn check(args: &[&str]) -> String {
    let args: Vec<&Path> = args.iter().map(Path::new).collect();
    py_within("gateway_check.py", &args, 180)
}

fn metrics(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&check(&["metrics", &format!("{}/metrics", gateway(d))])).unwrap()
}

fn num(m: &serde_json::Value, k: &str) -> f64 {
    m[k].as_f64().unwrap_or_else(|| panic!("no metric {k} in {m}"))
}

#[test]
fn xarray_zarr_dask_and_http_clients_read_a_peer_s_datasets_through_the_gateway() {
    let a = Daemon::start();
    let b = Daemon::start();
    b.connect(&a);
    let names = ["xr_v2", "xr_v3", "v3_zstd", "v3_sharded", "v2_blosc"];
    let roots: Vec<String> = names.iter().map(|n| a.add(&datasets().join(n), Some(n))).collect();
    for r in &roots {
        wait_providers(&b, r, 1);
    }
    let (ga, gb) = (gateway(&a), gateway(&b));
    let before = metrics(&b);
    let orig = |n: &str| datasets().join(n).to_str().unwrap().to_string();
    // B holds nothing: by CID through B, every block from A.
    let by_cid = |i: usize| format!("{gb}/zarr/{}", roots[i]);
    // xarray: v2 consolidated, v3 (consolidated metadata synthesised).
    check(&["xr", &by_cid(0), &orig("xr_v2")]);
    check(&["xr", &by_cid(1), &orig("xr_v3")]);
    // zarr-python: v3 without consolidated metadata, v3 sharded (suffix
    // ranges for the shard index), v2.
    check(&["zarr", &by_cid(2), &orig("v3_zstd"), "ocean/sst"]);
    check(&["zarr", &by_cid(3), &orig("v3_sharded"), "sharded"]);
    check(&["zarr", &by_cid(4), &orig("v2_blosc"), "temp"]);
    // By name, on the daemon that holds the name.
    check(&["xr", &format!("{ga}/zarr/xr_v2"), &orig("xr_v2")]);
    check(&["zarr", &format!("{ga}/zarr/v3_sharded"), &orig("v3_sharded"), "sharded"]);
    // 16 dask threads at once.
    check(&["dask", &by_cid(1), &orig("xr_v3"), "sst"]);
    // HTTP semantics with a real client; caching by CID vs by name.
    let key = "temp/0.1.0";
    let file = datasets().join("v2_blosc").join(key);
    let out = check(&["http", &by_cid(4), key, file.to_str().unwrap()]);
    assert!(out.contains("immutable"), "{out}");
    let out = check(&["http", &format!("{ga}/zarr/v2_blosc"), key, file.to_str().unwrap()]);
    assert!(out.contains("max-age=60") && !out.contains("immutable"), "{out}");
    // The counters moved: bytes served, blocks fetched from the peer, 404s.
    let after = metrics(&b);
    for k in [
        "shoal_gateway_bytes_served_total",
        "shoal_block_reads_fetched_total",
        "shoal_net_blocks_received_total",
    ] {
        assert!(
            num(&after, k) > before.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0),
            "{k}: {after}"
        );
    }
    assert!(
        num(&after, "shoal_gateway_requests_total{route=zarr,status=404}") >= 3.0,
        "{after}"
    );
    assert!(
        num(&after, "shoal_gateway_requests_total{route=zarr,status=206}") >= 4.0,
        "{after}"
    );
    assert!(after.get("shoal_block_fetch_seconds_count").is_some(), "{after}");
    assert!(num(&metrics(&a), "shoal_net_blocks_sent_total") > 0.0);
}

#[test]
fn chunks_read_in_order_are_answered_from_read_ahead_and_every_order_reads_right() {
    let a = Daemon::start();
    // Read ahead: answered from memory, or claimed before its read ended
    // (on a busy machine the read-ahead threads, at a lower priority, lag;
    // such a request reads the key itself).
    let hits = |d: &Daemon| {
        let m = metrics(d);
        num(&m, "shoal_gateway_readahead_hits_total") + num(&m, "shoal_gateway_readahead_late_total")
    };
    let base = |d: &Daemon, root: &str| format!("{}/zarr/{root}", gateway(d));
    // One request at a time, as a single zarr-python or dask thread asks:
    // in C order every chunk after the first two was read and verified
    // ahead; in reverse (dask's order for a reduction) all but the first
    // two and some at the start of a row (the last index of the row
    // before is not known; a neighbour's read-ahead often has it).
    for (ds, order, missed) in [("v2_blosc", "c", 2.0), ("packed_v2", "reverse", 12.0)] {
        let src = datasets().join(ds);
        let root = a.add(&src, None);
        let before = hits(&a);
        let n: f64 = check(&["chunks", &base(&a, &root), src.to_str().unwrap(), "temp", order])
            .trim()
            .parse()
            .unwrap();
        let got = hits(&a) - before;
        assert!(
            n >= 20.0 && got >= n - missed,
            "{order}: {got} of {n} chunks from read-ahead"
        );
        // Shuffled, and again in order: whatever read-ahead guesses, every
        // answer is the chunk.
        for again in ["shuffled", order] {
            check(&["chunks", &base(&a, &root), src.to_str().unwrap(), "temp", again]);
        }
    }
    // A reader that jumps from one block of neighbouring chunks to the
    // next (dask's blocks): pairs of neighbours along the last dimension,
    // no pair next to the one before. The first chunk of each pair is a
    // miss; its neighbour is read ahead because the dataset was read in
    // order within the last second: every second chunk is a hit but the
    // first pair's.
    let j = Daemon::start();
    let src = datasets().join("v2_blosc");
    let root = j.add(&src, None);
    let n: f64 = check(&["chunks", &base(&j, &root), src.to_str().unwrap(), "temp", "pairs"])
        .trim()
        .parse()
        .unwrap();
    let got = hits(&j);
    assert!(got >= n / 2.0 - 1.0, "pairs: {got} of {n} chunks from read-ahead");
    // Off: nothing is read ahead.
    let off = Daemon::start_opts(Opts {
        gateway: "readahead = \"0\"\n".into(),
        ..Default::default()
    });
    let src = datasets().join("v2_blosc");
    let root = off.add(&src, None);
    check(&["chunks", &base(&off, &root), src.to_str().unwrap(), "temp", "c"]);
    assert_eq!(hits(&off), 0.0);
}

#[test]
fn a_key_asked_again_is_answered_from_memory_and_every_range_reads_right() {
    let key = "temp/1.0.1";
    let src = datasets().join("v2_blosc");
    let f = src.join(key);
    let n = std::fs::metadata(&f).unwrap().len() as f64;
    let kept = |d: &Daemon| {
        let m = metrics(d);
        (
            num(&m, "shoal_gateway_hot_hits_total"),
            num(&m, "shoal_gateway_hot_bytes"),
        )
    };
    // The whole GET reads the key and keeps it; the ranges, HEAD and the
    // conditional GET after it are answered from memory, byte for byte.
    // Off: every request reads the store, and reads right.
    let off = Opts {
        gateway: "hot_cache = \"0\"\n".into(),
        ..Default::default()
    };
    for (opts, on) in [(Opts::default(), true), (off, false)] {
        let d = Daemon::start_opts(opts);
        let root = d.add(&src, None);
        check(&[
            "http",
            &format!("{}/zarr/{root}", gateway(&d)),
            key,
            f.to_str().unwrap(),
        ]);
        let (hits, bytes) = kept(&d);
        if on {
            assert!(hits >= 4.0, "{hits} requests answered from memory");
            assert_eq!(bytes, n, "only the key read whole is kept");
        } else {
            assert_eq!((hits, bytes), (0.0, 0.0));
        }
    }
}

fn short_timeouts(env: Vec<(String, String)>) -> Opts {
    Opts {
        network: "block_timeout = \"3s\"\nrequest_timeout = \"2s\"\nprovider_timeout = \"2s\"\n".into(),
        gateway: "request_timeout = \"20s\"\n".into(),
        env,
        ..Default::default()
    }
}

#[test]
fn a_corrupt_local_block_is_never_served_and_a_dead_provider_is_a_5xx() {
    let mut a = Daemon::start();
    let b = Daemon::start_opts(short_timeouts(vec![]));
    b.connect(&a);
    let src = datasets().join("v2_blosc");
    let root = a.add(&src, None);
    wait_providers(&b, &root, 1);
    b.cli_ok(&["pin", &root]);
    let base = format!("{}/zarr/{root}", gateway(&b));
    // With the provider up: the bad local copy is replaced by a verified one.
    corrupt_local_copy(&b, &std::fs::read(src.join("temp/1.0.1")).unwrap());
    let f = src.join("temp/1.0.1");
    check(&["http", &base, "temp/1.0.1", f.to_str().unwrap()]);
    assert!(b.cli(&["fsck"]).status.success(), "the corrupt copy was replaced");
    // With no provider: a 5xx, never wrong bytes.
    corrupt_local_copy(&b, &std::fs::read(src.join("temp/2.1.0")).unwrap());
    a.kill9();
    let out = check(&["get", &format!("{base}/temp/2.1.0")]);
    assert!(out.starts_with("status 504"), "{out}");
}

#[test]
fn a_provider_killed_mid_read_ends_the_response_early_never_hangs() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("ds");
    std::fs::create_dir_all(src.join("blob")).unwrap();
    std::fs::write(src.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
    let mut data = vec![0u8; 12 << 20];
    blake3::Hasher::new().update(b"mid-read").finalize_xof().fill(&mut data);
    std::fs::write(src.join("blob/big"), &data).unwrap();
    // A answers every request 1.5 s late: the response is under way (its
    // first blocks sent) when A dies, with blocks still to come.
    let mut a = Daemon::start_opts(Opts {
        env: vec![("SHOAL_TEST_SERVE_DELAY_MS".into(), "1500".into())],
        ..Default::default()
    });
    let b = Daemon::start_opts(short_timeouts(vec![]));
    b.connect(&a);
    let root = a.add(&src, None);
    wait_providers(&b, &root, 1);
    let url = format!("{}/zarr/{root}/blob/big", gateway(&b));
    let mut reader = Command::new(python())
        .arg(workspace().join("tests/python/gateway_check.py"))
        .args(["stream", &url, &data.len().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(reader.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    assert_eq!(first, "started 200", "the response head came first");
    a.kill9();
    let deadline = Instant::now() + Duration::from_secs(90);
    let outcome = lines.next().expect("an outcome").unwrap();
    assert!(Instant::now() < deadline, "the response did not end within 90 s");
    let _ = reader.kill();
    let _ = reader.wait();
    assert!(
        outcome.starts_with("short") || outcome.starts_with("error"),
        "the body must end early, not complete: {outcome}"
    );
}

#[test]
fn init_gateway_sets_the_address_and_an_empty_one_turns_it_off() {
    let off = Daemon::start_opts(Opts {
        gateway: "listen = \"\"\n".into(),
        ..Default::default()
    });
    assert!(off.json(&["id"])["gateway"].is_null());
    assert!(off.cli_ok(&["id"]).contains("gateway: off"));
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("r");
    let init = |gw: &str| {
        Command::new(BIN)
            .arg("--home")
            .arg(&home)
            .args(["init", "--gateway", gw])
            .output()
            .unwrap()
    };
    let out = init("not-an-address");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST:PORT"));
    assert!(init("127.0.0.1:0").status.success());
    let cfg = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(cfg.contains("listen = \"127.0.0.1:0\""), "{cfg}");
}
