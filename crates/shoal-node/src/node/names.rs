//! [`Names`]: the published names and follows: publishing, following, and the
//! announcer and follow-updater tasks started with the node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_net::PeerId;
use shoal_store::PinKind;

use super::NodeCtx;
use crate::error::{Error, Result};
use crate::records::unix_now;

/// The names this node publishes and follows (from [`super::Node::names`]).
#[derive(Clone)]
pub struct Names {
    pub(super) ctx: Arc<NodeCtx>,
}

impl Names {
    /// Publishes `name`: signs a record pointing at its current root (the
    /// next sequence number, or the held record again when the name has
    /// not moved), puts it on the DHT and announces it on its topic. Later
    /// versions of the name are published automatically.
    pub async fn publish(&self, name: &str) -> Result<crate::names::PublishReport> {
        let names = self.ctx.names.clone();
        let name = name.to_string();
        // The highest record of this name on the DHT: after a lost record
        // file, an unpublish or a restored backup the next sequence must
        // still pass it. A lookup that finds nothing (no peers yet) leaves
        // what this node knows. With the record kept here (the usual
        // republish after an add) the lookup gets at most 2 s, so a slow
        // DHT does not hold the add's answer for the full lookup deadline.
        let seen = {
            let key = shoal_net::names::dht_key(&self.ctx.services.net.peer_id(), &name);
            let mut lookup = self.ctx.names.settings.lookup;
            if self.ctx.names.published(&name).is_some() {
                lookup = lookup.min(Duration::from_secs(2));
            }
            match self.ctx.services.net.get_name(key, lookup).await {
                Ok(found) => {
                    crate::names::newest(found, &self.ctx.services.net.peer_id(), &name).map_or(0, |(r, _)| r.seq)
                }
                Err(e) => {
                    tracing::debug!(name, error = %e, "no record of this name found on the DHT");
                    0
                }
            }
        };
        let root = {
            let name = name.clone();
            self.ctx
                .blocking(move |n| {
                    n.services
                        .store
                        .resolve_name(&name)?
                        .ok_or_else(|| Error::NotFound(format!("no name {name:?} here (shoal pins lists names)")))
                })
                .await?
        };
        // The catalogue entry: a summary of this version, its CID signed
        // in the record.
        let summary = self.ctx.summary_of(&name, root).await;
        let entry = summary.as_ref().map(|(_, c)| *c);
        let (r, signed, new) = self
            .ctx
            .blocking(move |_| match names.published(&name) {
                Some((r, b)) if r.root == root && r.seq >= seen && r.entry == entry => Ok((r, b, false)),
                _ => names.sign_next(&name, root, seen, entry).map(|(r, b)| (r, b, true)),
            })
            .await?;
        let net = &self.ctx.services.net;
        net.put_name(signed.clone()).await?;
        net.publish_to(shoal_net::names::topic(&r.publisher(), &r.name), signed.clone())
            .await?;
        if let Some((bytes, _)) = &summary {
            self.ctx.spread_entry(&signed, bytes).await;
        }
        tracing::info!(name = %r.name, root = %r.root, seq = r.seq, "published");
        Ok(crate::names::PublishReport {
            publisher: r.publisher().to_string(),
            name: r.name,
            root: r.root,
            seq: r.seq,
            new,
        })
    }

    /// Stops publishing `name` (peers keep the last record until it
    /// expires); false if it was not published.
    pub async fn unpublish(&self, name: &str) -> Result<bool> {
        let (names, name) = (self.ctx.names.clone(), name.to_string());
        self.ctx.blocking(move |_| names.unpublish(&name)).await
    }

    /// Publishes `name` again if it is published (after it moved).
    pub(super) async fn republish(&self, name: &str) {
        if self.ctx.names.published(name).is_some() {
            if let Err(e) = self.publish(name).await {
                tracing::warn!(name, error = %e, "publishing the new version failed");
            }
        }
    }

