//! What the event loop and the bitswap server share: the handler that
//! reads blocks to serve, and the network's counters. A leaf: it imports
//! no other module of the crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libp2p::PeerId;
use shoal_core::Cid;

/// Serves a block request from local data: for each CID, its bytes or None.
/// The second argument is the dataset root the requester named.
pub type ServeFn = Arc<dyn Fn(&PeerId, Option<&Cid>, &[Cid]) -> Vec<Option<bytes::Bytes>> + Send + Sync>;

#[derive(Debug, Default)]
pub struct NetStats {
    /// Serve or compute handlers that panicked (their requests were answered
    /// "don't have" / "busy" and their slots released).
    pub handler_panics: AtomicU64,
    /// Block requests answered "skipped" (this node at its inbound limit).
    pub skipped_requests: AtomicU64,
    /// Datasets this node could not announce (its provider records are at
    /// [`SwarmSettings::max_provided`]).
    pub provide_failures: AtomicU64,
    /// Blocks (and their bytes) this node served to peers.
    pub blocks_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Verified blocks (and their bytes) received from peers.
    pub blocks_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Peers banned for sending bytes that fail verification.
    pub peers_banned: AtomicU64,
    /// Name records rejected (forged, malformed, older, misplaced), from
    /// the DHT and from gossip.
    pub names_rejected: AtomicU64,
    /// Peers that subscribed to the catalogue topic since start (a node
    /// announces its own entries again when this moves, so a daemon that
    /// joins hears the catalogue within one announce interval).
    pub catalogue_joins: AtomicU64,
    /// Peers that subscribed to the popularity topic since start (a daemon
    /// whose reports have slowed down while nothing changed reports at the
    /// next base interval when this moves, so a newcomer hears everyone
    /// within one interval).
    pub popularity_joins: AtomicU64,
    /// Provider records of other peers stored here (the DHT load others
    /// put on this node).
    pub provider_records_stored: AtomicU64,
    /// Peers' provider records held here now (bounded by
    /// `max_remote_provider_records`).
    pub provider_records_held: AtomicU64,
    /// Providing this node's datasets: DHT lookups started, requests sent
    /// (lookup steps and record stores), and keys whose announcement
    /// finished (stored on the peers found, or given up).
    pub provide_lookups: AtomicU64,
    pub provide_messages: AtomicU64,
    pub provides_done: AtomicU64,
    /// Bitswap: blocks sent to IPFS peers (also counted in `blocks_sent`),
    /// wants answered "don't have" (or not at all, when the peer did not
    /// ask for a DontHave), streams and messages refused (over a bound,
    /// malformed), and blocks peers sent unasked (dropped).
    pub bitswap_blocks_sent: AtomicU64,
    pub bitswap_dont_have: AtomicU64,
    pub bitswap_refused: AtomicU64,
    pub bitswap_unasked: AtomicU64,
    /// Bitswap: verified blocks this node asked for and received (also
    /// counted in `blocks_received`).
    pub bitswap_blocks_received: AtomicU64,
}

impl NetStats {
    /// Counts one verified block received from a peer.
    pub fn received(&self, bytes: usize) {
        self.blocks_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}
