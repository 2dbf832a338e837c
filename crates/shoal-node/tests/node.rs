//! Node-level tests: real nodes in one process on loopback, driven through
//! the typed API (no socket, no subprocess, no HTTP). Every wait is bounded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use shoal_node::{Budget, Error, MirrorSettings, Node, TestSwitches};

/// Rows x cols of the test array, its chunk shape, and its block size
/// (small, so a chunk spans several blocks).
const ROWS: usize = 8;
const COLS: usize = 6;
const CHUNK: [usize; 2] = [4, 3];
const BLOCK: u32 = 40;

/// A Zarr v3 group with one float64 array `t` (dims time, x) whose value
/// at (r, c) is `r * COLS + c`, written by hand (no Python needed here).
fn dataset(dir: &Path) -> PathBuf {
    let root = dir.join("ds.zarr");
    std::fs::create_dir_all(root.join("t")).unwrap();
    std::fs::write(
        root.join("zarr.json"),
        r#"{"zarr_format":3,"node_type":"group","attributes":{}}"#,
    )
    .unwrap();
    let meta = serde_json::json!({
        "zarr_format": 3, "node_type": "array", "shape": [ROWS, COLS], "data_type": "float64",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": CHUNK}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": "NaN", "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {}, "dimension_names": ["time", "x"],
    });
    std::fs::write(root.join("t/zarr.json"), meta.to_string()).unwrap();
    for ci in 0..ROWS / CHUNK[0] {
        for cj in 0..COLS / CHUNK[1] {
            let mut bytes = Vec::new();
            for r in 0..CHUNK[0] {
                for c in 0..CHUNK[1] {
                    let v = ((ci * CHUNK[0] + r) * COLS + cj * CHUNK[1] + c) as f64;
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
            let p = root.join(format!("t/c/{ci}/{cj}"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
    }
    root
}

mod support;
use support::{add, connect, quiet, wait_for};

fn config(dir: &Path, mirror: MirrorSettings, test: TestSwitches) -> shoal_node::NodeConfig {
    support::config(dir, BLOCK, mirror, test)
}

fn eager(budget: u64) -> MirrorSettings {
    MirrorSettings {
        budget: Budget::Fixed(budget),
        every: Some(Duration::from_secs(1)),
        check: Duration::from_secs(1),
        ..Default::default()
    }
}

async fn start_with(dir: &Path, mirror: MirrorSettings) -> Node {
    Node::start(config(dir, mirror, TestSwitches::default())).await.unwrap()
}

async fn start(dir: &Path) -> Node {
    start_with(dir, quiet()).await
}

fn f64s(b: &[u8]) -> Vec<f64> {
    b.chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn mean_over_time() -> shoal_query::QuerySpec {
    shoal_query::QuerySpec {
        dims: vec!["time".into()],
        ..shoal_query::QuerySpec::new("t", shoal_query::Op::Mean)
    }
}

/// A node holding the test dataset as "grid": the node, the add's report,
/// the source directory (in `tmp`).
async fn grid(tmp: &Path) -> (Node, shoal_node::AddReport, PathBuf) {
    let src = dataset(tmp);
    let node = start(&tmp.join("a")).await;
    let added = node
        .datasets()
        .add(src.clone(), Some("grid".into()), shoal_node::no_progress())
        .await
        .unwrap();
    (node, added, src)
}

const GRID_KEYS: [&str; 6] = ["t/c/0/0", "t/c/0/1", "t/c/1/0", "t/c/1/1", "t/zarr.json", "zarr.json"];

/// The add reports the keys, bytes and blocks of the tree; adding it again stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_counts_its_keys_and_blocks_and_a_second_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, added, src) = grid(tmp.path()).await;
    assert_eq!((added.zarr_format, added.keys), (3, 6));
    let on_disk: u64 = ["zarr.json", "t/zarr.json", "t/c/0/0", "t/c/0/1", "t/c/1/0", "t/c/1/1"]
        .iter()
        .map(|k| std::fs::metadata(src.join(k)).unwrap().len())
        .sum();
    assert_eq!(added.bytes, on_disk);
    assert_eq!(
        added.new_blocks,
        4 * 3 + 1,
        "four 96-byte chunks in 40-byte blocks, and the manifest"
    );
    // Adding again stores nothing new.
    let again = node
        .datasets()
        .add(src.clone(), None, shoal_node::no_progress())
        .await
        .unwrap();
    assert_eq!((again.root, again.new_blocks), (added.root, 0));
    node.shutdown().await.unwrap();
}

/// Listing a dataset, whole or under a path, reads the manifest only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_lists_every_key_or_those_under_a_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, added, _) = grid(tmp.path()).await;
    let target = node.datasets().resolve("grid").await.unwrap();
    assert_eq!((target.root, target.name.as_deref()), (added.root, Some("grid")));
    let all = node.datasets().ls(&target).await.unwrap();
    let keys: Vec<&str> = all.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, GRID_KEYS);
    let under = node
        .datasets()
        .ls(&node.datasets().resolve("grid/t/c/1").await.unwrap())
        .await
        .unwrap();
    assert_eq!(under.entries.len(), 2);
    node.shutdown().await.unwrap();
}

/// A key reads whole or by byte range, as one buffer or streamed per block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reads_whole_or_by_any_range_whole_or_streamed() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, added, src) = grid(tmp.path()).await;
    // A chunk of 96 bytes spans three 40-byte blocks: whole, inside one
    // block, across blocks, clamped past the end, empty.
    let chunk = std::fs::read(src.join("t/c/1/0")).unwrap();
    let whole = node.datasets().read(added.root, "t/c/1/0", None).await.unwrap();
    assert_eq!(&whole[..], &chunk[..]);
    assert_eq!(f64s(&whole)[..3], [24.0, 25.0, 26.0]);
    let opened = node.datasets().open(added.root, "t/c/1/0").await.unwrap();
    assert_eq!(opened.size(), 96);
    for (s, e) in [(0, 8), (3, 39), (35, 85), (41, 80), (80, 500), (96, 200), (10, 10)] {
        let got = node.datasets().read(added.root, "t/c/1/0", Some(s..e)).await.unwrap();
        // The streaming reader (the gateway's): the same bytes, one piece
        // per covered block, whatever the read-ahead.
        for ahead in [1, 2, 8] {
            let pieces: Vec<bytes::Bytes> = opened.stream(s..e, ahead).map(|p| p.unwrap()).collect().await;
            assert_eq!(pieces.concat(), &got[..], "stream {s}..{e} ahead {ahead}");
            assert!(pieces.len() <= 3);
        }
        let (s, e) = (s.min(96) as usize, e.min(96) as usize);
        assert_eq!(&got[..], &chunk[s.min(e)..e], "range {s}..{e}");
    }
    assert!(matches!(
        node.datasets().open(added.root, "t/c").await,
        Err(Error::NotFound(_))
    ));
    node.shutdown().await.unwrap();
}

/// The key tree's directories, the metadata documents and a key's blocks, from the manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_and_metadata_come_from_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, added, src) = grid(tmp.path()).await;
    // Directories of the key tree: immediate children, bounded.
    let top = node.datasets().dir(added.root, "", 100).await.unwrap().unwrap();
    let names: Vec<(&str, bool)> = top.children.iter().map(|c| (c.name.as_str(), c.dir)).collect();
    assert_eq!(names, [("t", true), ("zarr.json", false)]);
    let c = node.datasets().dir(added.root, "t/c", 1).await.unwrap().unwrap();
    assert_eq!(
        (c.children.len(), c.truncated, c.children[0].name.as_str()),
        (1, true, "0")
    );
    assert!(
        node.datasets().dir(added.root, "t/c/0/0", 10).await.unwrap().is_none(),
        "a key is not a directory"
    );
    assert!(node.datasets().dir(added.root, "nope", 10).await.unwrap().is_none());
    // The metadata documents, from the manifest root alone.
    let (format, docs) = node.datasets().metadata(added.root).await.unwrap();
    let doc_keys: Vec<&str> = docs.iter().map(|d| d.0.as_str()).collect();
    assert_eq!((format, doc_keys), (3, vec!["t/zarr.json", "zarr.json"]));
    assert_eq!(docs[1].1, std::fs::read(src.join("zarr.json")).unwrap());
    assert_eq!(
        node.datasets()
            .entry(added.root, "t/c/1/0")
            .await
            .unwrap()
            .blocks()
            .len(),
        3
    );
    node.shutdown().await.unwrap();
}

/// An export writes every key back as it was added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_writes_every_key_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, _, src) = grid(tmp.path()).await;
    let target = node.datasets().resolve("grid").await.unwrap();
    let out = tmp.path().join("out.zarr");
    let exported = node
        .datasets()
        .export(&target, out.clone(), shoal_node::no_progress())
        .await
        .unwrap();
    assert_eq!((exported.keys, exported.fetched.is_none()), (6, true));
    for k in GRID_KEYS {
        assert_eq!(
            std::fs::read(out.join(k)).unwrap(),
            std::fs::read(src.join(k)).unwrap(),
            "{k}"
        );
    }
    node.shutdown().await.unwrap();
}

