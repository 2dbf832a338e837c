//! [`Mirrors`]: what the mirror policy carries for the swarm and why, and
//! the policy's background task.

use std::sync::Arc;

use super::NodeCtx;
use crate::error::Result;
use crate::mirror::MirrorsView;

/// The mirror policy of the node (from [`super::Node::mirrors`]).
#[derive(Clone)]
pub struct Mirrors {
    pub(super) ctx: Arc<NodeCtx>,
}

impl Mirrors {
    /// What this node mirrors and why.
    pub async fn view(&self) -> Result<MirrorsView> {
        self.ctx.mirror.view(&self.ctx.services).await
    }

    /// Runs the mirror policy once now (it also runs on its schedule).
    pub async fn check(&self) -> Result<()> {
        self.ctx.mirror.check(&self.ctx.services).await
    }
}

/// The policy on its schedule: gossip of what is requested, mirroring of
/// what is popular or under its replica target, eviction of the rest.
pub(super) fn spawn_policy(ctx: &Arc<NodeCtx>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(ctx.mirror.clone().run(ctx.services.clone()))
}
