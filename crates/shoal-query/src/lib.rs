//! shoal-query: the chunk-aware reduction engine.
//!
//! - [`partial`]: per-cell (count, sum, min, max, M2) partials and their
//!   order-independent merge; finishing them into sum, mean, min, max,
//!   count, var, std.
//! - [`storage`]: a zarrs storage adapter over a manifest and a block fetch.
//! - [`meta`]: array metadata as the engine needs it (element type, chunk
//!   grid, CF decoding) and whole reads of coordinates and weights.
//! - [`plan`]: a [`QuerySpec`] turned into a [`plan::Plan`]: selection,
//!   reduced dimensions, groups, weights, the chunks in the selection,
//!   checked against the memory budget.
//! - [`kernel`]: one decoded chunk reduced into per-cell partials.
//! - [`exec`]: a plan's chunks on all cores into one shared grid.
//! - [`wire`]: the compute-request wire format (what peers exchange:
//!   a spec and chunk list one way, partials the other).
//! - [`npy`]: writing results as `.npy`; [`dataset`]: as a Zarr dataset
//!   with coordinates, attributes and provenance.
//! - [`grid`]: the output grid a run's workers share, locked by bands.
//! - [`group`]: `--groupby time.FIELD` and `--resample time=FREQ` turned
//!   into one bin per position of the time dimension.
//! - [`label`]: selection by coordinate label (numbers, CF dates in the
//!   cftime calendars) turned into index ranges.

pub mod dataset;
pub mod exec;
pub mod grid;
pub mod group;
pub mod kernel;
pub mod label;
pub mod meta;
pub mod npy;
pub mod partial;
pub mod plan;
pub mod storage;
pub mod wire;

#[cfg(test)]
mod testing;

pub use partial::{Op, Partial};
pub use plan::QuerySpec;

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
