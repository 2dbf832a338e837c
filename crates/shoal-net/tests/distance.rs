//! Fetching across a distance: a provider behind a 50 ms round trip (the
//! delay proxy in tests/support), and one that stops answering. No timing
//! assertions: what is checked is what the fetcher keeps in flight, read
//! from the per-provider link report it returns.

mod support;

use support::{delay, listening, serves_nothing, swarm};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal_core::manifest::{Content, Entry, ManifestBuilder};
use shoal_core::{Block, Cid};
use shoal_net::{Client, FetchOptions, Fetcher, ServeFn};

/// A dataset of `n` 1 MiB blocks: (root, every block by CID).
fn dataset(n: u32) -> (Cid, HashMap<Cid, Block>) {
    let mut b = ManifestBuilder::new(3, 1 << 20);
    let mut blocks = HashMap::new();
    for i in 0..n {
        let mut data = vec![0u8; 1 << 20];
        blake3::Hasher::new()
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut data);
        let blk = Block::raw(Bytes::from(data));
        b.push(Entry {
            key: format!("x/{i}"),
            size: 1 << 20,
            content: Content::Blocks(vec![*blk.cid()]),
        })
        .unwrap();
        blocks.insert(*blk.cid(), blk);
    }
    let built = b.build().unwrap();
    for blk in built.blocks.iter().chain(std::iter::once(&built.root)) {
        blocks.insert(*blk.cid(), blk.clone());
    }
    (*built.root.cid(), blocks)
}

/// Serves `blocks` by CID.
fn serving(blocks: &Arc<HashMap<Cid, Block>>) -> ServeFn {
    let blocks = blocks.clone();
    Arc::new(move |_, _, cids| cids.iter().map(|c| blocks.get(c).map(|b| b.data().clone())).collect())
}

