//! Every result the CLI prints, as text for people or as JSON for scripts:
//! one [`Render`] per result type (ripgrep's printers are the model), so a
//! command is "ask the daemon, show the answer" and no command forks on
//! `--json` itself. Results whose text needs what the command asked carry
//! it in a small wrapper that serialises as the result alone.

use std::io;

use serde::Serialize;

use crate::output::{self, human_bytes, out};
use shoal_api::*;

/// A result the CLI prints.
pub trait Render: Serialize {
    /// The text for people (stdout).
    fn text(&self) -> io::Result<()>;
}

/// Prints `r` as pretty JSON or as its text.
pub fn show<T: Render>(json: bool, r: &T) -> io::Result<()> {
    if json {
        output::print_json(r)
    } else {
        r.text()
    }
}

impl Render for IdInfo {
    fn text(&self) -> io::Result<()> {
        out!("peer id: {}", self.peer_id);
        for a in &self.addrs {
            out!("address: {a}");
        }
        match &self.gateway {
            Some(g) => out!("gateway: {g}/zarr/"),
            None => out!("gateway: off"),
        }
        out!(
            "repo:    {}\napi:     {}\nversion: {}",
            self.repo,
            self.api_socket,
            self.version
        );
        Ok(())
    }
}

impl Render for ConnectResult {
    fn text(&self) -> io::Result<()> {
        out!("connected to {}", self.peer_id);
        Ok(())
    }
}

impl Render for Vec<PeerEntry> {
    fn text(&self) -> io::Result<()> {
        if self.is_empty() {
            out!("no connected peers (use `shoal connect MULTIADDR` or [network] bootstrap in config.toml)");
        }
        for p in self {
            out!("{}  {}", p.peer_id, p.addrs.join(" "));
        }
        Ok(())
    }
}

impl Render for ProvidersResult {
    fn text(&self) -> io::Result<()> {
        if self.providers.is_empty() {
            out!("no provider found for {}", self.root);
        }
        for p in &self.providers {
            out!("{p}");
        }
        Ok(())
    }
}

/// `shoal log NAME`: the versions, printed with their name.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Log {
    #[serde(skip)]
    pub name: String,
    pub versions: Vec<VersionInfo>,
}

impl Render for Log {
    fn text(&self) -> io::Result<()> {
        for v in &self.versions {
            let when = if v.time == 0 {
                "time unknown".to_string()
            } else {
                output::utc(v.time)
            };
            out!(
                "{}@{}  {}  {when}  +{} ~{} -{} keys, {} new",
                self.name,
                v.version,
                v.root,
                v.added,
                v.changed,
                v.removed,
                human_bytes(v.new_bytes)
            );
        }
        Ok(())
    }
}

impl Render for DiffResult {
    fn text(&self) -> io::Result<()> {
        for (k, s) in &self.added {
            out!("+ {k}  {}", human_bytes(*s));
        }
        for (k, o, n) in &self.changed {
            out!("~ {k}  {} -> {}", human_bytes(*o), human_bytes(*n));
        }
        for (k, s) in &self.removed {
            out!("- {k}  {}", human_bytes(*s));
        }
        out!(
            "{} added, {} changed, {} removed ({} -> {})",
            self.added.len(),
            self.changed.len(),
            self.removed.len(),
            self.from,
            self.to
        );
        Ok(())
    }
}

impl Render for AddResult {
    fn text(&self) -> io::Result<()> {
        let label = self.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
        out!(
            "added{label}: zarr v{}, {} keys, {} ({} new blocks, {} written, {} already stored) in {:.1}s",
            self.zarr_format,
            self.keys,
            human_bytes(self.bytes),
            self.new_blocks,
            human_bytes(self.new_bytes),
            self.dup_blocks,
            self.seconds
        );
        if let (Some(v), Some(n)) = (self.version, &self.name) {
            out!("version: {n}@{v} (see `shoal log {n}`)");
        }
        if self.reused_files > 0 {
            out!(
                "unchanged since the last add of this name: {} files ({}), not read",
                self.reused_files,
                human_bytes(self.reused_bytes)
            );
        }
        if !self.unixfs.is_empty() {
            out!("unixfs view (ipfs://CID for IPFS tools): {}", self.unixfs);
        }
        out!("{}", self.root);
        Ok(())
    }
}

/// `shoal get`: what was written, keys or (a CAR) blocks.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Got {
    #[serde(skip)]
    pub car: bool,
    pub result: GetResult,
}

