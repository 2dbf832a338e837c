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
use shoal_core::manifest::{Content, Entry, Manifest, PageCache};
use shoal_core::{chunk, Block, Cid};
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{MaybeBytes, MaybeBytesIterator, ReadableStorageTraits, StorageError, StoreKey};

/// Fetches a verified block.
pub type FetchFn = Arc<dyn Fn(&Cid) -> Result<Block, String> + Send + Sync>;

pub struct ManifestStorage {
    keys: Keys,
    block_size: u32,
    fetch: FetchFn,
    guard: Option<DecodeGuard>,
}

/// The outermost codec of an array's stored chunks, when its header says
/// how large the decoded bytes will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Blosc,
    /// No size in its header: the chunk is inflated into a sink, at most
    /// one byte past the limit, before zarrs decodes it (gzip chunks are
    /// inflated twice; zarr-python writes zstd or blosc by default).
    Gzip,
    /// zlib (numcodecs `Zlib`): inflated into a sink like gzip.
    Zlib,
}

/// What a chunk of one array may decode to. zarrs sizes its decode buffer
/// from the frame header (zstd's declared content size, blosc's `nbytes`)
/// or grows it while streaming; a hostile chunk could declare gigabytes in
/// a few bytes. The storage checks the header of every chunk read under
/// `prefix` before zarrs sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeGuard {
    /// The array's key prefix (`sst/`).
    pub prefix: String,
    pub codec: Codec,
    /// Decoded bytes of one stored chunk (inner chunk when sharded).
    pub max_decoded: u64,
}

/// zstd's frame magic number, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Most a zstd block decodes to: an honest frame without a declared size
/// may exceed its content by up to this much in its bound.
const ZSTD_BLOCK_MAX: u64 = 128 << 10;

impl DecodeGuard {
    /// Checks the header of bytes read from `key`; `Err` names the key and
    /// the sizes. Metadata documents and bytes that are not a frame of the
    /// codec (a shard index) pass: zarrs rejects malformed frames itself.
    pub fn check(&self, key: &str, data: &[u8]) -> Result<(), String> {
        let Some(rest) = key.strip_prefix(&self.prefix) else {
            return Ok(());
        };
        let name = rest.rsplit('/').next().unwrap_or(rest);
        if shoal_core::key::METADATA_NAMES.contains(&name) {
            return Ok(());
        }
        match self.codec {
            Codec::Zstd => self.check_zstd(key, data),
            Codec::Blosc if data.len() >= 16 && matches!(data[0], 1..=4) => {
                let le = |i: usize| u64::from(u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes")));
                // A blosc frame's header carries its own length (cbytes);
                // anything else is not a frame (a shard index).
                if le(12) == data.len() as u64 && le(4) > self.max_decoded {
                    return Err(self.refuse(key, le(4), self.max_decoded));
                }
                Ok(())
            }
            Codec::Blosc => Ok(()),
            Codec::Gzip if data.starts_with(&[0x1f, 0x8b]) => {
                self.check_inflated(key, flate2::read::GzDecoder::new(data))
            }
            Codec::Gzip => Ok(()),
            // A zlib stream starts with CMF 0x78 (deflate, 32 KiB window).
            Codec::Zlib if data.first() == Some(&0x78) => {
                self.check_inflated(key, flate2::read::ZlibDecoder::new(data))
            }
            Codec::Zlib => Ok(()),
        }
    }

    /// Inflates a stream into a sink, at most one byte past the limit.
    fn check_inflated(&self, key: &str, stream: impl std::io::Read) -> Result<(), String> {
        let mut inflated = std::io::Read::take(stream, self.max_decoded + 1);
        let n = std::io::copy(&mut inflated, &mut std::io::sink())
            .map_err(|e| format!("chunk {key}: invalid {:?} stream: {e}", self.codec))?;
        if n > self.max_decoded {
            return Err(format!(
                "chunk {key} inflates to more than the {} bytes the array metadata allows per chunk; refusing to decode it (corrupt or hostile data)",
                self.max_decoded
            ));
        }
        Ok(())
    }

    /// Walks the zstd frames at the start of `data` (one per chunk; a whole
    /// shard is several, then its index): each frame's bound (its declared
    /// content size, or its blocks' maximum) must fit one chunk, and all of
    /// them together the key's share.
    fn check_zstd(&self, key: &str, data: &[u8]) -> Result<(), String> {
        use zstd::zstd_safe;
        let (mut at, mut total, mut frames) = (0usize, 0u64, 0u64);
        while data[at..].starts_with(&ZSTD_MAGIC) {
            let Ok(len) = zstd_safe::find_frame_compressed_size(&data[at..]) else {
                return Err(format!("chunk {key}: invalid zstd frame at byte {at}"));
            };
            let frame = &data[at..at + len];
            let bound = zstd_safe::decompress_bound(frame)
                .map_err(|_| format!("chunk {key}: invalid zstd frame at byte {at}"))?;
            if bound > self.max_decoded + ZSTD_BLOCK_MAX {
                return Err(self.refuse(key, bound, self.max_decoded));
            }
            total = total.saturating_add(bound);
            frames += 1;
            at += len;
        }
        // Several frames: a shard's chunks, at most one chunk each, and no
        // more chunks than the bytes could hold frames.
        if frames > 1 && total > frames.saturating_mul(self.max_decoded + ZSTD_BLOCK_MAX) {
            return Err(self.refuse(key, total, frames * self.max_decoded));
        }
        Ok(())
    }

    fn refuse(&self, key: &str, declared: u64, allowed: u64) -> String {
        format!(
            "chunk {key} declares {declared} decoded bytes but the array metadata allows {allowed}; refusing to decode it (corrupt or hostile data)"
        )
    }
}

/// A stored chunk that is its values in C order and little-endian byte
/// order, as is (`Raw`) or as one zstd frame (`Zstd`): what zarr-python
/// and xarray write with the zstd codec or none. The engine decodes such a
/// chunk itself ([`ManifestStorage::decode_into`]): the blocks stream
/// through one zstd context straight into a buffer the worker keeps, with
/// no copy of the blocks into one piece, no zeroed allocation and no copy
/// of the decoded bytes into an array, which zarrs makes (profile of a mean
/// over time: 17% of the engine's samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    Raw,
    Zstd,
}

