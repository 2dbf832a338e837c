//! The mirror policy: popularity-driven mirrors and replica targets.
//!
//! One task per daemon. Every `gossip_interval` it publishes this daemon's
//! report (its counts, the replica targets it carries, its spare budget, the
//! mirrors it is fetching). Every `check_interval` it runs [`Mirror::check`]:
//!
//! 1. Targets: a target is an author's claim. One the local user set here
//!    (`shoal pin --replicas`) is what this daemon acts on for that
//!    dataset, whatever peers claim. Otherwise the highest claim counts:
//!    the claims heard in fresh reports (each peer's own, replaced by its
//!    next report) and the one this daemon carries for a copy it holds,
//!    recorded with the author it was heard from and updated only by that
//!    author, so a peer's cancellation cancels nothing but its own claim
//!    ([`merge_targets`]).
//! 2. Wants: datasets whose score reaches the threshold want
//!    `min(max_popular_replicas, 1 + score / threshold)` copies; a target
//!    wants its copies; the larger counts.
//! 3. For a want this daemon does not hold, it counts the providers that are
//!    reachable now (a DHT provider record outlives a killed daemon) plus
//!    the live peers already fetching it. If copies are missing, the
//!    volunteers (live peers with spare budget for it, and this daemon) are
//!    ranked by `blake3(root || peer id)`: every daemon computes the same
//!    ranking from the same reports, so exactly the first `missing`
//!    volunteers fetch, without a coordinator and without overshoot. A
//!    daemon acts only once its view has settled (two report intervals of
//!    uptime, two seconds after a want appears); one whose mirror failed
//!    reports no spare room while it backs off. If copies stay missing (a
//!    chosen volunteer died), the window widens by one every six report
//!    intervals.
//! 4. A volunteer without room evicts mirrors less requested than the
//!    dataset it wants (never one held for a target, never a user pin); a
//!    daemon over budget evicts its least requested mirrors first.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::Cid;
use shoal_net::{gossip, PeerId};
use shoal_store::{PinKind, Store};

use crate::config::{Budget, MirrorSettings, AUTO_BUDGET_MAX};
use crate::error::{Error, Result};
use crate::popularity::{Claim, GossipStats, Popularity, Score};
use crate::records::unix_now;
use crate::services::Services;

/// Wants whose providers are checked per policy run (each costs a DHT
/// lookup and a dial per provider).
const MAX_CHECKS_PER_RUN: usize = 8;
/// Mirrors fetched at once.
const MAX_CONCURRENT_FETCHES: usize = 2;
/// How long a want must have been seen before this daemon acts on it.
const WANT_SETTLE: Duration = Duration::from_secs(2);
/// How long a cancelled target (0 copies) keeps being announced.
const TOMBSTONE_SECS: u64 = 3600;
/// While its report says the same thing, a daemon doubles the time between
/// reports up to this many report intervals (saying so in the report, so
/// peers keep it fresh that much longer).
const IDLE_STRETCH: u32 = 8;

/// When the next report goes out (see [`Pace::decide`]).
#[derive(Default)]
struct Pace {
    /// The last report sent (its `every` as sent) and when.
    last: Option<(std::time::Instant, gossip::Report)>,
    /// The current multiple of the report interval, 1..=IDLE_STRETCH.
    stretch: u32,
    /// `popularity_joins` when the last report went out.
    joins: u64,
}

impl Pace {
    /// Given the report due now (with the base interval in `every`), whether
    /// to send it, and with what `every`. At once, back at the base
    /// interval, when it says something new or a peer joined the topic since
    /// the last one (a newcomer must hear every daemon within an interval to
    /// rank volunteers as the others do; and peers refuse a report sooner
    /// than half the interval the last one announced, so an early report
    /// must announce the base); otherwise when the stretched interval has
    /// passed, stretching it further.
    fn decide(&mut self, mut report: gossip::Report, joins: u64, now: std::time::Instant) -> Option<gossip::Report> {
        let base = report.every;
        let changed = self.last.as_ref().is_none_or(|(_, r)| !same_news(r, &report));
        if changed || joins != self.joins {
            self.stretch = 1;
        } else {
            let (at, _) = self.last.as_ref().expect("unchanged implies a last report");
            // Ticks jitter: due within half an interval of the stretch.
            let elapsed = now.duration_since(*at).as_secs_f64() + f64::from(base) / 2.0;
            if elapsed < f64::from(base * self.stretch) {
                return None;
            }
            self.stretch = (self.stretch * 2).min(IDLE_STRETCH);
        }
        report.every = (base * self.stretch).min(gossip::MAX_EVERY_SECS);
        self.joins = joins;
        self.last = Some((now, report.clone()));
        Some(report)
    }
}

