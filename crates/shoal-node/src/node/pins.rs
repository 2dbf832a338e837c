//! [`Pins`]: the pins: pinning a dataset (fetching what is missing, with a
//! replica target), unpinning, listing pins and names.

use std::sync::Arc;

use std::collections::{HashMap, HashSet};

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
        check_replicas(replicas)?;
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
                        unixfs: None,
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

    /// Pins a UnixFS directory that IPFS nodes hold (`root`: a dag-pb CID,
    /// sha2-256 or blake3, v0 or v1) by fetching it over bitswap from the
    /// peers at `from` and the connected peers: every block verified, the
    /// DAG walked under the walk budget into a CAR beside the store
    /// (kept on failure, so a retry resumes), then added exactly as
    /// `add FILE.car` adds it (refused, with nothing kept, if it holds no
    /// Zarr hierarchy). The report's root is the shoal dataset made.
    pub async fn pin_unixfs(
        &self,
        root: Cid,
        from: Vec<shoal_net::Multiaddr>,
        name: Option<String>,
        replicas: Option<u8>,
        progress: ProgressFn,
    ) -> Result<PinReport> {
        let _busy = self.ctx.busy();
        if let Some(name) = &name {
            shoal_store::validate_name(name)?;
        }
        check_replicas(replicas)?;
        let _importing = self.ctx.importing(root)?;
        let net = &self.ctx.services.net;
        let mut peers = Vec::new();
        for addr in from {
            let shown = addr.to_string();
            peers.push(
                net.dial(addr)
                    .await
                    .map_err(|e| Error::Unavailable(format!("cannot reach --from {shown}: {e}")))?,
            );
        }
        for p in net.peers().await.map_err(|e| Error::Unavailable(e.to_string()))? {
            if let Ok(id) = p.peer_id.parse() {
                peers.push(id);
            }
        }
        let dir = self.ctx.import_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
        let car_path = dir.join(format!("unixfs-{root}.car"));
        let limits = self.ctx.services.limits;
        let mut fetch = {
            let p = car_path.clone();
            self.ctx
                .blocking(move |_| crate::dag_fetch::DagFetch::open(&p, root, &limits))
                .await?
        };
        let drop_car = |e: Error| {
            let _ = std::fs::remove_file(&car_path);
            e
        };
        let start = fetch.start().map_err(drop_car)?;
        let mut p = Progress::default();
        let session = net.bitswap().fetch(peers, start, |cid, data| {
            let next = fetch.on_block(cid, &data)?;
            p.items_done += 1;
            p.bytes_done += data.len() as u64;
            progress(p);
            Ok::<_, Error>(next)
        });
        let report = match session.await {
            Ok(r) => r,
            // The DAG itself is refused: nothing is kept.
            Err(shoal_net::bitswap::SessionError::Stopped(e)) => return Err(drop_car(e)),
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "{e}; the {} blocks fetched so far are kept beside the store and the next `shoal pin {root}` resumes from them",
                    fetch.blocks + fetch.resumed
                )))
            }
        };
        let resumed = fetch.resumed;
        let car = fetch.finish().map_err(drop_car)?;
        tracing::info!(%root, blocks = report.blocks, bytes = report.bytes, resumed, peers = report.peers_used.len(), "fetched a UnixFS DAG over bitswap");
        let added = self
            .ctx
            .datasets()
            .add_car(car.clone(), name.clone(), AddOptions::default(), progress)
            .await;
        // Kept when the add failed for a reason of this machine's (a full
        // disk): the next pin resumes from it without fetching again.
        if matches!(added, Ok(_) | Err(Error::BadRequest(_))) {
            let _ = std::fs::remove_file(&car);
        }
        let added = added?;
        if let Some(r) = replicas {
            let ds = added.root;
            self.ctx
                .blocking(move |n| Ok(n.services.store.set_replica_target(&ds, r, unix_now())?))
                .await?;
        }
        Ok(PinReport {
            root: added.root,
            name,
            changed: true,
            fetched: Some(shoal_net::FetchReport {
                root: root.to_string(),
                blocks_fetched: report.blocks,
                bytes_fetched: report.bytes,
                already_local: false,
                peers_used: report.peers_used.iter().map(|p| p.to_string()).collect(),
                banned: Vec::new(),
                links: Vec::new(),
            }),
            replicas,
            unixfs: Some(UnixfsImport {
                root,
                resumed_blocks: resumed,
            }),
        })
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
        self.page(None, usize::MAX).await
    }

    /// Up to `limit` of [`Self::list`]'s entries, those after the entry of
    /// root `after` (the last of the previous page). The order comes from
    /// the pin and name tables alone; only the page's manifests are read
    /// (for sizes), so a page of a 100,000-dataset store costs one pass
    /// over the two tables, not 100,000 manifest reads.
    pub async fn page(&self, after: Option<Cid>, limit: usize) -> Result<Vec<PinEntry>> {
        self.ctx
            .blocking(move |n| {
                let store = &n.services.store;
                let mut named: HashMap<Cid, Vec<String>> = HashMap::new();
                // The name table iterates in name order: each root's names
                // come out sorted.
                for (name, c) in store.names()? {
                    named.entry(c).or_default().push(name);
                }
                let pins = store.pins()?;
                let pinned: HashSet<Cid> = pins.iter().map(|p| p.0).collect();
                let none = Vec::new();
                let names_of = |c: &Cid| named.get(c).unwrap_or(&none);
                // Named but unpinned datasets are kept too; list them.
                let mut roots: Vec<(&Vec<String>, Cid, Vec<PinKind>)> = pins
                    .into_iter()
                    .map(|p| (names_of(&p.0), p.0, p.1.kinds()))
                    .chain(
                        named
                            .iter()
                            .filter(|(c, _)| !pinned.contains(c))
                            .map(|(c, n)| (n, *c, Vec::new())),
                    )
                    .collect();
                // Past the cursor, then the first `limit` of those, sorted:
                // one pass and a partial selection, not a sort of every
                // dataset for each page.
                if let Some(after) = after {
                    let key = (names_of(&after), after);
                    roots.retain(|r| (r.0, r.1) > key);
                }
                let by_key = |a: &(&Vec<String>, Cid, Vec<PinKind>), b: &(&Vec<String>, Cid, Vec<PinKind>)| {
                    (a.0, a.1).cmp(&(b.0, b.1))
                };
                if limit < roots.len() {
                    roots.select_nth_unstable_by(limit, by_key);
                    roots.truncate(limit);
                }
                roots.sort_unstable_by(by_key);
                // A manifest that cannot be read shows as size 0, as before.
                Ok(roots
                    .into_iter()
                    .map(|(names, root, kinds)| {
                        let (keys, bytes) = store
                            .manifest(&root)
                            .map(|m| (m.key_count, m.total_bytes))
                            .unwrap_or((0, 0));
                        PinEntry {
                            root,
                            kinds,
                            names: names.clone(),
                            bytes,
                            keys,
                        }
                    })
                    .collect())
            })
            .await
    }
}

/// A replica target is 1 to [`shoal_net::gossip::MAX_REPLICAS`] copies.
fn check_replicas(replicas: Option<u8>) -> Result<()> {
    match replicas {
        Some(r) if r == 0 || r > shoal_net::gossip::MAX_REPLICAS => Err(Error::BadRequest(format!(
            "--replicas must be between 1 and {}",
            shoal_net::gossip::MAX_REPLICAS
        ))),
        _ => Ok(()),
    }
}