impl Render for Got {
    fn text(&self) -> io::Result<()> {
        let r = &self.result;
        let what = if self.car { "blocks" } else { "keys" };
        out!(
            "wrote {} {what}, {} to {} in {:.1}s",
            r.keys,
            human_bytes(r.bytes),
            r.out,
            r.seconds
        );
        Ok(())
    }
}

/// `shoal pin` and `shoal unpin` answer the same result, told differently.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Pinned {
    #[serde(skip)]
    pub unpin: bool,
    pub result: PinResult,
}

impl Render for Pinned {
    fn text(&self) -> io::Result<()> {
        let r = &self.result;
        if self.unpin {
            out!("{} {}", if r.changed { "unpinned" } else { "was not pinned:" }, r.root);
            if r.replicas == Some(0) {
                out!("replica target cancelled; volunteers keep their copies as ordinary evictable mirrors");
            }
            if !r.still_named.is_empty() {
                out!(
                    "note: still named {}; the data is kept until those names are removed (shoal unpin NAME)",
                    r.still_named.join(", ")
                );
            }
            return Ok(());
        }
        if let Some(f) = &r.fetched {
            out!(
                "fetched {} blocks ({}) from {} peers{}",
                f.blocks_fetched,
                human_bytes(f.bytes_fetched),
                f.peers_used.len(),
                if f.banned.is_empty() {
                    String::new()
                } else {
                    format!("; banned {} lying peers", f.banned.len())
                }
            );
        }
        if r.resumed_blocks > 0 {
            out!("resumed: {} blocks were kept from an earlier attempt", r.resumed_blocks);
        }
        let how = if r.changed { "pinned" } else { "already pinned" };
        let named = r.name.as_ref().map(|n| format!(" as {n}")).unwrap_or_default();
        match &r.unixfs {
            Some(dir) => out!(
                "{how} UnixFS directory {dir} (over bitswap) as dataset {}{named}",
                r.root
            ),
            None => out!("{how} {}{named}", r.root),
        }
        if let Some(n) = r.replicas {
            out!("replica target: {n} copies; daemons with mirror budget volunteer (watch with `shoal mirrors`)");
        }
        Ok(())
    }
}

impl Render for Vec<PinInfo> {
    fn text(&self) -> io::Result<()> {
        pins_page(self, true)
    }
}

/// One page of `shoal pins`: the header (or the empty-store hint) with the
/// first.
pub fn pins_page(page: &[PinInfo], first: bool) -> io::Result<()> {
    if first && page.is_empty() {
        out!("no pinned or named datasets (add one with `shoal add PATH --name NAME`)");
        return Ok(());
    }
    if first {
        out!("{:<62}  {:<12}  {:>10}  {:>8}  NAMES", "ROOT", "KINDS", "SIZE", "KEYS");
    }
    for p in page {
        let kinds = if p.kinds.is_empty() {
            "named".to_string()
        } else {
            p.kinds.join(",")
        };
        out!(
            "{:<62}  {:<12}  {:>10}  {:>8}  {}",
            p.root,
            kinds,
            human_bytes(p.bytes),
            p.keys,
            p.names.join(",")
        );
    }
    Ok(())
}

impl Render for PublishResult {
    fn text(&self) -> io::Result<()> {
        let how = if self.new {
            "published"
        } else {
            "announced again (unchanged)"
        };
        out!(
            "{how} {}/{}: sequence {} = {}",
            self.publisher,
            self.name,
            self.seq,
            self.root
        );
        out!("later versions of {} are published as they are added", self.name);
        out!(
            "follow it from another daemon with: shoal follow {}/{}",
            self.publisher,
            self.name
        );
        Ok(())
    }
}

impl Render for UnpublishResult {
    fn text(&self) -> io::Result<()> {
        if self.changed {
            out!(
                "stopped publishing {} (peers keep its last record until it expires)",
                self.name
            );
        } else {
            out!("{} was not published", self.name);
        }
        Ok(())
    }
}

/// `shoal follow` and `shoal unfollow` answer the follow, told differently.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Followed {
    #[serde(skip)]
    pub stopped: bool,
    pub follow: FollowInfo,
}

