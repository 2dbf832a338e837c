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

/// The commented config written by `shoal init` / first `shoal daemon`.
const DEFAULT_CONFIG: &str = r#"# shoal repo configuration.
# Sizes accept plain bytes or units: "500MiB", "20GiB", "1TB".

[store]
# Maximum bytes of block data kept. When exceeded, data not reachable from
# a user pin or a name is evicted, least recently used first; a pin or add
# that cannot fit fails with a clear error. "0" means no limit.
quota = "0"
# Maximum block size for `shoal add` (chunks larger than this are split).
block_size = "1MiB"
"#;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "zero")]
    pub quota: String,
    #[serde(default = "one_mib")]
    pub block_size: String,
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
        }
    }
}

impl StoreConfig {
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
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
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
                let base = std::env::var_os("HOME")
                    .context("neither --home, SHOAL_HOME nor HOME is set")?;
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

    pub fn exists(&self) -> bool {
        self.config_path().exists()
    }

    /// Creates the repo (0700 directory + default config). Returns false if
    /// it already existed.
    pub fn init(&self) -> Result<bool> {
        if self.exists() {
            return Ok(false);
        }
        create_private_dir(&self.home)?;
        let tmp = self.home.join("config.toml.tmp");
        std::fs::write(&tmp, DEFAULT_CONFIG)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, self.config_path()).context("installing config.toml")?;
        Ok(true)
    }

    pub fn load_config(&self) -> Result<Config> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        cfg.store.quota_bytes()?;
        cfg.store.block_size_bytes()?;
        Ok(cfg)
    }
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

    #[test]
    fn default_config_parses() {
        let cfg: Config = toml::from_str(DEFAULT_CONFIG).unwrap();
        assert_eq!(cfg.store.quota_bytes().unwrap(), None);
        assert_eq!(cfg.store.block_size_bytes().unwrap(), 1 << 20);
    }
}
