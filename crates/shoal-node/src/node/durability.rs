//! Durability: the background scrub, and the repair of held datasets from
//! their providers.
//!
//! The scrub verifies the store a slice at a time ([`Store::scrub_step`],
//! position kept in the index), at most `[scrub] rate` bytes per second and
//! not while the node is busy. What it finds corrupt is dropped from the
//! index; the repairer then fetches every held dataset's missing blocks
//! again from the dataset's providers, verified like every fetch. The
//! repairer is also told by reads that meet a corrupt local copy, by the
//! start (datasets a lost segment or index left incomplete) and by
//! `shoal fsck --repair`.
//!
//! [`Store::scrub_step`]: shoal_store::Store::scrub_step

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_core::{cid, Cid};
use shoal_store::PinKind;

use super::NodeCtx;
use crate::records::unix_now;

/// Roots waiting for a check; past this the queue is replaced by "check
/// every held dataset" (one walk instead of an unbounded list).
const MAX_QUEUED: usize = 4096;

/// A repair that failed (no provider yet, a deadline) is tried again after
/// a pause that doubles from the first to the second while it keeps
/// failing (a daemon restarted to be repaired meets its peers a little
/// after it starts).
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_secs(300);

/// The scrub checks for activity this often while paused.
const BUSY_CHECK: Duration = Duration::from_secs(1);

/// The scrub's smallest slice (so a low rate still makes progress in
/// whole blocks), and its largest (one slice is not interrupted: a reader
/// arriving waits for at most this much verification, ~0.1 s).
const MIN_SLICE: u64 = 256 << 10;
const MAX_SLICE: u64 = 16 << 20;

/// Counters of the scrub and the repairs since the start.
#[derive(Debug, Default)]
pub struct DurabilityStats {
    pub scrub_blocks: AtomicU64,
    pub scrub_bytes: AtomicU64,
    /// Corrupt blocks the scrub found (and dropped, to be fetched again).
    pub scrub_corrupt: AtomicU64,
    /// Scrub slices put off because the node was busy.
    pub scrub_paused: AtomicU64,
    /// Blocks fetched again by repairs, and the datasets they made whole.
    pub repaired_blocks: AtomicU64,
    pub repaired_datasets: AtomicU64,
    /// Repairs that could not complete a dataset (tried again later).
    pub repair_failures: AtomicU64,
}

/// What one repair round did.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// Datasets found incomplete and made whole: (root, blocks fetched).
    pub repaired: Vec<(Cid, u64)>,
    /// Datasets that stay incomplete, with why.
    pub failed: Vec<(Cid, String)>,
}

#[derive(Default)]
struct Queue {
    roots: VecDeque<Cid>,
    queued: HashSet<Cid>,
    /// Blocks a read found corrupt: their copies are dropped before the
    /// check, so the repair fetches them whether or not the read's own
    /// fetch got them stored.
    suspects: Vec<Cid>,
    /// Check every held dataset.
    all: bool,
}

/// The repair queue and the counters (one per node).
#[derive(Default)]
pub(crate) struct Durability {
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    pub stats: DurabilityStats,
}

