//! [`Mounts`]: the node's FUSE mounts (every dataset read-only under one
//! directory), listed and unmounted.

use std::path::PathBuf;
use std::sync::Arc;

use super::NodeCtx;
use crate::error::Result;
use crate::mounts::MountBlocks;

/// The node's mounts (from [`super::Node::mounts`]).
#[derive(Clone)]
pub struct Mounts {
    pub(super) ctx: Arc<NodeCtx>,
}

impl Mounts {
    /// Mounts every dataset read-only under `dir` (`dir/<name or CID>/...`).
    pub async fn mount(&self, dir: PathBuf) -> Result<PathBuf> {
        let rt = tokio::runtime::Handle::current();
        self.ctx
            .blocking(move |n| {
                let blocks = MountBlocks {
                    source: n.services.source.clone(),
                    store: n.services.store.clone(),
                    pop: n.services.pop.clone(),
                    metrics: n.metrics.clone(),
                };
                let opts = shoal_fuse::MountOptions {
                    readahead_files: n.mount.readahead_files,
                    max_inflight_blocks: n.mount.prefetch_inflight.max(1),
                    cache_bytes: n.mount.cache_bytes,
                    table_bytes: n.mount.table_bytes,
                    ..Default::default()
                };
                n.mounts.mount(&dir, blocks, opts, rt)
            })
            .await
    }

    pub async fn unmount(&self, dir: PathBuf) -> Result<PathBuf> {
        self.ctx.blocking(move |n| n.mounts.unmount(&dir)).await
    }

    /// Unmounts every mount: readers get their answers or errors now.
    pub async fn unmount_all(&self) {
        let _ = self
            .ctx
            .blocking(|n| {
                n.mounts.unmount_all();
                Ok(())
            })
            .await;
    }

    /// This node's live mounts.
    pub fn list(&self) -> Vec<PathBuf> {
        self.ctx.mounts.list()
    }
}
