//! `config.toml`: its schema (one section per part: store, network, mount,
//! mirror, query, gateway, names, limits), defaults and checks, and how it
//! becomes the settings the node and the gateway start with.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shoal_node::{Budget, MirrorSettings, NodeConfig};

/// The commented config written by `shoal init` / first `shoal daemon`
/// (every setting, its default and what it does: `config.default.toml`).
pub(crate) const DEFAULT_CONFIG: &str = include_str!("../config.default.toml");

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
    #[serde(default)]
    pub scrub: ScrubConfig,
    #[serde(default)]
    pub api: ApiConfig,
}

/// The local API socket's access.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// A group whose members may use the socket (mode 0660, as docker's
    /// socket); empty: the daemon's user only (0600).
    pub group: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    pub rate: String,
    pub every: String,
    pub start_after: String,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        let d = shoal_node::ScrubSettings::default();
        Self {
            rate: format!("{}MiB", d.rate >> 20),
            every: format!("{}d", d.every.as_secs() / 86400),
            start_after: format!("{}m", d.start_after.as_secs() / 60),
        }
    }
}

impl ScrubConfig {
    pub fn settings(&self) -> Result<shoal_node::ScrubSettings> {
        let every = parse_duration(&self.every).context("[scrub] every")?;
        if every.is_zero() {
            bail!("[scrub] every must be above zero (set rate = \"0\" to turn the scrub off)");
        }
        Ok(shoal_node::ScrubSettings {
            rate: parse_size(&self.rate).context("[scrub] rate")?,
            every,
            start_after: parse_duration(&self.start_after).context("[scrub] start_after")?,
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub walk_nodes: u64,
    pub walk_bytes: String,
    pub walk_depth: usize,
    pub car_expansion: u64,
    pub catalogue_entries: usize,
    pub catalogue_per_publisher: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = shoal_node::Limits::default();
        Self {
            walk_nodes: d.walk.nodes,
            walk_bytes: "1TiB".into(),
            walk_depth: d.walk.depth,
            car_expansion: d.car_expansion,
            catalogue_entries: d.catalogue_entries,
            catalogue_per_publisher: d.catalogue_per_publisher,
        }
    }
}

impl LimitsConfig {
    pub fn settings(&self) -> Result<shoal_node::Limits> {
        if self.walk_nodes == 0 || self.walk_depth == 0 || self.car_expansion == 0 {
            bail!("[limits] walk_nodes, walk_depth and car_expansion must be at least 1");
        }
        if self.catalogue_per_publisher == 0 || self.catalogue_per_publisher > self.catalogue_entries {
            bail!("[limits] catalogue_per_publisher must be between 1 and catalogue_entries");
        }
        Ok(shoal_node::Limits {
            walk: shoal_node::WalkLimits {
                nodes: self.walk_nodes,
                bytes: parse_size(&self.walk_bytes).context("[limits] walk_bytes")?,
                depth: self.walk_depth,
            },
            car_expansion: self.car_expansion,
            catalogue_entries: self.catalogue_entries,
            catalogue_per_publisher: self.catalogue_per_publisher,
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
    pub readahead: String,
    /// Bytes of keys served lately kept in memory; "auto": a gigabyte, or
    /// an eighth of the machine's memory when that is less; "0": off.
    pub hot_cache: String,
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
            readahead: "64MiB".into(),
            hot_cache: "auto".into(),
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
                readahead_bytes: parse_size(&self.readahead).context("[gateway] readahead")?,
                hot_cache_bytes: match self.hot_cache.trim() {
                    "auto" => shoal_gateway::Settings::default().hot_cache_bytes,
                    size => parse_size(size).context("[gateway] hot_cache")?,
                },
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
    pub fn node_config(&self, repo: &crate::Repo) -> Result<NodeConfig> {
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
        net.max_remote_provider_records = n.provider_records;
        net.provider_store = Some(repo.home.join("providers"));
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
            scrub: self.scrub.settings()?,
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
            provider_records: 1 << 19,
        }
    }
}

/// Parses "500ms", "20s", "5m", "1h", "30d".
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
        "d" => n * 86400.0,
        u => bail!("unknown duration unit {u:?} in {s:?} (use ms, s, m, h, d)"),
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
