//! [`KeyReader`]: one key of a dataset read as a stream of verified pieces,
//! a bounded number of blocks ahead of the consumer. The HTTP gateway
//! serves keys through it: a shard of any size never sits in memory whole.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use shoal_core::manifest::{Content, Entry};
use shoal_core::{chunk, Cid};
use shoal_net::BlockSource;

use crate::error::{Error, Result};

/// An opened key: its manifest entry and where its blocks come from.
#[derive(Clone)]
pub struct KeyReader {
    pub(crate) root: Cid,
    pub(crate) entry: Arc<Entry>,
    pub(crate) block_size: u32,
    pub(crate) source: Arc<BlockSource>,
    /// Read ahead of its reader: local blocks are read and verified at a
    /// lower CPU priority ([`BlockSource::get_ahead`]).
    pub(crate) ahead: bool,
}

impl KeyReader {
    pub fn root(&self) -> Cid {
        self.root
    }

    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    pub fn size(&self) -> u64 {
        self.entry.size
    }

    /// This key read before anybody asked for it: its local blocks are read
    /// and verified on the low-priority read-ahead threads, giving way to
    /// work somebody waits for.
    pub fn ahead(mut self) -> KeyReader {
        self.ahead = true;
        self
    }

    /// The bytes of `range` (clamped to the key's size), one piece per
    /// block in order, with at most `ahead` blocks being fetched or waiting
    /// at once. Every block is verified against its CID (local copies too:
    /// a corrupt one is fetched again) and its length checked against the
    /// manifest; a block no peer delivers within the deadline ends the
    /// stream with [`Error::Unavailable`].
    pub fn stream(&self, range: Range<u64>, ahead: usize) -> BoxStream<'static, Result<Bytes>> {
        let size = self.entry.size;
        let end = range.end.min(size);
        let start = range.start.min(end);
        let cids = match &self.entry.content {
            Content::Inline(d) => return stream::iter([Ok(d.slice(start as usize..end as usize))]).boxed(),
            Content::Blocks(c) if start < end => c.clone(),
            Content::Blocks(_) => return stream::empty().boxed(),
        };
        let bs = u64::from(self.block_size);
        let (root, block_size, source, key) = (self.root, self.block_size, self.source.clone(), self.entry.key.clone());
        let ahead_of_reader = self.ahead;
        stream::iter(start / bs..=(end - 1) / bs)
            .map(move |i| {
                let (source, key) = (source.clone(), key.clone());
                let cid = cids.get(i as usize).copied();
                async move {
                    let cid = cid.ok_or_else(|| {
                        Error::Corrupt(format!("{root}/{key}: block {i} is missing from the manifest"))
                    })?;
                    let got = if ahead_of_reader {
                        source.get_ahead(cid, root).await
                    } else {
                        source.get(cid, root).await
                    };
                    let b = got.map_err(|e| Error::Unavailable(format!("{root}/{key}: {e}")))?;
                    let want = chunk::block_len(size, block_size, i);
                    if b.len() as u64 != want {
                        return Err(Error::Corrupt(format!(
                            "{root}/{key}: block {cid} has {} bytes, the manifest says {want}",
                            b.len()
                        )));
                    }
                    let from = start.saturating_sub(i * bs) as usize;
                    let to = (end - i * bs).min(want) as usize;
                    Ok(b.into_data().slice(from..to))
                }
            })
            .buffered(ahead.max(1))
            .boxed()
    }
}