impl Durability {
    /// Asks for `root` to be checked and repaired.
    pub fn schedule(&self, root: Cid) {
        let mut q = self.queue.lock().expect("repair queue lock");
        if q.all || q.queued.contains(&root) {
            return;
        }
        if q.roots.len() >= MAX_QUEUED {
            q.all = true;
            q.roots.clear();
            q.queued.clear();
        } else {
            q.queued.insert(root);
            q.roots.push_back(root);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// A read met a corrupt copy of `block` of dataset `root`.
    pub fn suspect(&self, root: Cid, block: Cid) {
        {
            let mut q = self.queue.lock().expect("repair queue lock");
            if q.suspects.len() < MAX_QUEUED {
                q.suspects.push(block);
            }
        }
        self.schedule(root);
    }

    /// Asks for every held dataset to be checked and repaired.
    pub fn schedule_all(&self) {
        let mut q = self.queue.lock().expect("repair queue lock");
        q.all = true;
        q.roots.clear();
        q.queued.clear();
        drop(q);
        self.wake.notify_one();
    }

    fn take(&self) -> (bool, Vec<Cid>, Vec<Cid>) {
        let q = std::mem::take(&mut *self.queue.lock().expect("repair queue lock"));
        (q.all, q.roots.into(), q.suspects)
    }
}

impl NodeCtx {
    /// Datasets this node keeps: user and mirror pins, and names.
    /// Blocking.
    pub(super) fn held_roots(&self) -> crate::Result<Vec<Cid>> {
        let store = &self.services.store;
        let mut roots: Vec<Cid> = store
            .pins()?
            .into_iter()
            .filter(|p| p.1.contains(PinKind::User) || p.1.contains(PinKind::Mirror))
            .map(|p| p.0)
            .collect();
        roots.extend(store.names()?.into_iter().map(|n| n.1));
        roots.sort();
        roots.dedup();
        Ok(roots)
    }

    /// Fetches again what `roots` (held datasets; others are skipped) miss,
    /// from their providers, verified; counts what it did.
    pub(super) async fn repair(self: &Arc<Self>, roots: Vec<Cid>) -> RepairReport {
        let mut report = RepairReport::default();
        let held: HashSet<Cid> = match self.blocking(|n| n.held_roots()).await {
            Ok(h) => h.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "repair: listing the held datasets failed");
                return report;
            }
        };
        for root in roots
            .into_iter()
            .filter(|r| held.contains(r) && r.codec() == cid::DAG_CBOR)
        {
            let started = Instant::now();
            let fetched = self
                .blocking(move |n| {
                    let store = &n.services.store;
                    if store.missing_blocks(&root)?.is_empty() {
                        return Ok(None);
                    }
                    let session = store.session();
                    n.services.ensure_local(root, &session, &|_| {})
                })
                .await;
            let stats = &self.durability.stats;
            match fetched {
                Ok(None) => {}
                Ok(Some(r)) => {
                    stats.repaired_blocks.fetch_add(r.blocks_fetched, Ordering::Relaxed);
                    stats.repaired_datasets.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        %root,
                        blocks = r.blocks_fetched,
                        bytes = r.bytes_fetched,
                        peers = r.peers_used.len(),
                        secs = started.elapsed().as_secs_f64(),
                        "repaired: missing blocks fetched again from providers"
                    );
                    report.repaired.push((root, r.blocks_fetched));
                    self.announce(root).await;
                }
                Err(e) => {
                    stats.repair_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%root, error = %e, "repair failed; the dataset stays incomplete (tried again later)");
                    report.failed.push((root, e.to_string()));
                }
            }
        }
        report
    }

    /// Marks an add, pin or query under way until the guard drops: the
    /// scrub waits for it.
    pub(super) fn busy(&self) -> Busy {
        self.active.fetch_add(1, Ordering::Relaxed);
        Busy(self.active.clone())
    }

    /// Work the node is doing for others (reads, serves, fetches, adds,
    /// pins, queries): a count that moves, or an operation under way,
    /// while it is busy. Status calls (`stats`, `pins`) do not count.
    fn activity(&self) -> Option<u64> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let src = self.services.source.stats();
        let net = self.services.net.stats();
        let counted = [
            &src.local,
            &src.fetched,
            &src.failed,
            &net.blocks_sent,
            &net.blocks_received,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum::<u64>();
        Some(counted + self.metrics.mount_block_reads.get() + self.metrics.queries.get())
    }
}