/// Whether two reports tell peers the same: counts, targets and mirrors
/// being fetched equal, and spare room within a sixteenth (it moves with
/// every write; ranking needs its size, not its last byte).
fn same_news(a: &gossip::Report, b: &gossip::Report) -> bool {
    let spare_close = (a.spare == 0) == (b.spare == 0) && a.spare.abs_diff(b.spare) <= a.spare.max(b.spare) / 16;
    a.window == b.window && a.counts == b.counts && a.targets == b.targets && a.fetching == b.fetching && spare_close
}

/// Why this daemon chose a mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its score reached the threshold.
    Popular,
    /// A replica target asked for more copies.
    Replicas,
}

#[derive(Debug, Clone)]
pub struct Why {
    pub reason: Reason,
    /// The score when this daemon chose it.
    pub score: u64,
    /// Sources (this daemon and peers) behind that score.
    pub sources: usize,
    pub copies_wanted: u8,
}

#[derive(Default)]
struct State {
    fetching: HashMap<Cid, (u64, Why)>,
    why: HashMap<Cid, Why>,
    /// Reachable providers at the last check, and when (unix seconds).
    providers: HashMap<Cid, (usize, u64)>,
    /// Mirrors that failed here (no room on disk, quota, providers gone),
    /// and when: this daemon does not volunteer for them for a while, and
    /// the others' widening window takes over.
    failed: HashMap<Cid, (std::time::Instant, String)>,
    /// Wants no daemon announces on the DHT (nothing to mirror from), and
    /// when that was seen: not looked up again for a while.
    unannounced: HashMap<Cid, std::time::Instant>,
    /// Since when copies of a want have been missing.
    stalled: HashMap<Cid, std::time::Instant>,
    /// The spare budget in our last report: peers rank volunteers by it,
    /// so we must judge ourselves by the same figure.
    published_spare: u64,
    /// When each want was first seen: a daemon acts on a want only after
    /// [`WANT_SETTLE`], so that reports sent at about the same moment are
    /// all in and every daemon ranks the same volunteers.
    first_seen: HashMap<Cid, std::time::Instant>,
    last_error: Option<String>,
    /// Policy runs completed since start.
    runs: u64,
}

pub struct Mirror {
    pub pop: Arc<Popularity>,
    pub settings: MirrorSettings,
    state: Mutex<State>,
    /// A daemon's view of who is live is partial until it has heard every
    /// peer's report: it volunteers only after two report intervals.
    started: std::time::Instant,
}

/// What this daemon holds, read from the store in one go.
struct Holdings {
    held: HashSet<Cid>,
    /// Mirror-only pins (no user pin, no name): (root, bytes).
    mirrors: Vec<(Cid, u64)>,
    targets: HashMap<Cid, Recorded>,
}

/// A replica target recorded in this daemon's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub copies: u8,
    pub set_at: u64,
    /// The peer it was heard from; None: the local user set it.
    pub author: Option<PeerId>,
}

/// Merges the targets recorded here with the claims heard (see the module
/// docs, step 1): the target this daemon acts on for each dataset, and the
/// carried records to write (a first claim for a dataset held here, or its
/// author's newer claim).
pub(crate) fn merge_targets(
    recorded: &HashMap<Cid, Recorded>,
    held: &HashSet<Cid>,
    claims: &[Claim],
) -> (HashMap<Cid, Recorded>, Vec<(Cid, Recorded)>) {
    let mut carried: HashMap<Cid, Recorded> = recorded.clone();
    let mut writes = Vec::new();
    // Highest copies first, then newest: the claim a new record takes.
    let mut claims: Vec<&Claim> = claims.iter().collect();
    claims.sort_by(|a, b| b.copies.cmp(&a.copies).then(b.set_at.cmp(&a.set_at)));
    for c in &claims {
        let claim = Recorded {
            copies: c.copies,
            set_at: c.set_at,
            author: Some(c.author),
        };
        let update = match carried.get(&c.root) {
            None => held.contains(&c.root) && c.copies > 0,
            Some(r) => r.author == Some(c.author) && c.set_at > r.set_at,
        };
        if update {
            carried.insert(c.root, claim);
            writes.push((c.root, claim));
        }
    }
    let mut out = carried.clone();
    for c in claims {
        if carried.get(&c.root).is_some_and(|r| r.author.is_none()) {
            continue; // the local user's target stands
        }
        let better = out
            .get(&c.root)
            .is_none_or(|t| (c.copies, c.set_at) > (t.copies, t.set_at));
        if better {
            out.insert(
                c.root,
                Recorded {
                    copies: c.copies,
                    set_at: c.set_at,
                    author: Some(c.author),
                },
            );
        }
    }
    (out, writes)
}

