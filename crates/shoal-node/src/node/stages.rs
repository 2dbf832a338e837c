//! [`Stages`]: staged writes. A writer (zarr-python through `shoal://`)
//! opens a stage over a name's current version, puts and removes keys one
//! by one, and commits them as that name's next version: an add of only
//! the written keys over the base (its other keys keep their blocks), or
//! nothing at all. Until the commit the name does not move; a writer that
//! dies leaves a stage that is dropped when idle, and a daemon restart
//! drops every stage.
//!
//! Bounds: stages open at once, bytes per stage and per key, idle time.
//! Staged files live beside the store (same filesystem) under
//! `staging/<id>/`; a full disk fails the put that met it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use shoal_core::{key, Cid};
use shoal_zarr::{IngestOptions, Overlay};
use tokio::io::AsyncWriteExt;

use super::NodeCtx;
use crate::error::{Error, Result};
use crate::records::unix_now_nanos;
use crate::types::{AddReport, ProgressFn};

/// Stages open at once.
pub const MAX_STAGES: usize = 64;
/// Bytes one stage may hold.
pub const MAX_STAGE_BYTES: u64 = 256 << 30;
/// Bytes one key may hold.
pub const MAX_KEY_BYTES: u64 = 4 << 30;
/// A stage nobody wrote to for this long is dropped.
pub const STAGE_IDLE: Duration = Duration::from_secs(3600);
/// Keys a stage may remove (zarr removes whole arrays, not key by key).
pub const MAX_REMOVED: usize = 65_536;

/// The stages of the node (from [`super::Node::stages`]).
#[derive(Clone)]
pub struct Stages {
    pub(super) ctx: Arc<NodeCtx>,
}

/// What a writer needs to know of its stage.
#[derive(Debug, Clone)]
pub struct StageInfo {
    pub id: String,
    pub name: String,
    /// The version written over (its keys stay unless replaced or
    /// removed); `None` for a new name or an overwrite.
    pub base: Option<Cid>,
    /// The name's version number the stage was opened at.
    pub base_version: Option<u64>,
}

/// The open stages, beside the store.
pub(crate) struct StageTable {
    dir: PathBuf,
    open: Mutex<HashMap<String, Stage>>,
}

struct Stage {
    name: String,
    /// The name's root when the stage opened: the commit refuses if the
    /// name moved since (another writer committed first).
    current: Option<Cid>,
    /// Keys the commit drops from the base (`""`: all of it, as an
    /// overwrite does).
    removed: Vec<String>,
    bytes: u64,
    touched: Instant,
    /// Puts under way: the stage is not dropped, nor committed, under them.
    writing: usize,
}

impl StageTable {
    /// The table over `dir`, whose leftovers (stages of an earlier run)
    /// are removed.
    pub(crate) fn new(dir: PathBuf) -> Self {
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot remove an earlier run's stages");
            }
        }
        StageTable {
            dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn files(&self, id: &str) -> PathBuf {
        self.dir.join(id).join("files")
    }

    /// Drops the stages idle too long (none with a put under way).
    fn reap(&self, open: &mut HashMap<String, Stage>) {
        let stale: Vec<String> = open
            .iter()
            .filter(|(_, s)| s.writing == 0 && s.touched.elapsed() > STAGE_IDLE)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(s) = open.remove(&id) {
                tracing::info!(stage = %id, name = %s.name, "dropping a stage idle for {STAGE_IDLE:?}");
            }
            let _ = std::fs::remove_dir_all(self.dir.join(&id));
        }
    }

    /// Runs `f` on stage `id`.
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Stage) -> Result<T>) -> Result<T> {
        let mut open = self.open.lock().expect("stages lock");
        let stage = open.get_mut(id).ok_or_else(|| {
            Error::NotFound(format!(
                "no open stage {id:?} (committed, aborted, idle for over {} minutes, or the daemon restarted)",
                STAGE_IDLE.as_secs() / 60
            ))
        })?;
        stage.touched = Instant::now();
        f(stage)
    }
}

/// Ends a put's hold on its stage, however the put ends.
struct Writing<'a> {
    table: &'a StageTable,
    id: &'a str,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let _ = self.table.with(self.id, |s| {
            s.writing -= 1;
            Ok(())
        });
    }
}

fn check_key(k: &str) -> Result<()> {
    key::validate(k).map_err(|e| Error::BadRequest(format!("invalid key {k:?}: {e}")))
}

impl Stages {
    fn table(&self) -> &StageTable {
        &self.ctx.stages
    }

