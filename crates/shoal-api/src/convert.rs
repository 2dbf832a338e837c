//! The node's, store's and network's reports turned into the wire types:
//! the one place a field of theirs meets a field of the API.

use crate::*;

impl From<shoal_node::Version> for VersionInfo {
    fn from(v: shoal_node::Version) -> Self {
        VersionInfo {
            version: v.number,
            root: v.root.to_string(),
            parent: v.parent.map(|p| p.to_string()),
            time: v.time,
            added: v.added,
            changed: v.changed,
            removed: v.removed,
            new_bytes: v.new_bytes,
        }
    }
}

impl From<shoal_node::catalogue::Item> for CatalogueItem {
    fn from(it: shoal_node::catalogue::Item) -> Self {
        let s = it.summary.clone();
        CatalogueItem {
            collection: it.collection(),
            id: it.id(),
            publisher: it.publisher,
            name: it.name,
            version: it.seq,
            root: it.root.to_string(),
            title: s.title,
            description: s.description,
            institution: s.institution,
            variables: s.variables.into_iter().filter(|v| !v.coord).map(|v| v.name).collect(),
            time: s.time,
            calendar: s.calendar,
            bbox: s.bbox,
            size: s.size,
            published: it.published,
        }
    }
}

impl From<SearchRequest> for shoal_node::catalogue::SearchQuery {
    fn from(r: SearchRequest) -> Self {
        shoal_node::catalogue::SearchQuery {
            text: r.text,
            bbox: r.bbox,
            start: r.start,
            end: r.end,
            limit: r.limit,
            ..Default::default()
        }
    }
}

impl From<shoal_node::Error> for ApiError {
    fn from(e: shoal_node::Error) -> Self {
        use shoal_node::Error as E;
        let kind = match &e {
            E::NotFound(_) => ErrorKind::NotFound,
            E::BadRequest(_) => ErrorKind::BadRequest,
            E::Corrupt(_) => ErrorKind::Corrupt,
            E::Full(_) => ErrorKind::Quota,
            E::Unavailable(_) => ErrorKind::Unavailable,
            E::Conflict(_) => ErrorKind::Conflict,
            E::Internal(_) => ErrorKind::Internal,
        };
        ApiError {
            error: e.message().to_string(),
            kind,
        }
    }
}

impl From<shoal_node::Progress> for Progress {
    fn from(p: shoal_node::Progress) -> Self {
        Progress {
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            items_done: p.items_done,
            items_total: p.items_total,
            peers: p.peers,
        }
    }
}

impl From<shoal_node::AddReport> for AddResult {
    fn from(r: shoal_node::AddReport) -> Self {
        AddResult {
            root: r.root.to_string(),
            name: r.name,
            zarr_format: r.zarr_format,
            keys: r.keys,
            bytes: r.bytes,
            new_blocks: r.new_blocks,
            new_bytes: r.new_bytes,
            dup_blocks: r.dup_blocks,
            reused_files: r.reused_files,
            reused_bytes: r.reused_bytes,
            version: r.version.map(|v| v.number),
            unixfs: r.unixfs.to_string(),
            seconds: r.elapsed.as_secs_f64(),
        }
    }
}

impl From<&shoal_core::manifest::Entry> for LsEntry {
    fn from(e: &shoal_core::manifest::Entry) -> Self {
        LsEntry {
            size: e.size,
            blocks: e.blocks().len(),
            inline: matches!(e.content, shoal_core::manifest::Content::Inline(_)),
            cids: e.blocks().iter().map(|c| c.to_string()).collect(),
            key: e.key.clone(),
        }
    }
}

impl From<shoal_node::ExportReport> for GetResult {
    fn from(r: shoal_node::ExportReport) -> Self {
        GetResult {
            fetched: r.fetched.map(Into::into),
            root: r.root.to_string(),
            out: r.out.display().to_string(),
            keys: r.keys,
            bytes: r.bytes,
            seconds: r.elapsed.as_secs_f64(),
        }
    }
}

impl From<shoal_node::PinReport> for PinResult {
    fn from(r: shoal_node::PinReport) -> Self {
        PinResult {
            root: r.root.to_string(),
            name: r.name,
            still_named: Vec::new(),
            changed: r.changed,
            fetched: r.fetched.map(Into::into),
            replicas: r.replicas,
            unixfs: r.unixfs.as_ref().map(|u| u.root.to_string()),
            resumed_blocks: r.unixfs.map_or(0, |u| u.resumed_blocks),
        }
    }
}

impl From<shoal_node::UnpinReport> for PinResult {
    fn from(r: shoal_node::UnpinReport) -> Self {
        PinResult {
            root: r.root.to_string(),
            name: None,
            still_named: r.still_named,
            changed: r.changed,
            fetched: None,
            replicas: r.target_cancelled.then_some(0),
            unixfs: None,
            resumed_blocks: 0,
        }
    }
}

