//! The node's one error type: each variant is a kind of failure, so every
//! face (the local API, the gateway, the CLI) maps it once to its own terms
//! (an HTTP status, an exit code). The message says what failed and what to
//! do about it.

/// What went wrong, by kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The dataset, key, name or peer does not exist (here, or anywhere
    /// the network could find it).
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong: a malformed CID, name, path or query.
    #[error("{0}")]
    BadRequest(String),
    /// Stored or received data failed verification.
    #[error("{0}")]
    Corrupt(String),
    /// The quota or the disk is full; nothing half-done was kept.
    #[error("{0}")]
    Full(String),
    /// Peers could not deliver in time (no provider reachable, deadline).
    #[error("{0}")]
    Unavailable(String),
    /// The request conflicts with existing state (an output that exists,
    /// a mount point in use).
    #[error("{0}")]
    Conflict(String),
    /// A bug or an unexpected I/O failure.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The same kind of error with `context` in front of its message.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        self.map(|m| format!("{context}: {m}"))
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::NotFound(m)
            | Error::BadRequest(m)
            | Error::Corrupt(m)
            | Error::Full(m)
            | Error::Unavailable(m)
            | Error::Conflict(m)
            | Error::Internal(m) => m,
        }
    }

    /// The same kind with the message rewritten.
    pub fn map(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            Error::NotFound(m) => Error::NotFound(f(m)),
            Error::BadRequest(m) => Error::BadRequest(f(m)),
            Error::Corrupt(m) => Error::Corrupt(f(m)),
            Error::Full(m) => Error::Full(f(m)),
            Error::Unavailable(m) => Error::Unavailable(f(m)),
            Error::Conflict(m) => Error::Conflict(f(m)),
            Error::Internal(m) => Error::Internal(f(m)),
        }
    }
}

/// The disk under the repo is full: say so and what to do.
fn disk_full(e: impl std::fmt::Display) -> Error {
    Error::Full(format!(
        "the disk holding the repo is full ({e}); nothing was pinned. Free space or set [store] quota below the disk size, then retry"
    ))
}

impl From<shoal_store::Error> for Error {
    fn from(e: shoal_store::Error) -> Self {
        use shoal_store::Error as E;
        if e.is_disk_full() {
            return disk_full(e);
        }
        let m = e.to_string();
        match e {
            E::Corrupt { .. } => Error::Corrupt(m),
            E::Missing(_) | E::UnknownName(_) | E::Incomplete { .. } => Error::NotFound(m),
            E::QuotaExceeded { .. } => Error::Full(m),
            E::InvalidName { .. } | E::Core(_) => Error::BadRequest(m),
            E::Locked { .. } => Error::Conflict(m),
            _ => Error::Internal(m),
        }
    }
}

impl From<shoal_zarr::Error> for Error {
    fn from(e: shoal_zarr::Error) -> Self {
        use shoal_zarr::Error as E;
        match e {
            E::Store(s) => s.into(),
            E::Key { key, source } => Error::from(*source).context(format!("cannot read key {key:?}")),
            E::Core(c) => c.into(),
            e => {
                let m = e.to_string();
                match e {
                    E::NoSuchKey(_) => Error::NotFound(m),
                    E::OutputExists(_) => Error::Conflict(m),
                    E::Write { .. } => Error::Internal(m),
                    E::BlockSize { .. } => Error::Corrupt(m),
                    E::Fetch(_) => Error::Unavailable(m),
                    _ => Error::BadRequest(m),
                }
            }
        }
    }
}

impl From<shoal_core::Error> for Error {
    fn from(e: shoal_core::Error) -> Self {
        use shoal_core::Error as E;
        let m = e.to_string();
        match e {
            E::HashMismatch { .. } | E::ManifestDecode { .. } | E::ManifestInvalid { .. } => Error::Corrupt(m),
            _ => Error::BadRequest(m),
        }
    }
}

impl From<shoal_net::Error> for Error {
    fn from(e: shoal_net::Error) -> Self {
        use shoal_net::Error as E;
        match e {
            E::Store(s) => s.into(),
            E::Core(c) => c.into(),
            e => {
                let m = e.to_string();
                match e {
                    E::NoProviders { .. } => Error::NotFound(m),
                    E::Unfetchable { .. } | E::Unavailable { .. } | E::Timeout { .. } | E::Request { .. } => {
                        Error::Unavailable(m)
                    }
                    E::Dial { .. } | E::Config(_) => Error::BadRequest(m),
                    E::OverBudget { .. } => Error::Full(m),
                    _ => Error::Internal(m),
                }
            }
        }
    }
}

impl From<shoal_query::Error> for Error {
    fn from(e: shoal_query::Error) -> Self {
        let m = e.to_string();
        match e {
            shoal_query::Error::Decode(_) => Error::Corrupt(m),
            shoal_query::Error::Read(_) => Error::Unavailable(m),
            shoal_query::Error::TooBig(_) => Error::BadRequest(m),
            _ => Error::BadRequest(m),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_cause() {
        let cid = shoal_core::cid::cid_of(shoal_core::cid::RAW, b"x");
        assert!(matches!(
            Error::from(shoal_store::Error::Missing(cid)),
            Error::NotFound(_)
        ));
        let full = shoal_store::Error::Io {
            path: "seg".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        let e = Error::from(full);
        assert!(
            matches!(&e, Error::Full(m) if m.contains("disk holding the repo is full")),
            "{e}"
        );
        let e = Error::from(shoal_zarr::Error::Key {
            key: "a/0".into(),
            source: Box::new(shoal_zarr::Error::Fetch("timed out".into())),
        });
        assert_eq!(e, Error::Unavailable("cannot read key \"a/0\": timed out".into()));
        assert!(matches!(
            Error::from(shoal_query::Error::Selection("x".into())),
            Error::BadRequest(_)
        ));
        assert_eq!(Error::NotFound("gone".into()).context("ls").message(), "ls: gone");
    }
}