fn holdings(store: &Store) -> shoal_store::Result<Holdings> {
    let names = store.names()?;
    let named: HashSet<Cid> = names.iter().map(|n| n.1).collect();
    let mut held = named.clone();
    let mut mirrors = Vec::new();
    for (root, kinds, _) in store.pins()? {
        if kinds.contains(PinKind::User) || kinds.contains(PinKind::Mirror) {
            held.insert(root);
        }
        if kinds.contains(PinKind::Mirror) && !kinds.contains(PinKind::User) && !named.contains(&root) {
            let bytes = store.manifest(&root).map(|m| m.total_bytes).unwrap_or(0);
            mirrors.push((root, bytes));
        }
    }
    let targets = store
        .authored_replica_targets()?
        .into_iter()
        .filter_map(|t| {
            let author = match t.author {
                None => None,
                // An author that no longer parses cannot update it: dropped.
                Some(a) => Some(PeerId::from_bytes(&a).ok()?),
            };
            Some((
                t.root,
                Recorded {
                    copies: t.copies,
                    set_at: t.set_at,
                    author,
                },
            ))
        })
        .collect();
    Ok(Holdings { held, mirrors, targets })
}

/// The rendezvous rank of `peer` for `root`: lower volunteers first.
fn rank(root: &Cid, peer: &PeerId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&root.to_bytes());
    h.update(&peer.to_bytes());
    *h.finalize().as_bytes()
}

/// The mirrors that may give up their room to a dataset scored `sc`: those
/// held for no replica target and less requested, least requested first.
fn room_for(h: &Holdings, sc: u64, target_of: &impl Fn(&Cid) -> u8, score: &impl Fn(&Cid) -> u64) -> Vec<(Cid, u64)> {
    let mut order: Vec<(Cid, u64)> = h
        .mirrors
        .iter()
        .filter(|m| target_of(&m.0) == 0 && score(&m.0) < sc)
        .copied()
        .collect();
    order.sort_by_key(|m| (score(&m.0), m.0));
    order
}

