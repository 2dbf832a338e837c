//! [`Datasets`]: the datasets: resolving targets, adding (directories and CARs,
//! incremental, with versions), listing, reading keys and ranges, blocks
//! and views, exporting.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shoal_core::manifest::Entry;
use shoal_core::{cid, Cid};
use shoal_store::PinKind;
use shoal_zarr::{read, IngestOptions};

use super::NodeCtx;
use crate::error::{Error, Result};
use crate::records::{unix_now, unix_now_nanos};
use crate::types::*;

/// A key's lookup that may decline (`None`: it needs I/O).
type Lookup = dyn Fn(&NodeCtx, &str) -> Option<Result<(Entry, u32)>>;

/// The datasets of the node (from [`super::Node::datasets`]).
#[derive(Clone)]
pub struct Datasets {
    pub(super) ctx: Arc<NodeCtx>,
}

impl Datasets {
    /// Resolves a TARGET: `CID`, `NAME`, `CID/key/path` or `NAME/key/path`.
    pub async fn resolve(&self, target: &str) -> Result<Target> {
        let target = target.trim_end_matches('/');
        let (head, path) = match target.split_once('/') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (target.to_string(), None),
        };
        // A CID needs no store lookup (and no thread hop), except a UnixFS
        // view's, which stands for its dataset.
        if let Ok(root) = cid::parse(&head) {
            if root.codec() != cid::DAG_PB {
                return Ok(Target { root, name: None, path });
            }
            return self
                .ctx
                .blocking(move |n| match n.services.store.dataset_of_view(&root)? {
                    Some(ds) => Ok(Target { root: ds, name: None, path }),
                    None => Err(Error::NotFound(format!(
                        "{root} is a UnixFS view whose dataset is not known here; use the dataset's CID, or read the view over the gateway's /ipfs/"
                    ))),
                })
                .await;
        }
        if let Some((name, number)) = crate::versions::split_at(&head) {
            let name = name.to_string();
            return self
                .ctx
                .blocking(move |n| {
                    let root = n
                        .history(&name)?
                        .versions
                        .into_iter()
                        .find(|v| v.number == number)
                        .map(|v| v.root)
                        .ok_or_else(|| {
                            Error::NotFound(format!("{name} has no version {number} (see `shoal log {name}`)"))
                        })?;
                    Ok(Target { root, name: None, path })
                })
                .await;
        }
        self.ctx
            .blocking(move |n| match n.services.store.resolve_name(&head)? {
                Some(root) => Ok(Target {
                    root,
                    name: Some(head),
                    path,
                }),
                None => Err(Error::NotFound(format!(
                    "{head:?} is neither a CID nor a dataset name here (see `shoal pins`)"
                ))),
            })
            .await
    }

    /// The CID in `target` when it names a UnixFS directory this node
    /// does not know as a dataset's view (v0 or v1, sha2-256 or blake3):
    /// one to fetch over bitswap. None for anything else.
    pub async fn foreign_unixfs(&self, target: &str) -> Result<Option<Cid>> {
        let Ok(c) = shoal_unixfs::ipfs::parse(target.trim_end_matches('/')) else {
            return Ok(None);
        };
        if c.codec() != cid::DAG_PB {
            return Ok(None);
        }
        self.ctx
            .blocking(move |n| Ok(n.services.store.dataset_of_view(&c)?.is_none().then_some(c)))
            .await
    }

    /// Adds what `path` holds: a CAR file (by its `.car` extension, as
    /// `ipfs-car pack` and `ipfs dag export` name them) or a Zarr directory.
    pub async fn add_path(
        &self,
        path: PathBuf,
        name: Option<String>,
        opts: AddOptions,
        progress: ProgressFn,
    ) -> Result<AddReport> {
        let car = path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("car"));
        match car {
            true => self.add_car(path, name, opts, progress).await,
            false => self.add_with(path, name, opts, progress).await,
        }
    }

    /// Ingests a Zarr v2/v3 directory, pins it (user) and names it.
    pub async fn add(&self, path: PathBuf, name: Option<String>, progress: ProgressFn) -> Result<AddReport> {
        self.add_with(path, name, AddOptions::default(), progress).await
    }

    /// [`Datasets::add`]. Re-adding under a name records a new version (its
    /// parent, time, keys added/changed/removed; older versions beyond the
    /// name's `keep` are unpinned) and reads only the files whose size,
    /// mtime, inode or device changed since that name's last add (the
    /// others keep their recorded blocks), unless `rehash`.
    pub async fn add_with(
        &self,
        path: PathBuf,
        name: Option<String>,
        opts: AddOptions,
        progress: ProgressFn,
    ) -> Result<AddReport> {
        let _busy = self.ctx.busy();
        let AddOptions { rehash, keep } = opts;
        if keep == Some(0) {
            return Err(Error::BadRequest(
                "--keep must be at least 1 (the current version)".into(),
            ));
        }
        let start = Instant::now();
        let block_size = self.ctx.block_size;
        let report = self
            .ctx
            .blocking(move |n| {
                if let Some(name) = &name {
                    shoal_store::validate_name(name)?;
                }
                let record = name.as_deref().map(|nm| n.ingest_record(nm));
                let prior = match (&record, rehash) {
                    (Some(r), false) => read_record(r),
                    _ => None,
                };
                let store = &n.services.store;
                let opts = IngestOptions {
                    block_size,
                    threads: 0,
                    prior: prior.map(Arc::new),
                };
                let session = store.session();
                let r = shoal_zarr::ingest(store, &path, &opts, &session, &|p| progress(*p))?;
                let report = n.land(&r, name, keep)?;
                if let Some(rec) = &record {
                    // Best effort: without it the next add reads everything.
                    if let Err(e) = crate::records::write_cbor(rec, &r.record) {
                        tracing::warn!(error = %e, path = %rec.display(), "cannot keep the add's file record");
                    }
                }
                tracing::info!(root = %r.root, keys = r.keys, bytes = r.bytes, reused = r.reused_files, "added {}", path.display());
                Ok(report)
            })
            .await?;
        Ok(self.ctx.landed(report, start).await)
    }

    /// A name's versions, newest first.
    pub async fn log(&self, name: &str) -> Result<Vec<crate::versions::Version>> {
        let name = name.to_string();
        self.ctx
            .blocking(move |n| {
                let mut v = n.history(&name)?.versions;
                v.reverse();
                Ok(v)
            })
            .await
    }

    /// The keys added, changed and removed from dataset `a` to dataset `b`
    /// (fetching their manifests from peers if needed).
    pub async fn diff(&self, a: &Target, b: &Target) -> Result<crate::versions::Diff> {
        let (a, b) = (a.dataset("diff")?, b.dataset("diff")?);
        self.ctx
            .blocking(move |n| {
                let (ma, mb) = (n.services.manifest(&a)?, n.services.manifest(&b)?);
                let (ra, rb) = (n.services.reader(a), n.services.reader(b));
                let (mut fa, mut fb) = (ra.fetch(), rb.fetch());
                // Pages of either manifest, from whichever dataset they are in.
                let mut fetch = |c: &Cid| fa(c).or_else(|_| fb(c));
                Ok(crate::versions::diff(&ma, &mb, &mut fetch)?)
            })
            .await
    }

    /// Lists a dataset's keys (or those under `target.path`). Reads the
    /// manifest from the store or peers, never the chunks.
    pub async fn ls(&self, target: &Target) -> Result<Listing> {
        let entries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = entries.clone();
        let mut l = self
            .ls_each(target, move |e| {
                sink.lock().expect("ls lock").push(e.clone());
                Ok(())
            })
            .await?;
        l.entries = std::mem::take(&mut *entries.lock().expect("ls lock"));
        Ok(l)
    }

    /// Lists `target` without holding its entries: `each` sees every key
    /// under it in key order (on a blocking thread; `Err` stops the walk).
    /// Returns the listing's summary (its `entries` empty), or NotFound
    /// when a path matches no key.
    pub async fn ls_each(
        &self,
        target: &Target,
        mut each: impl FnMut(&Entry) -> Result<()> + Send + 'static,
    ) -> Result<Listing> {
        let Target { root, path, .. } = target.clone();
        self.ctx
            .blocking(move |n| {
                let m = n.services.manifest(&root)?;
                let reader = n.services.reader(root);
                let mut found = false;
                let mut fetch = reader.fetch();
                m.for_each_entry::<Error>(&mut |c| fetch(c).map_err(Error::from), &mut |e| {
                    let under = match &path {
                        None => true,
                        Some(p) => e.key == *p || e.key.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('/')),
                    };
                    if under {
                        found = true;
                        each(e)?;
                    }
                    Ok(())
                })?;
                if let (Some(p), false) = (&path, found) {
                    return Err(Error::NotFound(format!("no key {p:?} in dataset {root}")));
                }
                let unixfs = n.services.view_if_complete(root)?;
                let listing = Listing {
                    root,
                    zarr_format: m.zarr_format,
                    keys: m.key_count,
                    bytes: m.total_bytes,
                    entries: Vec::new(),
                    unixfs,
                };
                Ok(listing)
            })
            .await
    }

    /// One key's manifest entry (its size and blocks).
    pub async fn entry(&self, root: Cid, key: &str) -> Result<Entry> {
        Ok(self.lookup(root, key).await?.0)
    }

    /// The immediate children of directory `dir` of a dataset (`""` is its
    /// top), at most `limit` of them; `None` when `dir` is not a directory
    /// (no key lies below it). Walks the manifest's pages, holding only the
    /// children.
    pub async fn dir(&self, root: Cid, dir: &str, limit: usize) -> Result<Option<Dir>> {
        let prefix = match dir.trim_matches('/') {
            "" => String::new(),
            d => format!("{d}/"),
        };
        self.ctx
            .blocking_for_request(move |n, cancel| {
                let m = n.services.manifest(&root)?;
                let mut out = Dir {
                    zarr_format: m.zarr_format,
                    children: Vec::new(),
                    truncated: false,
                };
                let mut any = false;
                // The walk stops early: past the prefix's keys (they are
                // adjacent), past the limit, or when the request is gone.
                let mut stopped = false;
                let stop = || shoal_zarr::Error::Fetch("stopped".into());
                let walked = m.for_each_entry(&mut n.services.reader(root).fetch(), &mut |e| {
                    if cancel.is_set() {
                        return Err(stop());
                    }
                    let Some(rest) = e.key.strip_prefix(prefix.as_str()) else {
                        if any {
                            stopped = true;
                            return Err(stop());
                        }
                        return Ok(());
                    };
                    any = true;
                    let (name, dir) = match rest.split_once('/') {
                        Some((d, _)) => (d, true),
                        None => (rest, false),
                    };
                    // Keys come in order, so a directory's keys are adjacent.
                    if out.children.last().is_some_and(|c| c.name == name && c.dir == dir) {
                        return Ok(());
                    }
                    if out.children.len() == limit {
                        out.truncated = true;
                        stopped = true;
                        return Err(stop());
                    }
                    out.children.push(Child {
                        name: name.to_string(),
                        dir,
                        size: if dir { 0 } else { e.size },
                    });
                    Ok(())
                });
                match walked {
                    Ok(()) => {}
                    Err(_) if stopped => {}
                    Err(_) if cancel.is_set() => return Err(Error::Unavailable("the request was dropped".into())),
                    Err(e) => return Err(e.into()),
                }
                Ok(any.then_some(out))
            })
            .await
    }

    /// The dataset's metadata documents (`.zarray`, `.zgroup`, `.zattrs`,
    /// `zarr.json`, `.zmetadata` at every level) and its Zarr format: the
    /// manifest keeps them inline in its root, so this reads no page and no
    /// chunk.
    pub async fn metadata(&self, root: Cid) -> Result<(u8, Vec<(String, Bytes)>)> {
        self.ctx
            .blocking(move |n| {
                let m = n.services.manifest(&root)?;
                let reader = n.services.reader(root);
                let mut fetch = reader.fetch();
                let mut docs = Vec::with_capacity(m.metadata.len());
                for e in &m.metadata {
                    let data = read::entry_range(&m, e, 0, e.size, &mut fetch)?;
                    docs.push((e.key.clone(), data));
                }
                Ok((m.zarr_format, docs))
            })
            .await
    }

    /// One key's entry and the dataset's block size.
    pub(super) async fn lookup(&self, root: Cid, key: &str) -> Result<(Entry, u32)> {
        if let Some(found) = self.ctx.services.lookup_kept(root, key) {
            return found;
        }
        let key = key.to_string();
        self.ctx.blocking(move |n| n.services.lookup(root, &key)).await
    }

    /// The bytes of one key, or of `range` of it (clamped to its size),
    /// fetching only the blocks the range covers: local first, then peers,
    /// every block verified and its length checked against the manifest.
    pub async fn read(&self, root: Cid, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let key = key.to_string();
        self.ctx
            .blocking(move |n| {
                let d = n.services.decoded(&root)?;
                let entry = n.services.entry(&d, root, &key)?;
                let reader = n.services.reader(root);
                let range = range.unwrap_or(0..entry.size);
                let bytes = read::entry_range(&d.manifest, &entry, range.start, range.end, &mut reader.fetch());
                bytes.map_err(|e| Error::from(e).context(format!("cannot read key {key:?} of dataset {root}")))
            })
            .await
    }

    /// Opens one key for streaming reads (see [`KeyReader`]): resolves its
    /// manifest entry (fetching the manifest from peers if needed) without
    /// reading any of its blocks.
    pub async fn open(&self, root: Cid, key: &str) -> Result<crate::KeyReader> {
        let found = self.lookup(root, key).await?;
        Ok(self.ctx.key_reader(root, found))
    }

    /// Opens the first `n` of `keys` the dataset has (absent ones
    /// skipped): what the gateway reads ahead. Where the manifest's kept
    /// pages answer every lookup it needs no thread hop, else one.
    pub async fn open_existing(&self, root: Cid, keys: Vec<String>, n: usize) -> Result<Vec<crate::KeyReader>> {
        let open = move |s: &NodeCtx, lookup: &Lookup| {
            let mut out = Vec::new();
            for k in &keys {
                if out.len() >= n {
                    break;
                }
                match lookup(s, k)? {
                    Ok(found) => out.push(s.key_reader(root, found)),
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            Some(Ok(out))
        };
        if let Some(kept) = open(&self.ctx, &move |s, k| s.services.lookup_kept(root, k)) {
            return kept;
        }
        self.ctx
            .blocking(move |s| open(s, &move |s, k| Some(s.services.lookup(root, k))).expect("every lookup answers"))
            .await
    }

    /// Writes a dataset's UnixFS view as a CAR v1 at `out` (fetching what
    /// is not held first): what `ipfs dag import` and IPFS tools read.
    pub async fn export_car(&self, target: &Target, out: PathBuf, progress: ProgressFn) -> Result<ExportReport> {
        self.export_with(target, out, progress, |n, root, out, _| {
            let view = n.services.ensure_view(root)?;
            let store = &n.services.store;
            crate::car::write_car(view, out, &|c| Ok(store.require(c)?.data().to_vec()))
        })
        .await
    }

    /// Adds the Zarr hierarchy inside a CAR file (a UnixFS directory, as
    /// `ipfs-car pack` and `ipfs dag export` write them): every block is
    /// verified against its CID (blake3 or sha2-256), the tree rebuilt in
    /// scratch space beside the store, then added as a directory would be.
    pub async fn add_car(
        &self,
        car: PathBuf,
        name: Option<String>,
        opts: AddOptions,
        progress: ProgressFn,
    ) -> Result<AddReport> {
        let work = self
            .ctx
            .import_dir
            .join(format!("{}-{}", std::process::id(), unix_now_nanos()));
        let tree = {
            let (car, work) = (car.clone(), work.clone());
            self.ctx
                .blocking(move |n| crate::car::unpack(&car, &work, &n.services.limits))
                .await
        };
        let r = match tree {
            Ok(tree) => self.add_with(tree, name, opts, progress).await,
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&work);
        r
    }

    /// One block by CID, verified: the local store, else the peers that
    /// provide `root` (a dataset or a UnixFS view).
    pub async fn block(&self, cid: Cid, root: Cid) -> Result<Bytes> {
        self.ctx
            .services
            .source
            .get(cid, root)
            .await
            .map(|b| b.into_data())
            .map_err(|e| Error::Unavailable(format!("block {cid}: {e}")))
    }

    /// The UnixFS view of dataset `root` when it is held here in full (built
    /// now if need be), else None.
    pub async fn view_of(&self, root: Cid) -> Result<Option<Cid>> {
        self.ctx.blocking(move |n| n.services.view_if_complete(root)).await
    }

    /// Writes a dataset out as a Zarr directory, fetching what is missing
    /// first (kept as unpinned cache data).
    pub async fn export(&self, target: &Target, out: PathBuf, progress: ProgressFn) -> Result<ExportReport> {
        self.export_with(target, out, progress, |n, root, out, progress| {
            let m = n.services.manifest(&root)?;
            let mut p = Progress {
                items_total: m.key_count,
                bytes_total: m.total_bytes,
                ..Default::default()
            };
            let reader = n.services.reader(root);
            let written = read::export(&m, out, &mut reader.fetch(), &mut |e| {
                p.items_done += 1;
                p.bytes_done += e.size;
                progress(p);
            })?;
            Ok(written)
        })
        .await
    }

    /// Fetches what the dataset of `target` lacks here (kept as unpinned
    /// cache data while `write` runs), then has `write` write it to `out`;
    /// `write` returns the items and bytes written.
    pub(super) async fn export_with(
        &self,
        target: &Target,
        out: PathBuf,
        progress: ProgressFn,
        write: impl FnOnce(&NodeCtx, Cid, &Path, &ProgressFn) -> Result<(u64, u64)> + Send + 'static,
    ) -> Result<ExportReport> {
        let root = target.dataset("get")?;
        let start = Instant::now();
        self.ctx
            .blocking(move |n| {
                let session = n.services.store.session();
                let fetched = n.services.ensure_local(root, &session, &*progress)?;
                let (keys, bytes) = write(n, root, &out, &progress)?;
                drop(session);
                Ok(ExportReport {
                    fetched,
                    root,
                    out,
                    keys,
                    bytes,
                    elapsed: start.elapsed(),
                })
            })
            .await
    }
}

impl NodeCtx {
    /// A name's history; a name added before histories were kept shows its
    /// current root as version 1 (time unknown: 0).
    pub(super) fn history(&self, name: &str) -> Result<crate::versions::History> {
        let mut h = crate::versions::load(&self.versions_dir, name)?;
        if h.versions.is_empty() {
            match self.services.store.resolve_name(name)? {
                Some(root) => h.versions.push(crate::versions::Version::untracked(root)),
                None => {
                    return Err(Error::NotFound(format!(
                        "no dataset named {name:?} here (see `shoal pins`)"
                    )))
                }
            }
        }
        if h.keep == 0 {
            h.keep = crate::versions::DEFAULT_KEEP;
        }
        Ok(h)
    }

    /// Records `root` as the newest version of `name` (whose root was
    /// `previous`), then unpins versions beyond the name's retention.
    pub(super) fn record_version(
        &self,
        name: &str,
        previous: Option<Cid>,
        root: Cid,
        new_bytes: u64,
        keep: Option<u32>,
    ) -> Result<Option<crate::versions::Version>> {
        let store = &self.services.store;
        let mut h = crate::versions::load(&self.versions_dir, name)?;
        if h.versions.is_empty() {
            if let Some(p) = previous.filter(|p| *p != root) {
                h.versions.push(crate::versions::Version::untracked(p));
            }
        }
        h.keep = keep.unwrap_or(if h.keep == 0 {
            crate::versions::DEFAULT_KEEP
        } else {
            h.keep
        });
        let last = h.versions.last().cloned();
        if last.as_ref().is_some_and(|v| v.root == root) {
            crate::versions::save(&self.versions_dir, name, &h)?;
            return Ok(last);
        }
        let parent = last.as_ref().map(|v| v.root);
        let (added, changed, removed) = match parent {
            Some(p) => {
                let reader = self.services.reader(root);
                let (a, b) = (self.services.manifest(&p)?, self.services.manifest(&root)?);
                let d = crate::versions::diff(&a, &b, &mut reader.fetch())?;
                (d.added.len() as u64, d.changed.len() as u64, d.removed.len() as u64)
            }
            None => (self.services.manifest(&root)?.key_count, 0, 0),
        };
        let v = crate::versions::Version {
            number: last.map_or(1, |v| v.number + 1),
            root,
            parent,
            time: unix_now(),
            added,
            changed,
            removed,
            new_bytes,
        };
        h.versions.push(v.clone());
        // Retention: the oldest versions beyond `keep` are unpinned (a
        // root another kept version or another name holds stays).
        let excess = h.versions.len().saturating_sub(h.keep as usize);
        let dropped: Vec<crate::versions::Version> = h.versions.drain(..excess).collect();
        // The name table is read only when a version is dropped: an add must
        // not cost a pass over every name (issue 29: with 100,000 names it
        // was most of an add's time).
        let named: HashSet<Cid> = if dropped.is_empty() {
            HashSet::new()
        } else {
            store.names()?.into_iter().map(|x| x.1).collect()
        };
        for d in dropped {
            if !named.contains(&d.root) && !h.versions.iter().any(|k| k.root == d.root) {
                store.unpin(&d.root, PinKind::User)?;
            }
        }
        crate::versions::save(&self.versions_dir, name, &h)?;
        Ok(Some(v))
    }

    /// The file holding the last add's record for `name`.
    pub(super) fn ingest_record(&self, name: &str) -> PathBuf {
        crate::records::path(&self.ingest_dir, name)
    }
}

/// The record an earlier add left (`None` if absent or unreadable: the add
/// then reads every file).
fn read_record(path: &Path) -> Option<shoal_zarr::Prior> {
    crate::records::read_cbor(path).unwrap_or_else(|e| {
        tracing::warn!(error = %e, path = %path.display(), "ignoring an unreadable add record");
        None
    })
}
