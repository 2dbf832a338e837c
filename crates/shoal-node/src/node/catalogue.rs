//! [`Catalogue`]: the swarm's catalogue as this node holds it: search,
//! collections (one per publisher and name), items (one per version),
//! quick-looks, how many copies the swarm holds; and the entry a publish
//! signs and spreads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_core::Cid;
use shoal_net::catalogue::{self as wire, Summary, MAX_ENTRY_BYTES};

use super::NodeCtx;
use crate::catalogue::{Found, Item, SearchQuery};
use crate::error::{Error, Result};

pub use crate::catalogue::CatalogueStats;

/// Provider counts are looked up again after this long.
const COPIES_FRESH: Duration = Duration::from_secs(300);
/// Provider lookups for copy counts under way at once.
const COPIES_LOOKUPS: usize = 4;
/// Quick-looks kept on disk (the oldest go first).
const MAX_THUMBNAILS: usize = 4096;
/// Other publishers' entries relayed per announcement round.
pub(crate) const RELAY_PER_ROUND: usize = 32;
/// Room an envelope leaves the summary beside the signed record.
const RECORD_ROOM: usize = shoal_net::names::MAX_RECORD_BYTES + 64;

/// The catalogue (from [`super::Node::catalogue`]).
#[derive(Clone)]
pub struct Catalogue {
    pub(super) ctx: Arc<NodeCtx>,
}

impl Catalogue {
    /// Items matching `q` (checked first: a bad bbox, time or limit is a
    /// BadRequest).
    pub fn search(&self, q: SearchQuery) -> Result<Found> {
        let q = q.checked().map_err(Error::BadRequest)?;
        Ok(self.ctx.catalogue.search(&q))
    }

    /// A page of the collections (one per publisher and name, in name
    /// order): each one's newest item and version count; and the total.
    pub fn collections(&self, offset: usize, limit: usize) -> (Vec<(Item, usize)>, usize) {
        self.ctx.catalogue.collections(offset, limit)
    }

    /// One collection (`NAME.PUBLISHER`): its versions, newest first (none
    /// when the catalogue holds no such collection).
    pub fn collection(&self, id: &str) -> Vec<Item> {
        id.rsplit_once('.')
            .map(|(name, publisher)| self.ctx.catalogue.versions(publisher, name))
            .unwrap_or_default()
    }

    /// Every entry's counters (taken, refused by reason).
    pub fn stats(&self) -> &CatalogueStats {
        &self.ctx.catalogue.stats
    }

    /// Entries held (every version).
    pub fn len(&self) -> usize {
        self.ctx.catalogue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The quick-look PNG of the dataset `root` (one the catalogue lists):
    /// computed once (one at a time on this node) and kept by root.
    pub async fn thumbnail(&self, root: Cid) -> Result<Bytes> {
        let var = self
            .ctx
            .catalogue
            .by_root(root)
            .map(|i| i.summary.thumbnail)
            .ok_or_else(|| Error::NotFound(format!("{root} is not in the catalogue")))?;
        if var.is_empty() {
            return Err(Error::NotFound(format!("{root} has no variable to draw")));
        }
        let file = self.ctx.thumbs_dir().join(format!("{root}.png"));
        if let Ok(b) = tokio::fs::read(&file).await {
            return Ok(Bytes::from(b));
        }
        let _one = self
            .ctx
            .thumbnails
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("shutting down".into()))?;
        if let Ok(b) = tokio::fs::read(&file).await {
            return Ok(Bytes::from(b));
        }
        let png = self
            .ctx
            .blocking(move |n| {
                let png = crate::summary::thumbnail(&n.services, root, &var)?;
                crate::records::replace_file(&file, &png)
                    .map_err(|e| Error::Internal(format!("keeping the quick-look: {e}")))?;
                prune_oldest(file.parent().expect("a file in a directory"), MAX_THUMBNAILS);
                Ok(png)
            })
            .await?;
        Ok(Bytes::from(png))
    }