/// A fetcher with an empty store, connected to `provider` through a proxy
/// adding `rtt` of round trip.
async fn fetcher_via(
    provider: &Client,
    rtt: Duration,
    rate: Option<u64>,
    opts: FetchOptions,
) -> (Fetcher, delay::DelayProxy, tempfile::TempDir) {
    let real = listening(provider).await;
    let port = real.iter().find_map(|p| match p {
        shoal_net::Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    let target = format!("127.0.0.1:{}", port.unwrap()).parse().unwrap();
    let proxy = delay::start("127.0.0.1:0".parse().unwrap(), target, rtt / 2, rate)
        .await
        .unwrap();
    let net = swarm(serves_nothing());
    let via: shoal_net::Multiaddr = format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", proxy.addr.port(), provider.peer_id())
        .parse()
        .unwrap();
    net.dial(via).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(shoal_store::Store::open(dir.path(), Default::default()).unwrap());
    (Fetcher { net, store, opts }, proxy, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_50_ms_the_fetcher_keeps_the_bandwidth_delay_product_in_flight() {
    let (root, blocks) = dataset(96);
    let provider = swarm(serving(&Arc::new(blocks)));
    provider.provide(root).await.unwrap();
    let (fetcher, _proxy, _dir) =
        fetcher_via(&provider, Duration::from_millis(50), None, FetchOptions::default()).await;
    let session = fetcher.store.session();
    let report = fetcher.fetch_dataset(root, &session, &|_| {}).await.unwrap();
    assert!(fetcher.store.missing_blocks(&root).unwrap().is_empty());
    let link = &report.links[0];
    let bdp = link.bdp.expect("the link was measured");
    let rtt = link.min_rtt_ms.unwrap();
    eprintln!(
        "50 ms link: rtt floor {rtt:.0} ms, best rate {:.0} MB/s, bdp {:.1} MB, peak in flight {:.1} MB",
        link.max_rate / 1e6,
        bdp as f64 / 1e6,
        link.peak_inflight as f64 / 1e6
    );
    assert!(rtt >= 50.0, "the proxy's delay was not seen: {rtt} ms");
    assert!(
        link.peak_inflight >= bdp,
        "{} bytes in flight for a {bdp}-byte BDP",
        link.peak_inflight
    );
    assert!(link.peak_inflight <= shoal_net::fetch::MAX_INFLIGHT_BYTES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_stops_answering_never_gets_more_than_the_window() {
    let (root, blocks) = dataset(200);
    let root_block = blocks[&root].clone();
    // Answers the manifest root, then holds every request until the test
    // has seen the fetch give up (its 3 s deadline; at most 30 s, so the
    // handlers end by themselves), counting how many it holds at once.
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Arc::new(std::sync::Mutex::new(held));
    let serve: ServeFn = {
        let (now, peak) = (now.clone(), peak.clone());
        Arc::new(move |_, _, cids| {
            if cids == [root] {
                return vec![Some(root_block.data().clone())];
            }
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            // Released (or the sender dropped) when the test has its answer.
            let _ = held.lock().unwrap().recv_timeout(Duration::from_secs(30));
            now.fetch_sub(1, Ordering::SeqCst);
            vec![None; cids.len()]
        })
    };
    let provider = swarm(serve);
    provider.provide(root).await.unwrap();
    let opts = FetchOptions {
        block_deadline: Duration::from_secs(3),
        ..Default::default()
    };
    let start = opts.per_peer_inflight;
    let (fetcher, _proxy, _dir) = fetcher_via(&provider, Duration::from_millis(50), None, opts).await;
    let session = fetcher.store.session();
    let err = fetcher.fetch_dataset(root, &session, &|_| {}).await.unwrap_err();
    assert!(err.to_string().contains("could not be fetched"), "{err}");
    // 200 blocks were wanted (25 requests); the provider never held more
    // than the fetcher's starting window, and was never pushed past its
    // own bound (nothing answered "skipped").
    drop(release);
    let held = peak.load(Ordering::SeqCst);
    assert!((1..=start).contains(&held), "{held} requests outstanding at once");
    assert_eq!(provider.stats().skipped_requests.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_costs_the_fetch_nothing_once_the_fast_one_runs_dry() {
    // 100 blocks: more than one provider's first window (64), so both get
    // work. The slow one sits behind 50 ms and 1 MB/s: each 8-block answer
    // would take 8 s. The fast one is on loopback.
    let (root, blocks) = dataset(100);
    let blocks = Arc::new(blocks);
    let (fast, slow) = (swarm(serving(&blocks)), swarm(serving(&blocks)));
    fast.provide(root).await.unwrap();
    slow.provide(root).await.unwrap();
    let (fetcher, _proxy, _dir) = fetcher_via(
        &slow,
        Duration::from_millis(50),
        Some(1_000_000),
        FetchOptions::default(),
    )
    .await;
    let direct = listening(&fast).await.with(shoal_net::Protocol::P2p(fast.peer_id()));
    fetcher.net.dial(direct).await.unwrap();
    let session = fetcher.store.session();
    let report = fetcher.fetch_dataset(root, &session, &|_| {}).await.unwrap();
    assert!(fetcher.store.missing_blocks(&root).unwrap().is_empty());
    let link = |p: shoal_net::PeerId| report.links.iter().find(|l| l.peer == p.to_string()).cloned();
    let (f, s) = (
        link(fast.peer_id()).unwrap(),
        link(slow.peer_id()).expect("the slow provider was asked"),
    );
    eprintln!(
        "fast delivered {} bytes, slow {} (peak in flight {})",
        f.bytes, s.bytes, s.peak_inflight
    );
    // The slow provider was handed work (its first window), yet delivered
    // at most half of it (at 1 MB/s, half would take 30 s): in the endgame
    // the fast one asked for what the slow one still owed, and the fetch
    // ended without waiting for it.
    assert!(s.peak_inflight >= 8 << 20, "{s:?}");
    assert_eq!(f.bytes + s.bytes, report.bytes_fetched);
    assert!(
        s.bytes <= s.peak_inflight / 2,
        "the fast provider did not take over the slow one's blocks: {f:?} {s:?}"
    );
}
