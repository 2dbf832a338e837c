//! The repo: its location, layout and `config.toml`.
//!
//! ```text
//! $SHOAL_HOME/            (mode 0700)
//!   config.toml           settings, documented below
//!   api.sock              the local API (mode 0600), present while running
//!   store/                the block store (shoal-store)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shoal_node::{Budget, MirrorSettings, NodeConfig};

/// The commented config written by `shoal init` / first `shoal daemon`.
const DEFAULT_CONFIG: &str = r#"# shoal repo configuration.
# Sizes accept plain bytes or units: "500MiB", "20GiB", "1TB".

[store]
# Maximum bytes of block data kept. When exceeded, data not reachable from
# a user pin or a name is evicted, least recently used first; a pin or add
# that cannot fit fails with a clear error. "0" means no limit.
quota = "0"
# Maximum bytes of read-through cache: blocks fetched for mount, gateway and
# `cat` readers that no pin or name holds, evicted least recently read
# first, so readers cannot fill the disk whatever the quota says. "auto" =
# 10% of the free space on the repo's disk at start, at most 50GiB; "0"
# keeps none.
cache = "auto"
# Maximum block size for `shoal add` (chunks larger than this are split).
block_size = "1MiB"

[network]
# Multiaddrs to listen on (4801 is shoal's default port).
listen = ["/ip4/0.0.0.0/tcp/4801"]
# Peers to connect to at start, e.g. "/ip4/10.0.0.5/tcp/4801/p2p/12D3KooW...".
bootstrap = []
# Private swarm: path (relative to the repo) of a libp2p pre-shared
# swarm.key file. Peers without the same key cannot connect. TCP only.
swarm_key = ""
# If non-empty, only these peer IDs may connect to this daemon or be dialled.
allow_peers = []
# How often this daemon re-announces the datasets it holds on the DHT.
reprovide_interval = "1h"
# Deadline of one block request to a peer.
request_timeout = "20s"
# How long to search the DHT for the providers of a dataset.
provider_timeout = "20s"
# Deadline of one block read through the network (mount, cat of a remote key).
block_timeout = "30s"
# DHT provider records: datasets this daemon may announce, and keys of
# other peers' records it keeps (the oldest go first; a flood of made-up
# announcements never displaces this daemon's own).
max_provided = 1048576
provider_records = 16384

[mount]
# Chunk files fetched ahead when a directory is read in order.
readahead_files = 4
# Blocks prefetched at once per mount (the prefetch bandwidth budget).
prefetch_inflight = 32
# Memory for verified blocks per mount (the kernel reads in pieces smaller
# than a block; prefetched blocks wait here for their reader).
cache = "64MiB"
# Memory for the key tables of the directories a mount has listed (about
# 400 bytes per key plus 96 per block). Past it the mount asks the kernel
# to forget the least recently used directories; one directory that alone
# would pass it fails with ENOMEM, named in the daemon log.
table_memory = "256MiB"

[mirror]
# Every daemon counts requests per dataset (blocks served, mount opens,
# queries) over a sliding window and shares the counts with its peers.
# Bytes of popular datasets, and of datasets other daemons asked to be
# replicated (`shoal pin --replicas N`), this daemon may keep as evictable
# mirrors. "auto" = 10% of the free space on the repo's disk, at most 50GiB.
# "0" opts out: this daemon never mirrors (it still shares its counts).
budget = "auto"
# A dataset is popular when its score reaches this: requests in the window,
# summed over the daemons that report them.
threshold = 64
# The most one source (this daemon or one peer) adds to a dataset's score.
# Below the threshold, so no single peer can make a dataset popular alone.
peer_cap = 48
# The sliding window requests are counted over.
window = "10m"
# How often counts are shared on the gossip topic /shoal/popularity/1.
# "0" = never: this daemon neither shares nor hears popularity.
gossip_interval = "15s"
# How often the policy runs: mirror, evict, check replica targets.
check_interval = "30s"
# Copies popularity alone asks for at most (1 + score / threshold, capped
# here); replica targets may ask for more.
max_popular_replicas = 4

