//! Ingest of a local Zarr directory.
//!
//! 1. Scan: walk the tree (symlinks may point only inside it), collect every
//!    file as a key, read and validate every metadata document. Any problem
//!    stops the add here, before anything is written.
//! 2. Hash: worker threads read files in block-sized pieces and hash them;
//!    a bounded channel (at most [`IN_FLIGHT_BLOCKS`] blocks) feeds the
//!    writer, so memory stays bounded whatever the file sizes.
//! 3. Write: the caller's thread stores blocks in batches of about
//!    [`BATCH_BYTES`] (one fsync + one index commit per batch), protected by
//!    a store session until the caller pins the root.
//! 4. Build the manifest and store its blocks.
//!
//! Incremental: with a [`Prior`] (what an earlier add of the same name
//! recorded), a file whose size, modification time, inode and device are
//! unchanged keeps its block CIDs without being read, as long as those
//! blocks are still in the store. A file rewritten in place with the same
//! size and the same mtime is the documented limit (as for rsync and git):
//! `--rehash` reads everything, and fsck verifies every stored block.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use bytes::Bytes;
use shoal_core::manifest::{Content, Entry, ManifestBuilder};
use shoal_core::Progress;
use shoal_core::{chunk, key, Block, Cid};
use shoal_store::{PutStats, Session, Store};

use crate::error::{Error, Result};

/// Blocks buffered between the hashing workers and the writer. With 1 MiB
/// blocks this caps ingest memory at ~64 MiB plus one batch.
const IN_FLIGHT_BLOCKS: usize = 64;
/// Bytes per store batch: large enough that one fsync is amortised over
/// many blocks, small enough that a crash loses little work.
const BATCH_BYTES: usize = 64 << 20;
/// ... or this many blocks (tiny chunks: one index transaction holds every
/// dirty page of its batch in memory).
const BATCH_BLOCKS: usize = 1 << 16;
/// Metadata documents larger than this are not parsed as JSON (a 64 MiB
/// `.zmetadata` is pathological; it is still stored byte for byte).
const MAX_JSON_VALIDATE: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub block_size: u32,
    /// Hashing threads; 0 = available parallelism.
    pub threads: usize,
    /// What an earlier add recorded: unchanged files are not read again.
    pub prior: Option<std::sync::Arc<Prior>>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            block_size: shoal_core::DEFAULT_BLOCK_SIZE,
            threads: 0,
            prior: None,
        }
    }
}

/// What identifies a file's content without reading it (as rsync's quick
/// check does, plus the inode and device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl ScannedFile {
    fn path(&self, root: &Path) -> PathBuf {
        self.real.clone().unwrap_or_else(|| root.join(&self.key))
    }
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// An add's record of every chunk file: its stamp and block digests (raw
/// blake3 blocks), with the block size they were cut at. Kept by the
/// caller between adds. Columns, in key order: a million files cost their
/// keys, stamps and 32 bytes per block, not a map of CID vectors.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Prior {
    pub block_size: u32,
    keys: Vec<String>,
    stamps: Vec<Stamp>,
    /// File i's digests are `digests[32 * first[i]..32 * first[i + 1]]`.
    first: Vec<u64>,
    #[serde(with = "serde_bytes")]
    digests: Vec<u8>,
}

impl Prior {
    fn new(block_size: u32) -> Self {
        Self {
            block_size,
            first: vec![0],
            ..Default::default()
        }
    }

    /// Chunk files recorded.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Appends a file (keys in increasing order).
    fn push(&mut self, key: String, stamp: Stamp, digests: &[[u8; 32]]) {
        self.keys.push(key);
        self.stamps.push(stamp);
        digests.iter().for_each(|d| self.digests.extend_from_slice(d));
        self.first.push((self.digests.len() / 32) as u64);
    }

