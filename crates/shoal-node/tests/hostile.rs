//! Issue 24, "Hostile input, by design": each attack found on main, as a
//! regression test through the node's typed API (real nodes on loopback,
//! no subprocess). Every wait is bounded.

use std::path::Path;
use std::time::Duration;

use shoal_core::cid::{self, Cid, DAG_PB, RAW};
use shoal_node::{Error, Node, TestSwitches};
use shoal_unixfs::{car, pb, Link};

mod support;
use support::{add, array_meta, connect, hostile_weights, plain_bytes, raw_peer, GROUP};

fn config(dir: &Path, test: TestSwitches) -> shoal_node::NodeConfig {
    support::config(dir, 1 << 20, support::quiet(), test)
}

async fn start(dir: &Path) -> Node {
    Node::start(config(dir, TestSwitches::default())).await.unwrap()
}

/// A dag-pb node, its CID and bytes.
fn node(links: &[Link], fs: pb::UnixFs) -> (Cid, Vec<u8>) {
    let bytes = pb::encode_node(links, &fs.encode());
    (cid::cid_of(DAG_PB, &bytes), bytes)
}

fn link(cid: Cid, name: &str, tsize: u64) -> Link {
    Link {
        cid,
        name: name.into(),
        tsize,
    }
}

/// A File node of `n` links to `child`, each standing for `size` bytes.
fn fan(child: Cid, n: usize, size: u64) -> (Cid, Vec<u8>) {
    let links: Vec<Link> = (0..n).map(|_| link(child, "", size)).collect();
    node(
        &links,
        pb::UnixFs {
            kind: pb::FILE,
            filesize: Some(size * n as u64),
            blocksizes: vec![size; n],
            ..Default::default()
        },
    )
}

/// A CAR whose root is a directory of `zarr.json` and `entries`, holding
/// `blocks` besides.
fn write_car(path: &Path, entries: Vec<Link>, blocks: &[(Cid, Vec<u8>)]) -> Cid {
    let meta = GROUP.as_bytes().to_vec();
    let meta_cid = cid::cid_of(RAW, &meta);
    let mut links = vec![link(meta_cid, "zarr.json", meta.len() as u64)];
    links.extend(entries);
    links.sort_by(|a, b| a.name.cmp(&b.name));
    let (root, root_bytes) = node(
        &links,
        pb::UnixFs {
            kind: pb::DIRECTORY,
            ..Default::default()
        },
    );
    let mut out = car::header(&[root]);
    out.extend(car::section(&root, &root_bytes));
    out.extend(car::section(&meta_cid, &meta));
    for (c, b) in blocks {
        out.extend(car::section(c, b));
    }
    std::fs::write(path, out).unwrap();
    root
}

/// Issue 24: a 1 MiB CAR whose file node links 64 times to a node that
/// links 64 times to one leaf rebuilt a 4 GiB file. The rebuilt tree may
/// stand for at most `car_expansion` times the CAR's distinct bytes; past
/// that the add is refused and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_24_a_car_bomb_is_refused_before_it_writes_past_its_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(&tmp.path().join("n")).await;
    let leaf = vec![7u8; 64 << 10];
    let leaf_cid = cid::cid_of(RAW, &leaf);
    let mid = fan(leaf_cid, 64, leaf.len() as u64);
    let top = fan(mid.0, 64, 64 * leaf.len() as u64);
    let bomb = tmp.path().join("bomb.car");
    write_car(
        &bomb,
        vec![link(top.0, "bomb", 1 << 28)],
        &[(leaf_cid, leaf.clone()), mid.clone(), top.clone()],
    );
    let car_len = std::fs::metadata(&bomb).unwrap().len();
    assert!(car_len < 1 << 20, "a small CAR: {car_len}");
    let e = n
        .datasets()
        .add_car(bomb, None, Default::default(), shoal_node::no_progress())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadRequest(_)), "{e}");
    assert!(e.to_string().contains("budget"), "{e}");
    let stats = n.stats().await.unwrap();
    assert_eq!(
        (stats.blocks, n.pins().list().await.unwrap().len()),
        (0, 0),
        "nothing stored"
    );
    let import = tmp.path().join("n/store/import");
    let left: Vec<_> = std::fs::read_dir(&import)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch removed: {left:?}");

    // A CAR that repeats one block a few times (identical chunks) is fine.
    let ok = tmp.path().join("ok.car");
    let small = fan(leaf_cid, 4, leaf.len() as u64);
    write_car(
        &ok,
        vec![link(small.0, "data", 4 * leaf.len() as u64)],
        &[(leaf_cid, leaf.clone()), small.clone()],
    );
    let added = n
        .datasets()
        .add_car(ok, Some("ok".into()), Default::default(), shoal_node::no_progress())
        .await
        .unwrap();
    let data = n.datasets().read(added.root, "data", None).await.unwrap();
    assert_eq!(data.len(), 4 * leaf.len());
    assert!(data.iter().all(|b| *b == 7));
    n.shutdown().await.unwrap();
}