impl Render for Followed {
    fn text(&self) -> io::Result<()> {
        let r = &self.follow;
        if self.stopped {
            out!(
                "stopped following {}/{} into {} (its versions stay: shoal log {})",
                r.publisher,
                r.name,
                r.local,
                r.local
            );
            return Ok(());
        }
        match &r.root {
            Some(root) => out!(
                "following {}/{} as {}: sequence {} = {}",
                r.publisher,
                r.name,
                r.local,
                r.seq,
                root
            ),
            None => out!(
                "following {}/{} as {} (no version held yet)",
                r.publisher,
                r.name,
                r.local
            ),
        }
        if let Some(e) = &r.error {
            out!("warning: {e}");
        }
        Ok(())
    }
}

impl Render for Vec<FollowInfo> {
    fn text(&self) -> io::Result<()> {
        if self.is_empty() {
            out!("following nothing (shoal follow PEERID/NAME)");
            return Ok(());
        }
        out!("{:<16}  {:>5}  {:<62}  {:>9}  FROM", "LOCAL", "SEQ", "ROOT", "UPDATED");
        for f in self {
            let updated = if f.updated == 0 {
                "never".to_string()
            } else {
                output::ago(f.updated)
            };
            out!(
                "{:<16}  {:>5}  {:<62}  {:>9}  {}/{}",
                f.local,
                f.seq,
                f.root.as_deref().unwrap_or("-"),
                updated,
                f.publisher,
                f.name
            );
            if let Some(p) = f.pending {
                out!("    sequence {p} heard, being fetched");
            }
            if let Some(e) = &f.error {
                out!("    error: {e}");
            }
        }
        Ok(())
    }
}

/// `shoal mount` and `shoal unmount` answer the directory.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Mounted {
    #[serde(skip)]
    pub unmount: bool,
    pub result: MountResult,
}

impl Render for Mounted {
    fn text(&self) -> io::Result<()> {
        let d = &self.result.dir;
        if self.unmount {
            out!("unmounted {d}");
        } else {
            out!("mounted on {d}: datasets appear as {d}/<name or CID>");
        }
        Ok(())
    }
}

/// `shoal mounts`.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Mounts(pub Vec<String>);

impl Render for Mounts {
    fn text(&self) -> io::Result<()> {
        if self.0.is_empty() {
            out!("no mounts");
        }
        for m in &self.0 {
            out!("{m}");
        }
        Ok(())
    }
}

impl Render for GcResult {
    fn text(&self) -> io::Result<()> {
        out!(
            "removed {} blocks ({}); compacted {} segments, reclaimed {} on disk",
            self.removed_blocks,
            human_bytes(self.removed_bytes),
            self.compacted_segments,
            human_bytes(self.reclaimed_disk_bytes)
        );
        for root in &self.incomplete {
            out!("note: dataset {root} is missing part of its manifest and was collected around; `shoal pin {root}` restores it");
        }
        Ok(())
    }
}

impl Render for FsckResult {
    fn text(&self) -> io::Result<()> {
        out!(
            "checked {} blocks ({})",
            self.blocks_checked,
            human_bytes(self.bytes_checked)
        );
        for b in &self.corrupt {
            out!(
                "corrupt: block {} (segment {}, offset {}): {}",
                b.cid,
                b.segment,
                b.offset,
                b.reason
            );
        }
        if self.repaired {
            out!("repair: removed {} corrupt blocks", self.removed_blocks);
        }
        if !self.repaired_datasets.is_empty() {
            out!(
                "repair: fetched {} blocks again from providers; {} datasets whole again",
                self.refetched_blocks,
                self.repaired_datasets.len()
            );
            for r in &self.repaired_datasets {
                out!("repaired: dataset {r}");
            }
        }
        for d in &self.incomplete {
            let names = if d.names.is_empty() {
                String::new()
            } else {
                format!(" ({})", d.names.join(", "))
            };
            match &d.reason {
                Some(why) => out!(
                    "incomplete: dataset {}{names} is missing {} blocks and could not be repaired: {why}",
                    d.root,
                    d.missing_blocks
                ),
                None => out!(
                    "incomplete: dataset {}{names} is missing {} blocks; `shoal fsck --repair` fetches them from providers, or re-add or re-pin it",
                    d.root,
                    d.missing_blocks
                ),
            }
        }
        if self.unreferenced_blocks > 0 {
            out!(
                "unreferenced: {} blocks ({}) no pin or name needs; `shoal gc` removes them",
                self.unreferenced_blocks,
                human_bytes(self.unreferenced_bytes)
            );
        }
        if self.is_clean() {
            out!("store is clean");
        } else if !self.repaired && !self.corrupt.is_empty() {
            out!("run `shoal fsck --repair` to drop corrupt blocks");
        }
        Ok(())
    }
}