impl Mirror {
    pub fn new(pop: Arc<Popularity>, settings: MirrorSettings) -> Self {
        Self {
            pop,
            settings,
            state: Mutex::new(State::default()),
            started: std::time::Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("mirror state lock")
    }

    fn budget(&self, store: &Store, mirrored: u64) -> u64 {
        match self.settings.budget {
            Budget::Fixed(b) => b,
            // The budget counts what mirrors already use as free, or it
            // would shrink as they fill the disk and evict them again.
            Budget::Auto => ((crate::config::free_disk(store.dir()).unwrap_or(0) + mirrored) / 10).min(AUTO_BUDGET_MAX),
        }
    }

    fn popular_copies(&self, score: u64) -> u8 {
        if score < self.settings.threshold {
            return 0;
        }
        (1 + score / self.settings.threshold).min(u64::from(self.settings.max_popular)) as u8
    }

    /// Runs the policy until the process ends. Reports go out from their
    /// own task: a slow policy run (DHT lookups, dials) must not make this
    /// daemon's reports late, or peers would take it for gone.
    pub(crate) async fn run(self: Arc<Self>, d: Arc<Services>) {
        if let Some(every) = self.settings.every {
            let (this, d) = (self.clone(), d.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut pace = Pace::default();
                loop {
                    tick.tick().await;
                    if let Err(e) = this.publish(&d, &mut pace).await {
                        tracing::debug!(error = %e, "popularity report not sent");
                    }
                }
            });
        }
        // Once a second: has a dataset just become popular?
        let pop = self.pop.clone();
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(Duration::from_secs(1));
            loop {
                poll.tick().await;
                if pop.newly_popular() {
                    pop.changed.notify_one();
                }
            }
        });
        let mut check = tokio::time::interval(self.settings.check);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // On schedule, or early when a dataset has just become popular
            // or a new replica target was heard (at most once a second).
            tokio::select! {
                _ = check.tick() => {}
                _ = self.pop.changed.notified() => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    check.reset();
                }
            }
            let r = self.check(&d).await;
            let mut st = self.lock();
            st.last_error = r.as_ref().err().map(|e| e.to_string());
            st.runs += 1;
            drop(st);
            if let Err(e) = r {
                tracing::warn!(error = %e, "mirror policy run failed");
            }
        }
    }

    async fn holdings(&self, d: &Arc<Services>) -> Result<(Holdings, u64)> {
        let store = d.store.clone();
        let h = tokio::task::spawn_blocking(move || holdings(&store)).await??;
        let used: u64 = h.mirrors.iter().map(|m| m.1).sum();
        Ok((h, used))
    }

    async fn publish(&self, d: &Arc<Services>, pace: &mut Pace) -> Result<()> {
        let (h, used) = self.holdings(d).await?;
        let budget = self.budget(&d.store, used);
        let (fetching, fetch_bytes): (Vec<Cid>, u64) = {
            let s = self.lock();
            (
                s.fetching.keys().copied().collect(),
                s.fetching.values().map(|f| f.0).sum(),
            )
        };
        // A daemon whose mirror just failed (full disk, quota) says it has no
        // room while it backs off, so peers rank the next volunteer at once.
        let backing_off = {
            let backoff = 10 * self.settings.check;
            self.lock().failed.values().any(|f| f.0.elapsed() < backoff)
        };
        let spare = if backing_off {
            0
        } else {
            budget.saturating_sub(used + fetch_bytes)
        };
        // Carry the targets of what we hold, and cancellations.
        let targets = h
            .targets
            .iter()
            .filter(|(r, t)| h.held.contains(r) || t.copies == 0)
            .map(|(r, t)| (*r, t.copies, t.set_at))
            .collect();
        let every = self.settings.every.unwrap_or(Duration::from_secs(60));
        let report = self.pop.report(every, spare, targets, fetching);
        let joins = d
            .net
            .stats()
            .popularity_joins
            .load(std::sync::atomic::Ordering::Relaxed);
        let Some(report) = pace.decide(report, joins, std::time::Instant::now()) else {
            return Ok(());
        };
        self.lock().published_spare = report.spare;
        d.net.publish(report.encode()).await?;
        Ok(())
    }

    /// One policy run (see the module docs).
    pub(crate) async fn check(self: &Arc<Self>, d: &Arc<Services>) -> Result<()> {
        let (mut h, mut used) = self.holdings(d).await?;
        let now = unix_now();
        // 1. Targets: merge, carry newer ones for what we hold, expire
        //    announced cancellations.
        let claims = self.pop.claims();
        let (targets, writes) = merge_targets(&h.targets, &h.held, &claims);
        let mut record: Vec<(Cid, Option<Recorded>)> = writes.into_iter().map(|(r, t)| (r, Some(t))).collect();
        for (root, t) in &h.targets {
            if t.copies == 0 && t.set_at + TOMBSTONE_SECS < now {
                record.push((*root, None));
            }
        }
        if !record.is_empty() {
            let store = d.store.clone();
            tokio::task::spawn_blocking(move || -> shoal_store::Result<()> {
                for (root, t) in record {
                    match t {
                        Some(t) => record_target(&store, &root, t)?,
                        None => store.remove_replica_target(&root)?,
                    }
                }
                Ok(())
            })
            .await??;
        }
        let scores: HashMap<Cid, (u64, usize)> = self
            .pop
            .scores()
            .into_iter()
            .map(|s| (s.root, (s.score, s.sources)))
            .collect();
        let score = |r: &Cid| scores.get(r).map_or(0, |s| s.0);
        let target_of = |r: &Cid| targets.get(r).map(|t| t.copies).unwrap_or(0);

        // Over budget (it shrank, or mirrors grew): least requested first,
        // those held for a target last.
        let budget = self.budget(&d.store, used);
        if used > budget {
            let mut order = h.mirrors.clone();
            order.sort_by_key(|m| (target_of(&m.0) > 0, score(&m.0)));
            let mut evict = Vec::new();
            for (root, bytes) in order {
                if used <= budget {
                    break;
                }
                used -= bytes;
                evict.push(root);
            }
            self.evict(d, &evict, "over the mirror budget").await?;
            h.mirrors.retain(|m| !evict.contains(&m.0));
        }

        // 2. Wants, most requested first.
        let mut wants: Vec<(Cid, u8, u64)> = scores
            .keys()
            .chain(targets.keys())
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|r| (*r, target_of(r).max(self.popular_copies(score(r))), score(r)))
            .filter(|w| w.1 > 0)
            .collect();
        wants.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
        let wanted: HashSet<Cid> = wants.iter().map(|w| w.0).collect();
        {
            let mut s = self.lock();
            s.stalled.retain(|r, _| wanted.contains(r));
            s.first_seen.retain(|r, _| wanted.contains(r));
            s.failed.retain(|r, _| wanted.contains(r));
            s.unannounced.retain(|r, _| wanted.contains(r));
            s.providers.retain(|r, _| wanted.contains(r) || targets.contains_key(r));
        }

        let live = self.pop.live_peers();
        let me = d.net.peer_id();
        let mut checked = 0;
        for (root, copies, sc) in wants {
            let fetching_here = self.lock().fetching.contains_key(&root);
            // Held here: nothing to do, except show a target's providers.
            let held = h.held.contains(&root);
            if fetching_here || (held && target_of(&root) == 0) {
                continue;
            }
            // Failed here recently (or nobody announces it): skipped, so
            // unfetchable wants (junk targets from a hostile peer included)
            // cannot take every check of every run.
            let backoff = 10 * self.settings.check;
            let failed_here = {
                let s = self.lock();
                s.failed.get(&root).is_some_and(|f| f.0.elapsed() < backoff)
                    || s.unannounced.get(&root).is_some_and(|t| t.elapsed() < backoff)
            };
            if failed_here && !held {
                continue;
            }
            if checked == MAX_CHECKS_PER_RUN {
                break;
            }
            checked += 1;
            let (mut providers, recorded) = d.providers(root).await;
            if !held {
                // A complete copy here that nothing pins (blocks cached by a
                // `get` or a read) is no copy peers can count: counting it
                // made this daemon see one copy more than everyone else
                // and stand down when the ranking chose it, so the copy
                // was made only once the window widened (issue 29: 100 s
                // at 10 daemons). Chosen, it "fetches" from its own blocks.
                providers.retain(|p| *p != me);
            }
            let pending = live
                .iter()
                .filter(|p| p.2.contains(&root) && !providers.contains(&p.0))
                .count();
            let have = providers.len() + pending;
            {
                let mut s = self.lock();
                s.providers.insert(root, (providers.len(), unix_now()));
                if have >= usize::from(copies) {
                    s.stalled.remove(&root);
                    continue;
                }
            }
            if held {
                continue; // counted among the providers; others must volunteer
            }
            if recorded.is_empty() && providers.is_empty() {
                self.lock().unannounced.insert(root, std::time::Instant::now());
                continue;
            }
            let (seen, new) = {
                let mut s = self.lock();
                let new = !s.first_seen.contains_key(&root);
                (*s.first_seen.entry(root).or_insert_with(std::time::Instant::now), new)
            };
            let young = self.started + 2 * self.settings.every.unwrap_or_default();
            let settled = (seen + WANT_SETTLE).max(young);
            let now_i = std::time::Instant::now();
            if now_i < settled {
                if new {
                    // Look again once the views have settled.
                    let pop = self.pop.clone();
                    let wait = settled - now_i;
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        pop.changed.notify_one();
                    });
                }
                continue;
            }
            let stalled_for = self
                .lock()
                .stalled
                .entry(root)
                .or_insert_with(std::time::Instant::now)
                .elapsed();
            // The dataset's size, from its manifest (fetched if need be).
            let size = {
                let d2 = d.clone();
                match tokio::task::spawn_blocking(move || d2.manifest(&root)).await? {
                    Ok(m) => m.total_bytes,
                    Err(e) => {
                        tracing::debug!(%root, error = %e, "wanted dataset's manifest unavailable");
                        continue;
                    }
                }
            };
            let my_spare = self.lock().published_spare;
            let mut volunteers: Vec<PeerId> = live
                .iter()
                // A peer with a provider record is no volunteer, reachable or
                // not: a dead provider's report outlives it by a few seconds.
                .filter(|p| p.1 >= size && !recorded.contains(&p.0) && !p.2.contains(&root))
                .map(|p| p.0)
                .collect();
            // We judge ourselves by our published spare, as peers do.
            if my_spare >= size {
                volunteers.push(me);
            }
            volunteers.sort_by_key(|p| rank(&root, p));
            volunteers.dedup();
            let missing = usize::from(copies) - have;
            // Copies still missing after six report intervals (a chosen
            // volunteer died or failed): widen by one per such period.
            let period = (6 * self.settings.every.unwrap_or_default()).max(self.settings.check);
            let window = missing + (stalled_for.as_secs_f64() / period.as_secs_f64()) as usize;
            let chosen = match volunteers.iter().position(|p| *p == me) {
                Some(i) => i < window,
                // Too few volunteers with spare room: a daemon that can make
                // room by evicting less requested mirrors steps in (peers
                // cannot see that room, so this is the one case where two
                // such daemons may both step in).
                None => {
                    volunteers.len() < window
                        && my_spare + room_for(&h, sc, &target_of, &score).iter().map(|m| m.1).sum::<u64>() >= size
                }
            };
            tracing::debug!(%root, copies, have, live = live.len(), volunteers = volunteers.len(), my_spare, chosen, "mirror check");
            if !chosen {
                continue;
            }
            // Checked before any eviction: never free room we cannot use now.
            if self.lock().fetching.len() >= MAX_CONCURRENT_FETCHES {
                break;
            }
            let budget = self.budget(&d.store, used);
            let in_flight: u64 = self.lock().fetching.values().map(|f| f.0).sum();
            let mut spare = budget.saturating_sub(used + in_flight);
            if size > spare {
                // Make room from mirrors less requested than this one.
                let mut evict = Vec::new();
                for (r, bytes) in room_for(&h, sc, &target_of, &score) {
                    if spare >= size {
                        break;
                    }
                    spare += bytes;
                    evict.push(r);
                }
                if spare < size {
                    tracing::debug!(%root, size, spare, "no room to mirror");
                    continue;
                }
                self.evict(d, &evict, "a more requested dataset needs the room").await?;
                h.mirrors.retain(|m| !evict.contains(&m.0));
                used = h.mirrors.iter().map(|m| m.1).sum();
            }
            let why = Why {
                reason: if target_of(&root) >= copies {
                    Reason::Replicas
                } else {
                    Reason::Popular
                },
                score: sc,
                sources: scores.get(&root).map_or(0, |s| s.1),
                copies_wanted: copies,
            };
            let target = targets.get(&root).copied().filter(|t| t.copies > 0);
            self.lock().fetching.insert(root, (size, why.clone()));
            tracing::info!(%root, size, score = sc, copies, have, reason = ?why.reason, "mirroring");
            let (this, d2) = (self.clone(), d.clone());
            tokio::spawn(async move {
                let r = this.fetch(&d2, root, size, target).await;
                let mut s = this.lock();
                let why = s.fetching.remove(&root).map(|f| f.1);
                match r {
                    Ok(()) => {
                        if let Some(w) = why {
                            s.why.insert(root, w);
                        }
                        tracing::info!(%root, "mirror complete");
                    }
                    Err(e) => {
                        let e = e.to_string();
                        tracing::warn!(%root, error = %e, "mirroring failed");
                        s.failed.insert(root, (std::time::Instant::now(), e));
                    }
                }
            });
        }
        Ok(())
    }

    async fn fetch(&self, d: &Arc<Services>, root: Cid, size: u64, target: Option<Recorded>) -> Result<()> {
        let d2 = d.clone();
        // At most what room was made for (the manifest's size, which its
        // pages must add up to as they arrive), plus the manifest itself.
        let mut fetcher = d.fetcher.clone();
        fetcher.opts.max_bytes = Some(size + size / 8 + (16 << 20));
        tokio::task::spawn_blocking(move || -> Result<()> {
            let session = d2.store.session();
            let fetched = tokio::runtime::Handle::current().block_on(fetcher.fetch_dataset(root, &session, &|_| {}));
            if let Err(e) = fetched {
                let full = match &e {
                    shoal_net::Error::Store(s) => s.is_disk_full(),
                    shoal_net::Error::OverBudget { .. } => true,
                    _ => false,
                };
                if full {
                    // Give back what the failed mirror took: the disk is
                    // this daemon's users' first.
                    drop(session);
                    if let Err(g) = d2.store.gc() {
                        tracing::warn!(error = %g, "gc after a mirror filled the disk failed");
                    }
                    let why = if matches!(e, shoal_net::Error::OverBudget { .. }) {
                        "the dataset is larger than its manifest said"
                    } else {
                        "the disk filled up while mirroring"
                    };
                    return Err(Error::Full(format!("{why} ({e}); the partial copy was removed")));
                }
                return Err(e.into());
            }
            d2.store.pin(&root, PinKind::Mirror)?;
            if let Some(t) = target {
                record_target(&d2.store, &root, t)?;
            }
            Ok(())
        })
        .await??;
        d.net.provide(root).await?;
        Ok(())
    }

    async fn evict(&self, d: &Arc<Services>, roots: &[Cid], why: &str) -> Result<()> {
        if roots.is_empty() {
            return Ok(());
        }
        for root in roots {
            tracing::info!(%root, "evicting mirror: {why}");
            d.net.stop_providing(*root).await?;
            self.lock().why.remove(root);
        }
        let (store, roots) = (d.store.clone(), roots.to_vec());
        tokio::task::spawn_blocking(move || -> shoal_store::Result<()> {
            for root in &roots {
                store.unpin(root, PinKind::Mirror)?;
                store.remove_replica_target(root)?;
            }
            store.gc()?;
            Ok(())
        })
        .await??;
        Ok(())
    }

    /// What this daemon mirrors and why (`shoal mirrors`).
    pub(crate) async fn view(&self, d: &Arc<Services>) -> Result<MirrorsView> {
        let (h, used) = self.holdings(d).await?;
        let budget = self.budget(&d.store, used);
        let scores: Vec<Score> = self.pop.scores();
        let score_of = |r: &Cid| scores.iter().find(|s| s.root == *r).map(|s| s.score).unwrap_or(0);
        let (merged, _) = merge_targets(&h.targets, &h.held, &self.pop.claims());
        let s = self.lock();
        let mut mirrors: Vec<MirrorEntry> = h
            .mirrors
            .iter()
            .map(|(r, bytes)| MirrorEntry {
                root: *r,
                bytes: *bytes,
                score: score_of(r),
                why: s.why.get(r).cloned(),
                complete: true,
            })
            .collect();
        mirrors.extend(s.fetching.iter().map(|(r, (bytes, why))| MirrorEntry {
            root: *r,
            bytes: *bytes,
            score: score_of(r),
            why: Some(why.clone()),
            complete: false,
        }));
        let all: HashMap<Cid, (u8, u64, bool)> = merged
            .into_iter()
            .map(|(r, t)| (r, (t.copies, t.set_at, h.targets.contains_key(&r))))
            .collect();
        let mut targets: Vec<TargetEntry> = all
            .into_iter()
            .map(|(r, (copies, set_at, recorded))| TargetEntry {
                root: r,
                copies,
                set_at,
                recorded_here: recorded,
                held_here: h.held.contains(&r),
                providers: s.providers.get(&r).map(|p| p.0),
                checked_secs_ago: s.providers.get(&r).map(|p| unix_now().saturating_sub(p.1)),
            })
            .collect();
        targets.sort_by_key(|t| t.root);
        Ok(MirrorsView {
            budget,
            used,
            threshold: self.settings.threshold,
            peer_cap: self.pop.peer_cap(),
            gossip: self.settings.every.is_some(),
            mirrors,
            targets,
            popular: scores.into_iter().take(20).collect(),
            failed: s
                .failed
                .iter()
                .map(|(r, (at, e))| FailedMirror {
                    root: *r,
                    error: e.clone(),
                    ago: at.elapsed(),
                })
                .collect(),
            peers: self.pop.stats(),
            last_error: s.last_error.clone(),
            runs: s.runs,
        })
    }
}