    /// The stamp and block digests recorded for `key`; `None` also for a
    /// record whose columns do not add up (a damaged file).
    fn find(&self, key: &str) -> Option<(Stamp, impl Iterator<Item = [u8; 32]> + '_)> {
        let i = self.keys.binary_search_by(|k| k.as_str().cmp(key)).ok()?;
        let (s, e) = (*self.first.get(i)? as usize, *self.first.get(i + 1)? as usize);
        let bytes = self.digests.get(32 * s..32 * e)?;
        let stamp = *self.stamps.get(i)?;
        Some((stamp, bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes"))))
    }
}

#[derive(Debug, Clone)]
pub struct IngestReport {
    pub root: Cid,
    pub zarr_format: u8,
    pub keys: u64,
    pub bytes: u64,
    pub stats: PutStats,
    /// Files (and their bytes) whose blocks came from the prior record
    /// without being read.
    pub reused_files: u64,
    pub reused_bytes: u64,
    /// This add's record, for the next one.
    pub record: Prior,
}

struct ScannedFile {
    key: String,
    /// Where a symlinked file really is (else `root/key`: not stored, a
    /// million paths are a lot of memory).
    real: Option<PathBuf>,
    size: u64,
    stamp: Stamp,
    /// Metadata documents are read during the scan and kept inline.
    inline: Option<Bytes>,
}

/// Ingests the Zarr hierarchy at `dir`. Blocks written are protected by
/// `session` until the caller pins the returned root.
pub fn ingest(
    store: &Store,
    dir: &Path,
    opts: &IngestOptions,
    session: &Session,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<IngestReport> {
    let (root, zarr_format, files) = scan(dir)?;
    let format = zarr_format.ok_or_else(|| Error::NotZarr {
        path: dir.to_path_buf(),
        reason: "no zarr.json (v3) or .zgroup/.zarray (v2) at its top".into(),
    })?;
    write(store, &root, format, files, None, opts, session, progress).map(|w| w.report)
}

/// Takes one entry of a base version.
pub type EntrySink<'a> = dyn FnMut(Entry) -> Result<()> + 'a;

/// An earlier version a staged write lands on: its entries are kept, in
/// key order, except those the stage replaces or removes.
pub struct Overlay<'a> {
    pub zarr_format: u8,
    /// Pushes every entry of the base, in key order, to the sink.
    pub base: &'a mut dyn FnMut(&mut EntrySink<'_>) -> Result<()>,
    /// Keys dropped from the base, each with every key under it (`""`:
    /// the whole base).
    pub removed: &'a [String],
}

/// Whether `key` is one of `removed` or under one of them.
fn removes(removed: &[String], key: &str) -> bool {
    removed
        .iter()
        .any(|r| r.is_empty() || key == r || key.strip_prefix(r.as_str()).is_some_and(|rest| rest.starts_with('/')))
}

/// Ingests the keys staged in `dir` over `overlay`'s base (a write from
/// zarr-python: only the keys written are read, the base's others keep
/// their blocks). The result must still be a Zarr hierarchy.
pub fn ingest_overlay(
    store: &Store,
    dir: &Path,
    overlay: Option<Overlay<'_>>,
    opts: &IngestOptions,
    session: &Session,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<IngestReport> {
    let (root, staged_format, files) = scan(dir)?;
    let format = staged_format.or(overlay.as_ref().map(|o| o.zarr_format));
    let format = format.ok_or_else(|| Error::NotZarr {
        path: dir.to_path_buf(),
        reason: "nothing written holds zarr.json (v3) or .zgroup/.zarray (v2) at the top".into(),
    })?;
    let report = write(store, &root, format, files, overlay, opts, session, progress)?;
    if !report.has_top {
        return Err(Error::NotZarr {
            path: dir.to_path_buf(),
            reason: "the write removed the top's zarr.json (v3) or .zgroup/.zarray (v2)".into(),
        });
    }
    Ok(report.report)
}

/// An ingest's result, and whether it has a top-level metadata document.
struct Written {
    report: IngestReport,
    has_top: bool,
}

#[allow(clippy::too_many_arguments)]
fn write(
    store: &Store,
    root: &Path,
    zarr_format: u8,
    files: Vec<ScannedFile>,
    overlay: Option<Overlay<'_>>,
    opts: &IngestOptions,
    session: &Session,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Written> {
    let block_size = opts.block_size.clamp(1, shoal_core::MAX_BLOCK_SIZE);
    let mut prog = Progress {
        bytes_total: files.iter().map(|f| f.size).sum(),
        ..Default::default()
    };
    progress(&prog);

    // Unchanged files keep their recorded blocks, if the store still has
    // every one of them (a GC may have taken them since).
    let prior = opts.prior.as_deref().filter(|p| p.block_size == block_size);
    let reused: Vec<bool> = files
        .iter()
        .map(|f| {
            let Some((stamp, mut digests)) = prior.and_then(|p| p.find(&f.key)) else {
                return false;
            };
            let n = chunk::block_count(f.size, block_size) as usize;
            f.inline.is_none()
                && stamp == f.stamp
                && digests
                    .by_ref()
                    .take(n)
                    .filter(|d| store.has(&raw_cid(d)).unwrap_or(false))
                    .count()
                    == n
                && digests.next().is_none()
        })
        .collect();
    let (reused_files, reused_bytes) = files
        .iter()
        .zip(&reused)
        .filter(|(_, r)| **r)
        .fold((0, 0), |(n, b), (f, _)| (n + 1, b + f.size));
    let big: Vec<usize> = (0..files.len())
        .filter(|i| files[*i].inline.is_none() && !reused[*i])
        .collect();
    // Every file's blocks, as the blake3 digests of raw blocks, in one
    // flat table (`first[i]..first[i + 1]` are file i's): a CID value is
    // 96 bytes and a vector per file costs an allocation, which at a
    // million chunk files is most of an add's memory.
    let mut first = Vec::with_capacity(files.len() + 1);
    let mut total = 0usize;
    for f in &files {
        first.push(total);
        if f.inline.is_none() {
            total += chunk::block_count(f.size, block_size) as usize;
        }
    }
    first.push(total);
    let mut digests = vec![[0u8; 32]; total];
    for (i, f) in files.iter().enumerate() {
        if let Some((_, recorded)) = prior.filter(|_| reused[i]).and_then(|p| p.find(&f.key)) {
            for (d, r) in digests[first[i]..first[i + 1]].iter_mut().zip(recorded) {
                *d = r;
            }
        }
    }
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    } else {
        opts.threads
    };
    prog.bytes_done = reused_bytes;
    let mut stats = PutStats::default();
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::sync_channel::<Result<(usize, usize, Block)>>(IN_FLIGHT_BLOCKS);
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..threads {
            let tx = tx.clone();
            let (files, big, next) = (&files, &big, &next);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&fi) = big.get(i) else { break };
                if let Err(e) = hash_file(fi, &files[fi], root, block_size, &tx) {
                    let _ = tx.send(Err(e));
                    break;
                }
            });
        }
        drop(tx);
        let mut batch: Vec<Block> = Vec::new();
        let mut batch_bytes = 0;
        let mut flush = |batch: &mut Vec<Block>, prog: &mut Progress| -> Result<()> {
            stats += store.put_many(batch, Some(session))?;
            prog.bytes_done += batch.iter().map(|b| b.len() as u64).sum::<u64>();
            prog.items_done += batch.len() as u64;
            batch.clear();
            progress(prog);
            Ok(())
        };
        let result = (|| {
            for msg in rx.iter() {
                let (fi, bi, block) = msg?;
                digests[first[fi] + bi] = digest_of(block.cid());
                batch_bytes += block.len();
                batch.push(block);
                if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_BLOCKS {
                    flush(&mut batch, &mut prog)?;
                    batch_bytes = 0;
                }
            }
            flush(&mut batch, &mut prog)
        })();
        if result.is_err() {
            // Stop the workers: take every remaining file index, then drain.
            next.store(usize::MAX / 2, Ordering::Relaxed);
            for _ in rx.iter() {}
        }
        result
    })?;

    // Files are in key order (the scan sorts them): the manifest is cut
    // into pages as entries come, and its pages are stored as they are cut.
    // A base's entries are merged in as they come too.
    let mut out = Builder {
        builder: ManifestBuilder::new(zarr_format, block_size),
        store,
        session,
        stats,
        keys: 0,
        bytes: 0,
        has_top: false,
    };
    let mut record = Prior::new(block_size);
    let mut files = files.into_iter().enumerate().peekable();
    let mut push_file = |out: &mut Builder, (i, f): (usize, ScannedFile)| -> Result<()> {
        let d = &digests[first[i]..first[i + 1]];
        let content = match f.inline {
            Some(data) => Content::Inline(data),
            None => {
                record.push(f.key.clone(), f.stamp, d);
                Content::Blocks(d.iter().map(raw_cid).collect())
            }
        };
        out.push(Entry {
            key: f.key,
            size: f.size,
            content,
        })
    };
    if let Some(overlay) = overlay {
        let Overlay { base, removed, .. } = overlay;
        base(&mut |e: Entry| {
            while let Some(next) = files.next_if(|(_, f)| f.key < e.key) {
                push_file(&mut out, next)?;
            }
            if files.peek().is_some_and(|(_, f)| f.key == e.key) || removes(removed, &e.key) {
                return Ok(()); // the stage replaces or removes it
            }
            out.push(e)
        })?;
    }
    for next in files {
        push_file(&mut out, next)?;
    }
    let built = out.builder.build()?;
    let mut blocks = built.blocks;
    blocks.push(built.root.clone());
    out.stats += store.put_many(&blocks, Some(session))?;
    Ok(Written {
        has_top: out.has_top,
        report: IngestReport {
            root: *built.root.cid(),
            zarr_format,
            keys: out.keys,
            bytes: out.bytes,
            stats: out.stats,
            reused_files,
            reused_bytes,
            record,
        },
    })
}

