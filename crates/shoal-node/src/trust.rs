//! What this node holds against peers, shared by the parts and the query
//! runner: the bounds of the compute requests it serves, and the peers it
//! caught lying. A leaf.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_net::PeerId;

/// What one compute request may cost a serving node.
#[derive(Debug)]
pub(crate) struct ServeLimits {
    /// Bytes one request may use (grids, decode buffers, answer).
    pub request_memory: u64,
    /// Requests refused for their size.
    pub refused: AtomicU64,
}

/// Peers caught returning partials that disagree with the same chunks
/// computed here: asked for no more compute, for the daemon's lifetime.
#[derive(Debug, Default)]
pub(crate) struct Liars {
    peers: std::sync::Mutex<HashSet<PeerId>>,
    pub caught: AtomicU64,
}

impl Liars {
    pub fn contains(&self, p: &PeerId) -> bool {
        self.peers.lock().expect("liars lock").contains(p)
    }

    pub fn catch(&self, p: PeerId, why: &str) {
        if self.peers.lock().expect("liars lock").insert(p) {
            self.caught.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %p, reason = why, "a peer's compute answer disagrees with the same chunk computed here: no more compute requests to it; its partials are discarded and recomputed");
        }
    }
}
