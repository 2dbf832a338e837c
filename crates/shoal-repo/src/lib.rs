//! shoal-repo: a shoal repo on disk, what the daemon runs from and what
//! its clients find it by.
//!
//! ```text
//! $SHOAL_HOME/            (mode 0700; default ~/.shoal)
//!   config.toml           settings (see [`config`] and config.default.toml)
//!   identity              the daemon's libp2p key (mode 0600)
//!   api.sock              the local API (mode 0600), present while running
//!   mounts                the mounts to undo after a crash
//!   store/                the block store (shoal-store)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub mod config;

use config::DEFAULT_CONFIG;
pub use config::{parse_duration, parse_size, Config};

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

/// What [`Repo::export`] copied besides the store.
pub const EXPORTED_FILES: [&str; 2] = ["config.toml", "identity.key"];

impl Repo {
    /// Writes a copy of this repo into `dest` (absent or empty): its config
    /// and identity, then the store through `backup` (given where the
    /// store's copy goes; the daemon passes its running store's consistent
    /// backup, the CLI an opened store's when no daemon runs). `dest` is a
    /// repo a daemon starts on.
    pub fn export<T>(&self, dest: &Path, backup: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        if dest.exists()
            && std::fs::read_dir(dest)
                .with_context(|| format!("reading {}", dest.display()))?
                .next()
                .is_some()
        {
            anyhow::bail!("{} is not empty: export into a new directory", dest.display());
        }
        create_private_dir(dest)?;
        for f in EXPORTED_FILES {
            let data =
                std::fs::read(self.home.join(f)).with_context(|| format!("reading {}", self.home.join(f).display()))?;
            install_private(&dest.join(f), &data)?;
        }
        backup(&dest.join("store"))
    }

    /// Makes this repo (which must not hold a store yet) a copy of the
    /// exported repo `src`: every file copied, synced. Returns the bytes
    /// copied. Run with no daemon on this repo.
    pub fn import(&self, src: &Path) -> Result<u64> {
        let from = Repo {
            home: src.to_path_buf(),
        };
        if !from.exists() || !from.store_path().join("index.redb").exists() {
            anyhow::bail!(
                "{} is not an exported shoal repo (no config.toml or store/index.redb)",
                src.display()
            );
        }
        if self.store_path().join("index.redb").exists() || self.store_path().join("segments").exists() {
            anyhow::bail!(
                "{} already holds a store; import into a new repo (--home DIR or SHOAL_HOME)",
                self.home.display()
            );
        }
        create_private_dir(&self.home)?;
        for f in EXPORTED_FILES {
            let data = std::fs::read(src.join(f)).with_context(|| format!("reading {}", src.join(f).display()))?;
            install_private(&self.home.join(f), &data)?;
        }
        copy_tree(&from.store_path(), &self.store_path())
    }
}

/// Copies a directory tree, each file synced, then each directory.
fn copy_tree(from: &Path, to: &Path) -> Result<u64> {
    create_private_dir(to)?;
    let mut bytes = 0;
    for ent in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let ent = ent?;
        let (src, dst) = (ent.path(), to.join(ent.file_name()));
        if ent.file_type()?.is_dir() {
            bytes += copy_tree(&src, &dst)?;
        } else {
            bytes += std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
            std::fs::File::open(&dst).and_then(|f| f.sync_all())?;
        }
    }
    std::fs::File::open(to).and_then(|d| d.sync_all())?;
    Ok(bytes)
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
}
