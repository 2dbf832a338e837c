//! Versions of a name: every add under an existing name records the new
//! root with its parent, time and what changed; older versions stay
//! pinned (user) until the name's retention drops them. The history is a
//! DAG-CBOR list in `store/versions/<blake3 of the name>`, written
//! atomically after the store has pinned and named the new root (a crash
//! between the two loses the history entry, never a pin).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_core::manifest::{Content, Entry, Manifest};
use shoal_core::Cid;

use crate::error::{Error, Result};
use crate::records;

/// Versions a name keeps unless told otherwise.
pub const DEFAULT_KEEP: u32 = 10;

/// One version of a name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// 1 for the first add of the name, then 2, 3, ...
    pub number: u64,
    pub root: Cid,
    pub parent: Option<Cid>,
    /// Unix seconds.
    pub time: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    /// Bytes of blocks this version added to the store.
    pub new_bytes: u64,
}

impl Version {
    /// Version 1 of a name added before histories were kept: its root, the
    /// rest unknown (time 0).
    pub fn untracked(root: Cid) -> Version {
        Version {
            number: 1,
            root,
            parent: None,
            time: 0,
            added: 0,
            changed: 0,
            removed: 0,
            new_bytes: 0,
        }
    }
}

/// A name's history, oldest first, and how many versions it keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub keep: u32,
    pub versions: Vec<Version>,
}

pub(crate) fn load(dir: &Path, name: &str) -> Result<History> {
    match records::read_cbor(&records::path(dir, name)) {
        Ok(h) => Ok(h.unwrap_or_default()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Error::Corrupt(format!(
            "the version history of {name:?} is unreadable: {e}"
        ))),
        Err(e) => Err(Error::Internal(format!("reading the version history of {name:?}: {e}"))),
    }
}

pub(crate) fn save(dir: &Path, name: &str, h: &History) -> Result<()> {
    records::write_cbor(&records::path(dir, name), h)
        .map_err(|e| Error::Internal(format!("writing the version history of {name:?}: {e}")))
}

pub(crate) fn remove(dir: &Path, name: &str) {
    let _ = std::fs::remove_file(records::path(dir, name));
}

/// Keys added, changed and removed between two versions, with sizes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub added: Vec<(String, u64)>,
    /// (key, old size, new size).
    pub changed: Vec<(String, u64, u64)>,
    pub removed: Vec<(String, u64)>,
}

/// What identifies an entry's bytes: its size and a hash of its content
/// (block CIDs or inline bytes).
fn fingerprint(e: &Entry) -> (u64, [u8; 32]) {
    let mut h = blake3::Hasher::new();
    match &e.content {
        Content::Inline(d) => {
            h.update(b"i");
            h.update(d);
        }
        Content::Blocks(c) => {
            h.update(b"b");
            for cid in c {
                h.update(&cid.to_bytes());
            }
        }
    }
    (e.size, *h.finalize().as_bytes())
}

/// The keys of `b` not in `a` (added), in both with other bytes (changed),
/// in `a` only (removed). Holds one fingerprint per key of `a`.
pub(crate) fn diff<E: From<shoal_core::Error>>(
    a: &Manifest,
    b: &Manifest,
    fetch: &mut dyn FnMut(&Cid) -> std::result::Result<shoal_core::Block, E>,
) -> std::result::Result<Diff, E> {
    let mut old: HashMap<String, (u64, [u8; 32])> = HashMap::new();
    a.for_each_entry(fetch, &mut |e| {
        old.insert(e.key.clone(), fingerprint(e));
        Ok(())
    })?;
    let mut d = Diff::default();
    b.for_each_entry(fetch, &mut |e| {
        match old.remove(&e.key) {
            None => d.added.push((e.key.clone(), e.size)),
            Some(f) if f != fingerprint(e) => d.changed.push((e.key.clone(), f.0, e.size)),
            Some(_) => {}
        }
        Ok(())
    })?;
    d.removed = old.into_iter().map(|(k, (s, _))| (k, s)).collect();
    d.removed.sort();
    Ok(d)
}

/// `NAME@N`: the name and version number, if `target` has that form.
pub(crate) fn split_at(head: &str) -> Option<(&str, u64)> {
    let (name, n) = head.rsplit_once('@')?;
    Some((name, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_suffix() {
        assert_eq!(split_at("sst@3"), Some(("sst", 3)));
        assert_eq!(split_at("sst"), None);
        assert_eq!(split_at("sst@x"), None);
    }

    #[test]
    fn history_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "a").unwrap().versions.is_empty());
        let h = History {
            keep: 3,
            versions: vec![Version {
                time: 5,
                ..Version::untracked(Cid::default())
            }],
        };
        save(dir.path(), "a", &h).unwrap();
        assert_eq!(load(dir.path(), "a").unwrap().versions, h.versions);
        std::fs::write(crate::records::path(dir.path(), "a"), b"junk").unwrap();
        assert!(load(dir.path(), "a").is_err());
    }
}