    /// Follows `PEER/NAME` under the local name `local` (default NAME):
    /// subscribes to its announcements, looks up the newest record and
    /// takes that version before returning; keeps following afterwards.
    pub async fn follow(&self, spec: &str, local: Option<String>, keep: Option<u32>) -> Result<crate::names::Follow> {
        let (peer, name) = crate::names::parse_follow(spec)?;
        if peer == self.ctx.services.net.peer_id() {
            return Err(Error::BadRequest("that is this daemon's own name".into()));
        }
        if keep == Some(0) {
            return Err(Error::BadRequest("--keep must be at least 1".into()));
        }
        let local = local.unwrap_or_else(|| name.clone());
        shoal_store::validate_name(&local)?;
        let names = self.ctx.names.clone();
        let key = (peer.to_string(), name.clone());
        if let Some(other) = names
            .by_local(&local)
            .filter(|f| (f.publisher.clone(), f.name.clone()) != key)
        {
            return Err(Error::Conflict(format!(
                "{local} already follows {}/{}; unfollow it first or choose --as",
                other.publisher, other.name
            )));
        }
        let f = match names.get(&key) {
            Some(mut f) => {
                f.local = local;
                f.keep = keep.or(f.keep);
                f
            }
            None => crate::names::Follow {
                publisher: key.0.clone(),
                name: name.clone(),
                local,
                keep,
                seq: 0,
                root: None,
                updated: 0,
                error: None,
                failures: 0,
                pending: Vec::new(),
            },
        };
        {
            let (names, f) = (names.clone(), f.clone());
            self.ctx.blocking(move |_| names.save(&f)).await?;
        }
        let net = &self.ctx.services.net;
        net.subscribe(shoal_net::names::topic(&peer, &name), true).await?;
        self.lookup_follow(&peer, &name).await;
        self.update_follow(key.clone()).await;
        let f = names
            .get(&key)
            .ok_or_else(|| Error::Internal("the follow vanished".into()))?;
        if f.seq == 0 && f.error.is_none() {
            let mut f = f;
            f.error = Some(format!(
                "no record of {peer}/{name} found yet (not published, or the publisher is offline and no peer holds it); still following"
            ));
            return Ok(f);
        }
        Ok(f)
    }

    /// Every follow.
    pub fn follows(&self) -> Vec<crate::names::Follow> {
        self.ctx.names.follows()
    }

    /// Stops following into the local name `local` (its versions stay).
    pub async fn unfollow(&self, local: &str) -> Result<crate::names::Follow> {
        let (names, l) = (self.ctx.names.clone(), local.to_string());
        let f = self
            .ctx
            .blocking(move |_| Ok(names.remove(&l)))
            .await?
            .ok_or_else(|| Error::NotFound(format!("{local} follows nothing (shoal follows lists follows)")))?;
        if let Ok((peer, name)) = f.source() {
            self.ctx
                .services
                .net
                .subscribe(shoal_net::names::topic(&peer, &name), false)
                .await?;
        }
        Ok(f)
    }

    /// Looks the followed name up on the DHT; a newer record than the
    /// follow knows is kept as pending (and wakes the updater).
    async fn lookup_follow(&self, peer: &PeerId, name: &str) {
        let names = &self.ctx.names;
        let key = shoal_net::names::dht_key(peer, name);
        let found = self
            .ctx
            .services
            .net
            .get_name(key, names.settings.lookup)
            .await
            .unwrap_or_default();
        if let Some((r, b)) = crate::names::newest(found, peer, name) {
            names.heard(&r, &b);
        }
    }

