//! `/metrics`: the Prometheus/OpenMetrics text exposition, encoded by
//! `prometheus-client`. The gateway's own counters live here; the node's
//! (queries, mount reads) and shoal-net's (block source, network) are
//! registered by reference or read at scrape time.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use shoal_node::Node;
use std::sync::atomic::Ordering;

/// Labels of one request: its route and the status answered.
pub type RequestLabels = Vec<(String, String)>;

/// The gateway's counters.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub bytes_served: Counter,
    /// Time to the response head (the first block is in hand by then).
    pub request_seconds: Histogram,
    /// Requests answered from a key read ahead.
    pub readahead_hits: Counter,
    /// Requests for a key read ahead that came before its read ended (the
    /// request read it itself).
    pub readahead_late: Counter,
    /// Keys read ahead that nobody asked for before they were dropped.
    pub readahead_wasted: Counter,
    /// Requests answered from the cache of keys served lately.
    pub hot_hits: Counter,
    /// Bytes of keys kept in memory.
    pub hot_bytes: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            bytes_served: Counter::default(),
            request_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            readahead_hits: Counter::default(),
            readahead_late: Counter::default(),
            readahead_wasted: Counter::default(),
            hot_hits: Counter::default(),
            hot_bytes: Gauge::default(),
        }
    }
}

impl GatewayMetrics {
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("route".into(), route.into()),
                ("status".into(), status.to_string()),
            ])
            .inc();
    }
}

/// Values read at scrape time: the store's statistics and the peers
/// connected (the handler fetches them, the collector encodes them).
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub blocks: u64,
    pub live_bytes: u64,
    pub segment_bytes: u64,
    pub segments: u64,
    pub pins: u64,
    pub quota: Option<u64>,
    pub peers: u64,
}

