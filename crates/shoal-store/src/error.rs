//! Store errors. Each names the CID, segment or name involved.

use shoal_core::Cid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store at {path} is in use by another process (is a shoal daemon already running on this repo?)")]
    Locked { path: String },
    #[error(
        "block {cid} is corrupt on disk (segment {segment}, offset {offset}): {reason}; run `shoal fsck --repair`"
    )]
    Corrupt {
        cid: Cid,
        segment: u64,
        offset: u64,
        reason: String,
    },
    #[error("block {0} is not in the local store")]
    Missing(Cid),
    #[error("quota exceeded: need {needed} more bytes but only {available} can be freed (quota {quota} bytes, {protected} bytes pinned); raise `quota` in config.toml or unpin data")]
    QuotaExceeded {
        needed: u64,
        available: u64,
        quota: u64,
        protected: u64,
    },
    #[error("dataset {root} is incomplete: {missing} blocks missing (first: {first})")]
    Incomplete { root: Cid, missing: usize, first: Cid },
    #[error("no dataset named {0:?}")]
    UnknownName(String),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error(transparent)]
    Core(#[from] shoal_core::Error),
    #[error("store I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store index error: {0}")]
    Index(String),
    #[error("the store at {path} has format {found}, newer than this shoal reads ({supported}); run the shoal version that wrote it, or a newer one")]
    NewerFormat { path: String, found: u64, supported: u64 },
}

impl Error {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// True when the error means the disk (not the data) is at fault.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

macro_rules! index_err {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Index(e.to_string())
            }
        }
    )*};
}
index_err!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T, E = Error> = std::result::Result<T, E>;