/// Writes a target record: the local user's, or one carried for its author.
fn record_target(store: &Store, root: &Cid, t: Recorded) -> shoal_store::Result<()> {
    match t.author {
        None => store.set_replica_target(root, t.copies, t.set_at),
        Some(a) => store.set_carried_target(root, t.copies, t.set_at, &a.to_bytes()),
    }
}

/// What this daemon mirrors and why, the replica targets it knows and what
/// the swarm requests most.
#[derive(Debug, Clone)]
pub struct MirrorsView {
    /// Mirror budget in bytes (0 = this daemon does not mirror).
    pub budget: u64,
    /// Bytes held as mirrors.
    pub used: u64,
    pub threshold: u64,
    pub peer_cap: u64,
    /// Whether this daemon shares and hears popularity.
    pub gossip: bool,
    pub mirrors: Vec<MirrorEntry>,
    pub targets: Vec<TargetEntry>,
    /// The most requested datasets, highest score first.
    pub popular: Vec<Score>,
    pub peers: GossipStats,
    pub last_error: Option<String>,
    /// Mirrors that failed here recently (this daemon backs off from them).
    pub failed: Vec<FailedMirror>,
    /// Policy runs completed since the node started.
    pub runs: u64,
}

#[derive(Debug, Clone)]
pub struct FailedMirror {
    pub root: Cid,
    pub error: String,
    pub ago: Duration,
}