/// Issue 24: `dir_entries` recursed through shard links without a depth
/// bound; a chain of shards one level each overflowed the stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_24_a_deep_shard_chain_is_refused_not_a_stack_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(&tmp.path().join("n")).await;
    let shard = |links: &[Link]| {
        node(
            links,
            pb::UnixFs {
                kind: pb::HAMT_SHARD,
                fanout: Some(256),
                hash_type: Some(0x22),
                ..Default::default()
            },
        )
    };
    let mut blocks = Vec::new();
    let mut cur = shard(&[]);
    blocks.push(cur.clone());
    for _ in 0..20_000 {
        cur = shard(&[link(cur.0, "00", 1)]);
        blocks.push(cur.clone());
    }
    let path = tmp.path().join("deep.car");
    write_car(&path, vec![link(cur.0, "deep", 1)], &blocks);
    let e = n
        .datasets()
        .add_car(path, None, Default::default(), shoal_node::no_progress())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadRequest(_)), "{e}");
    assert!(e.to_string().contains("deeper"), "{e}");
    assert_eq!(n.stats().await.unwrap().blocks, 0);
    n.shutdown().await.unwrap();
}

/// Issue 24: any tree holding a 0-byte file failed to add ("0 bytes in 0
/// blocks", from the UnixFS view). Added, read, exported and walked in
/// the view, byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_24_a_tree_with_an_empty_file_adds_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("e.zarr");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("zarr.json"), GROUP).unwrap();
    std::fs::write(src.join(".done"), b"").unwrap();
    std::fs::write(src.join("sub/README"), b"").unwrap();
    let n = start(&tmp.path().join("n")).await;
    let added = n
        .datasets()
        .add(src.clone(), Some("e".into()), shoal_node::no_progress())
        .await
        .unwrap();
    assert_eq!(added.keys, 3);
    assert!(n.datasets().read(added.root, ".done", None).await.unwrap().is_empty());
    let target = n.datasets().resolve("e").await.unwrap();
    let out = tmp.path().join("out");
    n.datasets()
        .export(&target, out.clone(), shoal_node::no_progress())
        .await
        .unwrap();
    for k in [".done", "sub/README", "zarr.json"] {
        assert_eq!(
            std::fs::read(out.join(k)).unwrap(),
            std::fs::read(src.join(k)).unwrap(),
            "{k}"
        );
    }
    // The view: the empty file is a File node of no bytes.
    let view = n.datasets().view_of(added.root).await.unwrap().expect("a view");
    let mut get =
        |c: &Cid| -> shoal_unixfs::Result<Vec<u8>> { Ok(n.store().get(c).unwrap().expect("held").data().to_vec()) };
    let path = shoal_unixfs::resolve(view, &[".done"], &mut get).unwrap();
    let file = shoal_unixfs::file_node(&path[1], &get(&path[1]).unwrap())
        .unwrap()
        .unwrap();
    assert!(file.data.is_empty() && file.links.is_empty());
    // And back in through a CAR of the view.
    let car = tmp.path().join("e.car");
    n.datasets()
        .export_car(&target, car.clone(), shoal_node::no_progress())
        .await
        .unwrap();
    let again = n
        .datasets()
        .add_car(car, None, Default::default(), shoal_node::no_progress())
        .await
        .unwrap();
    assert_eq!(again.root, added.root, "the same dataset");
    n.shutdown().await.unwrap();
}

