//! The local API: request and reply types shared by the daemon and the CLI.
//!
//! HTTP/1.1 over the repo's Unix socket. Plain calls answer one JSON value.
//! Long calls (`add`, `get`) answer newline-delimited JSON: zero or more
//! [`Event::Progress`] lines, then exactly one `Done` or `Error` line. Errors
//! are `{"error": "...", "kind": "..."}` with a matching HTTP status.

use serde::{Deserialize, Serialize};
use shoal_node::popularity::{Counts, GossipStats};

#[derive(Debug, Serialize, Deserialize)]
pub struct AddRequest {
    /// Absolute path of the Zarr directory (the CLI canonicalises it).
    pub path: String,
    pub name: Option<String>,
    /// Read every file, even those unchanged since the name's last add.
    #[serde(default)]
    pub rehash: bool,
    /// Versions of the name to keep.
    #[serde(default)]
    pub keep: Option<u32>,
}

/// One version of a name (`shoal log`).
#[derive(Debug, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub root: String,
    pub parent: Option<String>,
    /// Unix seconds (0: recorded before versions were kept).
    pub time: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub new_bytes: u64,
}

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

/// `shoal diff A B`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DiffResult {
    pub from: String,
    pub to: String,
    pub added: Vec<(String, u64)>,
    pub changed: Vec<(String, u64, u64)>,
    pub removed: Vec<(String, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AddResult {
    pub root: String,
    pub name: Option<String>,
    pub zarr_format: u8,
    pub keys: u64,
    pub bytes: u64,
    pub new_blocks: u64,
    pub new_bytes: u64,
    pub dup_blocks: u64,
    /// Files (and bytes) unchanged since the name's last add, not read.
    pub reused_files: u64,
    pub reused_bytes: u64,
    /// With a name: the version number this add is.
    pub version: Option<u64>,
    /// The dataset's UnixFS view: its CID for IPFS tools (ipfs://CID).
    #[serde(default)]
    pub unixfs: String,
    pub seconds: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GetRequest {
    pub target: String,
    /// Absolute output directory (or CAR file, with `car`).
    pub out: String,
    /// Write the dataset's UnixFS view as one CAR v1 file instead.
    #[serde(default)]
    pub car: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GetResult {
    #[serde(default)]
    pub fetched: Option<shoal_net::FetchReport>,
    pub root: String,
    pub out: String,
    pub keys: u64,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy, Default)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub items_done: u64,
    pub items_total: u64,
    /// Peers that delivered data (network fetches).
    #[serde(default)]
    pub peers: u64,
}

/// One line of a streamed reply.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event<T> {
    Progress(Progress),
    Done(T),
    Error(ApiError),
}

#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct ApiError {
    pub error: String,
    pub kind: ErrorKind,
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    NotFound,
    Corrupt,
    Quota,
    Conflict,
    /// Peers could not deliver in time.
    Unavailable,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Quota => 507,
            ErrorKind::Unavailable => 503,
            ErrorKind::Corrupt | ErrorKind::Internal => 500,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IdInfo {
    pub peer_id: String,
    /// Listen addresses with `/p2p/<peer id>`, ready for `shoal connect`.
    pub addrs: Vec<String>,
    pub version: String,
    pub repo: String,
    pub api_socket: String,
    pub pid: u32,
    /// The HTTP gateway's base URL (`http://HOST:PORT`, the port actually
    /// bound), if it is on.
    pub gateway: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LsEntry {
    pub key: String,
    pub size: u64,
    /// Number of blocks, or 0 for metadata kept inline in the manifest.
    pub blocks: usize,
    pub inline: bool,
    /// Block CIDs in order (empty for inline keys).
    pub cids: Vec<String>,
}

/// One line of a streamed listing (`/v1/ls`, NDJSON): the head, then an
/// entry per key in key order, then the end (or an error).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LsLine {
    Head(LsHead),
    Entry(LsEntry),
    End,
    Error(ApiError),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LsHead {
    pub root: String,
    pub zarr_format: u8,
    pub keys: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unixfs: Option<String>,
    /// Keys this listing has (all, or those under the path), and the
    /// longest one's length (the text columns).
    pub listed: u64,
    pub width: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PinRequest {
    pub target: String,
    pub name: Option<String>,
    /// Copies the swarm should keep (`--replicas N`).
    #[serde(default)]
    pub replicas: Option<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PinResult {
    pub root: String,
    pub name: Option<String>,
    /// Names that still point at the root after an unpin (data is kept).
    #[serde(default)]
    pub still_named: Vec<String>,
    pub changed: bool,
    /// Set when the pin fetched data from peers.
    #[serde(default)]
    pub fetched: Option<shoal_net::FetchReport>,
    /// The replica target recorded (0 = a target cancelled by unpin).
    #[serde(default)]
    pub replicas: Option<u8>,
}

/// `shoal mirrors`: what this daemon mirrors and why.
#[derive(Debug, Serialize, Deserialize)]
pub struct MirrorsResult {
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
    pub popular: Vec<PopularEntry>,
    pub peers: GossipStats,
    pub last_error: Option<String>,
    /// Mirrors that failed here recently (this daemon backs off from them).
    pub failed: Vec<FailedMirror>,
    /// Policy runs completed since the daemon started.
    #[serde(default)]
    pub runs: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FailedMirror {
    pub root: String,
    pub error: String,
    pub secs_ago: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MirrorEntry {
    pub root: String,
    pub bytes: u64,
    /// Its score now.
    pub score: u64,
    /// Why it was mirrored (unknown for mirrors made before a restart).
    pub why: Option<MirrorWhy>,
    /// False while it is being fetched.
    pub complete: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MirrorWhy {
    /// "popular" or "replicas".
    pub reason: String,
    /// The score when this daemon chose it.
    pub score: u64,
    /// Sources (this daemon and peers) behind that score.
    #[serde(default)]
    pub sources: usize,
    pub copies_wanted: u8,
}

/// A dataset's popularity.
#[derive(Debug, Serialize, Deserialize)]
pub struct PopularEntry {
    pub root: String,
    /// Sum over sources of their requests, each capped at `peer_cap`.
    pub score: u64,
    /// Sources (this daemon, peers) reporting requests for it.
    pub sources: usize,
    /// Uncapped sums over all sources.
    pub counts: Counts,
    /// This daemon's own counts.
    pub local: Counts,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetEntry {
    pub root: String,
    pub copies: u8,
    pub set_at: u64,
    /// Recorded in this daemon's store (set here, or carried for a copy).
    pub recorded_here: bool,
    pub held_here: bool,
    /// Reachable providers at the last check.
    pub providers: Option<usize>,
    pub checked_secs_ago: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub addr: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectResult {
    pub peer_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProvidersResult {
    pub root: String,
    pub providers: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PinInfo {
    pub root: String,
    pub kinds: Vec<String>,
    pub names: Vec<String>,
    pub bytes: u64,
    pub keys: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FsckRequest {
    pub repair: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatsResult {
    pub repo: String,
    /// Compute requests from peers refused for their size.
    #[serde(default)]
    pub compute_refused: u64,
    /// Peers caught returning wrong compute partials (asked no more).
    pub compute_liars: u64,
    /// Datasets this daemon could not announce on the DHT.
    #[serde(default)]
    pub provide_failures: u64,
    /// Peer requests whose handler panicked (answered, slot released).
    #[serde(default)]
    pub handler_panics: u64,
    /// Name records rejected: forged, malformed, older than the one held,
    /// or under another name's key or topic.
    #[serde(default)]
    pub names_rejected: u64,
    #[serde(flatten)]
    pub store: shoal_store::StatsReport,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MountRequest {
    pub dir: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MountResult {
    pub dir: String,
}

/// A query, as the CLI parses it and the API carries it.
#[derive(Debug, Serialize, Deserialize, clap::Args)]
pub struct QueryRequest {
    /// Dataset: CID or NAME.
    pub target: String,
    /// Array path inside the dataset, e.g. sst or ocean/sst; several,
    /// comma-separated (sst,tas), make one result dataset.
    #[arg(required_unless_present = "all")]
    #[serde(default)]
    pub array: Option<String>,
    /// Every data variable that has the reduced (and grouped) dimensions,
    /// into one result.
    #[arg(long, conflicts_with = "array")]
    #[serde(default)]
    pub all: bool,
    /// The reduction: sum, mean, min, max, count, var or std.
    #[arg(long)]
    pub op: shoal_query::Op,
    /// Dimension to reduce over (repeatable; none = all).
    #[arg(long = "dim")]
    pub dims: Vec<String>,
    /// Selection by coordinate label, like xarray's .sel: DIM=A:B (both
    /// ends inclusive; either may be left out), or DIM=VALUE. Dates for
    /// CF time coordinates: 2020, 2020-03, 2020-03-01, 2020-03-01T06:00
    /// (a date covers its whole day, month or year). Repeatable.
    #[arg(long = "sel")]
    pub sel: Vec<shoal_query::label::LabelSel>,
    /// Selection by index, like xarray's .isel: DIM=START:STOP (half-open;
    /// repeatable).
    #[arg(long = "isel", value_parser = parse_sel)]
    #[serde(default)]
    pub isel: Vec<(String, u64, u64)>,
    /// Group along a CF time dimension, like xarray's groupby:
    /// time.month, time.season, time.year, time.dayofyear or time.hour
    /// (the result has a month, season, ... dimension in its place; alone,
    /// only time is reduced).
    #[arg(long, value_parser = shoal_query::group::GroupSpec::groupby, conflicts_with = "resample")]
    #[serde(default)]
    pub groupby: Option<shoal_query::group::GroupSpec>,
    /// Resample a CF time dimension, like xarray's resample: DIM=FREQ with
    /// FREQ one of [n]h, [n]D, [n]MS, [n]QS-DEC (or another month), [n]YS;
    /// bins are labelled by their left edge.
    #[arg(long, value_parser = shoal_query::group::GroupSpec::resample)]
    #[serde(default)]
    pub resample: Option<shoal_query::group::GroupSpec>,
    /// Weighted sum, mean, var or std, like xarray's weighted: `coslat`
    /// (cosine of the latitude coordinate, in degrees) or ARRAY (another
    /// array of the dataset, e.g. cell area, broadcast by dimension name).
    #[arg(long)]
    #[serde(default)]
    pub weights: Option<String>,
    /// Check peers' partials: by default one chunk of every compute request
    /// is also computed here and compared; `all` computes every chunk here
    /// too (audit mode).
    #[arg(long, value_parser = ["all"])]
    #[serde(default)]
    pub verify: Option<String>,
    /// Keep the result as a dataset under this name (pinned; mountable,
    /// readable over the gateway); the same query of the same dataset is
    /// then answered from it without computing.
    #[arg(long)]
    #[serde(default)]
    pub name: Option<String>,
    /// With --name: compute again even if this query's result is kept.
    #[arg(long)]
    #[serde(default)]
    pub no_cache: bool,
    /// Return the result's coordinates and attributes (set when the result
    /// is written as a dataset).
    #[arg(skip)]
    #[serde(default)]
    pub coords: bool,
    /// Delta degrees of freedom for var and std.
    #[arg(long, default_value_t = 0)]
    pub ddof: u64,
    /// Reduce the stored values, without CF decoding.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QueryResult {
    pub root: String,
    pub array: String,
    pub op: shoal_query::Op,
    /// Dimensions of the result (the ones not reduced).
    pub dims: Vec<String>,
    /// Dimensions reduced over.
    pub reduced: Vec<String>,
    pub shape: Vec<usize>,
    /// Row-major float64 values; NaN is encoded as null.
    pub values: Vec<Option<f64>>,
    /// Dtype of the array in the dataset.
    pub source_dtype: String,
    pub chunks: u64,
    /// Chunks computed on this daemon from local blocks.
    pub chunks_local: u64,
    /// Chunks computed by peers (peer id, chunks); only partials came back.
    pub chunks_remote: Vec<(String, u64)>,
    /// Chunks no peer computed: their blocks were fetched and computed here.
    pub chunks_fetched: u64,
    /// Bytes that crossed the network: compute requests, partials, fetched blocks.
    pub network_bytes: u64,
    pub seconds: f64,
    /// The index range selected along each dimension (labels resolved):
    /// (dimension, start, stop), half-open.
    pub selection: Vec<(String, u64, u64)>,
    /// Peers caught returning partials that disagree with the same chunks
    /// computed here (their chunks were recomputed elsewhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub liars: Vec<String>,
    /// Peers' chunks also computed here to check their answers.
    pub chunks_checked: u64,
    /// With --name: the result dataset's root CID, and whether it was
    /// already kept (nothing computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default)]
    pub cached: bool,
    /// Coordinates of the result's dimensions and the array's attributes,
    /// when asked for (a result written as a dataset).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coords: Vec<shoal_query::dataset::ResultCoord>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

/// Parses `DIM=START:STOP`.
fn parse_sel(s: &str) -> Result<(String, u64, u64), String> {
    let bad = |why: &str| format!("{s:?}: {why}");
    let (dim, range) = s.split_once('=').ok_or_else(|| bad("expected DIM=START:STOP"))?;
    let (a, b) = range.split_once(':').ok_or_else(|| bad("expected DIM=START:STOP"))?;
    let a: u64 = a.parse().map_err(|_| bad("START must be a non-negative integer"))?;
    let b: u64 = b.parse().map_err(|_| bad("STOP must be a non-negative integer"))?;
    if dim.is_empty() || a >= b {
        return Err(bad("needs a dimension name and START < STOP"));
    }
    Ok((dim.to_string(), a, b))
}

// From the node's typed results to these wire shapes.

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
            fetched: r.fetched,
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
            fetched: r.fetched,
            replicas: r.replicas,
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
                    counts: s.counts,
                    local: s.local,
                })
                .collect(),
            peers: v.peers,
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

#[derive(Debug, Serialize, Deserialize)]
pub struct NameRequest {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PublishResult {
    /// This daemon's peer id: followers run `shoal follow PUBLISHER/NAME`.
    pub publisher: String,
    pub name: String,
    pub root: String,
    pub seq: u64,
    /// False when the name had not moved (its record was announced again).
    pub new: bool,
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

#[derive(Debug, Serialize, Deserialize)]
pub struct UnpublishResult {
    pub name: String,
    /// False when it was not published.
    pub changed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FollowRequest {
    /// PEERID/NAME
    pub target: String,
    #[serde(default)]
    pub local: Option<String>,
    #[serde(default)]
    pub keep: Option<u32>,
}

/// One followed name.
#[derive(Debug, Serialize, Deserialize)]
pub struct FollowInfo {
    pub publisher: String,
    pub name: String,
    /// The local name that points at the followed versions.
    pub local: String,
    /// The publisher's sequence number of the version held (0 = none yet).
    pub seq: u64,
    pub root: Option<String>,
    /// When the held version was taken (unix seconds; 0 = never).
    pub updated: u64,
    /// A newer version heard and not yet held (its sequence number).
    pub pending: Option<u64>,
    pub error: Option<String>,
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