impl Render for MirrorsResult {
    fn text(&self) -> io::Result<()> {
        if self.budget == 0 {
            out!("mirror budget: 0 (this daemon does not mirror; [mirror] budget in config.toml)");
        } else {
            out!(
                "mirror budget: {} ({} used by {} mirrors)",
                human_bytes(self.budget),
                human_bytes(self.used),
                self.mirrors.iter().filter(|m| m.complete).count()
            );
        }
        out!(
            "popularity: threshold {}, at most {} per source; {}",
            self.threshold,
            self.peer_cap,
            if self.gossip {
                format!(
                    "{} peers reporting ({} reports accepted, {} rejected)",
                    self.peers.peers, self.peers.accepted, self.peers.rejected
                )
            } else {
                "gossip off".into()
            }
        );
        if let Some(e) = &self.last_error {
            out!("last policy run failed: {e}");
        }
        if !self.mirrors.is_empty() {
            out!("\nMIRRORS");
            for m in &self.mirrors {
                let why = match &m.why {
                    Some(w) => format!(
                        "{} (score {} when chosen, {} copies wanted)",
                        w.reason, w.score, w.copies_wanted
                    ),
                    None => "chosen before the last restart".into(),
                };
                let state = if m.complete { "" } else { "  [fetching]" };
                out!(
                    "{}  {:>10}  score {:>5}  {why}{state}",
                    m.root,
                    human_bytes(m.bytes),
                    m.score
                );
            }
        }
        if !self.failed.is_empty() {
            out!("\nFAILED HERE (not retried here for a while; other daemons step in)");
            for f in &self.failed {
                out!("{}  {}s ago: {}", f.root, f.secs_ago, f.error);
            }
        }
        if !self.targets.is_empty() {
            out!("\nREPLICA TARGETS");
            for t in &self.targets {
                let have = match (t.providers, t.checked_secs_ago) {
                    (Some(p), Some(ago)) => format!("{p} reachable providers ({ago}s ago)"),
                    _ => "providers not checked yet".into(),
                };
                let here = if t.held_here { ", held here" } else { "" };
                if t.copies == 0 {
                    out!("{}  cancelled{here}", t.root);
                } else {
                    out!("{}  {} copies wanted, {have}{here}", t.root, t.copies);
                }
            }
        }
        if !self.popular.is_empty() {
            out!("\nMOST REQUESTED (window counts: blocks served / mount opens / queries)");
            for p in &self.popular {
                out!(
                    "{}  score {:>5}  from {} sources  {} / {} / {}  (here: {} / {} / {})",
                    p.root,
                    p.score,
                    p.sources,
                    p.counts.blocks,
                    p.counts.mounts,
                    p.counts.queries,
                    p.local.blocks,
                    p.local.mounts,
                    p.local.queries
                );
            }
        }
        Ok(())
    }
}

impl Render for StatsResult {
    fn text(&self) -> io::Result<()> {
        let r = &self.store;
        out!("repo:       {}", self.repo);
        out!("blocks:     {}", r.blocks);
        out!("live data:  {}", human_bytes(r.live_bytes));
        out!(
            "on disk:    {} in {} segments",
            human_bytes(r.segment_bytes),
            r.segments
        );
        out!("pins:       {}", r.pins);
        out!("names:      {}", r.names);
        if self.provide_failures > 0 {
            out!(
                "provides:   {} datasets could not be announced ([network] max_provided reached; see the daemon log)",
                self.provide_failures
            );
        }
        if self.handler_panics > 0 {
            out!(
                "panics:     {} peer requests hit a handler bug (answered; see the daemon log)",
                self.handler_panics
            );
        }
        if self.compute_refused > 0 {
            out!(
                "refused:    {} compute requests over the per-request memory bound",
                self.compute_refused
            );
        }
        if self.compute_liars > 0 {
            out!(
                "liars:      {} peers answered wrong compute partials (asked for no more compute)",
                self.compute_liars
            );
        }
        let b = &self.bitswap;
        if b.blocks_sent + b.dont_have + b.refused + b.unasked + b.blocks_received > 0 {
            out!(
                "bitswap:    {} blocks sent to IPFS peers, {} received from them, {} wants not held here, {} refused, {} unasked blocks dropped",
                b.blocks_sent,
                b.blocks_received,
                b.dont_have,
                b.refused,
                b.unasked
            );
        }
        match r.quota {
            Some(q) => out!(
                "quota:      {} ({:.1}% used)",
                human_bytes(q),
                100.0 * r.live_bytes as f64 / q.max(1) as f64
            ),
            None => out!("quota:      none"),
        }
        durability_text(&self.durability, r.live_bytes)
    }
}