fn weighted_mean() -> shoal_query::QuerySpec {
    shoal_query::QuerySpec {
        dims: vec!["x".into()],
        weights: Some("w".into()),
        ..shoal_query::QuerySpec::new("v", shoal_query::Op::Mean)
    }
}

/// Issue 24: a weights array with `chunk_shape [2^40]` and a chunk
/// declaring 2^38 bytes grew the daemon to 24 GB before the OOM killer
/// came. Every decode's ceiling is now the smaller of the chunk's size and
/// the request's budget: refused before a byte is decoded, here and as a
/// peer's compute request, and both nodes answer the next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_24_a_crafted_weights_chunk_is_refused_locally_and_as_a_compute_request() {
    let tmp = tempfile::tempdir().unwrap();
    let src = hostile_weights(tmp.path());
    let a = start(&tmp.path().join("a")).await;
    let b = start(&tmp.path().join("b")).await;
    let root = add(&a, src).await;
    connect(&a, &b).await;
    let here = a.datasets().resolve(&root.to_string()).await.unwrap();
    let e = a.queries().query(&here, weighted_mean()).await.unwrap_err();
    assert!(e.to_string().contains("memory budget"), "{e}");
    // From b, which holds nothing: a is asked to compute (and refuses),
    // then b plans it itself and refuses as well.
    let there = b.datasets().resolve(&root.to_string()).await.unwrap();
    let e = b.queries().query(&there, weighted_mean()).await.unwrap_err();
    assert!(e.to_string().contains("memory budget"), "{e}");
    // As a compute request straight from a peer that is not a shoal node:
    // refused in the answer's header, a still alive.
    let raw = raw_peer();
    let addr = a.info().await.unwrap().addrs[0].clone();
    assert_eq!(raw.dial(addr).await.unwrap(), a.peer_id());
    let body = serde_json::to_vec(&shoal_query::wire::ComputeRequest {
        root: root.to_string(),
        spec: weighted_mean(),
        chunks: vec![vec![0]],
    })
    .unwrap();
    let answer = raw.compute(a.peer_id(), body, Duration::from_secs(30)).await.unwrap();
    let fields = shoal_query::wire::Fields::of(&weighted_mean());
    let (header, _) = shoal_query::wire::response_partials(&answer, 1, 1, fields).unwrap();
    let why = header.error.expect("refused");
    assert!(why.contains("memory budget"), "{why}");
    // Both still answer.
    let plain = shoal_query::QuerySpec {
        dims: vec!["x".into()],
        ..shoal_query::QuerySpec::new("v", shoal_query::Op::Mean)
    };
    assert_eq!(a.queries().query(&here, plain.clone()).await.unwrap().values, vec![4.5]);
    assert_eq!(b.queries().query(&there, plain).await.unwrap().values, vec![4.5]);
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}

