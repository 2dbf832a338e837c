//! The daemon's FUSE mounts: the block source the filesystem reads
//! through, the set of live mounts, and cleanup of mounts a crashed daemon
//! left behind.
//!
//! Live mounts are recorded in a file (`$SHOAL_HOME/mounts`, one directory
//! per line). SIGTERM/SIGINT unmounts them all; after a `kill -9` the next
//! daemon start lazily unmounts whatever the file still lists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use shoal_core::{Block, Cid};
use shoal_fuse::{Blocks, MountFs, MountHandle, MountOptions};
use shoal_net::BlockSource;
use shoal_store::Store;

use crate::error::{Error, Result};
use crate::popularity::{Kind, Popularity};

/// What the mount reads through: local store, then peers.
pub struct MountBlocks {
    pub source: Arc<BlockSource>,
    pub store: Arc<Store>,
    pub pop: Arc<Popularity>,
    pub metrics: Arc<crate::metrics::NodeMetrics>,
}

#[async_trait::async_trait]
impl Blocks for MountBlocks {
    async fn block(&self, cid: Cid, root: Cid) -> Result<Block, String> {
        self.metrics.mount_block_reads.inc();
        self.source.get(cid, root).await.map_err(|e| e.to_string())
    }

    fn local(&self, cid: &Cid) -> Option<Block> {
        // A copy that fails verification is left to `block`, which logs it
        // and fetches a good one from peers.
        let b = self.store.get(cid).ok().flatten()?;
        self.metrics.mount_block_reads.inc();
        Some(b)
    }

    fn dataset_of_view(&self, view: &Cid) -> Option<Cid> {
        self.store.dataset_of_view(view).ok().flatten()
    }

    fn names(&self) -> Vec<(String, Cid)> {
        self.store.names().unwrap_or_default()
    }

    fn name(&self, name: &str) -> Option<Cid> {
        self.store.resolve_name(name).ok().flatten()
    }

    fn opened(&self, root: Cid) {
        self.pop.record(root, Kind::Mount, 1);
    }
}

pub struct MountTable {
    record: PathBuf,
    live: Mutex<HashMap<PathBuf, MountHandle>>,
}

impl MountTable {
    /// Unmounts what a previous daemon left mounted, then starts empty.
    pub fn recover(record: &Path) -> Self {
        let record = record.to_path_buf();
        if let Ok(text) = std::fs::read_to_string(&record) {
            for dir in text.lines().filter(|l| !l.is_empty()) {
                if is_mounted(Path::new(dir)) {
                    tracing::warn!(dir, "unmounting a stale mount left by a previous daemon");
                    let _ = std::process::Command::new("umount").arg("-l").arg(dir).status();
                }
            }
        }
        let _ = std::fs::remove_file(&record);
        Self {
            record,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn save(&self, live: &HashMap<PathBuf, MountHandle>) {
        let text: String = live.keys().map(|p| format!("{}\n", p.display())).collect();
        if let Err(e) = std::fs::write(&self.record, text) {
            tracing::warn!(error = %e, "cannot record mounts");
        }
    }

    /// Mounts on `dir` (blocking: call from the blocking pool).
    pub fn mount(
        &self,
        dir: &Path,
        blocks: MountBlocks,
        opts: MountOptions,
        rt: tokio::runtime::Handle,
    ) -> Result<PathBuf> {
        let io = |what: &str, e: std::io::Error| Error::BadRequest(format!("{what} {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| io("creating mount point", e))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| io("resolving mount point", e))?;
        let mut live = self.live.lock().expect("mounts lock");
        if live.contains_key(&dir) || is_mounted(&dir) {
            return Err(Error::Conflict(format!(
                "{} is already a mount point; `shoal unmount {}` first",
                dir.display(),
                dir.display()
            )));
        }
        let mut entries = std::fs::read_dir(&dir).map_err(|e| io("reading mount point", e))?;
        if entries.next().is_some() {
            return Err(Error::Conflict(format!("mount point {} is not empty", dir.display())));
        }
        let fs = Arc::new(MountFs::new(Arc::new(blocks), opts));
        let handle = shoal_fuse::mount(fs, &dir, rt).map_err(|e| {
            Error::BadRequest(format!(
                "mounting on {}: {e} (is /dev/fuse available and are we root or in group fuse?)",
                dir.display()
            ))
        })?;
        live.insert(dir.clone(), handle);
        self.save(&live);
        tracing::info!(dir = %dir.display(), "mounted");
        Ok(dir)
    }

    pub fn unmount(&self, dir: &Path) -> Result<PathBuf> {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let handle = {
            let mut live = self.live.lock().expect("mounts lock");
            let h = live.remove(&dir);
            self.save(&live);
            h
        };
        match handle {
            Some(h) => h
                .unmount()
                .map_err(|e| Error::Internal(format!("unmounting {}: {e}", dir.display())))?,
            None => {
                return Err(Error::NotFound(format!(
                    "{} is not mounted by this daemon (see `shoal mounts`)",
                    dir.display()
                )))
            }
        }
        tracing::info!(dir = %dir.display(), "unmounted");
        Ok(dir)
    }

    pub fn list(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.live.lock().expect("mounts lock").keys().cloned().collect();
        v.sort();
        v
    }

    /// Unmounts everything (daemon shutdown).
    pub fn unmount_all(&self) {
        let all: Vec<(PathBuf, MountHandle)> = self.live.lock().expect("mounts lock").drain().collect();
        for (dir, h) in all {
            if let Err(e) = h.unmount() {
                tracing::warn!(dir = %dir.display(), error = %e, "unmount failed; trying a lazy unmount");
                let _ = std::process::Command::new("umount").arg("-l").arg(&dir).status();
            }
        }
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Whether `dir` is a mount point, from /proc/self/mountinfo.
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&want))
}
