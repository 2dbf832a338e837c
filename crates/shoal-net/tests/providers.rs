//! Regression (hardening 5): a node provides more than 1,024 datasets, and
//! a peer flooding it with provider records for made-up keys neither stops
//! its own provides nor grows its memory without bound.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_net::Client;
use support::{busy, listening, serves_nothing, swarm_with};

fn swarm(max_remote: usize) -> Client {
    swarm_with(serves_nothing(), busy(), |s| s.max_remote_provider_keys = max_remote)
}

fn root(i: u32) -> shoal_core::Cid {
    *shoal_core::Block::dag_cbor(i.to_be_bytes().to_vec()).cid()
}

async fn all_found(finder: &Client, provider: &Client, roots: &[shoal_core::Cid]) {
    for batch in roots.chunks(100) {
        let found =
            futures::future::join_all(batch.iter().map(|r| finder.find_providers(*r, Duration::from_secs(10)))).await;
        for (r, f) in batch.iter().zip(found) {
            assert!(f.unwrap().contains(&provider.peer_id()), "{r} not found");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_datasets_are_findable_and_a_provider_flood_changes_nothing() {
    let a = swarm(500);
    let b = swarm(1 << 14);
    let addr = listening(&a).await;
    b.dial(addr.clone()).await.unwrap();
    let mine: Vec<shoal_core::Cid> = (0..1100).map(root).collect();
    for r in &mine {
        a.provide(*r).await.unwrap();
    }
    all_found(&b, &a, &mine).await;

    // A flood: a peer announces 3,000 made-up datasets to A.
    let evil = swarm(1 << 14);
    evil.dial(addr).await.unwrap();
    for i in 0..3000 {
        evil.provide(root(1_000_000 + i)).await.unwrap();
    }
    // Wait (bounded) until A has heard the flood: it finds the evil peer
    // as provider of the last made-up key.
    let last = root(1_000_000 + 2999);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !a
        .find_providers(last, Duration::from_secs(5))
        .await
        .unwrap()
        .contains(&evil.peer_id())
    {
        assert!(std::time::Instant::now() < deadline, "A never heard the flood");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A still provides everything it held, and new datasets too.
    let new: Vec<shoal_core::Cid> = (5000..5100).map(root).collect();
    for r in &new {
        a.provide(*r).await.unwrap();
    }
    all_found(&b, &a, &mine).await;
    all_found(&b, &a, &new).await;
    assert_eq!(a.stats().provide_failures.load(Ordering::Relaxed), 0);
}

/// Peers' provider records are kept where the DHT puts them (record
/// filtering, on for name records, hands them to the node, which must
/// store them): with the provider gone, a node that knows only the peer
/// holding its record still finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_record_outlives_it_on_the_peer_that_holds_it() {
    let (a, b, c) = (swarm(1 << 14), swarm(1 << 14), swarm(1 << 14));
    let b_addr = listening(&b).await;
    a.dial(b_addr.clone()).await.unwrap();
    let r = root(42);
    let a_id = a.peer_id();
    a.provide(r).await.unwrap();
    // Wait (bounded) until B holds A's record: B finds A without asking A.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !b
        .find_providers(r, Duration::from_secs(5))
        .await
        .unwrap()
        .contains(&a_id)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "B never heard A's provider record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B may have found A by asking A itself: give A's ADD_PROVIDER (sent
    // right after its closest-peers query) time to land before A goes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.dial(b_addr).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = c.find_providers(r, Duration::from_secs(5)).await.unwrap();
        if found.contains(&a_id) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the record did not stay on B: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
