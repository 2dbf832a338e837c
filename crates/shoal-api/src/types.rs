//! The wire types, request and reply per call.

use serde::{Deserialize, Serialize};

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

/// Opens a staged write over a name (`POST /v1/stage`).
#[derive(Debug, Serialize, Deserialize)]
pub struct StageRequest {
    pub name: String,
    /// Over nothing (zarr's mode "w"), not over the name's current version.
    #[serde(default)]
    pub overwrite: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StageOpened {
    pub id: String,
    pub name: String,
    /// The version written over: its keys stay unless replaced or removed.
    pub base: Option<String>,
    pub base_version: Option<u64>,
}

/// `PUT /v1/stage/{id}/key/{key}`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct StagedKey {
    pub key: String,
    pub size: u64,
}

/// `POST /v1/stage/{id}/remove`: a key and every key under it.
#[derive(Debug, Serialize, Deserialize)]
pub struct StageRemoveRequest {
    pub key: String,
}

/// `POST /v1/stage/{id}/commit`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StageCommitRequest {
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
    pub fetched: Option<FetchResult>,
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
    /// Peers to fetch from (multiaddrs ending in /p2p/PEER_ID): dialled
    /// first; for a UnixFS directory's CID, the IPFS nodes asked over
    /// bitswap.
    #[serde(default)]
    pub from: Vec<String>,
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
    pub fetched: Option<FetchResult>,
    /// The replica target recorded (0 = a target cancelled by unpin).
    #[serde(default)]
    pub replicas: Option<u8>,
    /// Set when the pin fetched a UnixFS directory over bitswap: its CID
    /// (`root` is the dataset it became).
    #[serde(default)]
    pub unixfs: Option<String>,
    /// Blocks taken from an earlier, interrupted fetch of that directory.
    #[serde(default)]
    pub resumed_blocks: u64,
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
    pub peers: GossipInfo,
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
    pub counts: CountsInfo,
    /// This daemon's own counts.
    pub local: CountsInfo,
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
    #[serde(default)]
    pub bitswap: BitswapInfo,
    #[serde(default)]
    pub durability: DurabilityInfo,
    #[serde(flatten)]
    pub store: StoreStats,
}

/// What IPFS peers asked of this daemon over bitswap.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BitswapInfo {
    pub blocks_sent: u64,
    /// Wants for blocks not held here.
    pub dont_have: u64,
    /// Streams and messages refused (over a bound, malformed).
    pub refused: u64,
    /// Blocks peers sent unasked (dropped).
    pub unasked: u64,
    /// Verified blocks this daemon asked for and received (`shoal pin` of
    /// a UnixFS directory).
    #[serde(default)]
    pub blocks_received: u64,
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
    #[serde(default, deserialize_with = "text::sels")]
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
    #[serde(default, deserialize_with = "text::groupby")]
    pub groupby: Option<shoal_query::group::GroupSpec>,
    /// Resample a CF time dimension, like xarray's resample: DIM=FREQ with
    /// FREQ one of [n]h, [n]D, [n]MS, [n]QS-DEC (or another month), [n]YS;
    /// bins are labelled by their left edge.
    #[arg(long, value_parser = shoal_query::group::GroupSpec::resample)]
    #[serde(default, deserialize_with = "text::resample")]
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
    /// Peers asked to compute chunks (providers and connected peers).
    #[serde(default)]
    pub peers_asked: u64,
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

