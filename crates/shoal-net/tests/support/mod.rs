//! Helpers shared by the network tests.
#![allow(dead_code)]

pub mod delay;

use std::sync::Arc;
use std::time::Duration;

use shoal_net::{Client, ComputeFn, EventLoop, NetConfig, ServeFn, SwarmSettings};

#[path = "../../../shoal-node/tests/support/wait.rs"]
mod wait;
#[allow(unused_imports)] // not every suite waits
pub use wait::wait_for;

/// A swarm on loopback (any port) answering blocks with `serve`, compute
/// requests with `compute`, gossip off; `tweak` adjusts its settings.
pub fn swarm_with(serve: ServeFn, compute: ComputeFn, tweak: impl FnOnce(&mut SwarmSettings)) -> Client {
    let mut s = SwarmSettings::new(
        shoal_net::Keypair::generate_ed25519(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
    );
    tweak(&mut s);
    let (client, ev) = EventLoop::new(NetConfig {
        swarm: s,
        serve,
        compute,
        gossip: None,
        names: None,
        catalogue: None,
        gossip_heartbeat: Duration::from_secs(1),
    })
    .unwrap();
    tokio::spawn(ev.run());
    client
}

/// A swarm answering blocks with `serve` and every compute request "busy".
pub fn swarm(serve: ServeFn) -> Client {
    swarm_with(serve, busy(), |_| {})
}

/// Serves nothing: every block "don't have".
pub fn serves_nothing() -> ServeFn {
    Arc::new(|_, _, c| vec![None; c.len()])
}

/// Answers every compute request "busy" (empty).
pub fn busy() -> ComputeFn {
    Arc::new(|_, _| Vec::new())
}

/// The first listen address of a swarm, once its listener is up (bounded
/// wait: the event loop binds after it starts).
pub async fn listening(c: &Client) -> shoal_net::Multiaddr {
    for _ in 0..500 {
        if let Some(a) = c.listen_addrs().await.unwrap().into_iter().next() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no listen address after 5 s");
}
