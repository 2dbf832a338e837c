//! shoal-zarr: Zarr hierarchies in and out of the block store.
//!
//! - [`ingest`]: a local Zarr v2 or v3 directory -> blocks + manifest. The
//!   whole tree is scanned and every metadata document validated before a
//!   single block is written, so bad input fails fast and leaves nothing.
//! - [`read`]: a key's bytes from a manifest and a block source, and writing
//!   a whole dataset back out as a directory (`shoal get`).

pub mod error;
pub mod ingest;
pub mod read;

pub use error::{Error, Result};
pub use ingest::{ingest, ingest_overlay, EntrySink, IngestOptions, IngestReport, Overlay, Prior, Stamp};
