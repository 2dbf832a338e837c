//! A zarrs storage adapter over a dataset manifest and a block fetcher.
//!
//! zarrs asks for keys and byte ranges; the adapter maps a range to the
//! blocks that cover it and fetches only those (a sharded array's index
//! read touches one block, not the whole shard). Blocks come from a
//! caller-supplied fetch function: the local store, or the network block
//! source, already verified.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use shoal_core::manifest::{Content, Entry};
use shoal_core::{chunk, Block, Cid};
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{MaybeBytes, MaybeBytesIterator, ReadableStorageTraits, StorageError, StoreKey};

/// Fetches a verified block.
pub type FetchFn = Arc<dyn Fn(&Cid) -> Result<Block, String> + Send + Sync>;

pub struct ManifestStorage {
    entries: HashMap<String, Entry>,
    block_size: u32,
    fetch: FetchFn,
}

impl ManifestStorage {
    pub fn new(entries: Vec<Entry>, block_size: u32, fetch: FetchFn) -> Self {
        Self {
            entries: entries.into_iter().map(|e| (e.key.clone(), e)).collect(),
            block_size,
            fetch,
        }
    }

    /// The bytes of `key` in `[start, end)`, fetching only covering blocks.
    pub fn read_range(&self, key: &str, start: u64, end: u64) -> Result<Option<Bytes>, String> {
        let Some(e) = self.entries.get(key) else {
            return Ok(None);
        };
        let end = end.min(e.size);
        if start >= end {
            return Ok(Some(Bytes::new()));
        }
        match &e.content {
            Content::Inline(d) => Ok(Some(d.slice(start as usize..end as usize))),
            Content::Blocks(cids) => {
                let bs = u64::from(self.block_size);
                let mut out = BytesMut::with_capacity((end - start) as usize);
                for bi in start / bs..=(end - 1) / bs {
                    let b = (self.fetch)(&cids[bi as usize]).map_err(|err| format!("{key}: {err}"))?;
                    let want = chunk::block_len(e.size, self.block_size, bi);
                    if b.len() as u64 != want {
                        return Err(format!(
                            "{key}: block {} has {} bytes, manifest says {want}",
                            b.cid(),
                            b.len()
                        ));
                    }
                    let bstart = bi * bs;
                    let s = start.saturating_sub(bstart) as usize;
                    let t = (end - bstart).min(b.len() as u64) as usize;
                    out.extend_from_slice(&b.data()[s..t]);
                }
                Ok(Some(out.freeze()))
            }
        }
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }
}

impl ReadableStorageTraits for ManifestStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let Some(size) = self.entries.get(key.as_str()).map(|e| e.size) else {
            return Ok(None);
        };
        let key = key.as_str().to_string();
        let out: Vec<Result<Bytes, StorageError>> = byte_ranges
            .map(|r: ByteRange| {
                self.read_range(&key, r.start(size), r.end(size))
                    .map(|b| b.unwrap_or_default())
                    .map_err(StorageError::Other)
            })
            .collect();
        Ok(Some(Box::new(out.into_iter())))
    }

    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, StorageError> {
        let size = match self.entries.get(key.as_str()) {
            Some(e) => e.size,
            None => return Ok(None),
        };
        self.read_range(key.as_str(), 0, size).map_err(StorageError::Other)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        Ok(self.entries.get(key.as_str()).map(|e| e.size))
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}