    /// Opens a stage over `name`'s current version (`overwrite`: over
    /// nothing, as zarr's mode "w" writes).
    pub async fn open(&self, name: &str, overwrite: bool) -> Result<StageInfo> {
        shoal_store::validate_name(name)?;
        let n = name.to_string();
        let (current, base_version) = self
            .ctx
            .blocking(move |ctx| {
                let current = ctx.services.store.resolve_name(&n)?;
                let number = match current {
                    Some(root) => ctx
                        .history(&n)?
                        .versions
                        .iter()
                        .find(|v| v.root == root)
                        .map(|v| v.number),
                    None => None,
                };
                Ok((current, number))
            })
            .await?;
        let table = self.table();
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{:x}-{seq:x}", unix_now_nanos());
        {
            let mut open = table.open.lock().expect("stages lock");
            table.reap(&mut open);
            if open.len() >= MAX_STAGES {
                return Err(Error::Full(format!(
                    "{MAX_STAGES} writes are staged already; commit or abort one (idle ones are dropped after {} minutes)",
                    STAGE_IDLE.as_secs() / 60
                )));
            }
            std::fs::create_dir_all(table.files(&id))
                .map_err(|e| Error::Internal(format!("cannot create the stage under {}: {e}", table.dir.display())))?;
            open.insert(
                id.clone(),
                Stage {
                    name: name.to_string(),
                    current,
                    removed: if overwrite { vec![String::new()] } else { Vec::new() },
                    bytes: 0,
                    touched: Instant::now(),
                    writing: 0,
                },
            );
        }
        tracing::info!(stage = %id, name, ?current, overwrite, "stage opened");
        Ok(StageInfo {
            id,
            name: name.to_string(),
            base: current.filter(|_| !overwrite),
            base_version: base_version.filter(|_| !overwrite),
        })
    }