[query]
# Memory one query may use here: result grids (48 bytes per result cell,
# one grid the workers share, two more for peers' answers), decode buffers
# per worker, the chunk list. Fewer workers are used
# before a query is refused with a message saying what to select less of.
# A peer's compute request may use an eighth of it. "auto" = a quarter of
# this machine's RAM.
memory = "auto"

[gateway]
# The read-only HTTP gateway (Zarr over HTTP for xarray/fsspec, and
# /metrics): HOST:PORT to serve on; port 0 picks a free port (see `shoal
# id`). "" turns it off. A non-loopback address serves every dataset this
# daemon can reach to whoever can connect: that is the operator's choice.
listen = "127.0.0.1:8080"
# Requests served at once (more wait, then get 503), and the deadline to a
# response's first byte (resolving the dataset, the key, its first block).
max_requests = 256
request_timeout = "60s"
# Blocks fetched ahead of the client per response (memory per response is
# this many blocks, whatever the key's size).
blocks_ahead = 8
# A connection that moves no byte either way for this long is closed (a
# client that stops reading gives its request slot back), and at most this
# many connections are open at once.
idle_timeout = "60s"
max_connections = 1024

[names]
# Published names (`shoal publish`) are announced to followers again this
# often (each new version at once); followed names are looked up on the DHT
# this often, in case an announcement was missed.
announce_interval = "10s"
poll_interval = "60s"

[limits]
# Bounds on what untrusted input (a CAR, a gateway path, a peer's request)
# may make this daemon do; docs/decisions/0015-hostile-input.md lists every
# input and its bounds. A walk of a DAG from outside may expand this many
# node references, stand for this many bytes, and nest this deep.
walk_nodes = 10000000
walk_bytes = "1TiB"
walk_depth = 64
# A CAR's files may stand for at most this many times the bytes of its
# distinct blocks (a block linked many times is how a 1 MB CAR asks for
# terabytes).
car_expansion = 16
"#;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub mount: MountConfig,
    #[serde(default)]
    pub mirror: MirrorConfig,
    #[serde(default)]
    pub query: QueryConfig,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub names: NamesConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub walk_nodes: u64,
    pub walk_bytes: String,
    pub walk_depth: usize,
    pub car_expansion: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = shoal_node::Limits::default();
        Self {
            walk_nodes: d.walk.nodes,
            walk_bytes: "1TiB".into(),
            walk_depth: d.walk.depth,
            car_expansion: d.car_expansion,
        }
    }
}

