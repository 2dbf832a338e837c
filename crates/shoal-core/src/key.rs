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

/// The chunk indices at the end of a chunk key, and where they start:
/// trailing decimal components separated by `/` or `.` (Zarr v3 `t/c/3/0/1`
/// and `t/c.3.0.1`, v2 `t/3.0.1` and `t/3/0/1`), with the separator before
/// each but the first. None for keys that do not end in one.
fn chunk_indices(key: &str) -> Option<(usize, Vec<u64>, Vec<char>)> {
    let mut idx: Vec<(usize, u64)> = Vec::new();
    let mut end = key.len();
    loop {
        let start = key[..end].rfind(['/', '.']).map_or(0, |i| i + 1);
        let digits = &key[start..end];
        if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            break;
        }
        idx.push((start, digits.parse().ok()?));
        if start == 0 {
            break;
        }
        end = start - 1;
    }
    idx.reverse();
    let first = idx.first()?.0;
    let seps = idx
        .iter()
        .skip(1)
        .map(|(s, _)| key[..*s].chars().last().unwrap_or('/'))
        .collect();
    Some((first, idx.into_iter().map(|(_, v)| v).collect(), seps))
}

/// The keys of the chunks a reader of chunk `key` is likely to read next,
/// nearest first (which exist is for the caller to find; the grid's extent
/// is not known here): one and two steps either way along the last
/// dimension, then for each earlier dimension (last first) the next chunk
/// in C order (that index plus one, the later ones 0) and one step either
/// way. zarr-python reads a selection in C
/// order, dask's reductions in reverse C order or in small blocks of
/// neighbours. Empty for keys that are not chunk keys.
pub fn chunk_neighbours(key: &str) -> Vec<String> {
    let Some((first, values, seps)) = chunk_indices(key) else {
        return Vec::new();
    };
    let spell = |vals: &[u64]| {
        let mut out = key[..first].to_string();
        for (k, v) in vals.iter().enumerate() {
            if k > 0 {
                out.push(seps[k - 1]);
            }
            out.push_str(&v.to_string());
        }
        out
    };
    let last = values.len() - 1;
    let moved = |d: usize, by: i64| -> Option<String> {
        let mut v = values.clone();
        v[d] = v[d].checked_add_signed(by)?;
        Some(spell(&v))
    };
    let mut out: Vec<String> = [1, -1, 2, -2].into_iter().filter_map(|by| moved(last, by)).collect();
    for d in (0..last).rev() {
        let mut carried = values.clone();
        carried[d] += 1;
        carried[d + 1..].iter_mut().for_each(|v| *v = 0);
        out.push(spell(&carried));
        out.extend([1, -1].into_iter().filter_map(|by| moved(d, by)));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|k| seen.insert(k.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_s_neighbours_come_nearest_first() {
        assert_eq!(
            chunk_neighbours("sst/c/3/0/1"),
            [
                "sst/c/3/0/2",
                "sst/c/3/0/0",
                "sst/c/3/0/3",
                "sst/c/3/1/0",
                "sst/c/3/1/1",
                "sst/c/4/0/0",
                "sst/c/4/0/1",
                "sst/c/2/0/1"
            ]
        );
        assert_eq!(
            chunk_neighbours("sst/3.9.0")[..4],
            ["sst/3.9.1", "sst/3.9.2", "sst/3.10.0", "sst/3.8.0"]
        );
        assert_eq!(chunk_neighbours("g/t/c.0.7")[..2], ["g/t/c.0.8", "g/t/c.0.6"]);
        assert_eq!(chunk_neighbours("time/0"), ["time/1", "time/2"]);
        assert_eq!(chunk_neighbours("0"), ["1", "2"]);
        assert!(chunk_neighbours("sst/.zarray").is_empty());
        assert!(chunk_neighbours("sst/zarr.json").is_empty());
        assert!(chunk_neighbours("sst/c/99999999999999999999").is_empty());
    }

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
