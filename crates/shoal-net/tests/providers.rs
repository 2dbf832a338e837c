//! Regression (hardening 5): a node provides more than 1,024 datasets, and
//! a peer flooding it with provider records for made-up keys neither stops
//! its own provides nor grows its memory without bound.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_net::Client;
use support::{busy, listening, serves_nothing, swarm_with, wait_for};

fn swarm(max_remote: usize) -> Client {
    swarm_with(serves_nothing(), busy(), |s| s.max_remote_provider_records = max_remote)
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
    wait_for(60, "A to hear the flood", || async {
        let found = a.find_providers(last, Duration::from_secs(5)).await.unwrap();
        found.contains(&evil.peer_id()).then_some(())
    })
    .await;
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
    // Wait until B has stored A's record (the event: B counts every
    // peer's provider record it stores), not merely found A by asking A.
    let stored = || b.stats().provider_records_stored.load(Ordering::Relaxed);
    wait_for(30, "B to store A's provider record", || async {
        (stored() > 0).then_some(())
    })
    .await;
    drop(a);
    wait_for(20, "A's connection to B to close", || async {
        (!b.is_connected(a_id).await.unwrap()).then_some(())
    })
    .await;
    c.dial(b_addr).await.unwrap();
    let found = wait_for(20, "C to find A's record on B", || async {
        let found = c.find_providers(r, Duration::from_secs(5)).await.unwrap();
        found.contains(&a_id).then_some(found)
    })
    .await;
    assert!(found.contains(&a_id));
}