impl From<shoal_node::PinEntry> for PinInfo {
    fn from(p: shoal_node::PinEntry) -> Self {
        PinInfo {
            root: p.root.to_string(),
            kinds: p.kinds.iter().map(|k| format!("{k:?}").to_lowercase()).collect(),
            names: p.names,
            bytes: p.bytes,
            keys: p.keys,
        }
    }
}

impl From<shoal_node::QueryReport> for QueryResult {
    fn from(r: shoal_node::QueryReport) -> Self {
        QueryResult {
            root: r.root.to_string(),
            array: r.array,
            op: r.op,
            dims: r.dims,
            reduced: r.reduced,
            shape: r.shape,
            values: r.values.into_iter().map(|v| (!v.is_nan()).then_some(v)).collect(),
            source_dtype: r.source_dtype,
            chunks: r.chunks,
            chunks_local: r.chunks_local,
            chunks_remote: r.chunks_remote.into_iter().map(|(p, n)| (p.to_string(), n)).collect(),
            chunks_fetched: r.chunks_fetched,
            network_bytes: r.network_bytes,
            seconds: r.elapsed.as_secs_f64(),
            selection: r.selection,
            liars: r.liars.iter().map(|p| p.to_string()).collect(),
            chunks_checked: r.chunks_checked,
            peers_asked: r.peers_asked,
            result: None,
            cached: false,
            coords: r.coords,
            attrs: r.attrs,
        }
    }
}

impl From<shoal_node::MirrorsView> for MirrorsResult {
    fn from(v: shoal_node::MirrorsView) -> Self {
        let why = |w: shoal_node::Why| MirrorWhy {
            reason: match w.reason {
                shoal_node::Reason::Popular => "popular".into(),
                shoal_node::Reason::Replicas => "replicas".into(),
            },
            score: w.score,
            sources: w.sources,
            copies_wanted: w.copies_wanted,
        };
        MirrorsResult {
            budget: v.budget,
            used: v.used,
            threshold: v.threshold,
            peer_cap: v.peer_cap,
            gossip: v.gossip,
            mirrors: v
                .mirrors
                .into_iter()
                .map(|m| MirrorEntry {
                    root: m.root.to_string(),
                    bytes: m.bytes,
                    score: m.score,
                    why: m.why.map(why),
                    complete: m.complete,
                })
                .collect(),
            targets: v
                .targets
                .into_iter()
                .map(|t| TargetEntry {
                    root: t.root.to_string(),
                    copies: t.copies,
                    set_at: t.set_at,
                    recorded_here: t.recorded_here,
                    held_here: t.held_here,
                    providers: t.providers,
                    checked_secs_ago: t.checked_secs_ago,
                })
                .collect(),
            popular: v
                .popular
                .into_iter()
                .map(|s| PopularEntry {
                    root: s.root.to_string(),
                    score: s.score,
                    sources: s.sources,
                    counts: s.counts.into(),
                    local: s.local.into(),
                })
                .collect(),
            peers: v.peers.into(),
            last_error: v.last_error,
            runs: v.runs,
            failed: v
                .failed
                .into_iter()
                .map(|f| FailedMirror {
                    root: f.root.to_string(),
                    error: f.error,
                    secs_ago: f.ago.as_secs(),
                })
                .collect(),
        }
    }
}

impl From<shoal_node::PublishReport> for PublishResult {
    fn from(r: shoal_node::PublishReport) -> Self {
        PublishResult {
            publisher: r.publisher,
            name: r.name,
            root: r.root.to_string(),
            seq: r.seq,
            new: r.new,
        }
    }
}

impl From<shoal_node::Follow> for FollowInfo {
    fn from(f: shoal_node::Follow) -> Self {
        let pending = Some(f.pending_seq()).filter(|p| *p > f.seq);
        FollowInfo {
            publisher: f.publisher,
            name: f.name,
            local: f.local,
            seq: f.seq,
            root: f.root.map(|r| r.to_string()),
            updated: f.updated,
            pending,
            error: f.error,
        }
    }
}

impl From<shoal_store::GcStats> for GcResult {
    fn from(g: shoal_store::GcStats) -> Self {
        GcResult {
            removed_blocks: g.removed_blocks,
            removed_bytes: g.removed_bytes,
            compacted_segments: g.compacted_segments,
            reclaimed_disk_bytes: g.reclaimed_disk_bytes,
            incomplete: g.incomplete,
        }
    }
}

