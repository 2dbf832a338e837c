//! Issue 24, "Hostile input, by design", as a user meets it: the real
//! daemon and CLI, under the resource limits the attacks were found with.

mod common;
#[path = "../../crates/shoal-node/tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

fn gateway(d: &Daemon) -> String {
    d.json(&["id"])["gateway"]
        .as_str()
        .expect("the gateway is on")
        .to_string()
}

/// Issue 24: a chunk declaring 2^38 bytes behind `chunk_shape [2^40]` made
/// `shoal query zb v --op mean --dim x --weights w` grow the daemon to 24 GB
/// until the OOM killer came. Under an 8 GiB address-space limit the query
/// is refused with a clear error, locally and as a peer's compute request,
/// and the daemon answers the next one.
#[test]
fn regression_24_a_crafted_weights_chunk_is_refused_and_the_daemon_lives_in_8_gib() {
    let d = Daemon::start_opts(Opts {
        ulimits: "ulimit -v 8388608".into(),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    d.add(&support::hostile_weights(tmp.path()), Some("zb"));
    let out = d.cli_within(
        &["query", "zb", "v", "--op", "mean", "--dim", "x", "--weights", "w"],
        120,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("memory budget"), "{err}");
    // The same as a peer's compute request (a mirror of a hostile dataset
    // is enough to be asked): refused in the answer's header.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw = raw_peer(&rt);
    let peer = rt.block_on(raw.dial(d.addr().parse().unwrap())).unwrap();
    let root = d.json(&["ls", "zb"])["root"].as_str().unwrap().to_string();
    let spec = shoal_query::QuerySpec {
        dims: vec!["x".into()],
        weights: Some("w".into()),
        ..shoal_query::QuerySpec::new("v", shoal_query::Op::Mean)
    };
    let fields = shoal_query::wire::Fields::of(&spec);
    let body = serde_json::to_vec(&shoal_query::wire::ComputeRequest {
        root,
        spec,
        chunks: vec![vec![0]],
    })
    .unwrap();
    let answer = rt.block_on(raw.compute(peer, body, Duration::from_secs(60))).unwrap();
    let (header, _) = shoal_query::wire::response_partials(&answer, 1, 1, fields).unwrap();
    let why = header.error.expect("refused");
    assert!(why.contains("memory budget"), "{why}");
    let plain = d.json(&["query", "zb", "v", "--op", "mean", "--dim", "x"]);
    assert_eq!(plain["values"][0].as_f64(), Some(4.5), "{plain}");
}

/// Issue 24: any tree with a 0-byte file failed to add. Added, and read
/// back byte-identical through `cat`, `get`, the mount, the gateway and
/// the UnixFS view.
#[test]
fn regression_24_an_empty_file_reads_back_through_every_face() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("e.zarr");
    copy_tree(&datasets().join("v3_zstd"), &src);
    std::fs::write(src.join(".done"), b"").unwrap();
    let d = Daemon::start();
    let root = d.add(&src, Some("e"));
    assert!(d.cli_ok(&["cat", "e/.done"]).is_empty());
    let out = tmp.path().join("out");
    d.cli_ok(&["get", "e", "-o", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    let m = mount(&d, tmp.path(), "mnt");
    let via_mount = m.0.join(&root).join(".done");
    assert_eq!(std::fs::read(&via_mount).unwrap(), b"");
    assert_eq!(std::fs::metadata(&via_mount).unwrap().len(), 0);
    let gw = gateway(&d);
    assert_eq!(http_get(&format!("{gw}/zarr/e/.done")), (200, Vec::new()));
    let view = d.json(&["ls", "e"])["unixfs"].as_str().unwrap().to_string();
    assert_eq!(http_get(&format!("{gw}/ipfs/{view}/.done")), (200, Vec::new()));
    drop(m);
}

/// Issue 24 finding 6: a response held its request slot until its body was
/// sent, with no write or idle timeout: clients that never read held every
/// slot. Two of them hold both slots here; within the idle timeout their
/// connections are closed and a third client is served.
#[test]
fn regression_24_clients_that_never_read_give_their_request_slots_back() {
    let d = Daemon::start_opts(Opts {
        gateway: "max_requests = 2\nrequest_timeout = \"20s\"\nidle_timeout = \"2s\"\n".into(),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.zarr");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("zarr.json"), support::GROUP).unwrap();
    // Larger than both sockets' buffers on loopback: the server's writes
    // stall when the client does not read.
    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(src.join("big"), &big).unwrap();
    d.add(&src, Some("big"));
    let gw = gateway(&d);
    let host = gw.strip_prefix("http://").unwrap().to_string();
    let stalled: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&host).unwrap();
            write!(s, "GET /zarr/big/big HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
            s
        })
        .collect();
    // Both requests hold their slots (their responses started).
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let (status, body) = http_get(&format!("{gw}/zarr/big/zarr.json"));
    assert_eq!(status, 200, "a third client was refused after {:?}", started.elapsed());
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["zarr_format"], 3);
    drop(stalled);
}

/// Issue 24: `shoal get` of 1,643 directories stopped with "Too many open
/// files" under a 1,024 descriptor limit. The daemon runs with soft and
/// hard limits of 1,024 here (so raising the soft limit cannot help), and
/// logs the limit it runs with.
#[test]
fn regression_24_get_of_1643_directories_under_ulimit_n_1024() {
    let d = Daemon::start_opts(Opts {
        ulimits: "ulimit -n 1024".into(),
        ..Default::default()
    });
    assert!(d.log().contains("open files limit: 1024"), "{}", d.log());
    let tmp = tempfile::tempdir().unwrap();
    let src = support::many_directories(tmp.path());
    d.add(&src, Some("many"));
    let out = tmp.path().join("out");
    d.cli_ok(&["get", "many", "-o", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
}

/// Issue 24 finding 1: `/ipfs/` answers re-expanded shared sub-DAGs: a file
/// node of 20,000 links to one node of 20,000 leaves asked for 4 x 10^8
/// entries, outside any timeout. A peer that is not a shoal daemon serves
/// such a DAG; one GET through the daemon's gateway is refused within the
/// walk's limits, and the daemon answers the next request.
#[test]
fn regression_24_an_ipfs_file_over_a_shared_sub_dag_is_refused_not_expanded() {
    use shoal_unixfs::{pb, Link};
    let leaf = bytes::Bytes::from_static(b"x");
    let leaf_cid = shoal_core::cid::cid_of(shoal_core::cid::RAW, &leaf);
    let fan = |child: shoal_core::Cid, size: u64| {
        let n = 20_000;
        let links: Vec<Link> = (0..n)
            .map(|_| Link {
                cid: child,
                name: String::new(),
                tsize: size,
            })
            .collect();
        let data = pb::UnixFs {
            kind: pb::FILE,
            filesize: Some(size * n as u64),
            blocksizes: vec![size; n],
            ..Default::default()
        };
        let b = pb::encode_node(&links, &data.encode());
        (
            shoal_core::cid::cid_of(shoal_core::cid::DAG_PB, &b),
            bytes::Bytes::from(b),
        )
    };
    let mid = fan(leaf_cid, 1);
    let top = fan(mid.0, 20_000);
    assert!(top.1.len() < 1 << 20 && mid.1.len() < 1 << 20);
    let blocks: std::collections::HashMap<shoal_core::Cid, bytes::Bytes> =
        [(leaf_cid, leaf), mid.clone(), top.clone()].into_iter().collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let serve: shoal_net::ServeFn =
        std::sync::Arc::new(move |_, _, cids| cids.iter().map(|c| blocks.get(c).cloned()).collect());
    let evil = raw_peer_serving(&rt, serve, std::sync::Arc::new(|_, _| Vec::new()));
    let d = Daemon::start();
    rt.block_on(evil.dial(d.addr().parse().unwrap())).unwrap();
    rt.block_on(evil.provide(top.0)).unwrap();
    let gw = gateway(&d);
    let started = Instant::now();
    let (status, body) = http_get(&format!("{gw}/ipfs/{}", top.0));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("too large"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    assert_eq!(http_get(&format!("{gw}/ipfs/bafkqaaa")).0, 200);
    assert!(d.cli(&["id"]).status.success());
}