/// The manifest being built, its pages stored as they are cut.
struct Builder<'a> {
    builder: ManifestBuilder,
    store: &'a Store,
    session: &'a Session,
    stats: PutStats,
    keys: u64,
    bytes: u64,
    has_top: bool,
}

impl Builder<'_> {
    fn push(&mut self, e: Entry) -> Result<()> {
        self.keys += 1;
        self.bytes += e.size;
        self.has_top |= matches!(e.key.as_str(), "zarr.json" | ".zgroup" | ".zarray");
        self.builder.push_sorted(e)?;
        if self.keys.is_multiple_of(4096) {
            let pages = self.builder.take_blocks();
            if !pages.is_empty() {
                self.stats += self.store.put_many(&pages, Some(self.session))?;
            }
        }
        Ok(())
    }
}

/// The CID of the raw block whose blake3 digest is `d`.
fn raw_cid(d: &[u8; 32]) -> Cid {
    shoal_core::cid::cid_from_digest(shoal_core::cid::RAW, d)
}

/// The blake3 digest of a raw block's CID (every block an add cuts).
fn digest_of(c: &Cid) -> [u8; 32] {
    let mut d = [0u8; 32];
    d.copy_from_slice(&c.hash().digest()[..32]);
    d
}

fn hash_file(
    fi: usize,
    f: &ScannedFile,
    root: &Path,
    block_size: u32,
    tx: &mpsc::SyncSender<Result<(usize, usize, Block)>>,
) -> Result<()> {
    let path = f.path(root);
    let unreadable = |e| Error::Unreadable {
        path: path.clone(),
        source: e,
    };
    let mut file = fs::File::open(&path).map_err(unreadable)?;
    for (bi, (start, end)) in chunk::block_ranges(f.size, block_size).enumerate() {
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::Changed {
                path: path.clone(),
                expected: f.size,
            },
            _ => unreadable(e),
        })?;
        if tx.send(Ok((fi, bi, Block::raw(buf)))).is_err() {
            return Ok(()); // writer stopped; its error is reported there
        }
    }
    // The file must end where the scan said it would.
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(unreadable)? != 0 {
        return Err(Error::Changed {
            path: path.clone(),
            expected: f.size,
        });
    }
    Ok(())
}

