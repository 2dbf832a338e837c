//! Helpers shared by the network tests.
#![allow(dead_code)]

pub mod delay;

use std::time::Duration;

use shoal_net::Client;

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