    /// Takes the pending version of a follow, if newer than the one held:
    /// fetches what is missing, pins it, points the local name at it.
    async fn update_follow(&self, key: (String, String)) {
        let names = self.ctx.names.clone();
        let _one = names.updating.lock().await;
        let Some(f) = names.get(&key) else { return };
        let Ok(r) = shoal_net::names::verify(&f.pending) else {
            return;
        };
        if r.seq <= f.seq {
            return;
        }
        let (local, keep, root) = (f.local.clone(), f.keep, r.root);
        let started = Instant::now();
        let took = self
            .ctx
            .blocking(move |n| {
                let store = &n.services.store;
                let session = store.session();
                let fetched = n.services.ensure_local(root, &session, &|_| {})?;
                store.pin(&root, PinKind::User)?;
                let view = n.services.ensure_view(root)?;
                let previous = store.resolve_name(&local)?;
                store.set_name(&local, &root)?;
                let bytes = fetched.as_ref().map_or(0, |f| f.bytes_fetched);
                n.record_version(&local, previous, root, bytes, keep)?;
                Ok((bytes, view))
            })
            .await;
        // Unfollowed meanwhile: the version stays, the follow is gone.
        let Some(mut f) = names.get(&key) else { return };
        match took {
            Ok((bytes, view)) => {
                self.ctx.announce(root).await;
                self.ctx.announce(view).await;
                tracing::info!(publisher = %key.0, name = %key.1, seq = r.seq, %root, bytes, secs = started.elapsed().as_secs_f64(), "took a followed version");
                f.seq = r.seq;
                f.root = Some(root);
                f.updated = unix_now();
                f.error = None;
                f.failures = 0;
                if f.pending_seq_is(r.seq) {
                    f.pending.clear();
                }
            }
            Err(e) => {
                // Retried after 5 s, doubling per failure up to the poll
                // interval (a publisher or peers back online are noticed
                // soon, a long outage costs little).
                let delay = (Duration::from_secs(5) * 2u32.pow(f.failures.min(6))).min(names.settings.poll);
                tracing::warn!(publisher = %key.0, name = %key.1, seq = r.seq, error = %e, retry_in = ?delay, "taking a followed version failed");
                f.error = Some(e.to_string());
                f.failures = f.failures.saturating_add(1);
                let (names, key) = (names.clone(), key.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    names.wake(key);
                });
            }
        }
        let newer = !f.pending.is_empty();
        let _ = self.ctx.blocking(move |n| n.names.save(&f)).await;
        if newer {
            names.wake(key);
        }
    }
}

impl NodeCtx {
    /// Puts published records back on the DHT and subscribes to followed
    /// names (at start).
    pub(super) async fn names_online(&self) -> Result<()> {
        let net = &self.services.net;
        for signed in self.names.all_published() {
            net.put_name(signed).await?;
        }
        for f in self.names.follows() {
            if let Ok((peer, name)) = f.source() {
                net.subscribe(shoal_net::names::topic(&peer, &name), true).await?;
            }
        }
        Ok(())
    }
}

/// The announcer: current records again (followers ignore what they
/// hold), and on the DHT every PUT_EVERY rounds.
pub(super) fn spawn_announcer(ctx: &Arc<NodeCtx>) -> tokio::task::JoinHandle<()> {
    let (names, net) = (ctx.names.clone(), ctx.services.net.clone());
    let weak = Arc::downgrade(ctx);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(names.settings.announce);
        let mut round = 0u32;
        let mut joins = 0;
        loop {
            tick.tick().await;
            round = round.wrapping_add(1);
            // Catalogue entries: every CATALOGUE_EVERY rounds, and at once
            // when a peer has joined the catalogue topic since the last.
            let joined = net.stats().catalogue_joins.load(std::sync::atomic::Ordering::Relaxed);
            if joined != joins || round.is_multiple_of(crate::names::CATALOGUE_EVERY) {
                joins = joined;
                if let Some(ctx) = weak.upgrade() {
                    ctx.announce_entries().await;
                }
            }
            for signed in names.all_published() {
                let Ok(r) = shoal_net::names::verify(&signed) else {
                    continue;
                };
                if round.is_multiple_of(crate::names::PUT_EVERY) {
                    let _ = net.put_name(signed.clone()).await;
                }
                let _ = net
                    .publish_to(shoal_net::names::topic(&r.publisher(), &r.name), signed)
                    .await;
            }
        }
    })
}

/// The follow updater: wake-ups from gossip (and follow), a DHT lookup of
/// every follow each poll (the first at once: an update a restart cut
/// short completes). Holds the node weakly: it ends with the node.
pub(super) fn spawn_updater(ctx: &Arc<NodeCtx>) -> tokio::task::JoinHandle<()> {
    let mut wakes = ctx
        .wakes
        .lock()
        .expect("wakes lock")
        .take()
        .expect("the updater starts once");
    let poll_every = ctx.names.settings.poll;
    let weak = Arc::downgrade(ctx);
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(poll_every);
        loop {
            tokio::select! {
                key = wakes.recv() => {
                    let (Some(key), Some(ctx)) = (key, weak.upgrade()) else { break };
                    Names { ctx }.update_follow(key).await;
                }
                _ = poll.tick() => {
                    let Some(ctx) = weak.upgrade() else { break };
                    let names = Names { ctx };
                    for f in names.follows() {
                        if let Ok((peer, name)) = f.source() {
                            names.lookup_follow(&peer, &name).await;
                        }
                        names.update_follow(f.key()).await;
                    }
                }
            }
        }
    })
}
