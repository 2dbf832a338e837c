//! Published names and follows (`shoal publish`, `shoal follow`).
//!
//! Publishing NAME signs a record {publisher, name, root, sequence, time}
//! (`shoal_net::names`) with the node's key, keeps it in
//! `store/published/<blake3 name>`, puts it on the DHT and announces it on
//! the name's gossip topic; every later version of NAME is published the
//! same way (sequence + 1), and the current record is announced again every
//! `announce` interval (followers ignore what they hold already) and put on
//! the DHT again after a restart and every ten minutes.
//!
//! Following PEER/NAME subscribes to its topic, resolves the newest record
//! (gossip, else the DHT), pins that version (fetching only blocks not
//! already stored: from the publisher, or any follower that provides it),
//! points a local name at it (recording a version, so `shoal log` and
//! `--keep` work) and keeps following: a newer record heard on the topic
//! wakes the updater at once; the DHT is polled every `poll` interval in
//! case an announcement was missed. State lives in
//! `store/follows/<blake3 local name>` (JSON, written atomically): the
//! current sequence and root, the newest record heard (so an update cut
//! short by a crash completes after a restart), the last error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use shoal_core::Cid;
use shoal_net::names::{self, NameRecord};
use shoal_net::{Keypair, PeerId, Verdict};

use crate::error::{Error, Result};
use crate::records::unix_now;

pub use crate::config::NameSettings;

/// DHT puts of published records, besides each new version: every this
/// many announcements.
pub(crate) const PUT_EVERY: u32 = 60;
/// Catalogue entries announced again every this many announcements (and
/// whenever a peer joins the catalogue topic).
pub(crate) const CATALOGUE_EVERY: u32 = 6;

/// A follow: (publisher, name).
pub type FollowKey = (String, String);
/// Wake-ups of the follow updater.
pub type Wakes = tokio::sync::mpsc::Receiver<FollowKey>;

/// One followed name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Follow {
    pub publisher: String,
    pub name: String,
    /// The local name pointed at the followed versions.
    pub local: String,
    pub keep: Option<u32>,
    /// The version held (0 = none yet).
    pub seq: u64,
    pub root: Option<Cid>,
    /// When the held version was taken (unix seconds).
    pub updated: u64,
    pub error: Option<String>,
    /// Failed attempts since the last success (sets the retry delay).
    #[serde(default)]
    pub failures: u32,
    /// The newest valid record heard (signed bytes), when newer than `seq`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<u8>,
}

impl Follow {
    pub fn key(&self) -> (String, String) {
        (self.publisher.clone(), self.name.clone())
    }

    /// The publisher and name followed.
    pub fn source(&self) -> Result<(PeerId, String)> {
        parse_follow(&format!("{}/{}", self.publisher, self.name))
    }

    /// The sequence of the newest record heard (0 = none pending).
    pub fn pending_seq(&self) -> u64 {
        names::verify(&self.pending).map_or(0, |r| r.seq)
    }

    pub fn pending_seq_is(&self, seq: u64) -> bool {
        self.pending_seq() <= seq
    }
}

/// Published names and follows, shared by the node, its updater task and
/// the network's gossip judge.
pub(crate) struct NameRegistry {
    published_dir: PathBuf,
    follows_dir: PathBuf,
    pub keypair: Keypair,
    pub settings: NameSettings,
    /// By (publisher, name).
    follows: Mutex<HashMap<(String, String), Follow>>,
    /// Wakes the updater for a follow (publisher, name).
    wake: tokio::sync::mpsc::Sender<(String, String)>,
    /// Held while a follow takes a version (one update at a time).
    pub updating: tokio::sync::Mutex<()>,
}

fn file(dir: &Path, name: &str) -> PathBuf {
    crate::records::path(dir, name)
}