/// A worker's zstd context for [`ManifestStorage::decode_into`]: decodes
/// into the caller's buffer in place (`stableOutBuffer`), so it holds no
/// window of its own whatever a frame declares.
pub struct ChunkDecoder(zstd::zstd_safe::DCtx<'static>);

impl ChunkDecoder {
    pub fn new() -> ChunkDecoder {
        let mut d = zstd::zstd_safe::DCtx::create();
        d.set_parameter(zstd::zstd_safe::DParameter::StableOutBuffer(true))
            .expect("zstd accepts stableOutBuffer");
        ChunkDecoder(d)
    }
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the pieces of one chunk go: `out[..pos]` is written.
struct Sink<'a> {
    key: &'a str,
    plain: Plain,
    out: &'a mut [u8],
    pos: usize,
    dctx: &'a mut zstd::zstd_safe::DCtx<'static>,
    /// The last zstd frame ended (nothing of it is still to come).
    ended: bool,
}

impl Sink<'_> {
    fn past(&self) -> String {
        format!(
            "chunk {} decodes to more than the {} bytes the array metadata allows per chunk; refusing it (corrupt or hostile data)",
            self.key,
            self.out.len()
        )
    }

    /// The first block: the frame's declared content size, when it has
    /// one, must be the chunk's (a refusal before anything is decoded,
    /// worded as the guard's).
    fn header(&self, data: &[u8]) -> Result<(), String> {
        if self.plain != Plain::Zstd {
            return Ok(());
        }
        match zstd::zstd_safe::get_frame_content_size(data) {
            Ok(Some(n)) if n != self.out.len() as u64 => Err(format!(
                "chunk {} declares {n} decoded bytes but the array metadata allows {}; refusing to decode it (corrupt or hostile data)",
                self.key,
                self.out.len()
            )),
            // No size declared, or a header cut by the block's end: the
            // decode into `out` is bounded anyway.
            _ => Ok(()),
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        if self.plain == Plain::Raw {
            let end = self.pos + data.len();
            if end > self.out.len() {
                return Err(self.past());
            }
            self.out[self.pos..end].copy_from_slice(data);
            self.pos = end;
            return Ok(());
        }
        let mut input = zstd::zstd_safe::InBuffer::around(data);
        while input.pos() < data.len() {
            let before = (input.pos(), self.pos);
            let mut output = zstd::zstd_safe::OutBuffer::around_pos(&mut *self.out, self.pos);
            let hint = match self.dctx.decompress_stream(&mut output, &mut input) {
                Ok(h) => h,
                // zstd's word for a block that would not fit in `out`.
                Err(c) if zstd::zstd_safe::get_error_name(c) == "Destination buffer is too small" => {
                    return Err(self.past())
                }
                Err(c) => {
                    let why = zstd::zstd_safe::get_error_name(c);
                    return Err(format!("chunk {}: invalid zstd data: {why}", self.key));
                }
            };
            self.pos = output.pos();
            self.ended = hint == 0;
            if (input.pos(), self.pos) == before {
                // No progress: the frame wants more room than the chunk.
                return Err(self.past());
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        if !self.ended {
            return Err(format!("chunk {}: the zstd frame is cut short", self.key));
        }
        if self.pos != self.out.len() {
            return Err(format!(
                "chunk {} decodes to {} bytes; the array metadata says a chunk is {}",
                self.key,
                self.pos,
                self.out.len()
            ));
        }
        Ok(())
    }
}

/// Where a storage finds its keys.
enum Keys {
    /// Given up front (small sets: metadata, a coordinate's chunks).
    Map(HashMap<String, Entry>),
    /// Looked up in the manifest when asked, through the pages on the
    /// key's path (fetched like blocks), the last few decoded pages kept:
    /// a query of a million chunks never holds a million entries.
    Manifest { manifest: Box<Manifest>, pages: PageCache },
}

/// A key lookup's failure, as the storage reports it.
struct LookupError(String);

impl From<shoal_core::Error> for LookupError {
    fn from(e: shoal_core::Error) -> Self {
        LookupError(e.to_string())
    }
}

/// Decoded manifest pages a storage keeps (chunks are read roughly in key
/// order, so neighbouring chunks share pages).
const PAGES_KEPT: usize = 32;

impl ManifestStorage {
    pub fn new(entries: Vec<Entry>, block_size: u32, fetch: FetchFn) -> Self {
        Self {
            keys: Keys::Map(entries.into_iter().map(|e| (e.key.clone(), e)).collect()),
            block_size,
            fetch,
            guard: None,
        }
    }

    /// Every key of `manifest`, looked up in its pages when asked.
    pub fn lazy(manifest: Manifest, fetch: FetchFn) -> Self {
        Self {
            block_size: manifest.block_size,
            keys: Keys::Manifest {
                manifest: Box::new(manifest),
                pages: PageCache::new(PAGES_KEPT),
            },
            fetch,
            guard: None,
        }
    }

    /// The entry of `key`, if the dataset has it.
    pub fn lookup(&self, key: &str) -> Result<Option<Entry>, String> {
        let (manifest, pages) = match &self.keys {
            Keys::Map(m) => return Ok(m.get(key).cloned()),
            Keys::Manifest { manifest, pages } => (manifest, pages),
        };
        manifest
            .lookup_cached::<LookupError>(key, pages, &mut |c| {
                (self.fetch)(c).map_err(|e| LookupError(format!("manifest page {c}: {e}")))
            })
            .map_err(|e| e.0)
    }

    /// Checks every chunk read against `guard` from now on.
    pub fn with_guard(mut self, guard: Option<DecodeGuard>) -> Self {
        self.guard = guard;
        self
    }

    /// The bytes of `key` in `[start, end)`, fetching only covering blocks.
    pub fn read_range(&self, key: &str, start: u64, end: u64) -> Result<Option<Bytes>, String> {
        let Some(e) = self.lookup(key)? else {
            return Ok(None);
        };
        self.read_entry(&e, start, end).map(Some)
    }

    /// The bytes of entry `e` in `[start, end)`.
    fn read_entry(&self, e: &Entry, start: u64, end: u64) -> Result<Bytes, String> {
        let key = &e.key;
        let end = end.min(e.size);
        if start >= end {
            return Ok(Bytes::new());
        }
        match &e.content {
            Content::Inline(d) => Ok(d.slice(start as usize..end as usize)),
            Content::Blocks(cids) => {
                let bs = u64::from(self.block_size);
                let mut out = BytesMut::with_capacity((end - start) as usize);
                for bi in start / bs..=(end - 1) / bs {
                    let b = self.block(e, &cids[bi as usize], bi)?;
                    let bstart = bi * bs;
                    let s = start.saturating_sub(bstart) as usize;
                    let t = (end - bstart).min(b.len() as u64) as usize;
                    out.extend_from_slice(&b.data()[s..t]);
                }
                if let Some(g) = &self.guard {
                    g.check(key, &out)?;
                }
                Ok(out.freeze())
            }
        }
    }

    /// Block `bi` (`cid`) of entry `e`, fetched (verified) and its length
    /// checked against the manifest.
    fn block(&self, e: &Entry, cid: &Cid, bi: u64) -> Result<Block, String> {
        let b = (self.fetch)(cid).map_err(|err| format!("{}: {err}", e.key))?;
        let want = chunk::block_len(e.size, self.block_size, bi);
        if b.len() as u64 != want {
            return Err(format!(
                "{}: block {} has {} bytes, manifest says {want}",
                e.key,
                b.cid(),
                b.len()
            ));
        }
        Ok(b)
    }

    /// Decodes chunk `key`, stored as `plain`, into `out`, which must come
    /// out exactly full (the chunk's decoded size): `Ok(false)` when the
    /// dataset has no such key (zarrs then gives the fill value). Blocks
    /// are verified as always and fed to the decoder one by one; a frame
    /// that would decode past `out` stops there, so a hostile chunk costs
    /// no memory beyond the buffer. A chunk in one piece is checked by the
    /// storage's guard first, as zarrs' reads are, for the same messages.
    pub fn decode_into(
        &self,
        key: &str,
        plain: Plain,
        out: &mut [u8],
        decoder: &mut ChunkDecoder,
    ) -> Result<bool, String> {
        let Some(e) = self.lookup(key)? else {
            return Ok(false);
        };
        let dctx = &mut decoder.0;
        dctx.reset(zstd::zstd_safe::ResetDirective::SessionOnly)
            .map_err(|_| "zstd context reset failed".to_string())?;
        let mut sink = Sink {
            key,
            plain,
            out,
            pos: 0,
            dctx,
            ended: plain == Plain::Raw,
        };
        let guard = |data: &[u8]| self.guard.as_ref().map_or(Ok(()), |g| g.check(key, data));
        match &e.content {
            Content::Inline(d) => {
                guard(d)?;
                sink.header(d)?;
                sink.feed(d)?;
            }
            Content::Blocks(cids) => {
                for (bi, cid) in cids.iter().enumerate() {
                    let b = self.block(&e, cid, bi as u64)?;
                    if bi == 0 {
                        if cids.len() == 1 {
                            guard(b.data())?;
                        }
                        sink.header(b.data())?;
                    }
                    sink.feed(b.data())?;
                }
            }
        }
        sink.finish().map(|()| true)
    }

    /// The entry of `key` (`None` too when its manifest page cannot be
    /// read: then reading the key fails with the reason).
    pub fn entry(&self, key: &str) -> Option<Entry> {
        self.lookup(key).ok().flatten()
    }
}

impl ReadableStorageTraits for ManifestStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let Some(e) = self.lookup(key.as_str()).map_err(StorageError::Other)? else {
            return Ok(None);
        };
        let out: Vec<Result<Bytes, StorageError>> = byte_ranges
            .map(|r: ByteRange| {
                self.read_entry(&e, r.start(e.size), r.end(e.size))
                    .map_err(StorageError::Other)
            })
            .collect();
        Ok(Some(Box::new(out.into_iter())))
    }

    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, StorageError> {
        match self.lookup(key.as_str()).map_err(StorageError::Other)? {
            Some(e) => self.read_entry(&e, 0, e.size).map(Some).map_err(StorageError::Other),
            None => Ok(None),
        }
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        Ok(self.lookup(key.as_str()).map_err(StorageError::Other)?.map(|e| e.size))
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd_of_zeros(n: u64, declare: bool) -> Vec<u8> {
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        if declare {
            enc.set_pledged_src_size(Some(n)).unwrap();
            enc.include_contentsize(true).unwrap();
        } else {
            enc.include_contentsize(false).unwrap();
        }
        let zeros = vec![0u8; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            std::io::Write::write_all(&mut enc, &zeros[..k]).unwrap();
            left -= k as u64;
        }
        enc.finish().unwrap()
    }

    #[test]
    fn zstd_frames_that_decode_past_the_chunk_are_refused_before_decoding() {
        let guard = DecodeGuard {
            prefix: "x/".into(),
            codec: Codec::Zstd,
            max_decoded: 80_000,
        };
        // Honest chunks, with and without a declared size.
        for declare in [true, false] {
            guard.check("x/0.0", &zstd_of_zeros(80_000, declare)).unwrap();
        }
        // 64 MiB of zeros in a few KiB, declared or streamed.
        for declare in [true, false] {
            let bomb = zstd_of_zeros(64 << 20, declare);
            assert!(bomb.len() < 64 << 10, "{}", bomb.len());
            let e = guard.check("x/0.0", &bomb).unwrap_err();
            assert!(e.contains("chunk x/0.0 declares") && e.contains("80000"), "{e}");
        }
        // A shard: several honest frames, then an index (not a frame).
        let mut shard = zstd_of_zeros(80_000, true);
        shard.extend(zstd_of_zeros(80_000, true));
        shard.extend([0u8; 32]);
        guard.check("x/c/0/0", &shard).unwrap();
        // Metadata and other arrays are not chunks of this array.
        guard.check("x/.zarray", &zstd_of_zeros(1 << 20, true)).unwrap();
        guard.check("y/0.0", &zstd_of_zeros(1 << 20, true)).unwrap();
    }

    #[test]
    fn a_blosc_header_that_claims_more_than_the_chunk_is_refused() {
        let guard = DecodeGuard {
            prefix: "x/".into(),
            codec: Codec::Blosc,
            max_decoded: 1000,
        };
        let header = |nbytes: u32, cbytes: u32| {
            let mut h = vec![2u8, 1, 0, 4];
            h.extend(nbytes.to_le_bytes());
            h.extend(256u32.to_le_bytes());
            h.extend(cbytes.to_le_bytes());
            h.resize(cbytes as usize, 0);
            h
        };
        guard.check("x/0", &header(1000, 64)).unwrap();
        let e = guard.check("x/0", &header(2_000_000_000, 64)).unwrap_err();
        assert!(e.contains("2000000000"), "{e}");
        // Not a blosc frame (its length is not its cbytes): zarrs decides.
        let mut other = header(2_000_000_000, 64);
        other.push(0);
        guard.check("x/0", &other).unwrap();
    }

    #[test]
    fn a_gzip_stream_that_inflates_past_the_chunk_is_refused() {
        let guard = DecodeGuard {
            prefix: "x/".into(),
            codec: Codec::Gzip,
            max_decoded: 1000,
        };
        let gz = |n: usize| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &vec![0u8; n]).unwrap();
            e.finish().unwrap()
        };
        guard.check("x/0", &gz(1000)).unwrap();
        let e = guard.check("x/0", &gz(50 << 20)).unwrap_err();
        assert!(e.contains("chunk x/0 inflates to more than the 1000 bytes"), "{e}");
    }

    /// A storage holding `key` as `data` cut into blocks of `bs` bytes.
    fn in_blocks(key: &str, data: &[u8], bs: u32) -> ManifestStorage {
        let blocks: Vec<Block> = data.chunks(bs as usize).map(|c| Block::raw(c.to_vec())).collect();
        let entry = Entry {
            key: key.into(),
            size: data.len() as u64,
            content: Content::Blocks(blocks.iter().map(|b| *b.cid()).collect()),
        };
        let held: HashMap<Cid, Block> = blocks.into_iter().map(|b| (*b.cid(), b)).collect();
        let fetch: FetchFn = Arc::new(move |c| held.get(c).cloned().ok_or_else(|| format!("no block {c}")));
        ManifestStorage::new(vec![entry], bs, fetch)
    }

    fn values(n: usize) -> Vec<u8> {
        (0..n as u32).flat_map(|i| ((i % 1000) as f32).to_le_bytes()).collect()
    }

    #[test]
    fn a_chunk_decodes_in_place_from_many_blocks_and_raw() {
        let want = values(100_000);
        let frame = zstd::bulk::compress(&want, 3).unwrap();
        let mut d = ChunkDecoder::new();
        // Blocks that cut the frame anywhere (inside its header too), and
        // the raw bytes in blocks.
        for (plain, stored) in [(Plain::Zstd, &frame), (Plain::Raw, &want)] {
            for bs in [7u32, 1000, 65_536, 1 << 20] {
                let st = in_blocks("x/0", stored, bs);
                let mut out = vec![0u8; want.len()];
                assert!(
                    st.decode_into("x/0", plain, &mut out, &mut d).unwrap(),
                    "{plain:?} {bs}"
                );
                assert!(out == want, "{plain:?} in blocks of {bs}");
            }
        }
        // A key the dataset lacks: not found, nothing written.
        let mut out = vec![0u8; 8];
        assert!(!in_blocks("x/0", &frame, 1000)
            .decode_into("x/1", Plain::Zstd, &mut out, &mut d)
            .unwrap());
    }

    #[test]
    fn a_chunk_that_does_not_decode_to_exactly_its_size_is_refused_and_the_decoder_recovers() {
        let mut d = ChunkDecoder::new();
        let want = values(20_000);
        let decode = |d: &mut ChunkDecoder, stored: &[u8], plain: Plain, n: usize| {
            let mut out = vec![0u8; n];
            in_blocks("x/0", stored, 4096).decode_into("x/0", plain, &mut out, d)
        };
        let frame = zstd::bulk::compress(&want, 3).unwrap();
        // 64 MiB of zeros streamed (no size declared) into an 80,000-byte
        // chunk: stops at the chunk, whatever it would inflate to.
        let bomb = zstd_of_zeros(64 << 20, false);
        let e = decode(&mut d, &bomb, Plain::Zstd, 80_000).unwrap_err();
        assert!(e.contains("chunk x/0 decodes to more than the 80000 bytes"), "{e}");
        // Declared past the chunk, in a first block that is not the frame.
        let mut declared = zstd_of_zeros(64 << 20, true);
        declared.extend(vec![0u8; 8192]);
        let e = decode(&mut d, &declared, Plain::Zstd, 80_000).unwrap_err();
        assert!(
            e.contains("chunk x/0 declares 67108864 decoded bytes") && e.contains("80000"),
            "{e}"
        );
        // Short: the frame is smaller than the chunk, or cut off.
        let e = decode(&mut d, &frame, Plain::Zstd, want.len() + 4).unwrap_err();
        assert!(e.contains("declares 80000 decoded bytes"), "{e}");
        let e = decode(&mut d, &frame[..frame.len() - 10], Plain::Zstd, want.len()).unwrap_err();
        assert!(e.contains("cut short") || e.contains("invalid zstd data"), "{e}");
        let e = decode(&mut d, &want, Plain::Raw, want.len() + 4).unwrap_err();
        assert!(
            e.contains("decodes to 80000 bytes; the array metadata says a chunk is 80004"),
            "{e}"
        );
        let e = decode(&mut d, &want, Plain::Raw, want.len() - 4).unwrap_err();
        assert!(e.contains("decodes to more than"), "{e}");
        // Garbage, then an honest chunk on the same decoder.
        let e = decode(
            &mut d,
            &[0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff],
            Plain::Zstd,
            100,
        )
        .unwrap_err();
        assert!(e.contains("chunk x/0"), "{e}");
        let mut out = vec![0u8; want.len()];
        assert!(in_blocks("x/0", &frame, 4096)
            .decode_into("x/0", Plain::Zstd, &mut out, &mut d)
            .unwrap());
        assert!(out == want);
    }
}