/// Bad input: clear errors by kind, nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_by_kind_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, added, _) = grid(tmp.path()).await;
    let target = node.datasets().resolve("grid").await.unwrap();
    // Bad input: clear errors by kind, nothing changed.
    let e = node.datasets().resolve("nope").await.unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains("neither a CID nor a dataset name")),
        "{e}"
    );
    let e = node.datasets().read(added.root, "t/c/9/9", None).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    let e = node
        .datasets()
        .add(tmp.path().join("a"), None, shoal_node::no_progress())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadRequest(_)), "{e}");
    let e = node
        .pins()
        .pin(
            &node.datasets().resolve("grid/t").await.unwrap(),
            None,
            None,
            shoal_node::no_progress(),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::BadRequest(m) if m.contains("not a key")), "{e}");
    let e = node
        .datasets()
        .export(&target, tmp.path().join("a"), shoal_node::no_progress())
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains("not empty")), "{e}");
    assert_eq!(node.pins().list().await.unwrap().len(), 1);
    assert!(node.fsck(false).await.unwrap().is_clean());
    node.shutdown().await.unwrap();
}

/// Unpinning by name drops the name; gc then frees everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpin_by_name_drops_the_name_and_gc_then_frees_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, _, _) = grid(tmp.path()).await;
    let target = node.datasets().resolve("grid").await.unwrap();
    // Opened twice: the second lookup answers from the kept manifest.
    let root = target.root;
    for _ in 0..2 {
        let k = node.datasets().open(root, "t/c/0/1").await.unwrap();
        assert_eq!((k.entry().key.as_str(), k.size() > 0), ("t/c/0/1", true));
        let absent = node.datasets().open(root, "t/c/9/9").await;
        assert!(
            matches!(&absent, Err(Error::NotFound(m)) if m.contains("no key")),
            "an absent key must be not found"
        );
    }
    // Unpin by name drops the name too; gc then frees everything.
    let un = node.pins().unpin(&target).await.unwrap();
    assert!(un.changed && un.still_named.is_empty());
    assert!(node.pins().list().await.unwrap().is_empty());
    assert!(node.gc().await.unwrap().removed_blocks > 0);
    assert_eq!(node.stats().await.unwrap().blocks, 0);
    // The kept manifest is not used once its root has left the store: the
    // dataset reads as it would uncached (not here, no peer has it).
    let gone = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        node.datasets().open(root, "t/c/0/1"),
    )
    .await
    .expect("a bounded answer");
    assert!(gone.is_err(), "a collected dataset answered from its kept manifest");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reads_pins_and_queries_what_another_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let src = dataset(tmp.path());
    let a = start(&tmp.path().join("a")).await;
    let b = start(&tmp.path().join("b")).await;
    let c = start(&tmp.path().join("c")).await;
    let root = add(&a, src).await;
    connect(&a, &b).await;
    connect(&a, &c).await;

    // Local query: mean over time of r*6+c is 21+c.
    let here = a
        .queries()
        .query(
            &a.datasets().resolve(&root.to_string()).await.unwrap(),
            mean_over_time(),
        )
        .await
        .unwrap();
    let want: Vec<f64> = (0..COLS).map(|c| 21.0 + c as f64).collect();
    assert_eq!(
        (here.values.clone(), here.chunks_local, here.network_bytes),
        (want.clone(), 4, 0)
    );

    // c holds nothing: a computes, only partials cross.
    let target = c.datasets().resolve(&root.to_string()).await.unwrap();
    let remote = c.queries().query(&target, mean_over_time()).await.unwrap();
    assert_eq!(remote.values, want);
    assert_eq!(remote.chunks_remote, vec![(a.peer_id(), 4)]);
    assert_eq!(remote.chunks_local + remote.chunks_fetched, 0);
    // One request of four chunks, one of them checked here.
    assert_eq!(remote.chunks_checked, 1);

    // b lists and reads from a without pinning, then pins everything.
    let target = b.datasets().resolve(&root.to_string()).await.unwrap();
    assert_eq!(b.datasets().ls(&target).await.unwrap().keys, 6);
    let bytes = b.datasets().read(root, "t/c/0/1", Some(8..16)).await.unwrap();
    assert_eq!(f64s(&bytes), [4.0]);
    let pinned = b
        .pins()
        .pin(&target, Some("copy".into()), None, shoal_node::no_progress())
        .await
        .unwrap();
    let fetched = pinned.fetched.expect("fetched from a");
    // c may serve the blocks of the chunk it checked.
    assert!(fetched.peers_used.contains(&a.peer_id().to_string()), "{fetched:?}");
    assert!(pinned.changed);
    // Now complete on b: a provider that answers (once its announcement
    // has reached the DHT: bounded wait).
    let (cr, bid) = (&c, b.peer_id());
    let providers = wait_for(15, "b to be found as a provider", || async move {
        let p = cr.providers(root).await.unwrap();
        p.contains(&bid).then_some(p)
    })
    .await;
    assert!(
        providers.contains(&a.peer_id()) && providers.contains(&b.peer_id()),
        "{providers:?}: a {}, b {}, c {}",
        a.peer_id(),
        b.peer_id(),
        c.peer_id()
    );
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