impl NameRegistry {
    /// Loads the follows (a follow whose file is unreadable is skipped,
    /// with a warning). Returns the receiving end of the updater's wake-ups.
    pub fn open(store_dir: &Path, keypair: Keypair, settings: NameSettings) -> Result<(Arc<NameRegistry>, Wakes)> {
        let (published_dir, follows_dir) = (store_dir.join("published"), store_dir.join("follows"));
        for d in [&published_dir, &follows_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::Internal(format!("{}: {e}", d.display())))?;
        }
        let mut follows = HashMap::new();
        for e in std::fs::read_dir(&follows_dir)
            .map_err(|e| Error::Internal(e.to_string()))?
            .flatten()
        {
            match std::fs::read(e.path()).map(|b| serde_json::from_slice::<Follow>(&b)) {
                Ok(Ok(f)) => {
                    follows.insert(f.key(), f);
                }
                _ => tracing::warn!(path = %e.path().display(), "skipping an unreadable follow record"),
            }
        }
        let (wake, rx) = tokio::sync::mpsc::channel(64);
        Ok((
            Arc::new(NameRegistry {
                published_dir,
                follows_dir,
                keypair,
                settings,
                follows: Mutex::new(follows),
                wake,
                updating: tokio::sync::Mutex::new(()),
            }),
            rx,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Follow>> {
        self.follows.lock().expect("follows lock")
    }

    pub fn me(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// The published record of `name`, if it is published.
    pub fn published(&self, name: &str) -> Option<(NameRecord, Vec<u8>)> {
        let bytes = std::fs::read(file(&self.published_dir, name)).ok()?;
        names::verify(&bytes).ok().map(|r| (r, bytes))
    }

    /// Every published record.
    pub fn all_published(&self) -> Vec<Vec<u8>> {
        let Ok(dir) = std::fs::read_dir(&self.published_dir) else {
            return Vec::new();
        };
        dir.flatten()
            .filter(|e| e.path().extension().is_none())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter(|b| names::verify(b).is_ok())
            .collect()
    }

    /// Signs the next record of `name` (pointing at `root`) and keeps it.
    /// Its sequence is above every record of the name this node has signed
    /// or seen (`seen`: the highest found elsewhere, e.g. on the DHT), so
    /// followers take it and no older record can be replayed over it, also
    /// after `unpublish` or a lost record file.
    pub fn sign_next(&self, name: &str, root: Cid, seen: u64, entry: Option<Cid>) -> Result<(NameRecord, Vec<u8>)> {
        names::check_name(name).map_err(Error::BadRequest)?;
        let last = self.published(name).map_or(0, |(r, _)| r.seq);
        let seq = last.max(self.high_water(name)).max(seen) + 1;
        let mut r = NameRecord::new(self.me(), name, root, seq, unix_now());
        r.entry = entry;
        let signed = r.sign(&self.keypair).map_err(Error::Internal)?;
        self.note_seq(name, seq)?;
        crate::records::replace_file(&file(&self.published_dir, name), &signed)
            .map_err(|e| Error::Internal(format!("keeping the published record: {e}")))?;
        Ok((r, signed))
    }

    /// The highest sequence this node signed or saw for its own `name`
    /// (kept apart from the record, so it outlives `unpublish`).
    pub fn high_water(&self, name: &str) -> u64 {
        std::fs::read_to_string(file(&self.published_dir, name).with_extension("seq"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Raises the high-water mark of `name` to `seq` (durably).
    pub fn note_seq(&self, name: &str, seq: u64) -> Result<()> {
        if seq <= self.high_water(name) {
            return Ok(());
        }
        crate::records::replace_file(
            &file(&self.published_dir, name).with_extension("seq"),
            seq.to_string().as_bytes(),
        )
        .map_err(|e| Error::Internal(format!("keeping the name's sequence: {e}")))
    }

    /// Stops publishing `name`; false if it was not published. Its
    /// sequence high-water mark stays.
    pub fn unpublish(&self, name: &str) -> Result<bool> {
        match std::fs::remove_file(file(&self.published_dir, name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Internal(e.to_string())),
        }
    }

    pub fn follows(&self) -> Vec<Follow> {
        let mut v: Vec<Follow> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.local.cmp(&b.local));
        v
    }

    pub fn get(&self, key: &(String, String)) -> Option<Follow> {
        self.lock().get(key).cloned()
    }

    pub fn by_local(&self, local: &str) -> Option<Follow> {
        self.lock().values().find(|f| f.local == local).cloned()
    }

    /// Records a follow's state (memory and disk).
    pub fn save(&self, f: &Follow) -> Result<()> {
        let data = serde_json::to_vec_pretty(f).map_err(|e| Error::Internal(e.to_string()))?;
        crate::records::replace_file(&file(&self.follows_dir, &f.local), &data)
            .map_err(|e| Error::Internal(format!("keeping the follow record: {e}")))?;
        self.lock().insert(f.key(), f.clone());
        Ok(())
    }

    pub fn remove(&self, local: &str) -> Option<Follow> {
        let f = self.by_local(local)?;
        self.lock().remove(&f.key());
        let _ = std::fs::remove_file(file(&self.follows_dir, local));
        Some(f)
    }

    /// Keeps `signed` as the newest record heard for its follow if it is
    /// newer than what the follow holds and has heard: Accept (and wakes the
    /// updater), Ignore when known, Reject when older or not followed.
    /// Runs on the network task: the state is written on the blocking pool.
    pub fn heard(self: &Arc<Self>, r: &NameRecord, signed: &[u8]) -> Verdict {
        let key = (r.publisher().to_string(), r.name.clone());
        let verdict = {
            let mut g = self.lock();
            let Some(f) = g.get_mut(&key) else {
                return Verdict::Ignore;
            };
            let known = f.seq.max(f.pending_seq());
            if r.seq > known {
                f.pending = signed.to_vec();
                Verdict::Accept
            } else if r.seq == known {
                Verdict::Ignore
            } else {
                tracing::info!(publisher = %key.0, name = %key.1, seq = r.seq, held = known, "rejecting an older name record (a replay?)");
                Verdict::Reject
            }
        };
        if verdict == Verdict::Accept {
            let (me, k) = (self.clone(), key.clone());
            let save = move || {
                if let Some(f) = me.get(&k) {
                    if let Err(e) = me.save(&f) {
                        tracing::warn!(error = %e, "cannot keep a follow's pending record");
                    }
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn_blocking(save);
                }
                Err(_) => save(),
            }
            let _ = self.wake.try_send(key);
        }
        verdict
    }

    /// Wakes the updater for a follow.
    pub fn wake(&self, key: (String, String)) {
        let _ = self.wake.try_send(key);
    }
}

/// What `shoal publish` did.
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    pub publisher: String,
    pub name: String,
    pub root: Cid,
    pub seq: u64,
    /// False when the name already pointed at this root (announced again).
    pub new: bool,
}

/// `PEER/NAME` of a follow.
pub fn parse_follow(s: &str) -> Result<(PeerId, String)> {
    let (p, n) = s
        .split_once('/')
        .ok_or_else(|| Error::BadRequest(format!("{s:?}: expected PEERID/NAME")))?;
    let peer: PeerId = p
        .parse()
        .map_err(|e| Error::BadRequest(format!("{p:?} is not a peer id: {e}")))?;
    names::check_name(n).map_err(Error::BadRequest)?;
    Ok((peer, n.to_string()))
}

/// The newest valid record among `found` for `publisher`'s `name`.
pub fn newest(found: Vec<Vec<u8>>, publisher: &PeerId, name: &str) -> Option<(NameRecord, Vec<u8>)> {
    let key = names::dht_key(publisher, name);
    found
        .into_iter()
        .filter_map(|b| names::verify(&b).ok().map(|r| (r, b)))
        .filter(|(r, _)| names::belongs_to_key(r, &key))
        .max_by_key(|(r, _)| r.seq)
}