/// Query fields a client may also send as the CLI's text (`"time.month"`,
/// `"time=1MS"`, `"time=2020-01:2020-03"`), parsed by the same functions.
mod text {
    use serde::{Deserialize, Deserializer};
    use shoal_query::group::GroupSpec;
    use shoal_query::label::LabelSel;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Text(String),
        Value(T),
    }

    fn one<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, D::Error> {
        match Option::<Either<T>>::deserialize(d)? {
            None => Ok(None),
            Some(Either::Value(v)) => Ok(Some(v)),
            Some(Either::Text(s)) => parse(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }

    pub fn groupby<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GroupSpec>, D::Error> {
        one(d, GroupSpec::groupby)
    }

    pub fn resample<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GroupSpec>, D::Error> {
        one(d, GroupSpec::resample)
    }

    pub fn sels<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LabelSel>, D::Error> {
        Vec::<Either<LabelSel>>::deserialize(d)?
            .into_iter()
            .map(|e| match e {
                Either::Value(v) => Ok(v),
                Either::Text(s) => s.parse().map_err(serde::de::Error::custom),
            })
            .collect()
    }
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

/// Blocks and segments removed and reclaimed by `shoal gc`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct GcResult {
    pub removed_blocks: u64,
    pub removed_bytes: u64,
    pub compacted_segments: u64,
    pub reclaimed_disk_bytes: u64,
    /// Pinned or named datasets missing part of their manifest.
    #[serde(default)]
    pub incomplete: Vec<String>,
}

/// What `shoal fsck` found (and, with `--repair`, did).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FsckResult {
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub corrupt: Vec<CorruptBlock>,
    pub incomplete: Vec<IncompleteDataset>,
    pub unreferenced_blocks: u64,
    pub unreferenced_bytes: u64,
    pub repaired: bool,
    pub removed_blocks: u64,
    /// Blocks fetched again from providers by `--repair`.
    #[serde(default)]
    pub refetched_blocks: u64,
    /// Datasets `--repair` made whole again (their roots).
    #[serde(default)]
    pub repaired_datasets: Vec<String>,
}

impl FsckResult {
    /// Nothing corrupt and every pinned or named dataset complete.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.incomplete.is_empty()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CorruptBlock {
    pub cid: String,
    pub segment: u64,
    pub offset: u64,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IncompleteDataset {
    pub root: String,
    pub names: Vec<String>,
    pub missing_blocks: usize,
    /// Why `--repair` could not make it whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The scrub, the repairs, and what the store recovered from at start
/// (part of [`StatsResult`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DurabilityInfo {
    /// Scrub budget, bytes per second (0: off).
    pub scrub_rate: u64,
    /// Full passes completed (over the store's life).
    pub scrub_passes: u64,
    pub scrub_in_pass: bool,
    /// Bytes and blocks verified in the current pass.
    pub scrub_pass_bytes: u64,
    pub scrub_pass_blocks: u64,
    /// Unix seconds the last full pass ended (0: none yet).
    pub scrub_last_pass_done: u64,
    /// Corrupt blocks the scrub found, over the store's life.
    pub scrub_corrupt_total: u64,
    /// Since the start: slices put off while busy, blocks fetched again by
    /// repairs, datasets made whole, repairs that failed (retried).
    pub scrub_paused: u64,
    pub repaired_blocks: u64,
    pub repaired_datasets: u64,
    pub repair_failures: u64,
    /// What opening the store recovered from (none after a clean start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryInfo>,
}

/// A rebuilt index and lost segment files, found when the store opened.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RecoveryInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_rebuilt: Option<RebuiltIndex>,
    #[serde(default)]
    pub lost_segments: Vec<LostSegmentInfo>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RebuiltIndex {
    pub segments_scanned: u64,
    pub blocks_found: u64,
    pub bytes_found: u64,
    pub bad_frames: u64,
    pub unframed_segments: Vec<u64>,
    pub pins: u64,
    pub names: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LostSegmentInfo {
    pub segment: u64,
    pub missing: bool,
    pub blocks: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExportRepoRequest {
    /// Absolute path of the new directory (absent or empty).
    pub dest: String,
}

/// What `shoal export-repo` copied.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ExportRepoResult {
    pub dest: String,
    pub segments: u64,
    pub segment_bytes: u64,
    pub blocks: u64,
    pub pins: u64,
    pub names: u64,
    pub files: u64,
}

/// Store totals (flattened into [`StatsResult`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StoreStats {
    pub blocks: u64,
    pub live_bytes: u64,
    pub segment_bytes: u64,
    pub segments: u64,
    pub pins: u64,
    pub names: u64,
    pub quota: Option<u64>,
}

/// What a pin or get fetched from peers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FetchResult {
    pub root: String,
    pub blocks_fetched: u64,
    pub bytes_fetched: u64,
    /// True when the dataset was already complete here.
    pub already_local: bool,
    /// Providers that delivered blocks.
    pub peers_used: Vec<String>,
    /// Providers banned for sending wrong bytes.
    pub banned: Vec<String>,
    /// Per provider: its share and its measured link.
    #[serde(default)]
    pub links: Vec<LinkInfo>,
}