/// Walks `dir`, returning the Zarr format its top says (if it says) and
/// every file as a key.
fn scan(dir: &Path) -> Result<(PathBuf, Option<u8>, Vec<ScannedFile>)> {
    let root = fs::canonicalize(dir).map_err(|e| Error::Unreadable {
        path: dir.to_path_buf(),
        source: e,
    })?;
    if !root.is_dir() {
        return Err(Error::NotZarr {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    walk(&root, &root, "", &mut files, &mut visited)?;
    let has = |k: &str| files.iter().any(|f: &ScannedFile| f.key == k);
    let zarr_format = if has("zarr.json") {
        Some(3)
    } else if has(".zgroup") || has(".zarray") {
        Some(2)
    } else {
        None
    };
    for f in &files {
        if let Some(doc) = &f.inline {
            validate_metadata(&f.path(&root), &f.key, doc)?;
        }
    }
    // Key order (the walk goes directory by directory: "a/x" before "a.b"),
    // the order the manifest is built in; no spare capacity kept.
    files.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    files.shrink_to_fit();
    Ok((root, zarr_format, files))
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<ScannedFile>,
    visited: &mut HashSet<PathBuf>,
) -> Result<()> {
    if !visited.insert(dir.to_path_buf()) {
        return Ok(()); // a symlink loop back into a directory already walked
    }
    let unreadable = |path: &Path| {
        let path = path.to_path_buf();
        move |e| Error::Unreadable { path, source: e }
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(unreadable(dir))?
        .collect::<std::io::Result<_>>()
        .map_err(unreadable(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for ent in entries {
        let path = ent.path();
        let name = ent
            .file_name()
            .into_string()
            .map_err(|_| Error::BadKey { path: path.clone() })?;
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        key::validate(&key).map_err(|_| Error::BadKey { path: path.clone() })?;
        let ft = ent.file_type().map_err(unreadable(&path))?;
        let real = if ft.is_symlink() {
            let target = fs::canonicalize(&path).map_err(unreadable(&path))?;
            if !target.starts_with(root) {
                return Err(Error::SymlinkEscapes { path, target });
            }
            target
        } else {
            path.clone()
        };
        let meta = fs::metadata(&real).map_err(unreadable(&path))?;
        if meta.is_dir() {
            walk(root, &real, &key, out, visited)?;
        } else if meta.is_file() {
            let inline = if key::is_metadata(&key) && meta.len() <= MAX_JSON_VALIDATE {
                Some(Bytes::from(fs::read(&real).map_err(unreadable(&path))?))
            } else {
                None
            };
            let size = inline.as_ref().map(|d| d.len() as u64).unwrap_or(meta.len());
            out.push(ScannedFile {
                real: (real != root.join(&key)).then_some(real),
                key,
                size,
                stamp: Stamp::of(&meta),
                inline,
            });
        } else {
            return Err(Error::SpecialFile { path });
        }
    }
    Ok(())
}

fn validate_metadata(path: &Path, key: &str, doc: &[u8]) -> Result<()> {
    let bad = |reason: String| Error::BadMetadata {
        path: path.to_path_buf(),
        reason,
    };
    let v: serde_json::Value = serde_json::from_slice(doc).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    let name = key::file_name(key);
    let fmt = obj.get("zarr_format").and_then(|v| v.as_u64());
    match name {
        "zarr.json" => {
            if fmt != Some(3) {
                return Err(bad(format!("zarr_format must be 3, found {fmt:?}")));
            }
            match obj.get("node_type").and_then(|v| v.as_str()) {
                Some("array") => {
                    for field in ["shape", "data_type", "chunk_grid", "codecs"] {
                        if !obj.contains_key(field) {
                            return Err(bad(format!("array metadata lacks {field:?}")));
                        }
                    }
                }
                Some("group") => {}
                other => {
                    return Err(bad(format!(
                        "node_type must be \"array\" or \"group\", found {other:?}"
                    )))
                }
            }
        }
        ".zarray" => {
            if fmt != Some(2) {
                return Err(bad(format!("zarr_format must be 2, found {fmt:?}")));
            }
            for field in ["shape", "chunks", "dtype"] {
                if !obj.contains_key(field) {
                    return Err(bad(format!("array metadata lacks {field:?}")));
                }
            }
        }
        ".zgroup" if fmt != Some(2) => return Err(bad(format!("zarr_format must be 2, found {fmt:?}"))),
        _ => {}
    }
    Ok(())
}