/// The scrub, repairs and recovery lines of `shoal stats`.
fn durability_text(s: &DurabilityInfo, live_bytes: u64) -> io::Result<()> {
    if s.scrub_rate == 0 {
        out!("scrub:      off ([scrub] rate = \"0\")");
    } else {
        let last = match s.scrub_last_pass_done {
            0 => "no full pass yet".to_string(),
            t => format!("last full pass ended {}", output::ago(t)),
        };
        let now = if s.scrub_in_pass {
            format!(
                "; this pass {:.0}% ({} of {})",
                100.0 * (s.scrub_pass_bytes as f64 / live_bytes.max(1) as f64).min(1.0),
                human_bytes(s.scrub_pass_bytes),
                human_bytes(live_bytes)
            )
        } else {
            String::new()
        };
        out!(
            "scrub:      {}/s, {} passes, {last}{now}",
            human_bytes(s.scrub_rate),
            s.scrub_passes
        );
    }
    if s.scrub_corrupt_total > 0 || s.repaired_blocks > 0 || s.repair_failures > 0 {
        out!(
                "repairs:    {} corrupt blocks found by the scrub; {} blocks fetched again ({} datasets whole); {} repairs failed (retried)",
                s.scrub_corrupt_total,
                s.repaired_blocks,
                s.repaired_datasets,
                s.repair_failures
            );
    }
    if let Some(rec) = &s.recovery {
        if let Some(r) = &rec.index_rebuilt {
            out!(
                "recovered:  the index was rebuilt at start: {} blocks ({}) from {} segments, {} pins, {} names{}",
                r.blocks_found,
                human_bytes(r.bytes_found),
                r.segments_scanned,
                r.pins,
                r.names,
                if r.bad_frames > 0 {
                    format!("; {} damaged blocks dropped", r.bad_frames)
                } else {
                    String::new()
                }
            );
        }
        for l in &rec.lost_segments {
            out!(
                "recovered:  segment {} {}: {} blocks ({}) dropped, fetched again from providers",
                l.segment,
                if l.missing { "was gone" } else { "was cut short" },
                l.blocks,
                human_bytes(l.bytes)
            );
        }
    }
    Ok(())
}

impl Render for ExportRepoResult {
    fn text(&self) -> io::Result<()> {
        out!(
            "exported {} blocks in {} segments ({}), {} pins, {} names, {} record files to {}",
            self.blocks,
            self.segments,
            human_bytes(self.segment_bytes),
            self.pins,
            self.names,
            self.files,
            self.dest
        );
        out!("start a daemon on it with: shoal --home {} daemon", self.dest);
        Ok(())
    }
}

/// `shoal search`.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Search(pub SearchResult);

impl Render for Search {
    fn text(&self) -> io::Result<()> {
        let r = &self.0;
        if r.items.is_empty() {
            out!("no dataset in the catalogue matches");
            return Ok(());
        }
        for it in &r.items {
            out!("{}  {}@{}  {}", it.title, it.name, it.version, human_bytes(it.size));
            let mut facts = Vec::new();
            if let Some((a, b)) = &it.time {
                let cal = if it.calendar.is_empty() || it.calendar == "standard" {
                    String::new()
                } else {
                    format!(" ({})", it.calendar)
                };
                facts.push(format!("{a} .. {b}{cal}"));
            }
            if let Some([w, s, e, n]) = it.bbox {
                facts.push(format!("bbox {w},{s},{e},{n}"));
            }
            if !it.variables.is_empty() {
                facts.push(it.variables.join(", "));
            }
            if !facts.is_empty() {
                out!("    {}", facts.join("  |  "));
            }
            out!("    {}  (follow: shoal follow {}/{})", it.root, it.publisher, it.name);
        }
        let more = r.matched.saturating_sub(r.items.len());
        if more > 0 {
            out!("{} matched; {more} more (--limit)", r.matched);
        }
        Ok(())
    }
}
