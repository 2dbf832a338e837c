//! Errors of the data model. Every variant says what was wrong with which
//! input, so callers can wrap it with the dataset or key it concerns.

use crate::Cid;

/// Errors from parsing CIDs, verifying blocks and decoding manifests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid CID {input:?}: {reason}")]
    InvalidCid { input: String, reason: String },
    #[error("CID {cid} uses multihash code {code:#x}; shoal only verifies blake3 (0x1e)")]
    UnsupportedHash { cid: Cid, code: u64 },
    #[error("CID {cid} uses codec {codec:#x}; expected {expected}")]
    UnexpectedCodec {
        cid: Cid,
        codec: u64,
        expected: &'static str,
    },
    #[error("block {cid} failed verification: its bytes hash to {actual}")]
    HashMismatch { cid: Cid, actual: Cid },
    #[error("block {cid} is {len} bytes, above the {max}-byte limit")]
    BlockTooLarge { cid: Cid, len: usize, max: usize },
    #[error("manifest block {cid} could not be decoded: {reason}")]
    ManifestDecode { cid: Cid, reason: String },
    #[error("manifest block {cid} is invalid: {reason}")]
    ManifestInvalid { cid: Cid, reason: String },
    #[error("manifest could not be encoded: {0}")]
    ManifestEncode(String),
    #[error("invalid Zarr key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