impl LimitsConfig {
    pub fn settings(&self) -> Result<shoal_node::Limits> {
        if self.walk_nodes == 0 || self.walk_depth == 0 || self.car_expansion == 0 {
            bail!("[limits] walk_nodes, walk_depth and car_expansion must be at least 1");
        }
        Ok(shoal_node::Limits {
            walk: shoal_node::WalkLimits {
                nodes: self.walk_nodes,
                bytes: parse_size(&self.walk_bytes).context("[limits] walk_bytes")?,
                depth: self.walk_depth,
            },
            car_expansion: self.car_expansion,
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamesConfig {
    pub announce_interval: String,
    pub poll_interval: String,
}

impl Default for NamesConfig {
    fn default() -> Self {
        Self {
            announce_interval: "10s".into(),
            poll_interval: "60s".into(),
        }
    }
}

impl NamesConfig {
    pub fn settings(&self) -> Result<shoal_node::NameSettings> {
        let announce = parse_duration(&self.announce_interval).context("[names] announce_interval")?;
        let poll = parse_duration(&self.poll_interval).context("[names] poll_interval")?;
        if announce.is_zero() || poll.is_zero() {
            bail!("[names] intervals must be above zero");
        }
        Ok(shoal_node::NameSettings {
            announce,
            poll,
            ..Default::default()
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub listen: String,
    pub max_requests: usize,
    pub request_timeout: String,
    pub blocks_ahead: usize,
    pub idle_timeout: String,
    pub max_connections: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let d = shoal_gateway::Settings::default();
        Self {
            listen: "127.0.0.1:8080".into(),
            max_requests: d.max_requests,
            request_timeout: "60s".into(),
            blocks_ahead: d.blocks_ahead,
            idle_timeout: "60s".into(),
            max_connections: d.max_connections,
        }
    }
}

impl GatewayConfig {
    /// Where to serve (None: off) and with which bounds.
    pub fn settings(&self) -> Result<Option<(std::net::SocketAddr, shoal_gateway::Settings)>> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        let addr = listen
            .parse()
            .with_context(|| format!("[gateway] listen: {listen:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"))?;
        if self.max_requests == 0 || self.blocks_ahead == 0 {
            bail!("[gateway] max_requests and blocks_ahead must be at least 1");
        }
        if parse_duration(&self.idle_timeout)?.is_zero() {
            bail!("[gateway] idle_timeout must be above zero");
        }
        Ok(Some((
            addr,
            shoal_gateway::Settings {
                max_requests: self.max_requests,
                request_timeout: parse_duration(&self.request_timeout).context("[gateway] request_timeout")?,
                blocks_ahead: self.blocks_ahead,
                idle_timeout: parse_duration(&self.idle_timeout).context("[gateway] idle_timeout")?,
                max_connections: self.max_connections.max(1),
                ..Default::default()
            },
        )))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    pub memory: String,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self { memory: "auto".into() }
    }
}

impl QueryConfig {
    pub fn settings(&self) -> Result<shoal_node::QuerySettings> {
        if self.memory.trim().eq_ignore_ascii_case("auto") {
            return Ok(shoal_node::QuerySettings::auto());
        }
        let m = parse_size(&self.memory).context("[query] memory")?;
        if m < 1 << 20 {
            bail!("[query] memory must be at least 1MiB, got {}", self.memory);
        }
        Ok(shoal_node::QuerySettings::with_memory(m))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    pub budget: String,
    pub threshold: u64,
    pub peer_cap: u64,
    pub window: String,
    pub gossip_interval: String,
    pub check_interval: String,
    pub max_popular_replicas: u8,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            budget: "auto".into(),
            threshold: 64,
            peer_cap: 48,
            window: "10m".into(),
            gossip_interval: "15s".into(),
            check_interval: "30s".into(),
            max_popular_replicas: 4,
        }
    }
}

impl MirrorConfig {
    pub fn budget(&self) -> Result<Budget> {
        if self.budget.trim().eq_ignore_ascii_case("auto") {
            return Ok(Budget::Auto);
        }
        Ok(Budget::Fixed(parse_size(&self.budget).context("mirror.budget")?))
    }

    /// Checks every field; the daemon refuses to start on a bad one.
    fn validate(&self) -> Result<()> {
        self.budget()?;
        if self.threshold == 0 || self.peer_cap == 0 {
            bail!("mirror.threshold and mirror.peer_cap must be at least 1");
        }
        if self.max_popular_replicas < 2 || self.max_popular_replicas > shoal_net::gossip::MAX_REPLICAS {
            bail!(
                "mirror.max_popular_replicas must be between 2 and {}",
                shoal_net::gossip::MAX_REPLICAS
            );
        }
        for (what, v) in [
            ("window", &self.window),
            ("gossip_interval", &self.gossip_interval),
            ("check_interval", &self.check_interval),
        ] {
            parse_duration(v).with_context(|| format!("mirror.{what}"))?;
        }
        if parse_duration(&self.check_interval)?.is_zero() || parse_duration(&self.window)?.is_zero() {
            bail!("mirror.check_interval and mirror.window must be above zero");
        }
        let every = parse_duration(&self.gossip_interval)?;
        if every.as_secs() > u64::from(shoal_net::gossip::MAX_EVERY_SECS) {
            bail!(
                "mirror.gossip_interval must be at most {}s",
                shoal_net::gossip::MAX_EVERY_SECS
            );
        }
        Ok(())
    }

    /// The policy's settings (validated).
    pub fn settings(&self) -> Result<MirrorSettings> {
        self.validate()?;
        let every = parse_duration(&self.gossip_interval)?;
        Ok(MirrorSettings {
            budget: self.budget()?,
            threshold: self.threshold,
            peer_cap: self.peer_cap,
            window: parse_duration(&self.window)?,
            every: (!every.is_zero()).then_some(every.max(std::time::Duration::from_secs(1))),
            check: parse_duration(&self.check_interval)?,
            max_popular: self.max_popular_replicas,
        })
    }
}

impl Config {
    /// What the node is started with: every setting parsed and checked,
    /// the identity and swarm key read from the repo.
    pub fn node_config(&self, repo: &Repo) -> Result<NodeConfig> {
        let n = &self.network;
        let parse_addrs = |v: &[String], what: &str| -> Result<Vec<shoal_net::Multiaddr>> {
            v.iter()
                .map(|a| {
                    a.parse()
                        .with_context(|| format!("[network] {what}: invalid multiaddr {a:?}"))
                })
                .collect()
        };
        let swarm_key = if n.swarm_key.is_empty() {
            None
        } else {
            let path = repo.home.join(&n.swarm_key);
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading swarm key {}", path.display()))?;
            Some(
                text.parse::<shoal_net::PreSharedKey>()
                    .map_err(|e| anyhow::anyhow!("invalid swarm key {}: {e}", path.display()))?,
            )
        };
        let allow_peers = if n.allow_peers.is_empty() {
            None
        } else {
            let peers = n.allow_peers.iter().map(|p| {
                p.parse()
                    .with_context(|| format!("[network] allow_peers: invalid peer id {p:?}"))
            });
            Some(peers.collect::<Result<Vec<shoal_net::PeerId>>>()?)
        };
        let mut net = shoal_node::SwarmSettings::new(repo.load_identity()?, parse_addrs(&n.listen, "listen")?);
        net.bootstrap = parse_addrs(&n.bootstrap, "bootstrap")?;
        net.swarm_key = swarm_key;
        net.allow_peers = allow_peers;
        net.reprovide_interval = parse_duration(&n.reprovide_interval).context("[network] reprovide_interval")?;
        net.request_timeout = parse_duration(&n.request_timeout).context("[network] request_timeout")?;
        net.max_provided = n.max_provided;
        net.max_remote_provider_keys = n.provider_records;
        Ok(NodeConfig {
            store_dir: repo.store_path(),
            quota: self.store.quota_bytes()?,
            cache: self.store.cache()?,
            block_size: self.store.block_size_bytes()?,
            mounts_record: repo.home.join("mounts"),
            net,
            provider_timeout: parse_duration(&n.provider_timeout).context("[network] provider_timeout")?,
            block_timeout: parse_duration(&n.block_timeout).context("[network] block_timeout")?,
            mount: shoal_node::MountSettings {
                readahead_files: self.mount.readahead_files,
                prefetch_inflight: self.mount.prefetch_inflight.max(1),
                cache_bytes: parse_size(&self.mount.cache).context("[mount] cache")? as usize,
                table_bytes: parse_size(&self.mount.table_memory).context("[mount] table_memory")? as usize,
            },
            mirror: self.mirror.settings().context("[mirror]")?,
            query: self.query.settings()?,
            names: self.names.settings()?,
            limits: self.limits.settings()?,
            test: test_switches(),
        })
    }
}

/// Test-only misbehaviour, for the lying-peer and slow-peer tests, from
/// the environment: only in a build with the `test-faults` feature (the
/// shipped binary holds neither the code nor the variables' names).
#[cfg(feature = "test-faults")]
fn test_switches() -> shoal_node::TestSwitches {
    shoal_node::TestSwitches {
        corrupt_served_blocks: std::env::var_os("SHOAL_TEST_CORRUPT_SERVED_BLOCKS").is_some(),
        serve_delay: std::time::Duration::from_millis(
            std::env::var("SHOAL_TEST_SERVE_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ),
        wrong_partials: std::env::var_os("SHOAL_TEST_WRONG_PARTIALS").is_some(),
        withhold_chunk_blocks: false,
    }
}

#[cfg(not(feature = "test-faults"))]
fn test_switches() -> shoal_node::TestSwitches {
    shoal_node::TestSwitches::default()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountConfig {
    pub readahead_files: usize,
    pub prefetch_inflight: usize,
    pub cache: String,
    pub table_memory: String,
}

impl Default for MountConfig {
    fn default() -> Self {
        Self {
            readahead_files: 4,
            prefetch_inflight: 32,
            cache: "64MiB".into(),
            table_memory: "256MiB".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub swarm_key: String,
    pub allow_peers: Vec<String>,
    pub reprovide_interval: String,
    pub request_timeout: String,
    pub provider_timeout: String,
    pub block_timeout: String,
    pub max_provided: usize,
    pub provider_records: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/0.0.0.0/tcp/4801".into()],
            bootstrap: Vec::new(),
            swarm_key: String::new(),
            allow_peers: Vec::new(),
            reprovide_interval: "1h".into(),
            request_timeout: "20s".into(),
            provider_timeout: "20s".into(),
            block_timeout: "30s".into(),
            max_provided: 1 << 20,
            provider_records: 1 << 14,
        }
    }
}

/// Parses "500ms", "20s", "5m", "1h".
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("invalid duration {s:?}"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => bail!("unknown duration unit {u:?} in {s:?} (use ms, s, m, h)"),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "zero")]
    pub quota: String,
    #[serde(default = "one_mib")]
    pub block_size: String,
    #[serde(default = "auto")]
    pub cache: String,
}

fn auto() -> String {
    "auto".into()
}
fn zero() -> String {
    "0".into()
}
fn one_mib() -> String {
    "1MiB".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            quota: zero(),
            block_size: one_mib(),
            cache: auto(),
        }
    }
}

impl StoreConfig {
    /// The read-through cache bound.
    pub fn cache(&self) -> Result<Budget> {
        if self.cache.trim().eq_ignore_ascii_case("auto") {
            return Ok(Budget::Auto);
        }
        Ok(Budget::Fixed(parse_size(&self.cache).context("store.cache")?))
    }

    pub fn quota_bytes(&self) -> Result<Option<u64>> {
        let q = parse_size(&self.quota).context("store.quota")?;
        Ok((q > 0).then_some(q))
    }

    pub fn block_size_bytes(&self) -> Result<u32> {
        let b = parse_size(&self.block_size).context("store.block_size")?;
        if b == 0 || b > u64::from(shoal_core::MAX_BLOCK_SIZE) {
            bail!(
                "store.block_size must be between 1 byte and 4MiB, got {}",
                self.block_size
            );
        }
        Ok(b as u32)
    }
}

/// Parses "123", "10KiB", "5MB", "2GiB", "1TiB" (case-insensitive).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000u64.pow(4),
        "tib" => 1 << 40,
        u => bail!("unknown size unit {u:?} in {s:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"),
    };
    Ok((n * mult as f64) as u64)
}

/// A resolved repo directory.
#[derive(Debug, Clone)]
pub struct Repo {
    pub home: PathBuf,
}

impl Repo {
    /// `--home`, else `SHOAL_HOME` (clap fills both), else `~/.shoal`.
    pub fn locate(home: Option<PathBuf>) -> Result<Self> {
        let home = match home {
            Some(h) => h,
            None => {
                let base = std::env::var_os("HOME").context("neither --home, SHOAL_HOME nor HOME is set")?;
                PathBuf::from(base).join(".shoal")
            }
        };
        Ok(Self { home })
    }