    /// Puts `key`'s bytes, streamed from `body`, into stage `id`; returns
    /// the key's size. A put that fails leaves the key as it was.
    pub async fn put<E: std::fmt::Display>(
        &self,
        id: &str,
        key: &str,
        mut body: impl Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    ) -> Result<u64> {
        check_key(key)?;
        let table = self.table();
        table.with(id, |s| {
            s.writing += 1;
            Ok(())
        })?;
        let _hold = Writing { table, id };
        let dest = table.files(id).join(key);
        let tmp = table.dir.join(id).join(format!("put-{:x}", unix_now_nanos()));
        let io = |what: &str, e: std::io::Error| match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Error::Full(format!("staging {key:?}: the disk is full ({e})"))
            }
            _ => Error::Internal(format!("staging {key:?}: {what}: {e}")),
        };
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| io("create", e))?;
            let mut size = 0u64;
            while let Some(piece) = body.next().await {
                let piece =
                    piece.map_err(|e| Error::BadRequest(format!("staging {key:?}: the body broke off: {e}")))?;
                size += piece.len() as u64;
                if size > MAX_KEY_BYTES {
                    return Err(Error::BadRequest(format!(
                        "staging {key:?}: a key may hold at most {MAX_KEY_BYTES} bytes"
                    )));
                }
                file.write_all(&piece).await.map_err(|e| io("write", e))?;
            }
            file.flush().await.map_err(|e| io("write", e))?;
            Ok(size)
        }
        .await;
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let placed = table.with(id, |s| {
            let old = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
            if s.bytes.saturating_sub(old) + size > MAX_STAGE_BYTES {
                return Err(Error::Full(format!(
                    "the stage of {:?} would hold over {MAX_STAGE_BYTES} bytes; commit in parts",
                    s.name
                )));
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::BadRequest(format!("staging {key:?}: a key above it is a file ({e})")))?;
            }
            std::fs::rename(&tmp, &dest)
                .map_err(|e| Error::BadRequest(format!("staging {key:?}: a key below it exists ({e})")))?;
            s.bytes = s.bytes.saturating_sub(old) + size;
            Ok(())
        });
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed.map(|()| size)
    }

    /// A key staged in `id` (not its base's: the writer reads those from
    /// the base version).
    pub async fn read(&self, id: &str, key: &str) -> Result<Bytes> {
        check_key(key)?;
        let path = self.table().with(id, |_| Ok(self.table().files(id).join(key)))?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                ) =>
            {
                Err(Error::NotFound(format!("{key:?} is not staged")))
            }
            Err(e) => Err(Error::Internal(format!("reading staged {key:?}: {e}"))),
        }
    }

    /// Removes `key` and every key under it (`""`: all) from the version
    /// the commit makes: staged ones now, the base's at the commit.
    pub async fn remove(&self, id: &str, key: &str) -> Result<()> {
        let key = key.trim_matches('/');
        if !key.is_empty() {
            check_key(key)?;
        }
        let table = self.table();
        let files = table.files(id);
        table.with(id, |s| {
            let path = files.join(key);
            let freed = tree_bytes(&path);
            let gone = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() && key.is_empty() => {
                    std::fs::remove_dir_all(&path).and_then(|()| std::fs::create_dir_all(&path))
                }
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            gone.map_err(|e| Error::Internal(format!("removing staged {key:?}: {e}")))?;
            s.bytes = s.bytes.saturating_sub(freed);
            if key.is_empty() {
                s.removed = vec![String::new()];
            } else if !s.removed.iter().any(|r| r == key) {
                if s.removed.len() >= MAX_REMOVED {
                    return Err(Error::BadRequest(format!(
                        "a stage may remove at most {MAX_REMOVED} keys; remove their parent instead"
                    )));
                }
                s.removed.push(key.to_string());
            }
            Ok(())
        })
    }

    /// Drops stage `id` and what it holds; the name does not move.
    pub async fn abort(&self, id: &str) -> Result<()> {
        let table = self.table();
        let stage = table.open.lock().expect("stages lock").remove(id);
        let stage = stage.ok_or_else(|| Error::NotFound(format!("no open stage {id:?}")))?;
        let _ = tokio::fs::remove_dir_all(table.dir.join(id)).await;
        tracing::info!(stage = %id, name = %stage.name, "stage aborted");
        Ok(())
    }

    /// Commits stage `id` as its name's next version: the base's keys, less
    /// those removed, with the staged ones in their place. Refused (and the
    /// stage dropped, the name left as it was) if the name moved since the
    /// stage opened or the result is not a Zarr hierarchy.
    pub async fn commit(&self, id: &str, keep: Option<u32>, progress: ProgressFn) -> Result<AddReport> {
        let _busy = self.ctx.busy();
        let start = Instant::now();
        let table = self.table();
        let stage = {
            let mut open = table.open.lock().expect("stages lock");
            match open.get(id) {
                None => return Err(Error::NotFound(format!("no open stage {id:?}"))),
                Some(s) if s.writing > 0 => {
                    return Err(Error::Conflict(format!(
                        "stage {id:?} has {} puts under way; commit when they are done",
                        s.writing
                    )))
                }
                Some(_) => open.remove(id).expect("present"),
            }
        };
        let dir = table.dir.join(id);
        let files = table.files(id);
        let block_size = self.ctx.block_size;
        let report = self
            .ctx
            .blocking(move |n| {
                let store = &n.services.store;
                let now = store.resolve_name(&stage.name)?;
                if now != stage.current {
                    return Err(Error::Conflict(format!(
                        "{} moved to {} while this write was staged; nothing was committed, write again",
                        stage.name,
                        now.map_or("nothing".to_string(), |c| c.to_string())
                    )));
                }
                let base = stage.current.filter(|_| !stage.removed.iter().any(|r| r.is_empty()));
                let manifest = base.map(|root| n.services.manifest(&root)).transpose()?;
                let reader = base.map(|root| n.services.reader(root));
                let mut fetch = reader.as_ref().map(|r| r.fetch());
                let mut feed = |each: &mut shoal_zarr::EntrySink<'_>| {
                    let (Some(m), Some(fetch)) = (&manifest, fetch.as_mut()) else {
                        return Ok(());
                    };
                    m.for_each_entry::<shoal_zarr::Error>(
                        &mut |c| fetch(c).map_err(|e| shoal_zarr::Error::Fetch(format!("reading the base version: {e}"))),
                        &mut |e| each(e.clone()),
                    )
                };
                let overlay = manifest.as_ref().map(|m| Overlay {
                    zarr_format: m.zarr_format,
                    base: &mut feed,
                    removed: &stage.removed,
                });
                let opts = IngestOptions {
                    block_size,
                    threads: 0,
                    prior: None,
                };
                let session = store.session();
                let r = shoal_zarr::ingest_overlay(store, &files, overlay, &opts, &session, &|p| progress(*p))?;
                let report = n.land(&r, Some(stage.name.clone()), keep)?;
                tracing::info!(root = %r.root, name = %stage.name, keys = r.keys, new_bytes = r.stats.new_bytes, "committed a staged write");
                Ok(report)
            })
            .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(self.ctx.landed(report?, start).await)
    }
}

/// Bytes of the files at and under `path`.
fn tree_bytes(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| tree_bytes(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}