/// A node that misbehaves as `liar` says, holding the test dataset, and a
/// connected node that holds nothing: (liar, reader, root, the reader's
/// target for it).
async fn liar_and_reader(dir: &Path, liar: TestSwitches) -> (Node, Node, shoal_core::Cid, shoal_node::Target) {
    let src = dataset(dir);
    let a = Node::start(config(&dir.join("a"), quiet(), liar)).await.unwrap();
    let b = start(&dir.join("b")).await;
    let root = add(&a, src).await;
    connect(&a, &b).await;
    let target = b.datasets().resolve(&root.to_string()).await.unwrap();
    (a, b, root, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_wrong_partials_is_caught_by_the_spot_check_and_the_answer_is_right() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, root, target) = liar_and_reader(
        tmp.path(),
        TestSwitches {
            wrong_partials: true,
            ..Default::default()
        },
    )
    .await;
    // b holds nothing: a is asked to compute; one chunk of every request
    // is also computed at b from verified blocks, a's answer disagrees.
    let r = b.queries().query(&target, mean_over_time()).await.unwrap();
    let want: Vec<f64> = (0..COLS).map(|c| 21.0 + c as f64).collect();
    assert_eq!(r.values, want, "the answer is right despite the liar");
    assert_eq!(r.liars, vec![a.peer_id()]);
    assert!(
        r.chunks_remote.is_empty(),
        "nothing of a's counts: {:?}",
        r.chunks_remote
    );
    assert_eq!(b.compute_liars(), 1);
    // The next query asks a for nothing more (its blocks, which are
    // verified by CID, may still be fetched).
    let again = b.queries().query(&target, mean_over_time()).await.unwrap();
    assert_eq!(
        (again.values, again.liars.len(), again.chunks_remote.len()),
        (want.clone(), 0, 0)
    );
    assert_eq!(b.compute_liars(), 1);
    // Audit mode against an honest peer: every chunk checked, all agree.
    let c = start(&tmp.path().join("c")).await;
    let honest = start(&tmp.path().join("d")).await;
    honest
        .datasets()
        .add(dataset(&tmp.path().join("d-src")), None, shoal_node::no_progress())
        .await
        .unwrap();
    connect(&honest, &c).await;
    let audit = shoal_query::QuerySpec {
        verify_all: true,
        ..mean_over_time()
    };
    let r = c
        .queries()
        .query(&c.datasets().resolve(&root.to_string()).await.unwrap(), audit)
        .await
        .unwrap();
    assert_eq!((r.values, r.liars.len()), (want, 0));
    assert_eq!(
        r.chunks_remote.iter().map(|(_, n)| n).sum::<u64>(),
        4,
        "{:?}",
        r.chunks_remote
    );
    for n in [a, b, c, honest] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_peer_is_never_believed_and_nothing_is_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, _root, target) = liar_and_reader(
        tmp.path(),
        TestSwitches {
            corrupt_served_blocks: true,
            ..Default::default()
        },
    )
    .await;
    let e = b
        .pins()
        .pin(&target, None, None, shoal_node::no_progress())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_) | Error::Unavailable(_)), "{e}");
    assert!(b.pins().list().await.unwrap().is_empty());
    assert_eq!(b.stats().await.unwrap().blocks, 0, "no unverified byte was stored");
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_policy_fills_a_replica_target_and_unpin_cancels_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = dataset(tmp.path());
    let a = start_with(&tmp.path().join("a"), eager(0)).await;
    let b = start_with(&tmp.path().join("b"), eager(1 << 20)).await;
    let root = a
        .datasets()
        .add(src, Some("grid".into()), shoal_node::no_progress())
        .await
        .unwrap()
        .root;
    connect(&a, &b).await;
    let target = a.datasets().resolve("grid").await.unwrap();
    let pinned = a
        .pins()
        .pin(&target, None, Some(2), shoal_node::no_progress())
        .await
        .unwrap();
    assert_eq!(pinned.replicas, Some(2));

    // b hears the target and volunteers (a has no budget).
    let br = &b;
    let mirrored = wait_for(60, "b to mirror the dataset", || async move {
        let view = br.mirrors().view().await.unwrap();
        view.mirrors.iter().find(|m| m.root == root && m.complete).cloned()
    })
    .await;
    assert_eq!(
        mirrored.why.map(|w| (w.reason, w.copies_wanted)),
        Some((shoal_node::Reason::Replicas, 2))
    );
    let pins = b.pins().list().await.unwrap();
    assert_eq!(pins[0].kinds, vec![shoal_store::PinKind::Mirror]);
    assert!(a
        .mirrors()
        .view()
        .await
        .unwrap()
        .targets
        .iter()
        .any(|t| t.root == root && t.copies == 2));

    // Unpinning where the user pin was cancels the target everywhere; b
    // keeps its copy as an ordinary (evictable) mirror.
    let un = a.pins().unpin(&target).await.unwrap();
    assert!(un.target_cancelled);
    wait_for(30, "b to hear the cancellation", || async move {
        let view = br.mirrors().view().await.unwrap();
        view.targets
            .iter()
            .any(|t| t.root == root && t.copies == 0)
            .then_some(())
    })
    .await;
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_of_a_dataset_larger_than_its_manifest_says_is_stopped_and_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start_with(&tmp.path().join("a"), eager(0)).await;
    let b = start_with(&tmp.path().join("b"), eager(1 << 30)).await;
    // A hostile dataset: 24 keys that each claim 1 byte (one block) while
    // each block holds 1 MiB. The manifest adds up (24 bytes); the blocks
    // do not match it.
    let mut builder = shoal_core::manifest::ManifestBuilder::new(3, 4 << 20);
    let meta = bytes::Bytes::from_static(br#"{"zarr_format":3,"node_type":"group"}"#);
    builder
        .push(shoal_core::manifest::Entry {
            key: "zarr.json".into(),
            size: meta.len() as u64,
            content: shoal_core::manifest::Content::Inline(meta),
        })
        .unwrap();
    let mut blocks = Vec::new();
    for i in 0..24u8 {
        let blk = shoal_core::Block::raw(vec![i; 1 << 20]);
        builder
            .push(shoal_core::manifest::Entry {
                key: format!("x/{i:02}"),
                size: 1,
                content: shoal_core::manifest::Content::Blocks(vec![*blk.cid()]),
            })
            .unwrap();
        blocks.push(blk);
    }
    let built = builder.build().unwrap();
    blocks.extend(built.blocks);
    blocks.push(built.root.clone());
    let root = *built.root.cid();
    a.store().put_many(&blocks, None).unwrap();
    connect(&a, &b).await;
    let target = a.datasets().resolve(&root.to_string()).await.unwrap();
    a.pins()
        .pin(&target, None, Some(2), shoal_node::no_progress())
        .await
        .unwrap();

    // b volunteers, fetches past what the manifest promised, stops, rolls
    // back and reports it.
    let br = &b;
    let failed = wait_for(60, "b to give up the mirror", || async move {
        let view = br.mirrors().view().await.unwrap();
        view.failed.iter().find(|f| f.root == root).map(|f| f.error.clone())
    })
    .await;
    assert!(failed.contains("larger than its manifest said"), "{failed}");
    assert!(b.pins().list().await.unwrap().is_empty());
    let held = b.stats().await.unwrap().live_bytes;
    assert!(held < 1 << 20, "b kept {held} bytes of the failed mirror");
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_adding_a_name_reads_only_changed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = dataset(tmp.path());
    let node = start(&tmp.path().join("a")).await;
    let add = |node: &Node, rehash: bool| {
        let (node, src) = (node.clone(), src.clone());
        async move {
            let opts = shoal_node::AddOptions { rehash, keep: None };
            node.datasets()
                .add_with(src, Some("grid".into()), opts, shoal_node::no_progress())
                .await
                .unwrap()
        }
    };
    let first = add(&node, false).await;
    assert_eq!(first.reused_files, 0);
    let again = add(&node, false).await;
    assert_eq!((again.root, again.reused_files, again.new_blocks), (first.root, 4, 0));
    assert_eq!(add(&node, true).await.reused_files, 0, "--rehash reads everything");
    // One chunk rewritten (same size, later mtime) is the only file read.
    std::thread::sleep(Duration::from_millis(20));
    let chunk = src.join("t/c/1/1");
    let mut data = std::fs::read(&chunk).unwrap();
    data[0] ^= 1;
    std::fs::write(&chunk, &data).unwrap();
    let changed = add(&node, false).await;
    assert_eq!(changed.reused_files, 3);
    assert_ne!(changed.root, first.root);
    assert_eq!(node.datasets().read(changed.root, "t/c/1/1", None).await.unwrap(), data);
    node.shutdown().await.unwrap();
}