    pub fn config_path(&self) -> PathBuf {
        self.home.join("config.toml")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.home.join("api.sock")
    }
    pub fn store_path(&self) -> PathBuf {
        self.home.join("store")
    }
    pub fn identity_path(&self) -> PathBuf {
        self.home.join("identity.key")
    }

    /// The daemon's persistent ed25519 identity (created by `init`).
    pub fn load_identity(&self) -> Result<shoal_net::Keypair> {
        let path = self.identity_path();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        shoal_net::Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{} is not a valid identity key", path.display()))
    }

    pub fn exists(&self) -> bool {
        self.config_path().exists()
    }

    /// Creates the repo (0700 directory + identity + default config).
    /// Returns false if it already existed. Each file is written to a
    /// temporary name, synced and renamed, config.toml last: an init cut
    /// short (a crash, a full disk) leaves no config, and the next `init`
    /// or `daemon` finishes it, keeping an identity that was completed.
    pub fn init(&self, listen: &[String], gateway: Option<&str>) -> Result<bool> {
        if self.exists() {
            return Ok(false);
        }
        create_private_dir(&self.home)?;
        if self.load_identity().is_err() {
            let key = shoal_net::Keypair::generate_ed25519().to_protobuf_encoding()?;
            install_private(&self.identity_path(), &key)?;
        }
        let mut text = DEFAULT_CONFIG.to_string();
        if !listen.is_empty() {
            let list: Vec<String> = listen.iter().map(|a| format!("{a:?}")).collect();
            text = text.replace(
                r#"listen = ["/ip4/0.0.0.0/tcp/4801"]"#,
                &format!("listen = [{}]", list.join(", ")),
            );
        }
        if let Some(g) = gateway {
            text = text.replace(r#"listen = "127.0.0.1:8080""#, &format!("listen = {g:?}"));
        }
        install_private(&self.config_path(), text.as_bytes())?;
        Ok(true)
    }

    pub fn load_config(&self) -> Result<Config> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        // Values are checked when they become the node's settings
        // (`Config::node_config`), before anything starts.
        toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }
}

/// Writes `p` atomically (mode 0600): a temporary file, synced, renamed,
/// then the directory synced.
fn install_private(p: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = p.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp); // left by an earlier attempt
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()?;
    std::fs::rename(&tmp, p).with_context(|| format!("installing {}", p.display()))?;
    if let Some(dir) = p.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(())
}