/// Issue 24 finding 3: a spot check that could not run here ("could not
/// check a peer's chunk here") kept the peer's answer, so a peer that
/// forges partials and withholds the blocks had its lies merged. Now its
/// answers are unverified and unused: with no other holder the query fails
/// rather than answering wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_24_a_peer_whose_answer_cannot_be_checked_is_not_believed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("t.zarr");
    std::fs::create_dir_all(src.join("t/c")).unwrap();
    std::fs::write(src.join("zarr.json"), GROUP).unwrap();
    std::fs::write(src.join("t/zarr.json"), array_meta(&[8], &[2], plain_bytes(), &["x"])).unwrap();
    for c in 0..4 {
        let v: Vec<u8> = (0..2).flat_map(|i| ((c * 2 + i) as f64).to_le_bytes()).collect();
        std::fs::write(src.join(format!("t/c/{c}")), v).unwrap();
    }
    let liar = Node::start(config(
        &tmp.path().join("liar"),
        TestSwitches {
            wrong_partials: true,
            withhold_chunk_blocks: true,
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let reader = start(&tmp.path().join("reader")).await;
    let root = add(&liar, src).await;
    connect(&liar, &reader).await;
    let target = reader.datasets().resolve(&root.to_string()).await.unwrap();
    let spec = shoal_query::QuerySpec {
        dims: vec!["x".into()],
        ..shoal_query::QuerySpec::new("t", shoal_query::Op::Sum)
    };
    match tokio::time::timeout(Duration::from_secs(60), reader.queries().query(&target, spec)).await {
        Ok(Ok(r)) => assert_eq!(r.values, vec![28.0], "a wrong answer was believed: {r:?}"),
        // Computed here instead, which needs the blocks nobody gives.
        Ok(Err(e)) => assert!(e.to_string().contains("unavailable"), "{e}"),
        Err(_) => panic!("the query did not end within 60 s"),
    }
    for n in [liar, reader] {
        n.shutdown().await.unwrap();
    }
}

/// Issue 24 finding 4: a name's sequence restarted at 1 after `unpublish`
/// or a lost record file, so followers refused the new records while
/// anyone could replay the old higher one. The next sequence is above
/// every record of the name this node signed or the DHT holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_24_a_names_sequence_never_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("n.zarr");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("zarr.json"), GROUP).unwrap();
    let a = start(&tmp.path().join("a")).await;
    let b = start(&tmp.path().join("b")).await;
    connect(&a, &b).await;
    a.datasets()
        .add(src.clone(), Some("sst".into()), shoal_node::no_progress())
        .await
        .unwrap();
    assert_eq!(a.names().publish("sst").await.unwrap().seq, 1);
    std::fs::write(src.join("new"), b"v2").unwrap();
    a.datasets()
        .add(src.clone(), Some("sst".into()), shoal_node::no_progress())
        .await
        .unwrap();
    let s2 = a.names().publish("sst").await.unwrap().seq;
    assert_eq!(s2, 2);
    assert!(a.names().unpublish("sst").await.unwrap());
    let s3 = a.names().publish("sst").await.unwrap().seq;
    assert!(s3 > s2, "after unpublish: {s3} <= {s2}");
    // The published records and their marks lost (a restored backup): the
    // DHT still holds sequence s3, and the next record passes it.
    let dir = tmp.path().join("a/store/published");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    std::fs::write(src.join("new"), b"v3").unwrap();
    a.datasets()
        .add(src.clone(), Some("sst".into()), shoal_node::no_progress())
        .await
        .unwrap();
    let s4 = a.names().publish("sst").await.unwrap().seq;
    assert!(s4 > s3, "after a lost record: {s4} <= {s3}");
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}

/// Issue 24 finding 7: blocks a reader fetched were stored behind it as
/// cache without limit when no quota was set. A node whose cache is 1 MiB
/// reads 8 MiB of a peer's dataset and keeps at most its cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_24_readers_cannot_fill_the_disk_with_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.zarr");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("zarr.json"), GROUP).unwrap();
    for i in 0..8u8 {
        let data: Vec<u8> = (0..1u32 << 20)
            .map(|j| (j.wrapping_mul(2654435761) >> 24) as u8 ^ i)
            .collect();
        std::fs::write(src.join(format!("k{i}")), data).unwrap();
    }
    let holder = start(&tmp.path().join("holder")).await;
    let mut cfg = config(&tmp.path().join("reader"), TestSwitches::default());
    cfg.cache = shoal_node::Budget::Fixed(1 << 20);
    let reader = Node::start(cfg).await.unwrap();
    let root = holder
        .datasets()
        .add(src.clone(), None, shoal_node::no_progress())
        .await
        .unwrap()
        .root;
    connect(&holder, &reader).await;
    for i in 0..8u8 {
        let got = reader.datasets().read(root, &format!("k{i}"), None).await.unwrap();
        assert_eq!(got.as_ref(), std::fs::read(src.join(format!("k{i}"))).unwrap());
    }
    // `stats` waits for the write-behind to settle first.
    let held = reader.stats().await.unwrap().live_bytes;
    assert!(held > 0, "some cache was kept");
    assert!(held <= (1 << 20) + (64 << 10), "{held} bytes kept under a 1 MiB cache");
    for n in [holder, reader] {
        n.shutdown().await.unwrap();
    }
}