#[derive(Debug, Clone)]
pub struct MirrorEntry {
    pub root: Cid,
    pub bytes: u64,
    /// Its score now.
    pub score: u64,
    /// Why it was mirrored (unknown for mirrors made before a restart).
    pub why: Option<Why>,
    /// False while it is being fetched.
    pub complete: bool,
}

#[derive(Debug, Clone)]
pub struct TargetEntry {
    pub root: Cid,
    pub copies: u8,
    /// When the target was set (unix seconds).
    pub set_at: u64,
    /// Recorded in this daemon's store (set here, or carried for a copy).
    pub recorded_here: bool,
    pub held_here: bool,
    /// Reachable providers at the last check.
    pub providers: Option<usize>,
    pub checked_secs_ago: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(i: u32) -> Cid {
        *shoal_core::Block::dag_cbor(i.to_be_bytes().to_vec()).cid()
    }

    fn claim(root: Cid, author: PeerId, copies: u8, set_at: u64) -> Claim {
        Claim {
            root,
            author,
            copies,
            set_at,
        }
    }

    fn rec(copies: u8, set_at: u64, author: Option<PeerId>) -> Recorded {
        Recorded { copies, set_at, author }
    }

    /// Issue 29: an idle daemon's reports slow down to IDLE_STRETCH
    /// intervals; news or a joining peer brings them back at once; a peer
    /// accepts every one of them (none sooner than half the interval the
    /// last announced) and never takes the author for gone.
    #[test]
    fn idle_reports_stretch_and_peers_keep_the_author_live() {
        let me = PeerId::random();
        let peer = Popularity::new(Duration::from_secs(600), 1000, 10);
        let base = 15u32;
        let report = |spare: u64, targets: Vec<gossip::Target>| gossip::Report {
            version: 1,
            every: base,
            window: 600,
            spare,
            counts: vec![],
            targets,
            fetching: vec![],
        };
        let mut pace = Pace::default();
        let t0 = std::time::Instant::now();
        let mut sent = vec![];
        let mut joins = 0;
        // Two hours of ticks; the spare drifts by less than a sixteenth;
        // a target at 40 min, a peer joins at 80 min.
        for tick in 0..480u64 {
            let now = t0 + Duration::from_secs(tick * u64::from(base));
            let targets = if tick >= 160 { vec![(root(1), 3, 100)] } else { vec![] };
            if tick == 320 {
                joins += 1;
            }
            let spare = (1u64 << 30) - tick * 1000;
            if let Some(r) = pace.decide(report(spare, targets), joins, now) {
                assert!(peer.receive_at(&me, &r.encode(), now, 1000), "tick {tick}: refused");
                sent.push((tick, r.every));
            }
            let live = peer.live_peers_at(now);
            assert!(live.iter().any(|p| p.0 == me), "tick {tick}: author taken for gone");
        }
        let at = |t: u64| sent.iter().find(|s| s.0 == t).map(|s| s.1);
        // Stretching: 15, 30, 60, 120, then 120 s.
        assert_eq!(&sent[..5], &[(0, 15), (1, 30), (3, 60), (7, 120), (15, 120)]);
        // News (the target) and the join go out at the base interval.
        assert_eq!(at(160), Some(15));
        assert_eq!(at(320), Some(15));
        // 480 base intervals cost one report per 8 of them, plus 4 for each
        // of the three ramps (start, news, join): 72, not 480.
        assert!(sent.len() <= 480 / 8 + 12, "{} reports", sent.len());
        // A spare that halves is news.
        let mut pace = Pace::default();
        assert!(pace.decide(report(1 << 30, vec![]), 0, t0).is_some());
        assert!(pace
            .decide(report(1 << 30, vec![]), 0, t0 + Duration::from_secs(15))
            .is_some());
        assert!(pace
            .decide(report(1 << 30, vec![]), 0, t0 + Duration::from_secs(30))
            .is_none());
        let r = pace
            .decide(report(1 << 29, vec![]), 0, t0 + Duration::from_secs(45))
            .unwrap();
        assert_eq!(r.every, 15);
    }