fn create_private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("creating repo directory {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("2 GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5KB").unwrap(), 1500);
        assert!(parse_size("12 parsecs").is_err());
    }

    /// Regression (hardening 11): an init cut short anywhere can be
    /// repeated; a completed identity survives it.
    #[test]
    fn an_interrupted_init_is_finished_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo {
            home: dir.path().join("repo"),
        };
        // Cut after the identity: no config yet.
        assert!(repo.init(&[], None).unwrap());
        let id = std::fs::read(repo.identity_path()).unwrap();
        std::fs::remove_file(repo.config_path()).unwrap();
        std::fs::write(repo.home.join("config.tmp"), "half a con").unwrap();
        assert!(repo.init(&["/ip4/127.0.0.1/tcp/0".into()], None).unwrap());
        assert_eq!(std::fs::read(repo.identity_path()).unwrap(), id, "the identity changed");
        assert!(repo.load_config().unwrap().network.listen[0].contains("127.0.0.1"));
        // Cut while writing the identity: a truncated key is replaced.
        std::fs::remove_file(repo.config_path()).unwrap();
        std::fs::write(repo.identity_path(), b"\x08\x01").unwrap();
        std::fs::write(repo.home.join("identity.tmp"), b"junk").unwrap();
        assert!(repo.init(&[], None).unwrap());
        repo.load_identity().unwrap();
        repo.load_config().unwrap();
        assert!(!repo.init(&[], None).unwrap(), "a complete repo is left alone");
    }

    #[test]
    fn default_config_parses() {
        let cfg: Config = toml::from_str(DEFAULT_CONFIG).unwrap();
        assert_eq!(cfg.store.quota_bytes().unwrap(), None);
        assert_eq!(cfg.store.block_size_bytes().unwrap(), 1 << 20);
        assert_eq!(cfg.network.listen, vec!["/ip4/0.0.0.0/tcp/4801".to_string()]);
        assert_eq!(parse_duration(&cfg.network.request_timeout).unwrap().as_secs(), 20);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
    }
}
