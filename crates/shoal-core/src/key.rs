//! Zarr keys as shoal stores them.
//!
//! A key is a `/`-separated relative path (`temp/c/0/1`, `temp/.zarray`).
//! Keys come from manifests, which come from peers, and are later used as
//! file names by `shoal get` and the mount, so they are validated strictly:
//! no empty, `.` or `..` components, no leading `/`, no NUL or backslash.

use crate::error::{Error, Result};

/// Longest key accepted (bytes). Zarr keys are short; this bounds memory per
/// entry when decoding a manifest from an untrusted peer.
pub const MAX_KEY_LEN: usize = 1024;

/// The metadata documents that are stored inline in the manifest root.
pub const METADATA_NAMES: &[&str] = &["zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"];

pub fn validate(key: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidKey {
            key: key.chars().take(200).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("longer than 1024 bytes");
    }
    if key.contains('\0') || key.contains('\\') {
        return bad("contains NUL or backslash");
    }
    for part in key.split('/') {
        match part {
            "" => return bad("empty path component or leading/trailing '/'"),
            "." | ".." => return bad("'.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// The last component of a key.
pub fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// True for Zarr metadata documents (kept inline in the manifest).
pub fn is_metadata(key: &str) -> bool {
    METADATA_NAMES.contains(&file_name(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escaping_keys() {
        for k in ["", "/etc", "a//b", "a/../b", "..", "./a", "a/", "a\0b", "a\\b"] {
            assert!(validate(k).is_err(), "{k:?}");
        }
        for k in ["zarr.json", "temp/c/0/1", "temp/0.1.2", ".zgroup", "a/.zattrs"] {
            validate(k).unwrap();
        }
        assert!(is_metadata("a/b/.zarray"));
        assert!(!is_metadata("a/b/0.0"));
    }
}
