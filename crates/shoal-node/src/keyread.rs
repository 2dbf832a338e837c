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
        let (cut, cids) = match self.pieces(range) {
            Pieces::Inline(d) => return stream::iter([Ok(d)]).boxed(),
            Pieces::Blocks(cut, cids) => (Arc::new(cut), cids.to_vec()),
            Pieces::Empty => return stream::empty().boxed(),
        };
        let (root, source, ahead_of_reader) = (self.root, self.source.clone(), self.ahead);
        stream::iter(cut.blocks())
            .map(move |i| {
                let (source, cut) = (source.clone(), cut.clone());
                let cid = cut.cid(&cids, i);
                async move {
                    let cid = cid?;
                    let got = if ahead_of_reader {
                        source.get_ahead(cid, root).await
                    } else {
                        source.get(cid, root).await
                    };
                    cut.piece(i, cid, got.map_err(|e| cut.unavailable(e))?)
                }
            })
            .buffered(ahead.max(1))
            .boxed()
    }

    /// The whole key from the local store, every block verified and its
    /// length checked, read on the calling thread; `None` if a block is not
    /// held here or its copy is unusable (then [`stream`](Self::stream)
    /// fetches it, and reports a corrupt copy).
    pub fn read_local(&self) -> Option<Result<Vec<Bytes>>> {
        let (cut, cids) = match self.pieces(0..self.entry.size) {
            Pieces::Inline(d) => return Some(Ok(vec![d])),
            Pieces::Blocks(cut, cids) => (cut, cids),
            Pieces::Empty => return Some(Ok(Vec::new())),
        };
        let mut out = Vec::new();
        for i in cut.blocks() {
            let cid = match cut.cid(cids, i) {
                Ok(c) => c,
                Err(e) => return Some(Err(e)),
            };
            let block = self.source.get_local(&cid)?;
            match cut.piece(i, cid, block) {
                Ok(p) => out.push(p),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(out))
    }

    /// What reading `range` (clamped to the key's size) takes.
    fn pieces(&self, range: Range<u64>) -> Pieces<'_> {
        let size = self.entry.size;
        let end = range.end.min(size);
        let start = range.start.min(end);
        match &self.entry.content {
            Content::Inline(d) => Pieces::Inline(d.slice(start as usize..end as usize)),
            Content::Blocks(c) if start < end => Pieces::Blocks(
                Cut {
                    root: self.root,
                    key: self.entry.key.clone(),
                    size,
                    block_size: self.block_size,
                    start,
                    end,
                },
                c,
            ),
            Content::Blocks(_) => Pieces::Empty,
        }
    }
}

enum Pieces<'a> {
    Inline(Bytes),
    Blocks(Cut, &'a [Cid]),
    Empty,
}

/// The part `start..end` of a key stored in blocks: which blocks it
/// covers and the checked slice of each.
struct Cut {
    root: Cid,
    key: String,
    size: u64,
    block_size: u32,
    start: u64,
    end: u64,
}

impl Cut {
    fn blocks(&self) -> std::ops::RangeInclusive<u64> {
        let bs = u64::from(self.block_size);
        self.start / bs..=(self.end - 1) / bs
    }

    fn cid(&self, cids: &[Cid], i: u64) -> Result<Cid> {
        let (root, key) = (self.root, &self.key);
        cids.get(i as usize)
            .copied()
            .ok_or_else(|| Error::Corrupt(format!("{root}/{key}: block {i} is missing from the manifest")))
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Error {
        Error::Unavailable(format!("{}/{}: {e}", self.root, self.key))
    }

    /// Block `i`'s part of the cut, once its length is the manifest's.
    fn piece(&self, i: u64, cid: Cid, b: shoal_core::Block) -> Result<Bytes> {
        let bs = u64::from(self.block_size);
        let want = chunk::block_len(self.size, self.block_size, i);
        if b.len() as u64 != want {
            return Err(Error::Corrupt(format!(
                "{}/{}: block {cid} has {} bytes, the manifest says {want}",
                self.root,
                self.key,
                b.len()
            )));
        }
        let from = self.start.saturating_sub(i * bs) as usize;
        let to = (self.end - i * bs).min(want) as usize;
        Ok(b.into_data().slice(from..to))
    }
}
