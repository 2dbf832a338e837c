//! A provider that answers every request "skipped" (it is at its inbound
//! limit, here because other peers hold all its slots) must not make a
//! fetch spin: the fetcher pauses it, longer each time, and gives up when
//! nothing has arrived for its deadline.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use shoal_net::codec::Answer;
use shoal_net::network::{BLOCKS_PER_RESPONSE, MAX_INBOUND_INFLIGHT, MAX_INBOUND_PER_PEER};
use shoal_net::{FetchOptions, Fetcher, ServeFn};
use support::{listening, serves_nothing, swarm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_only_skips_is_paused_and_the_fetch_ends() {
    // The provider's handler holds every request until released (at most
    // 30 s), so a few greedy peers fill all of its inbound slots.
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let serve: ServeFn = {
        let gate = gate.clone();
        Arc::new(move |_, _, cids| {
            let (open, cv) = &*gate;
            let g = open.lock().unwrap();
            let _g = cv.wait_timeout_while(g, Duration::from_secs(30), |o| !*o).unwrap();
            vec![None; cids.len()]
        })
    };
    let provider = swarm(serve);
    let addr = listening(&provider).await;
    let root = *shoal_core::Block::dag_cbor(b"a manifest nobody can get".to_vec()).cid();
    provider.provide(root).await.unwrap();
    let quiet = serves_nothing();
    let mut hogs = Vec::new();
    // Each greedy peer fills its own share with full-size requests.
    let full: Vec<shoal_core::Cid> = (0..BLOCKS_PER_RESPONSE as u32)
        .map(|i| *shoal_core::Block::raw(i.to_le_bytes().to_vec()).cid())
        .collect();
    for _ in 0..MAX_INBOUND_INFLIGHT / MAX_INBOUND_PER_PEER {
        let hog = swarm(quiet.clone());
        let p = hog.dial(addr.clone()).await.unwrap();
        for _ in 0..MAX_INBOUND_PER_PEER / BLOCKS_PER_RESPONSE {
            let (h, cids) = (hog.clone(), full.clone());
            hogs.push(tokio::spawn(async move { h.request(p, None, cids).await }));
        }
    }
    // Wait (bounded) until the provider is full: a probe gets "skipped".
    let probe = swarm(quiet.clone());
    let p = probe.dial(addr.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = probe.request(p, None, vec![root]).await.unwrap();
        if matches!(r.answers[0].1, Answer::Skipped) {
            break;
        }
        assert!(Instant::now() < deadline, "the provider never filled up");
    }

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(shoal_store::Store::open(dir.path(), Default::default()).unwrap());
    let net = swarm(quiet);
    net.dial(addr).await.unwrap();
    let fetcher = Fetcher {
        net,
        store: store.clone(),
        opts: FetchOptions {
            provider_timeout: Duration::from_secs(5),
            block_deadline: Duration::from_secs(3),
            ..Default::default()
        },
    };
    let before = provider.stats().skipped_requests.load(Ordering::Relaxed);
    let started = Instant::now();
    let session = store.session();
    let err = fetcher.fetch_dataset(root, &session, &|_| {}).await.unwrap_err();
    let took = started.elapsed();
    let asked = provider.stats().skipped_requests.load(Ordering::Relaxed) - before;
    assert!(err.to_string().contains("could not be fetched"), "{err}");
    assert!(took < Duration::from_secs(20), "the fetch took {took:?}");
    // Paused 50 ms, 100 ms, ... 2 s between busy answers: a handful of
    // requests in 3 s, where a spinning fetcher sends thousands.
    assert!(asked <= 40, "{asked} requests to a busy provider in {took:?}");
    assert!(store.stats().unwrap().blocks == 0);
    // Release the provider's held requests.
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    for h in hogs {
        let _ = h.await;
    }
}