/// A dataset pinned by twelve daemons gone since leaves more provider
/// records than a fetch asks (eight): a new daemon connected to the one
/// live provider still pins it (the cut itself is unit-tested in
/// shoal-net's fetch: connected providers first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_stale_provider_records_never_push_out_the_live_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = TestSwitches {
        serve_delay: Duration::from_millis(300),
        ..Default::default()
    };
    let a = Node::start(config(&tmp.path().join("a"), quiet(), slow)).await.unwrap();
    let root = add(&a, dataset(tmp.path())).await;
    let target = a.datasets().resolve(&root.to_string()).await.unwrap();
    for i in 0..12 {
        let gone = start(&tmp.path().join(format!("gone{i}"))).await;
        connect(&a, &gone).await;
        let stored = || {
            a.net_stats()
                .provider_records_stored
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let before = stored();
        gone.pins()
            .pin(&target, None, None, shoal_node::no_progress())
            .await
            .unwrap();
        // Its announcement reached a before it goes.
        wait_for(20, "a to store gone's provider record", || async {
            (stored() > before).then_some(())
        })
        .await;
        gone.shutdown().await.unwrap();
    }
    for i in 0..3 {
        let b = start(&tmp.path().join(format!("b{i}"))).await;
        connect(&a, &b).await;
        let report = b.pins().pin(&target, None, None, shoal_node::no_progress()).await;
        assert!(report.is_ok(), "pin {i}: {:?}", report.err());
        b.shutdown().await.unwrap();
    }
}