/// See [`NodeCtx::busy`].
pub(super) struct Busy(Arc<AtomicU64>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The repairer: checks what it is asked to, and retries failures.
pub(super) fn spawn_repairer(ctx: &Arc<NodeCtx>) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut failed: Vec<Cid> = Vec::new();
        let mut pause = RETRY_FIRST;
        loop {
            let retry = tokio::time::sleep(if failed.is_empty() { RETRY_EVERY } else { pause });
            tokio::select! {
                _ = ctx.durability.wake.notified() => {}
                _ = retry => {
                    for r in failed.drain(..) {
                        ctx.durability.schedule(r);
                    }
                }
            }
            let (all, mut roots, suspects) = ctx.durability.take();
            if !suspects.is_empty() {
                let dropped = ctx
                    .blocking(move |n| {
                        let mut dropped = 0;
                        for c in &suspects {
                            dropped += usize::from(n.services.store.drop_if_corrupt(c)?);
                        }
                        Ok(dropped)
                    })
                    .await;
                if let Err(e) = dropped {
                    tracing::warn!(error = %e, "repair: dropping corrupt copies failed");
                }
            }
            if all {
                match ctx.blocking(|n| n.held_roots()).await {
                    Ok(r) => roots = r,
                    Err(e) => tracing::warn!(error = %e, "repair: listing the held datasets failed"),
                }
            }
            if roots.is_empty() {
                continue;
            }
            let report = ctx.repair(roots).await;
            pause = match report.failed.is_empty() {
                true => RETRY_FIRST,
                false => (pause * 2).min(RETRY_EVERY),
            };
            failed.extend(report.failed.into_iter().map(|f| f.0));
            failed.sort();
            failed.dedup();
            failed.truncate(MAX_QUEUED);
        }
    })
}

/// The scrub: slices of the store verified at the configured rate while
/// the node is idle, one full pass every `[scrub] every`.
pub(super) fn spawn_scrubber(ctx: &Arc<NodeCtx>) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let s = ctx.scrub;
        if s.rate == 0 {
            return;
        }
        tokio::time::sleep(s.start_after).await;
        let store = ctx.services.store.clone();
        let mut seen = ctx.activity();
        let slice = s.rate.clamp(MIN_SLICE, MAX_SLICE);
        loop {
            let st = store.clone();
            let state = match tokio::task::spawn_blocking(move || st.scrub_state()).await {
                Ok(Ok(state)) => state,
                other => {
                    tracing::warn!(?other, "scrub: reading its state failed; trying again in a minute");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    continue;
                }
            };
            if !state.in_pass && state.last_pass_done > 0 {
                let next = state.last_pass_done.saturating_add(s.every.as_secs());
                let now = unix_now();
                if now < next {
                    tokio::time::sleep(Duration::from_secs((next - now).min(3600))).await;
                    continue;
                }
            }
            // Busy: put off while anything else moved since the last look.
            let now = ctx.activity();
            if now.is_none() || now != seen {
                seen = now;
                ctx.durability.stats.scrub_paused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(BUSY_CHECK).await;
                continue;
            }
            let started = Instant::now();
            let st = store.clone();
            let step = match tokio::task::spawn_blocking(move || st.scrub_step(slice)).await {
                Ok(Ok(step)) => step,
                other => {
                    tracing::warn!(?other, "scrub step failed; trying again in a minute");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    continue;
                }
            };
            let stats = &ctx.durability.stats;
            stats.scrub_blocks.fetch_add(step.blocks, Ordering::Relaxed);
            stats.scrub_bytes.fetch_add(step.bytes, Ordering::Relaxed);
            if !step.corrupt.is_empty() {
                stats
                    .scrub_corrupt
                    .fetch_add(step.corrupt.len() as u64, Ordering::Relaxed);
                for c in &step.corrupt {
                    tracing::warn!(cid = %c, "scrub: corrupt block dropped; repairing from providers");
                }
                ctx.durability.schedule_all();
            }
            if step.pass_done {
                let st = store.clone();
                if let Ok(Ok(state)) = tokio::task::spawn_blocking(move || st.scrub_state()).await {
                    tracing::info!(
                        blocks = state.pass_blocks,
                        bytes = state.pass_bytes,
                        corrupt_total = state.corrupt_total,
                        secs = state.last_pass_done.saturating_sub(state.pass_started),
                        "scrub pass complete"
                    );
                }
            }
            // Pace: the slice read `bytes`; at `rate` that takes this long.
            let due = Duration::from_secs_f64(step.bytes as f64 / s.rate as f64);
            tokio::time::sleep(due.saturating_sub(started.elapsed()).max(Duration::from_millis(10))).await;
            seen = ctx.activity();
        }
    })
}
