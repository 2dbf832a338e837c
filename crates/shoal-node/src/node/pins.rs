//! [`Pins`]: the pins: pinning a dataset (fetching what is missing, with a
//! replica target), unpinning, listing pins and names.

use std::sync::Arc;

use std::collections::HashSet;

use shoal_core::{cid, Cid};
use shoal_store::PinKind;

use super::NodeCtx;
use crate::error::{Error, Result};
use crate::records::unix_now;
use crate::types::*;

/// The pins of the node (from [`super::Node::pins`]).
#[derive(Clone)]
pub struct Pins {
    pub(super) ctx: Arc<NodeCtx>,
}

impl Pins {
    /// Pins a dataset (user): fetches whatever is missing from every
    /// provider at once, verifies each block, then pins, names, records a
    /// replica target and announces it.
    pub async fn pin(
        &self,
        target: &Target,
        name: Option<String>,
        replicas: Option<u8>,
        progress: ProgressFn,
    ) -> Result<PinReport> {
        let _busy = self.ctx.busy();
        let root = target.dataset("pin")?;
        if root.codec() != cid::DAG_CBOR {
            return Err(Error::BadRequest(format!("{root} is a raw block, not a dataset")));
        }
        if let Some(name) = &name {
            shoal_store::validate_name(name)?;
        }
        if let Some(r) = replicas {
            if r == 0 || r > shoal_net::gossip::MAX_REPLICAS {
                return Err(Error::BadRequest(format!(
                    "--replicas must be between 1 and {}",
                    shoal_net::gossip::MAX_REPLICAS
                )));
            }
        }
        let report = self
            .ctx
            .blocking(move |n| {
                let store = &n.services.store;
                let was = store.pin_kinds(&root)?.contains(PinKind::User);
                let session = store.session();
                let fetched = n.services.ensure_local(root, &session, &*progress)?;
                store.pin(&root, PinKind::User)?;
                let view = n.services.ensure_view(root)?;
                if let Some(name) = &name {
                    store.set_name(name, &root)?;
                }
                if let Some(r) = replicas {
                    store.set_replica_target(&root, r, unix_now())?;
                }
                Ok((
                    PinReport {
                        root,
                        name,
                        changed: !was,
                        fetched,
                        replicas,
                    },
                    view,
                ))
            })
            .await?;
        let (report, view) = report;
        self.ctx.announce(root).await;
        self.ctx.announce(view).await;
        if let Some(name) = &report.name {
            self.ctx.names().republish(name).await;
        }
        Ok(report)
    }

    /// Drops the user pin (and the name, when the target was a name). A
    /// replica target that came with the pin is cancelled: the cancellation
    /// is gossiped (newest wins) so volunteers stop carrying it.
    pub async fn unpin(&self, target: &Target) -> Result<UnpinReport> {
        let root = target.dataset("unpin")?;
        let name = target.name.clone();
        self.ctx
            .blocking(move |n| {
                let store = &n.services.store;
                let user_pinned = store.unpin(&root, PinKind::User)?;
                let mut changed = user_pinned;
                if let Some(name) = &name {
                    changed |= store.remove_name(name)?.is_some();
                    // The name's older versions go with it (unless another name
                    // holds one).
                    let history = n.history(name).unwrap_or_default();
                    let named: HashSet<Cid> = store.names()?.into_iter().map(|x| x.1).collect();
                    for v in history
                        .versions
                        .iter()
                        .filter(|v| v.root != root && !named.contains(&v.root))
                    {
                        store.unpin(&v.root, PinKind::User)?;
                    }
                    crate::versions::remove(&n.versions_dir, name);
                }
                // A target carried for a mirror is not this user's to cancel.
                let target_cancelled = user_pinned && store.replica_targets()?.iter().any(|t| t.0 == root && t.1 > 0);
                if target_cancelled {
                    store.set_replica_target(&root, 0, unix_now())?;
                }
                let still_named = store
                    .names()?
                    .into_iter()
                    .filter(|n| n.1 == root)
                    .map(|n| n.0)
                    .collect();
                Ok(UnpinReport {
                    root,
                    changed,
                    still_named,
                    target_cancelled,
                })
            })
            .await
    }

    /// Pinned and named datasets, sorted by name then root.
    pub async fn list(&self) -> Result<Vec<PinEntry>> {
        self.ctx
            .blocking(|n| {
                let store = &n.services.store;
                let names = store.names()?;
                let mut roots: Vec<(Cid, Vec<PinKind>)> =
                    store.pins()?.into_iter().map(|p| (p.0, p.1.kinds())).collect();
                // Named but unpinned datasets are kept too; list them.
                for (_, c) in &names {
                    if !roots.iter().any(|r| r.0 == *c) {
                        roots.push((*c, Vec::new()));
                    }
                }
                let mut out: Vec<PinEntry> = roots
                    .into_iter()
                    .map(|(root, kinds)| {
                        let (keys, bytes) = store
                            .manifest(&root)
                            .map(|m| (m.key_count, m.total_bytes))
                            .unwrap_or((0, 0));
                        PinEntry {
                            root,
                            kinds,
                            names: names.iter().filter(|n| n.1 == root).map(|n| n.0.clone()).collect(),
                            bytes,
                            keys,
                        }
                    })
                    .collect();
                out.sort_by(|a, b| a.names.cmp(&b.names).then(a.root.cmp(&b.root)));
                Ok(out)
            })
            .await
    }
}
