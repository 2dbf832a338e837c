//! Counters the node keeps for operators (exported by the gateway's
//! `/metrics`): queries and their duration, reads through mounts. Network
//! and block-source counters live in shoal-net beside what they count.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Debug)]
pub struct NodeMetrics {
    /// Queries run (local and remote parts planned here).
    pub queries: Counter,
    /// Queries that ended in an error.
    pub query_errors: Counter,
    /// Wall time of a query, seconds.
    pub query_seconds: Histogram,
    /// Blocks read through mounts (from the mount cache misses on).
    pub mount_block_reads: Counter,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            queries: Counter::default(),
            query_errors: Counter::default(),
            // 1 ms .. ~65 s, doubling.
            query_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            mount_block_reads: Counter::default(),
        }
    }
}