    /// How many copies of each root the swarm holds, as last looked up
    /// (None: not known yet; a lookup is started, at most a few at once).
    pub fn copies(&self, roots: &[Cid]) -> Vec<Option<usize>> {
        let cat = &self.ctx.catalogue;
        let mut out = Vec::with_capacity(roots.len());
        for &root in roots {
            let known = cat.copies_of(root);
            if known.is_none_or(|(_, at)| at.elapsed() > COPIES_FRESH) && cat.start_lookup(root, COPIES_LOOKUPS) {
                let ctx = self.ctx.clone();
                tokio::spawn(async move {
                    let services = ctx.services.clone();
                    let found = services
                        .net
                        .find_providers(root, services.provider_timeout.min(Duration::from_secs(10)))
                        .await
                        .unwrap_or_default();
                    let here = ctx
                        .blocking(move |n| Ok(n.services.complete_here(&root)))
                        .await
                        .unwrap_or(false);
                    let me = services.net.peer_id();
                    let n = found.iter().filter(|p| **p != me).count() + usize::from(here);
                    ctx.catalogue.set_copies(root, n, Instant::now());
                });
            }
            out.push(known.map(|(n, _)| n));
        }
        out
    }
}

/// Removes the oldest files of `dir` past `max`.
fn prune_oldest(dir: &std::path::Path, max: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= max {
        return;
    }
    files.sort();
    for (_, p) in &files[..files.len() - max] {
        let _ = std::fs::remove_file(p);
    }
}

impl NodeCtx {
    fn thumbs_dir(&self) -> std::path::PathBuf {
        self.results_dir.with_file_name("thumbnails")
    }

    /// The catalogue summary of `root` published as `name`, encoded so its
    /// envelope fits (variables past the room left are counted, not
    /// listed). None when the dataset cannot be summarised (logged).
    pub(super) async fn summary_of(self: &Arc<Self>, name: &str, root: Cid) -> Option<(Vec<u8>, Cid)> {
        let name = name.to_string();
        let made = self
            .blocking(move |n| {
                let view = n.services.ensure_view(root).ok();
                crate::summary::summarise(&n.services, root, &name, view)
            })
            .await;
        let mut s: Summary = match made {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%root, error = %e, "no catalogue entry: the dataset could not be summarised");
                return None;
            }
        };
        loop {
            match s.encode() {
                Ok((bytes, c)) if bytes.len() + RECORD_ROOM <= MAX_ENTRY_BYTES => return Some((bytes, c)),
                Ok(_) if !s.variables.is_empty() => {
                    s.variables.pop();
                    s.more_variables += 1;
                }
                Ok(_) => s.description.clear(),
                Err(e) => {
                    tracing::warn!(%root, error = %e, "no catalogue entry");
                    return None;
                }
            }
        }
    }

    /// Keeps this node's entry for a signed record and spreads it.
    pub(super) async fn spread_entry(self: &Arc<Self>, signed: &[u8], summary: &[u8]) {
        let envelope = match wire::envelope(signed, summary) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "no catalogue entry");
                return;
            }
        };
        let (cat, env) = (self.catalogue.clone(), envelope.clone());
        if let Err(e) = self
            .blocking(move |_| cat.keep_own(&env).map_err(Error::Internal))
            .await
        {
            tracing::warn!(error = %e, "cannot keep this node's catalogue entry");
        }
        let _ = self.services.net.publish_to(wire::TOPIC.to_string(), envelope).await;
    }

    /// Announces this node's current entries on the catalogue topic again,
    /// and relays [`RELAY_PER_ROUND`] of other publishers' (the next ones
    /// in turn), so a daemon that joins learns of publishers that are
    /// offline. A peer that holds an entry drops it without forwarding.
    pub(super) async fn announce_entries(&self) {
        let me = self.services.net.peer_id().to_string();
        let mut out: Vec<Vec<u8>> = Vec::new();
        for signed in self.names.all_published() {
            let Ok(r) = shoal_net::names::verify(&signed) else {
                continue;
            };
            if let Some(item) = self.catalogue.newest(&me, &r.name).filter(|i| i.root == r.root) {
                out.push(item.envelope.to_vec());
            }
        }
        out.extend(
            self.catalogue
                .relay_batch(&me, RELAY_PER_ROUND)
                .into_iter()
                .map(|e| e.to_vec()),
        );
        for e in out {
            let _ = self.services.net.publish_to(wire::TOPIC.to_string(), e).await;
        }
    }
}
