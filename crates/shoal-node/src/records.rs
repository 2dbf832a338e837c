//! Records the node keeps beside the store (version histories, published
//! names, follows, add records, kept query results): small files named by
//! the blake3 of their key, read and written whole and durably. A leaf:
//! every module may use it, it uses none.

use std::path::{Path, PathBuf};

/// The file of `key`'s record in `dir` (the key may hold any character).
pub(crate) fn path(dir: &Path, key: &str) -> PathBuf {
    dir.join(blake3::hash(key.as_bytes()).to_hex().as_str())
}

/// Replaces `path` with `data` as a whole and durably: written to a
/// temporary name beside it (its directory created if needed), synced,
/// renamed over it, and the directory synced, so a reader (or the node
/// after a crash) sees the old file or the new one, never an empty or
/// partial one, and a replacement that returned survives a power cut.
pub(crate) fn replace_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// A DAG-CBOR record: None when there is none, an error when it cannot be
/// read or decoded.
pub(crate) fn read_cbor<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(data) => serde_ipld_dagcbor::from_slice(&data)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a DAG-CBOR record with [`replace_file`].
pub(crate) fn write_cbor<T: serde::Serialize>(path: &Path, v: &T) -> std::io::Result<()> {
    let data = serde_ipld_dagcbor::to_vec(v).map_err(std::io::Error::other)?;
    replace_file(path, &data)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Nanoseconds since the Unix epoch, for unique scratch names.
pub(crate) fn unix_now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    /// Issue 24 finding 4: records were written and renamed without fsync,
    /// so a crash could leave an empty record. The replacement is whole:
    /// old or new content, no temporary left, the directory made if need be.
    #[test]
    fn replace_file_replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = super::path(&dir.path().join("records"), "a name/with any: characters");
        super::replace_file(&p, b"one").unwrap();
        super::replace_file(&p, b"two, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two, longer");
        // A temporary left by a crash before the rename is replaced, and the
        // record it would have replaced is intact meanwhile.
        std::fs::write(p.with_extension("tmp"), b"").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two, longer");
        super::replace_file(&p, b"three").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(names, vec![p.clone()]);
    }

    #[test]
    fn cbor_records_round_trip_and_absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = super::path(dir.path(), "k");
        assert_eq!(super::read_cbor::<Vec<u64>>(&p).unwrap(), None);
        super::write_cbor(&p, &vec![1u64, 2, 3]).unwrap();
        assert_eq!(super::read_cbor::<Vec<u64>>(&p).unwrap(), Some(vec![1, 2, 3]));
        std::fs::write(&p, b"\xff\xff").unwrap();
        assert!(super::read_cbor::<Vec<u64>>(&p).is_err());
    }
}
