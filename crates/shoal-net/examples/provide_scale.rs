//! Providing at catalogue scale (issue 29): N swarms in this process, on
//! loopback TCP, running the daemon's network code. One node announces M
//! new datasets; printed per M: the time until every announcement
//! finished, the DHT lookups and requests it cost, the provider records
//! the other nodes now hold (the load it put on them), and how many of a
//! random sample another node finds, with the lookup latency.
//!
//! usage: provide_scale [NODES] [M,M,...] [SAMPLE] [DEADLINE_SECS]
//! (defaults 20, 1000,10000,100000, 200, 900)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shoal_net::Client;

#[path = "../tests/support/mod.rs"]
mod support;

fn node() -> Client {
    support::swarm_with(support::serves_nothing(), support::busy(), |_| {})
}

async fn listening(c: &Client) -> shoal_net::Multiaddr {
    support::listening(c).await.with(shoal_net::Protocol::P2p(c.peer_id()))
}

fn root(i: u64) -> shoal_core::Cid {
    *shoal_core::Block::dag_cbor(i.to_be_bytes().to_vec()).cid()
}

/// xorshift64: a reproducible sample without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn stored(nodes: &[Client]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| n.stats().provider_records_stored.load(Ordering::Relaxed))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(20, |a| a.parse().unwrap());
    let counts: Vec<u64> = args
        .get(2)
        .map_or("1000,10000,100000", |s| s.as_str())
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    let sample: usize = args.get(3).map_or(200, |a| a.parse().unwrap());
    let deadline = Duration::from_secs(args.get(4).map_or(900, |a| a.parse().unwrap()));

    let nodes: Vec<Client> = (0..n).map(|_| node()).collect();
    let boot = listening(&nodes[0]).await;
    for c in &nodes[1..] {
        listening(c).await;
        c.dial(boot.clone()).await.unwrap();
    }
    // Let the DHT bootstrap settle: every node learns its neighbourhood.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (provider, finder) = (&nodes[1], &nodes[n - 1]);
    println!(
        "nodes {n}; provider {}; finder {}",
        provider.peer_id(),
        finder.peer_id()
    );
    println!(
        "{:>8} {:>10} {:>9} {:>10} {:>12} {:>12} {:>9} {:>9}",
        "roots", "provide s", "lookups", "requests", "records held", "max on one", "found", "find p50"
    );
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut next = 0u64;
    for &m in &counts {
        let roots: Vec<shoal_core::Cid> = (next..next + m).map(root).collect();
        next += m;
        let s = provider.stats();
        let (l0, q0, d0) = (
            s.provide_lookups.load(Ordering::Relaxed),
            s.provide_messages.load(Ordering::Relaxed),
            s.provides_done.load(Ordering::Relaxed),
        );
        let held0 = stored(&nodes);
        let t = Instant::now();
        for r in &roots {
            provider.provide(*r).await.unwrap();
        }
        let mut done = 0;
        while t.elapsed() < deadline {
            done = s.provides_done.load(Ordering::Relaxed) - d0;
            if done >= m {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let lookups = s.provide_lookups.load(Ordering::Relaxed) - l0;
        let requests = s.provide_messages.load(Ordering::Relaxed) - q0;
        let held: Vec<u64> = stored(&nodes).iter().zip(&held0).map(|(a, b)| a - b).collect();
        let picks: Vec<shoal_core::Cid> = (0..sample).map(|_| roots[(rng.next() % m) as usize]).collect();
        let mut lat = Vec::new();
        let mut found = 0;
        for batch in picks.chunks(20) {
            let res = futures::future::join_all(batch.iter().map(|r| async move {
                let t = Instant::now();
                let f = finder.find_providers(*r, Duration::from_secs(10)).await.unwrap();
                (f.contains(&provider.peer_id()), t.elapsed())
            }))
            .await;
            for (ok, d) in res {
                found += ok as usize;
                lat.push(d);
            }
        }
        lat.sort();
        let finished = if done >= m {
            format!("{secs:.2}")
        } else {
            format!(">{secs:.0} ({done} done)")
        };
        println!(
            "{:>8} {:>10} {:>9} {:>10} {:>12} {:>12} {:>5}/{:<3} {:>7.1}ms",
            m,
            finished,
            lookups,
            requests,
            held.iter().sum::<u64>(),
            held.iter().max().unwrap(),
            found,
            sample,
            lat[lat.len() / 2].as_secs_f64() * 1000.0
        );
    }
}
