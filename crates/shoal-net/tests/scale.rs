//! Issue 29: a node providing 20,000 datasets keeps every one findable
//! through the DHT, by a node that knows only a bootstrap peer, even after
//! the provider has gone (the records live on the peers closest to each
//! key), and a flood of provider records from a third peer changes none
//! of that: the holders' stores stay within their bound and the flood
//! displaces the flooder's own records first.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_net::Client;
use support::{busy, listening, serves_nothing, swarm_with, wait_for};

const HELD: usize = 20_000;
const FLOOD: u32 = 100_000;
const BOUND: usize = 60_000;

fn node() -> Client {
    swarm_with(serves_nothing(), busy(), |s| s.max_remote_provider_records = BOUND)
}

fn root(i: u32) -> shoal_core::Cid {
    *shoal_core::Block::dag_cbor(i.to_be_bytes().to_vec()).cid()
}

async fn provide_all(c: &Client, roots: impl Iterator<Item = shoal_core::Cid>, n: u64, what: &str) {
    for r in roots {
        c.provide(r).await.unwrap();
    }
    wait_for(120, what, || async {
        (c.stats().provides_done.load(Ordering::Relaxed) >= n).then_some(())
    })
    .await;
}

/// How many of `sample` `finder` finds with `provider` among the providers.
async fn found(finder: &Client, provider: shoal_net::PeerId, sample: &[shoal_core::Cid]) -> usize {
    let mut n = 0;
    for batch in sample.chunks(20) {
        let got =
            futures::future::join_all(batch.iter().map(|r| finder.find_providers(*r, Duration::from_secs(20)))).await;
        n += got
            .into_iter()
            .filter(|f| f.as_ref().unwrap().contains(&provider))
            .count();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_datasets_stay_findable_through_the_dht_and_a_flood_changes_nothing() {
    let boot = node();
    let boot_addr = listening(&boot).await;
    let holders: Vec<Client> = (0..4).map(|_| node()).collect();
    let (provider, finder, flooder) = (node(), node(), node());
    for c in holders.iter().chain([&provider, &finder, &flooder]) {
        listening(c).await;
        c.dial(boot_addr.clone()).await.unwrap();
    }
    // Every node learns the others through the bootstrap node.
    wait_for(30, "routing tables to fill", || async {
        (provider.peers().await.unwrap().len() >= 5).then_some(())
    })
    .await;

    let held: Vec<shoal_core::Cid> = (0..HELD as u32).map(root).collect();
    provide_all(&provider, held.iter().copied(), HELD as u64, "the provider's sweep").await;
    let p = provider.peer_id();
    let stats = provider.stats();
    // A region lookup or two and a batch per peer, not a lookup per key.
    let lookups = stats.provide_lookups.load(Ordering::Relaxed);
    assert!(lookups < 100, "{lookups} lookups for {HELD} keys");
    let held_by_others: u64 = holders
        .iter()
        .chain([&boot, &finder, &flooder])
        .map(|h| h.stats().provider_records_held.load(Ordering::Relaxed))
        .sum();
    assert!(
        held_by_others >= HELD as u64 * 6,
        "records held by peers: {held_by_others}"
    );

    // A random sample (fixed seed), found through the DHT.
    let mut x: u64 = 0x2929_5eed;
    let sample: Vec<shoal_core::Cid> = (0..200)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            held[(x % HELD as u64) as usize]
        })
        .collect();
    assert_eq!(found(&finder, p, &sample).await, 200);

    // The provider goes: its records on its peers still answer.
    drop(provider);
    wait_for(20, "the provider's connections to close", || async {
        (!finder.is_connected(p).await.unwrap() && !boot.is_connected(p).await.unwrap()).then_some(())
    })
    .await;
    assert_eq!(found(&finder, p, &sample).await, 200);

    // A flood: a third peer announces 100,000 made-up datasets.
    provide_all(
        &flooder,
        (1_000_000..1_000_000 + FLOOD).map(root),
        FLOOD as u64,
        "the flood",
    )
    .await;
    for h in holders.iter().chain([&boot, &finder]) {
        let n = h.stats().provider_records_held.load(Ordering::Relaxed);
        assert!(n <= BOUND as u64, "a store holds {n} records, over its bound {BOUND}");
    }
    assert_eq!(found(&finder, p, &sample).await, 200);
}
