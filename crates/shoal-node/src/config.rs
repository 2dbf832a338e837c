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
    /// Max bytes of read-through cache (blocks fetched for readers that no
    /// pin or name holds): `Auto` is 10% of the free disk at start, at most
    /// [`AUTO_BUDGET_MAX`]; `Fixed(0)` keeps none.
    pub cache: Budget,
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
    pub names: NameSettings,
    /// Bounds on what untrusted input may make this node do.
    pub limits: Limits,
    /// The background scrub's pace.
    pub scrub: ScrubSettings,
    /// Test-only misbehaviour (lying and slow peers). Never set in production.
    pub test: TestSwitches,
}

/// Bounds on what untrusted input (a CAR, a peer's request, a path a
/// gateway client asks for, a dataset's chunks) may make the node do. The
/// list of inputs and where each bound is enforced is in
/// docs/decisions/0015-hostile-input.md.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Every walk of a DAG from outside: references, bytes, depth.
    pub walk: shoal_unixfs::WalkLimits,
    /// A CAR's rebuilt tree may stand for at most this many times the
    /// bytes of the CAR's distinct blocks (identical chunks linked many
    /// times are the only reason to expand at all).
    pub car_expansion: u64,
    /// Catalogue entries kept from the swarm (versions of every
    /// publisher's names; new names past it are refused and counted).
    pub catalogue_entries: usize,
    /// Names one publisher may have in this node's catalogue.
    pub catalogue_per_publisher: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            walk: Default::default(),
            // Zarr writers skip chunks of only the fill value, so real
            // trees repeat few blocks; a 64 x 64 bomb is refused by 256x.
            car_expansion: 16,
            catalogue_entries: 100_000,
            catalogue_per_publisher: 1_000,
        }
    }
}

/// How often published records are announced again, and followed names
/// looked up on the DHT.
#[derive(Debug, Clone, Copy)]
pub struct NameSettings {
    pub announce: Duration,
    pub poll: Duration,
    /// Deadline of one DHT lookup of a name.
    pub lookup: Duration,
}

impl Default for NameSettings {
    fn default() -> Self {
        NameSettings {
            announce: Duration::from_secs(10),
            poll: Duration::from_secs(60),
            lookup: Duration::from_secs(10),
        }
    }
}

/// The background scrub: every stored block read back and verified against
/// its CID, at most `rate` bytes per second, paused while the node serves
/// or adds; a full pass every `every`.
#[derive(Debug, Clone, Copy)]
pub struct ScrubSettings {
    /// Bytes per second verified at most; 0 = no scrub.
    pub rate: u64,
    /// A new pass starts this long after the last one ended.
    pub every: Duration,
    /// Nothing is scrubbed until this long after the start (a daemon
    /// warming up, or restarted to be repaired, is left alone).
    pub start_after: Duration,
}

impl Default for ScrubSettings {
    fn default() -> Self {
        Self {
            // 4 MiB/s: a 1 TB store in about 3 days, unnoticed beside
            // readers (and paused while there are any).
            rate: 4 << 20,
            every: Duration::from_secs(30 * 24 * 3600),
            start_after: Duration::from_secs(600),
        }
    }
}

impl ScrubSettings {
    /// No scrub (tests not about it).
    pub fn off() -> Self {
        Self {
            rate: 0,
            ..Self::default()
        }
    }
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

/// Bytes free for unprivileged use on the filesystem holding `path` (or
/// its nearest existing ancestor).
pub fn free_disk(path: &std::path::Path) -> Option<u64> {
    let mut p = path;
    loop {
        if let Ok(s) = rustix::fs::statvfs(p) {
            return Some(s.f_bavail.saturating_mul(s.f_frsize));
        }
        p = p.parent()?;
    }
}

impl Budget {
    /// The bytes this budget stands for now, for a store at `dir`.
    pub fn bytes_at(self, dir: &std::path::Path) -> u64 {
        match self {
            Budget::Fixed(n) => n,
            Budget::Auto => (free_disk(dir).unwrap_or(0) / 10).min(AUTO_BUDGET_MAX),
        }
    }
}

/// Total RAM from /proc/meminfo.
pub fn total_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Misbehaviour for the lying-peer and slow-peer tests. Acted on only in a
/// build with the `test-faults` feature (the tests'); the shipped build
/// refuses to start with any switch set.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestSwitches {
    /// Serve every block with its first byte flipped.
    pub corrupt_served_blocks: bool,
    /// Sleep this long before answering each block or compute request.
    pub serve_delay: Duration,
    /// Answer compute requests with the first cell's sum off by one.
    pub wrong_partials: bool,
    /// Answer "not here" for raw (chunk) blocks, serving manifests only:
    /// a peer that computes but will not let its answers be checked.
    pub withhold_chunk_blocks: bool,
}

/// Raises this process's soft limit of open descriptors to its hard limit
/// (systemd's default soft limit is 1,024, which a store, a swarm and a
/// few exports pass). Returns (before, after); `None` is unlimited.
pub fn raise_open_files_limit() -> std::io::Result<(Option<u64>, Option<u64>)> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: before.maximum,
                maximum: before.maximum,
            },
        )?;
    }
    Ok((before.current, getrlimit(Resource::Nofile).current))
}

impl TestSwitches {
    /// Warns about each switch that is on, or refuses them all in a build
    /// without test faults.
    pub(crate) fn check(&self) -> crate::Result<()> {
        if *self == TestSwitches::default() {
            return Ok(());
        }
        if !cfg!(feature = "test-faults") {
            return Err(crate::Error::BadRequest(
                "test switches are set but this build has no test faults (the test-faults feature)".into(),
            ));
        }
        tracing::warn!(switches = ?self, "this node misbehaves on purpose (test switches)");
        Ok(())
    }
}