#[derive(Debug)]
struct NodeCollector {
    node: Node,
    snapshot: std::sync::Arc<Mutex<Snapshot>>,
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = *self.snapshot.lock().expect("snapshot lock");
        gauge(&mut e, "shoal_store_blocks", "Blocks in the store", s.blocks)?;
        gauge(
            &mut e,
            "shoal_store_live_bytes",
            "Bytes of live block data",
            s.live_bytes,
        )?;
        gauge(
            &mut e,
            "shoal_store_segment_bytes",
            "Bytes of pack segments on disk",
            s.segment_bytes,
        )?;
        gauge(&mut e, "shoal_store_segments", "Pack segments", s.segments)?;
        gauge(&mut e, "shoal_store_pins", "Pinned datasets", s.pins)?;
        gauge(
            &mut e,
            "shoal_store_quota_bytes",
            "Store quota (0: none)",
            s.quota.unwrap_or(0),
        )?;
        gauge(&mut e, "shoal_peers_connected", "Peers connected now", s.peers)?;
        let n = self.node.net_stats();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut e,
            "shoal_net_blocks_sent",
            "Blocks served to peers",
            get(&n.blocks_sent),
        )?;
        counter(
            &mut e,
            "shoal_net_bytes_sent",
            "Block bytes served to peers",
            get(&n.bytes_sent),
        )?;
        counter(
            &mut e,
            "shoal_net_blocks_received",
            "Verified blocks received from peers",
            get(&n.blocks_received),
        )?;
        counter(
            &mut e,
            "shoal_net_bytes_received",
            "Verified block bytes received from peers",
            get(&n.bytes_received),
        )?;
        counter(
            &mut e,
            "shoal_net_peers_banned",
            "Peers banned for sending bytes that fail verification",
            get(&n.peers_banned),
        )?;
        counter(
            &mut e,
            "shoal_net_requests_skipped",
            "Block requests answered busy (this node at its inbound bound)",
            get(&n.skipped_requests),
        )?;
        counter(
            &mut e,
            "shoal_net_handler_panics",
            "Serve or compute handlers that panicked",
            get(&n.handler_panics),
        )?;
        counter(
            &mut e,
            "shoal_compute_refused",
            "Peers' compute requests refused over the memory bound",
            self.node.compute_refused(),
        )?;
        counter(
            &mut e,
            "shoal_compute_liars",
            "Peers caught returning compute partials that disagree with a check here",
            self.node.compute_liars(),
        )?;
        counter(
            &mut e,
            "shoal_names_rejected",
            "Name records rejected: forged, malformed, older than the one held, misplaced",
            self.node
                .net_stats()
                .names_rejected
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        let cat = self.node.catalogue();
        gauge(
            &mut e,
            "shoal_catalogue_entries",
            "Catalogue entries held (every publisher's versions)",
            cat.len() as u64,
        )?;
        let cs = cat.stats();
        for (name, help, v) in [
            (
                "shoal_catalogue_accepted",
                "Catalogue entries taken from the swarm",
                &cs.accepted,
            ),
            (
                "shoal_catalogue_refused_forged",
                "Catalogue entries refused: the signature, the publisher's key or the summary's CID did not hold",
                &cs.forged,
            ),
            (
                "shoal_catalogue_refused_malformed",
                "Catalogue entries refused: undecodable, or a summary outside its bounds",
                &cs.malformed,
            ),
            (
                "shoal_catalogue_refused_oversized",
                "Catalogue entries refused: over the size bound",
                &cs.oversized,
            ),
            (
                "shoal_catalogue_refused_over_bound",
                "Catalogue entries refused: the publisher's names or the catalogue at their bound",
                &cs.over_bound,
            ),
            (
                "shoal_catalogue_refused_stale",
                "Catalogue entries refused: older than every version kept (a replay)",
                &cs.stale,
            ),
        ] {
            counter(&mut e, name, help, v.load(std::sync::atomic::Ordering::Relaxed))?;
        }
        let net = self.node.net_stats();
        for (name, help, v) in [
            (
                "shoal_bitswap_blocks_sent",
                "Blocks sent to IPFS peers over bitswap",
                &net.bitswap_blocks_sent,
            ),
            (
                "shoal_bitswap_dont_have",
                "Bitswap wants for blocks not held here",
                &net.bitswap_dont_have,
            ),
            (
                "shoal_bitswap_refused",
                "Bitswap streams and messages refused: over a bound, or malformed",
                &net.bitswap_refused,
            ),
            (
                "shoal_bitswap_unasked",
                "Blocks bitswap peers sent unasked (dropped)",
                &net.bitswap_unasked,
            ),
            (
                "shoal_bitswap_blocks_received",
                "Verified blocks received over bitswap that this daemon asked for",
                &net.bitswap_blocks_received,
            ),
        ] {
            counter(&mut e, name, help, v.load(std::sync::atomic::Ordering::Relaxed))?;
        }
        let d = self.node.durability_stats();
        for (name, help, v) in [
            (
                "shoal_scrub_blocks",
                "Blocks the background scrub verified",
                &d.scrub_blocks,
            ),
            (
                "shoal_scrub_bytes",
                "Bytes the background scrub verified",
                &d.scrub_bytes,
            ),
            (
                "shoal_scrub_corrupt_blocks",
                "Corrupt blocks the scrub found (dropped, fetched again)",
                &d.scrub_corrupt,
            ),
            (
                "shoal_scrub_paused",
                "Scrub slices put off while the daemon was busy",
                &d.scrub_paused,
            ),
            (
                "shoal_repaired_blocks",
                "Blocks fetched again from providers to repair held datasets",
                &d.repaired_blocks,
            ),
            (
                "shoal_repaired_datasets",
                "Held datasets repairs made whole again",
                &d.repaired_datasets,
            ),
            (
                "shoal_repair_failures",
                "Repairs that left a dataset incomplete (retried)",
                &d.repair_failures,
            ),
        ] {
            counter(&mut e, name, help, get(v))?;
        }
        let src = self.node.source_stats();
        counter(
            &mut e,
            "shoal_block_reads_local",
            "Block reads answered from the local store (cache hits)",
            get(&src.local),
        )?;
        counter(
            &mut e,
            "shoal_block_reads_fetched",
            "Block reads fetched from peers (cache misses)",
            get(&src.fetched),
        )?;
        counter(
            &mut e,
            "shoal_block_reads_failed",
            "Block reads no peer delivered within the deadline",
            get(&src.failed),
        )?;
        src.fetch_seconds.encode(e.encode_descriptor(
            "shoal_block_fetch_seconds",
            "Time to fetch one block from peers",
            None,
            src.fetch_seconds.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The registry behind `/metrics` and the snapshot its handler refreshes.
pub struct Exposition {
    registry: Registry,
    snapshot: std::sync::Arc<Mutex<Snapshot>>,
}

impl Exposition {
    pub fn new(node: &Node, gw: &GatewayMetrics) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "shoal_gateway_requests",
            "Gateway requests by route and status",
            gw.requests.clone(),
        );
        registry.register(
            "shoal_gateway_request_seconds",
            "Time from a gateway request to its response head",
            gw.request_seconds.clone(),
        );
        for (name, help, c) in [
            (
                "shoal_gateway_bytes_served",
                "Body bytes the gateway sent",
                &gw.bytes_served,
            ),
            (
                "shoal_gateway_readahead_hits",
                "Gateway requests answered from a key read ahead",
                &gw.readahead_hits,
            ),
            (
                "shoal_gateway_readahead_late",
                "Gateway requests for a key read ahead that came before its read ended",
                &gw.readahead_late,
            ),
            (
                "shoal_gateway_readahead_wasted",
                "Keys the gateway read ahead that nobody asked for",
                &gw.readahead_wasted,
            ),
            (
                "shoal_gateway_hot_hits",
                "Gateway requests answered from the keys kept in memory",
                &gw.hot_hits,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        registry.register(
            "shoal_gateway_hot_bytes",
            "Bytes of keys the gateway keeps in memory",
            gw.hot_bytes.clone(),
        );
        let m = node.metrics();
        registry.register("shoal_queries", "Queries run", m.queries.clone());
        registry.register("shoal_query_errors", "Queries that failed", m.query_errors.clone());
        registry.register("shoal_query_seconds", "Query wall time", m.query_seconds.clone());
        registry.register(
            "shoal_mount_block_reads",
            "Blocks read through mounts",
            m.mount_block_reads.clone(),
        );
        let snapshot = std::sync::Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(NodeCollector {
            node: node.clone(),
            snapshot: snapshot.clone(),
        }));
        Self { registry, snapshot }
    }

    /// The text exposition after refreshing the scrape-time values.
    pub fn render(&self, s: Snapshot) -> String {
        *self.snapshot.lock().expect("snapshot lock") = s;
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
