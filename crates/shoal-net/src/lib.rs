//! shoal-net: the peer-to-peer network.
//!
//! - [`network`]: one task ([`EventLoop`]) owns the libp2p `Swarm`; the rest
//!   of the daemon holds a cheap [`Client`] that sends commands over a bounded
//!   channel and awaits each reply on a oneshot. Pending dials, queries and
//!   requests live in maps keyed by their ids.
//! - [`codec`]: the bounded block-exchange protocol.
//! - [`providers`], [`sweep`]: the bounded, persistent provider record
//!   store, and providing by keyspace region (a lookup per region and a
//!   batch per peer per cycle, not a lookup per dataset).
//! - [`gossip`]: the bounded popularity report shared over gossipsub.
//! - [`names`]: signed, sequence-numbered name records (publish/follow),
//!   on the DHT and on a gossipsub topic per name.
//! - [`catalogue`]: catalogue entries (a signed summary of a published
//!   version), on one gossipsub topic every daemon hears.
//! - [`bitswap`]: bitswap 1.2.0/1.1.0/1.0.0 served to IPFS nodes (helia,
//!   kubo) from the same verified reads, bounded like `/shoal/blocks`.
//! - [`fetch`]: fetching a whole dataset (manifest, then every block) from
//!   several providers at once, verifying every block, and a [`BlockSource`]
//!   (local store, then peers) with collapsed concurrent fetches.
//!
//! Peers are untrusted: every message is size-bounded before allocation,
//! every block is verified against its CID before it is stored or used, a
//! peer that sends wrong bytes is disconnected and banned, every wait has a
//! deadline, and in-flight work is bounded per peer and overall.

pub mod bitswap;
pub mod catalogue;
pub mod codec;
pub mod fetch;
pub mod gossip;
pub mod names;
pub mod network;
pub mod providers;
mod shared;
pub mod sweep;
mod tls;

pub use fetch::{BlockSource, CorruptFn, FetchOptions, FetchReport, Fetcher, LinkReport, SourceStats};
pub use libp2p::identity::Keypair;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::pnet::PreSharedKey;
pub use libp2p::{Multiaddr, PeerId};
pub use network::{
    CatalogueFn, Client, ComputeFn, EventLoop, GossipFn, NameFn, NetConfig, NetStats, PeerInfo, ServeFn, SwarmSettings,
    Verdict,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dial {addr} failed: {reason}")]
    Dial { addr: String, reason: String },
    #[error("request to peer {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("request to peer {peer} timed out after {secs}s")]
    Timeout { peer: PeerId, secs: u64 },
    #[error("no peer provides dataset {cid} (DHT search over {peers} connected peers ended after {secs:.1}s); is a daemon holding it online and connected (shoal connect)?")]
    NoProviders {
        cid: shoal_core::Cid,
        secs: f64,
        peers: usize,
    },
    #[error(
        "dataset {root}: {missing} blocks could not be fetched from any of {providers} providers (first: {first})"
    )]
    Unfetchable {
        root: shoal_core::Cid,
        missing: usize,
        providers: usize,
        first: shoal_core::Cid,
    },
    #[error("block {cid} is unavailable: {reason}")]
    Unavailable { cid: shoal_core::Cid, reason: String },
    #[error("dataset {root} holds more than the {max} bytes this fetch may take; stopped")]
    OverBudget { root: shoal_core::Cid, max: u64 },
    #[error("the network task has stopped")]
    Stopped,
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] shoal_store::Error),
    #[error(transparent)]
    Core(#[from] shoal_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