/// One provider's share of a fetch and what was measured of its link.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LinkInfo {
    pub peer: String,
    pub bytes: u64,
    pub peak_inflight: u64,
    pub bdp: Option<u64>,
    pub min_rtt_ms: Option<f64>,
    pub max_rate: f64,
}

/// A connected peer.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerEntry {
    pub peer_id: String,
    pub addrs: Vec<String>,
}

/// Popularity reports heard from peers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct GossipInfo {
    pub peers: usize,
    pub accepted: u64,
    pub rejected: u64,
    pub targets_known: usize,
}

/// Requests in the popularity window: blocks served, mount opens, queries.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct CountsInfo {
    pub blocks: u64,
    pub mounts: u64,
    pub queries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_takes_the_clis_text_or_the_structured_form() {
        let text: QueryRequest = serde_json::from_value(serde_json::json!({
            "target": "sst", "array": "sst", "op": "mean", "dims": ["time"],
            "groupby": "time.month", "sel": ["lat=-10:10"], "ddof": 0, "raw": false,
        }))
        .unwrap();
        let g = text.groupby.clone().unwrap();
        assert_eq!(g, shoal_query::group::GroupSpec::groupby("time.month").unwrap());
        assert_eq!(text.sel, vec!["lat=-10:10".parse().unwrap()]);
        let structured = serde_json::to_value(&text).unwrap();
        let back: QueryRequest = serde_json::from_value(structured).unwrap();
        assert_eq!(back.groupby, Some(g));
        assert_eq!(back.sel, text.sel);
        let bad = serde_json::from_value::<QueryRequest>(serde_json::json!({
            "target": "sst", "op": "mean", "groupby": "time.fortnight", "ddof": 0, "raw": false,
        }));
        assert!(bad.unwrap_err().to_string().contains("fortnight"));
    }
}

/// `shoal search`: the catalogue searched by text, bbox and time.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SearchRequest {
    #[serde(default)]
    pub text: Option<String>,
    /// West, south, east, north (degrees).
    #[serde(default)]
    pub bbox: Option<[f64; 4]>,
    /// RFC 3339 dates or date-times; either may be open.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    pub limit: usize,
}

/// One catalogue item (a published version).
#[derive(Debug, Serialize, Deserialize)]
pub struct CatalogueItem {
    /// `NAME.PUBLISHER` (the STAC collection).
    pub collection: String,
    /// `NAME@VERSION` (the STAC item).
    pub id: String,
    pub publisher: String,
    pub name: String,
    pub version: u64,
    pub root: String,
    pub title: String,
    pub description: String,
    pub institution: String,
    /// Data variables (coordinates left out).
    pub variables: Vec<String>,
    /// First and last time in the dataset's calendar.
    pub time: Option<(String, String)>,
    pub calendar: String,
    pub bbox: Option<[f64; 4]>,
    pub size: u64,
    /// Unix seconds when the publisher signed it.
    pub published: u64,
}

/// What `shoal search` found.
#[derive(Debug, Serialize, Deserialize)]
pub struct SearchResult {
    pub matched: usize,
    pub items: Vec<CatalogueItem>,
}