    /// Issue 24 finding 2: one report `(root, 0, now + 86399)` cancelled the
    /// replication of any dataset for a day (newest `set_at` won).
    #[test]
    fn regression_24_a_peers_cancellation_cancels_only_its_own_claim() {
        let (a, evil) = (PeerId::random(), PeerId::random());
        let (mine, carried, heard) = (root(1), root(2), root(3));
        let recorded = HashMap::from([(mine, rec(3, 100, None)), (carried, rec(2, 100, Some(a)))]);
        let held = HashSet::from([mine, carried]);
        let claims = vec![
            claim(mine, evil, 0, 186_499),
            claim(carried, evil, 0, 186_499),
            claim(heard, a, 4, 100),
            claim(heard, evil, 0, 186_499),
        ];
        let (out, writes) = merge_targets(&recorded, &held, &claims);
        assert_eq!(out[&mine], rec(3, 100, None), "the local target stands");
        assert_eq!(
            out[&carried],
            rec(2, 100, Some(a)),
            "only a updates what is carried for a"
        );
        assert_eq!(out[&heard].copies, 4, "the highest claim counts");
        assert!(writes.is_empty(), "{writes:?}");
    }

    #[test]
    fn a_local_target_is_not_raised_by_a_peer_and_a_carried_one_follows_its_author() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let (mine, carried, new) = (root(1), root(2), root(3));
        let recorded = HashMap::from([(mine, rec(2, 100, None)), (carried, rec(3, 100, Some(a)))]);
        let held = HashSet::from([mine, carried, new]);
        let claims = vec![
            claim(mine, b, 9, 200),
            // a cancels what it asked for: the carried record follows.
            claim(carried, a, 0, 300),
            // b carried a's earlier claim; it is b's until b hears a.
            claim(carried, b, 3, 100),
            claim(new, b, 2, 50),
        ];
        let (out, writes) = merge_targets(&recorded, &held, &claims);
        assert_eq!(out[&mine].copies, 2);
        let written: HashMap<Cid, Recorded> = writes.into_iter().collect();
        assert_eq!(written[&carried], rec(0, 300, Some(a)));
        assert_eq!(
            written[&new],
            rec(2, 50, Some(b)),
            "a first claim for a held copy is carried"
        );
        assert!(!written.contains_key(&mine));
        // b's stale claim still asks for 3 until b's next report: the highest
        // claim counts, and converges when b follows a.
        assert_eq!(out[&carried].copies, 3);
        let (out, _) = merge_targets(
            &HashMap::from([(carried, rec(0, 300, Some(a)))]),
            &held,
            &[claim(carried, a, 0, 300), claim(carried, b, 0, 300)],
        );
        assert_eq!(out[&carried].copies, 0);
    }
}
