//! shoal-query: the chunk-aware reduction engine.
//!
//! - [`partial`]: per-cell (count, sum, min, max, M2) partials and their
//!   order-independent merge; finishing them into sum, mean, min, max,
//!   count, var, std.
//! - [`storage`]: a zarrs storage adapter over a manifest and a block fetch.
//! - [`engine`]: planning (array metadata, CF decoding, selection, chunks
//!   in the selection) and local execution on all cores.
//! - [`remote`]: the compute-request wire format (what peers exchange:
//!   a spec and chunk list one way, partials the other).
//! - [`npy`]: writing results as `.npy`; [`dataset`]: as a Zarr dataset
//!   with coordinates, attributes and provenance.
//! - [`grid`]: the output grid a run's workers share, locked by bands.
//! - [`group`]: `--groupby time.FIELD` and `--resample time=FREQ` turned
//!   into one bin per position of the time dimension.
//! - [`label`]: selection by coordinate label (numbers, CF dates in the
//!   cftime calendars) turned into index ranges.

pub mod dataset;
pub mod engine;
pub mod grid;
pub mod group;
pub mod label;
pub mod npy;
pub mod partial;
pub mod remote;
pub mod storage;

pub use engine::QuerySpec;
pub use partial::{Op, Partial};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no array {array:?} in this dataset (arrays: {known})")]
    UnknownArray { array: String, known: String },
    #[error("array {array} has no dimension {dim:?} (dimensions: {dims})")]
    UnknownDim { dim: String, array: String, dims: String },
    #[error("invalid selection: {0}")]
    Selection(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid array metadata: {0}")]
    Metadata(String),
    #[error("cannot decode a chunk: {0}")]
    Decode(String),
    #[error("cannot read: {0}")]
    Read(String),
    /// The query, or the chunk it would decode, exceeds a memory bound.
    #[error("{0}")]
    TooBig(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
