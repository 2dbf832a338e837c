//! Errors of ingest and export; each names the path or key involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not a Zarr hierarchy: {reason}")]
    NotZarr { path: PathBuf, reason: String },
    #[error("invalid Zarr metadata in {path}: {reason}")]
    BadMetadata { path: PathBuf, reason: String },
    #[error("{path}: symlink points outside the dataset directory ({target}); copy the data in or point `shoal add` at a directory that contains it")]
    SymlinkEscapes { path: PathBuf, target: PathBuf },
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a regular file or directory; Zarr stores hold only files")]
    SpecialFile { path: PathBuf },
    #[error("{path} changed while it was being added (expected {expected} bytes); retry when writers are done")]
    Changed { path: PathBuf, expected: u64 },
    #[error("{path}: file name is not valid UTF-8 or not a valid Zarr key")]
    BadKey { path: PathBuf },
    #[error("key {key:?}: block {cid} has {got} bytes, the manifest says {expected}")]
    BlockSize {
        key: String,
        cid: shoal_core::Cid,
        got: usize,
        expected: u64,
    },
    #[error("cannot read key {key:?}: {source}")]
    Key {
        key: String,
        #[source]
        source: Box<Error>,
    },
    #[error("{0}")]
    Fetch(String),
    #[error("key {0:?} is not in the dataset")]
    NoSuchKey(String),
    #[error("output directory {0} exists and is not empty; choose a new path")]
    OutputExists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] shoal_store::Error),
    #[error(transparent)]
    Core(#[from] shoal_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