/// Issue 29: `pins` in pages. Each page continues after the last root of
/// the one before; the pages together are the whole list, in its order
/// (by names, then root: unnamed pins first), a named-but-unpinned
/// dataset included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_page_through_the_whole_list_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path()).await;
    for i in 0..7u32 {
        let src = tmp.path().join(format!("src{i}"));
        std::fs::create_dir_all(&src).unwrap();
        let ds = dataset(&src);
        // Distinct datasets: a different group attribute each.
        std::fs::write(
            ds.join("zarr.json"),
            format!(r#"{{"zarr_format":3,"node_type":"group","attributes":{{"i":{i}}}}}"#),
        )
        .unwrap();
        // Names out of insertion order; two unnamed.
        let name = (i >= 2).then(|| format!("ds-{}", 9 - i));
        node.datasets().add(ds, name, shoal_node::no_progress()).await.unwrap();
    }
    // One named dataset whose pin is gone: still listed (its name keeps it).
    let root3 = node.datasets().resolve("ds-3").await.unwrap().root;
    let by_cid = node.datasets().resolve(&root3.to_string()).await.unwrap();
    let un = node.pins().unpin(&by_cid).await.unwrap();
    assert_eq!(un.still_named, ["ds-3"]);
    let all = node.pins().list().await.unwrap();
    assert_eq!(all.len(), 7);
    let names: Vec<Vec<String>> = all.iter().map(|p| p.names.clone()).collect();
    assert!(names[0].is_empty() && names[1].is_empty(), "{names:?}");
    let named_order: Vec<&str> = names[2..].iter().map(|n| n[0].as_str()).collect();
    assert_eq!(named_order, ["ds-3", "ds-4", "ds-5", "ds-6", "ds-7"]);
    assert!(all[2].kinds.is_empty() && !all[3].kinds.is_empty());
    for size in [1, 2, 3, 7, 100] {
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = node.pins().page(after, size).await.unwrap();
            assert!(page.len() <= size);
            after = page.last().map(|p| p.root);
            let last = page.len() < size;
            paged.extend(page);
            if last {
                break;
            }
        }
        let roots = |v: &[shoal_node::PinEntry]| v.iter().map(|p| p.root).collect::<Vec<_>>();
        assert_eq!(roots(&paged), roots(&all), "pages of {size}");
        assert!(
            paged.iter().all(|p| p.bytes > 0 && p.keys > 0),
            "sizes are read for each page"
        );
    }
    node.shutdown().await.unwrap();
}
