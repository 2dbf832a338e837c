//! What the node's operations return: typed results, no wire format.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::manifest::Entry;
use shoal_core::Cid;
use shoal_net::{FetchReport, Multiaddr, PeerId};
use shoal_store::PinKind;

pub use shoal_core::Progress;

/// Where progress goes; called from worker threads, so it must be cheap
/// (the caller throttles if it needs to).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A progress sink that drops everything.
pub fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

/// A resolved TARGET: `CID`, `NAME`, or either followed by `/key/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub root: Cid,
    /// The name it was given by, if any.
    pub name: Option<String>,
    /// A key or key prefix inside the dataset.
    pub path: Option<String>,
}

impl Target {
    /// The target, refusing a key path (for operations on whole datasets).
    pub fn dataset(&self, op: &str) -> crate::Result<Cid> {
        match &self.path {
            None => Ok(self.root),
            Some(_) => Err(crate::Error::BadRequest(format!(
                "{op} takes a dataset (CID or NAME), not a key"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub peer_id: PeerId,
    /// Listen addresses with `/p2p/<peer id>`, ready to dial.
    pub addrs: Vec<Multiaddr>,
}

#[derive(Debug, Clone)]
pub struct AddReport {
    pub root: Cid,
    pub name: Option<String>,
    pub zarr_format: u8,
    pub keys: u64,
    pub bytes: u64,
    pub new_blocks: u64,
    pub new_bytes: u64,
    pub dup_blocks: u64,
    /// Files (and bytes) unchanged since the name's previous add: their
    /// blocks were reused without reading them.
    pub reused_files: u64,
    pub reused_bytes: u64,
    /// With a name: the version this add recorded (or the current one,
    /// when nothing changed).
    pub version: Option<crate::versions::Version>,
    /// The dataset's UnixFS view (what IPFS tools read).
    pub unixfs: Cid,
    pub elapsed: Duration,
}

/// How an add runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddOptions {
    /// Read every file, even those unchanged since the name's last add.
    pub rehash: bool,
    /// Versions of the name to keep (None: the name's setting, default
    /// [`crate::versions::DEFAULT_KEEP`]).
    pub keep: Option<u32>,
}

/// One name in a directory of a dataset's key tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub name: String,
    /// A key prefix (more keys below it), not a key.
    pub dir: bool,
    /// The key's size; 0 for a directory.
    pub size: u64,
}

/// A directory of a dataset's key tree.
#[derive(Debug, Clone)]
pub struct Dir {
    pub zarr_format: u8,
    /// Its immediate children in key order, at most the limit asked for.
    pub children: Vec<Child>,
    /// More children existed than the limit.
    pub truncated: bool,
}

/// The keys of a dataset (or of one key prefix of it).
#[derive(Debug, Clone)]
pub struct Listing {
    pub root: Cid,
    pub zarr_format: u8,
    /// Keys and bytes of the whole dataset.
    pub keys: u64,
    pub bytes: u64,
    /// The keys listed, sorted.
    pub entries: Vec<Entry>,
    /// The dataset's UnixFS view, when it is held here in full.
    pub unixfs: Option<Cid>,
}

#[derive(Debug, Clone)]
pub struct ExportReport {
    /// Set when blocks had to be fetched from peers first.
    pub fetched: Option<FetchReport>,
    pub root: Cid,
    pub out: PathBuf,
    pub keys: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct PinReport {
    pub root: Cid,
    pub name: Option<String>,
    /// False when it was already pinned.
    pub changed: bool,
    /// Set when the pin fetched data from peers.
    pub fetched: Option<FetchReport>,
    /// The replica target recorded.
    pub replicas: Option<u8>,
    /// Set when the pin fetched a UnixFS directory over bitswap.
    pub unixfs: Option<UnixfsImport>,
}

/// A UnixFS directory fetched from IPFS nodes and added as a dataset.
#[derive(Debug, Clone)]
pub struct UnixfsImport {
    /// The UnixFS directory's CID (the dataset's own is the report's root).
    pub root: Cid,
    /// Blocks taken from an earlier, interrupted attempt.
    pub resumed_blocks: u64,
}

#[derive(Debug, Clone)]
pub struct UnpinReport {
    pub root: Cid,
    /// False when there was no user pin (or name) to drop.
    pub changed: bool,
    /// Names that still point at the root (its data is kept).
    pub still_named: Vec<String>,
    /// A replica target set with the pin was cancelled.
    pub target_cancelled: bool,
}

#[derive(Debug, Clone)]
pub struct PinEntry {
    pub root: Cid,
    /// Empty for a dataset that is named but not pinned.
    pub kinds: Vec<PinKind>,
    pub names: Vec<String>,
    pub bytes: u64,
    pub keys: u64,
}

#[derive(Debug, Clone)]
pub struct QueryReport {
    pub root: Cid,
    pub array: String,
    pub op: shoal_query::Op,
    /// Dimensions of the result (the ones not reduced).
    pub dims: Vec<String>,
    /// Dimensions reduced over.
    pub reduced: Vec<String>,
    pub shape: Vec<usize>,
    /// Row-major values (NaN where no valid input).
    pub values: Vec<f64>,
    /// Dtype of the array in the dataset.
    pub source_dtype: String,
    pub chunks: u64,
    /// Chunks computed here from local blocks.
    pub chunks_local: u64,
    /// Chunks computed by peers; only partials came back.
    pub chunks_remote: Vec<(PeerId, u64)>,
    /// Chunks whose blocks were fetched and computed here.
    pub chunks_fetched: u64,
    /// Bytes that crossed the network: requests, partials, fetched blocks.
    pub network_bytes: u64,
    pub elapsed: Duration,
    /// The index range selected along every dimension of the array (label
    /// selections resolved).
    pub selection: Vec<(String, u64, u64)>,
    /// Peers caught returning wrong partials during this query (their
    /// chunks were recomputed elsewhere).
    pub liars: Vec<PeerId>,
    /// Chunks computed by peers that were also computed here to check
    /// their answers (their blocks count in `network_bytes` when fetched).
    pub chunks_checked: u64,
    /// Peers asked to compute chunks not held here (the dataset's
    /// providers and connected peers).
    pub peers_asked: u64,
    /// With `QuerySpec::coords`: the coordinates of the result's
    /// dimensions over the selection, and the array's attributes.
    pub coords: Vec<ResultCoord>,
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

/// A coordinate of a query result's dimension: its stored values over the
/// selection, and its attributes (units, calendar: written back with the
/// values, readers decode them as they decode the source).
pub use shoal_query::dataset::ResultCoord;
