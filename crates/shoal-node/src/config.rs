//! What a node is started with: typed settings, already parsed and
//! checked (the binary reads them from `config.toml`; tests build them).

use std::path::PathBuf;
use std::time::Duration;

use shoal_net::SwarmSettings;

/// Most bytes [`Budget::Auto`] takes.
pub const AUTO_BUDGET_MAX: u64 = 50 << 30;

/// Everything a [`crate::Node`] needs to run.
#[derive(Clone)]
pub struct NodeConfig {
    /// The block store directory (created if absent).
    pub store_dir: PathBuf,
    /// Max bytes of block data; `None` = unlimited.
    pub quota: Option<u64>,
    /// Max block size for [`crate::Node::add`].
    pub block_size: u32,
    /// Where the node records its live mounts (for cleanup after a crash).
    pub mounts_record: PathBuf,
    /// The libp2p swarm: identity, addresses, private-network settings.
    pub net: SwarmSettings,
    /// How long to search the DHT for a dataset's providers.
    pub provider_timeout: Duration,
    /// Deadline of one block read through the network.
    pub block_timeout: Duration,
    pub mount: MountSettings,
    pub mirror: MirrorSettings,
    pub query: QuerySettings,
    /// Published names and follows: announce and poll intervals.
    pub names: crate::names::NameSettings,
    /// Test-only misbehaviour (lying and slow peers). Never set in production.
    pub test: TestSwitches,
}

/// Mount behaviour (per mount).
#[derive(Debug, Clone)]
pub struct MountSettings {
    /// Chunk files prefetched ahead on in-order reads.
    pub readahead_files: usize,
    /// Blocks prefetched at once.
    pub prefetch_inflight: usize,
    /// Verified blocks kept in memory.
    pub cache_bytes: usize,
    /// Memory for the key tables of the directories a mount has listed.
    pub table_bytes: usize,
}

impl Default for MountSettings {
    fn default() -> Self {
        Self {
            readahead_files: 4,
            prefetch_inflight: 32,
            cache_bytes: 64 << 20,
            table_bytes: 256 << 20,
        }
    }
}

/// The mirror budget: a fixed size, or a share of the free disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Fixed(u64),
    /// 10% of the free disk (what mirrors use counted as free), at most
    /// [`AUTO_BUDGET_MAX`].
    Auto,
}

/// Popularity accounting and the mirror policy.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    pub budget: Budget,
    /// Score that makes a dataset popular.
    pub threshold: u64,
    /// The most one source adds to a score.
    pub peer_cap: u64,
    /// Sliding window of the counts.
    pub window: Duration,
    /// How often reports are shared; `None` = gossip off.
    pub every: Option<Duration>,
    /// How often the policy runs.
    pub check: Duration,
    /// Copies popularity alone asks for at most.
    pub max_popular: u8,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        Self {
            budget: Budget::Auto,
            threshold: 64,
            peer_cap: 48,
            window: Duration::from_secs(600),
            every: Some(Duration::from_secs(15)),
            check: Duration::from_secs(30),
            max_popular: 4,
        }
    }
}

/// Memory bounds of queries.
#[derive(Debug, Clone, Copy)]
pub struct QuerySettings {
    /// Bytes one query run here may use (result grids, workers' decode
    /// buffers, the chunk list); fewer workers are used before a query is
    /// refused.
    pub memory: u64,
    /// Bytes one peer's compute request may use here.
    pub request_memory: u64,
}

impl QuerySettings {
    /// `memory` bytes per query, an eighth of it per compute request.
    pub fn with_memory(memory: u64) -> Self {
        Self {
            memory,
            request_memory: memory / 8,
        }
    }

    /// A quarter of this machine's RAM (2 GiB when it cannot be read).
    pub fn auto() -> Self {
        Self::with_memory(total_ram().map(|r| r / 4).unwrap_or(2 << 30))
    }
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self::auto()
    }
}

/// Total RAM from /proc/meminfo.
pub fn total_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Misbehaviour for the lying-peer and slow-peer tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestSwitches {
    /// Serve every block with its first byte flipped.
    pub corrupt_served_blocks: bool,
    /// Sleep this long before answering each block or compute request.
    pub serve_delay: Duration,
    /// Answer compute requests with the first cell's sum off by one.
    pub wrong_partials: bool,
}