impl From<shoal_store::FsckReport> for FsckResult {
    fn from(r: shoal_store::FsckReport) -> Self {
        FsckResult {
            blocks_checked: r.blocks_checked,
            bytes_checked: r.bytes_checked,
            corrupt: r
                .corrupt
                .into_iter()
                .map(|b| CorruptBlock {
                    cid: b.cid,
                    segment: b.segment,
                    offset: b.offset,
                    reason: b.reason,
                })
                .collect(),
            incomplete: r
                .incomplete
                .into_iter()
                .map(|d| IncompleteDataset {
                    root: d.root,
                    names: d.names,
                    missing_blocks: d.missing_blocks,
                    reason: d.reason,
                })
                .collect(),
            unreferenced_blocks: r.unreferenced_blocks,
            unreferenced_bytes: r.unreferenced_bytes,
            repaired: r.repaired,
            removed_blocks: r.removed_blocks,
            refetched_blocks: r.refetched_blocks,
            repaired_datasets: r.repaired_datasets,
        }
    }
}

impl DurabilityInfo {
    /// From the scrub's kept state, its rate, the node's counters and the
    /// store's recovery at open.
    pub fn new(
        scrub: &shoal_store::ScrubState,
        rate: u64,
        counters: &shoal_node::DurabilityStats,
        recovery: &shoal_store::Recovery,
    ) -> Self {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        DurabilityInfo {
            scrub_rate: rate,
            scrub_passes: scrub.passes,
            scrub_in_pass: scrub.in_pass,
            scrub_pass_bytes: scrub.pass_bytes,
            scrub_pass_blocks: scrub.pass_blocks,
            scrub_last_pass_done: scrub.last_pass_done,
            scrub_corrupt_total: scrub.corrupt_total,
            scrub_paused: get(&counters.scrub_paused),
            repaired_blocks: get(&counters.repaired_blocks),
            repaired_datasets: get(&counters.repaired_datasets),
            repair_failures: get(&counters.repair_failures),
            recovery: (!recovery.is_empty()).then(|| RecoveryInfo {
                index_rebuilt: recovery.index_rebuilt.as_ref().map(|r| RebuiltIndex {
                    segments_scanned: r.segments_scanned,
                    blocks_found: r.blocks_found,
                    bytes_found: r.bytes_found,
                    bad_frames: r.bad_frames,
                    unframed_segments: r.unframed_segments.clone(),
                    pins: r.pins,
                    names: r.names,
                }),
                lost_segments: recovery
                    .lost_segments
                    .iter()
                    .map(|l| LostSegmentInfo {
                        segment: l.segment,
                        missing: l.missing,
                        blocks: l.blocks,
                        bytes: l.bytes,
                    })
                    .collect(),
            }),
        }
    }
}

impl ExportRepoResult {
    pub fn new(dest: String, r: &shoal_store::BackupReport) -> Self {
        ExportRepoResult {
            dest,
            segments: r.segments,
            segment_bytes: r.segment_bytes,
            blocks: r.blocks,
            pins: r.pins,
            names: r.names,
            files: r.files,
        }
    }
}

impl From<shoal_store::StatsReport> for StoreStats {
    fn from(s: shoal_store::StatsReport) -> Self {
        StoreStats {
            blocks: s.blocks,
            live_bytes: s.live_bytes,
            segment_bytes: s.segment_bytes,
            segments: s.segments,
            pins: s.pins,
            names: s.names,
            quota: s.quota,
        }
    }
}

impl From<shoal_net::FetchReport> for FetchResult {
    fn from(r: shoal_net::FetchReport) -> Self {
        FetchResult {
            root: r.root,
            blocks_fetched: r.blocks_fetched,
            bytes_fetched: r.bytes_fetched,
            already_local: r.already_local,
            peers_used: r.peers_used,
            banned: r.banned,
            links: r
                .links
                .into_iter()
                .map(|l| LinkInfo {
                    peer: l.peer,
                    bytes: l.bytes,
                    peak_inflight: l.peak_inflight,
                    bdp: l.bdp,
                    min_rtt_ms: l.min_rtt_ms,
                    max_rate: l.max_rate,
                })
                .collect(),
        }
    }
}

impl From<shoal_net::PeerInfo> for PeerEntry {
    fn from(p: shoal_net::PeerInfo) -> Self {
        PeerEntry {
            peer_id: p.peer_id,
            addrs: p.addrs,
        }
    }
}

impl From<shoal_node::popularity::GossipStats> for GossipInfo {
    fn from(g: shoal_node::popularity::GossipStats) -> Self {
        GossipInfo {
            peers: g.peers,
            accepted: g.accepted,
            rejected: g.rejected,
            targets_known: g.targets_known,
        }
    }
}

impl From<shoal_node::popularity::Counts> for CountsInfo {
    fn from(c: shoal_node::popularity::Counts) -> Self {
        CountsInfo {
            blocks: c.blocks,
            mounts: c.mounts,
            queries: c.queries,
        }
    }
}
