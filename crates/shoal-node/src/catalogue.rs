//! The catalogue: what the swarm's publishers hold, as verified entries
//! (`shoal_net::catalogue`), kept on disk and searched in memory.
//!
//! One file per (publisher, name) in `store/catalogue/` (DAG-CBOR: the
//! envelopes of its newest [`VERSIONS`] versions, written durably); loaded
//! and verified again at start. Entries arrive from gossip (judged on the
//! network task: [`Catalogue::heard`] only verifies, checks the bounds and
//! updates memory; the file is written on the blocking pool) and from this
//! node's own publications. Bounds: versions per name, names per publisher
//! and entries in all (`Limits::catalogue_*`); what is refused is counted
//! by reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use shoal_core::Cid;
use shoal_net::catalogue::{self, Refusal, Summary};
use shoal_net::names::NameRecord;
use shoal_net::Verdict;

/// Versions of one name kept.
pub const VERSIONS: usize = 10;

/// One version of a published name, as the catalogue holds it.
#[derive(Debug, Clone)]
pub struct Item {
    pub publisher: String,
    pub name: String,
    pub seq: u64,
    pub root: Cid,
    /// When the publisher signed it (unix seconds).
    pub published: u64,
    pub summary: Summary,
    /// The envelope as signed (what is announced and kept).
    pub envelope: Arc<Vec<u8>>,
    /// Lower-cased text searched by `q`.
    haystack: String,
}

impl Item {
    fn new(record: NameRecord, summary: Summary, envelope: Vec<u8>) -> Item {
        let mut hay = vec![
            record.name.clone(),
            summary.title.clone(),
            summary.description.clone(),
            summary.institution.clone(),
            summary.source.clone(),
        ];
        for v in &summary.variables {
            hay.extend([v.name.clone(), v.long_name.clone(), v.standard_name.clone()]);
        }
        Item {
            publisher: record.publisher().to_string(),
            name: record.name.clone(),
            seq: record.seq,
            root: record.root,
            published: record.time,
            summary,
            envelope: Arc::new(envelope),
            haystack: hay.join("\n").to_lowercase(),
        }
    }

    /// The collection it belongs to: `NAME.PUBLISHER` (a peer id has no dot).
    pub fn collection(&self) -> String {
        collection_id(&self.publisher, &self.name)
    }

    /// Its id within the collection: `NAME@SEQ`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.seq)
    }

    /// The time it covers (`YYYY-MM-DDTHH:MM:SS`): the data's time extent,
    /// else the moment it was published.
    pub fn interval(&self) -> (String, String) {
        match &self.summary.time {
            Some((a, b)) => (a.clone(), b.clone()),
            None => {
                let t = iso_of_unix(self.published);
                (t.clone(), t)
            }
        }
    }
}

/// `NAME.PUBLISHER`.
pub fn collection_id(publisher: &str, name: &str) -> String {
    format!("{name}.{publisher}")
}

pub use shoal_core::text::iso_of_unix;

/// Turns an RFC 3339 date or date-time (`2000-01-01`, `2000-01-01T12:00:00Z`,
/// with fractions or an offset, which are dropped) into the catalogue's
/// `YYYY-MM-DDTHH:MM:SS`; an error for anything else.
pub fn normalise_time(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let date = b.len() >= 10 && digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10);
    if !date {
        return Err(format!("{s:?} is not an RFC 3339 date or date-time"));
    }
    if b.len() == 10 {
        return Ok(format!("{}T00:00:00", &s[..10]));
    }
    let time = b.len() >= 19
        && matches!(b[10], b'T' | b't' | b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !time {
        return Err(format!("{s:?} is not an RFC 3339 date or date-time"));
    }
    Ok(format!("{}T{}", &s[..10], &s[11..19]))
}

/// What a search asks for (every part optional; all must hold).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Free text: comma-separated alternatives, each a set of words that
    /// must all appear (case-insensitive) in the name, title, description,
    /// institution, source or a variable's name, long or standard name.
    #[serde(default)]
    pub text: Option<String>,
    /// West, south, east, north: items whose bbox meets it.
    #[serde(default)]
    pub bbox: Option<[f64; 4]>,
    /// Start and end (`YYYY-MM-DDTHH:MM:SS`, either open): items whose
    /// time extent meets it.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    /// Only these collections / item ids (empty: any).
    #[serde(default)]
    pub collections: Vec<String>,
    #[serde(default)]
    pub ids: Vec<String>,
    /// Every version, not only each name's newest.
    #[serde(default)]
    pub all_versions: bool,
    pub limit: usize,
    pub offset: usize,
}

/// Most items one search answers.
pub const MAX_LIMIT: usize = 1000;

impl SearchQuery {
    /// Checks the parts (a bbox on the globe, times that parse, a sane
    /// limit); times are normalised.
    pub fn checked(mut self) -> Result<SearchQuery, String> {
        if let Some([w, s, e, n]) = self.bbox {
            let ok = [w, s, e, n].iter().all(|x| x.is_finite())
                && (-180.0..=180.0).contains(&w)
                && (-180.0..=180.0).contains(&e)
                && (-90.0..=90.0).contains(&s)
                && (-90.0..=90.0).contains(&n)
                && s <= n;
            if !ok {
                return Err(format!(
                    "bbox {w},{s},{e},{n}: expected west,south,east,north in degrees (south <= north)"
                ));
            }
        }
        self.start = self.start.as_deref().map(normalise_time).transpose()?;
        self.end = self.end.as_deref().map(normalise_time).transpose()?;
        if let (Some(a), Some(b)) = (&self.start, &self.end) {
            if a > b {
                return Err(format!("the time range starts ({a}) after it ends ({b})"));
            }
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(format!("limit must be 1 to {MAX_LIMIT}"));
        }
        Ok(self)
    }

    fn matches(&self, it: &Item, words: &[Vec<String>]) -> bool {
        if !self.collections.is_empty() && !self.collections.contains(&it.collection()) {
            return false;
        }
        if !self.ids.is_empty() && !self.ids.contains(&it.id()) {
            return false;
        }
        if !words.is_empty()
            && !words
                .iter()
                .any(|all| all.iter().all(|w| it.haystack.contains(w.as_str())))
        {
            return false;
        }
        if let Some(q) = self.bbox {
            match it.summary.bbox {
                Some(b) if bbox_meets(b, q) => {}
                _ => return false,
            }
        }
        if self.start.is_some() || self.end.is_some() {
            let (a, b) = it.interval();
            if self.start.as_ref().is_some_and(|s| b < *s) || self.end.as_ref().is_some_and(|e| a > *e) {
                return false;
            }
        }
        true
    }
}

/// The longitude spans of a bbox (two when it crosses 180°).
fn spans(w: f64, e: f64) -> Vec<(f64, f64)> {
    if w <= e {
        vec![(w, e)]
    } else {
        vec![(w, 180.0), (-180.0, e)]
    }
}

/// Whether two bboxes (west, south, east, north) meet.
pub fn bbox_meets(a: [f64; 4], b: [f64; 4]) -> bool {
    if a[1] > b[3] || b[1] > a[3] {
        return false;
    }
    spans(a[0], a[2])
        .iter()
        .any(|x| spans(b[0], b[2]).iter().any(|y| x.0 <= y.1 && y.0 <= x.1))
}

/// A search's answer: the page of items and how many matched in all.
#[derive(Debug, Clone)]
pub struct Found {
    pub items: Vec<Item>,
    pub matched: usize,
}

/// Counts of what the catalogue took and refused.
#[derive(Debug, Default)]
pub struct CatalogueStats {
    pub accepted: AtomicU64,
    pub forged: AtomicU64,
    pub malformed: AtomicU64,
    pub oversized: AtomicU64,
    /// Past `catalogue_per_publisher` or `catalogue_entries`.
    pub over_bound: AtomicU64,
    /// Older than every version kept (a replay).
    pub stale: AtomicU64,
}

/// (publisher, name).
type Key = (String, String);

#[derive(Default)]
struct Index {
    /// Newest first.
    by_name: HashMap<Key, Vec<Item>>,
    names_of: HashMap<String, usize>,
    total: usize,
}

/// The catalogue held by this node.
pub struct Catalogue {
    dir: PathBuf,
    max_entries: usize,
    per_publisher: usize,
    index: Mutex<Index>,
    pub stats: CatalogueStats,
    /// Copies the swarm holds of a root, and when that was looked up.
    copies: Mutex<HashMap<Cid, (usize, std::time::Instant)>>,
    /// Roots whose copies are being looked up.
    looking: Mutex<std::collections::HashSet<Cid>>,
    /// Where the next relay batch starts.
    relay_cursor: AtomicUsize,
}

#[derive(Serialize, Deserialize)]
struct FileForm(Vec<serde_bytes::ByteBuf>);

/// What [`Catalogue::admit`] did.
#[derive(Debug, PartialEq, Eq)]
enum Admitted {
    /// Kept (a new version).
    New,
    /// Held already.
    Known,
    /// Past a bound, or older than every version kept (counted).
    Refused,
}

impl Catalogue {
    /// Loads `store/catalogue/` (files that do not verify are skipped, with
    /// a warning).
    pub fn open(store_dir: &std::path::Path, limits: &crate::config::Limits) -> std::io::Result<Catalogue> {
        let dir = store_dir.join("catalogue");
        std::fs::create_dir_all(&dir)?;
        let cat = Catalogue {
            dir: dir.clone(),
            max_entries: limits.catalogue_entries,
            per_publisher: limits.catalogue_per_publisher,
            index: Mutex::new(Index::default()),
            stats: CatalogueStats::default(),
            copies: Mutex::default(),
            looking: Mutex::default(),
            relay_cursor: Default::default(),
        };
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.path().extension().is_some() {
                continue;
            }
            match crate::records::read_cbor::<FileForm>(&e.path()) {
                Ok(Some(FileForm(envs))) => {
                    for env in envs {
                        if let Ok(entry) = catalogue::verify(&env) {
                            cat.admit(entry.record, entry.summary, env.into_vec());
                        }
                    }
                }
                _ => tracing::warn!(path = %e.path().display(), "skipping an unreadable catalogue file"),
            }
        }
        cat.stats.accepted.store(0, Ordering::Relaxed);
        Ok(cat)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("catalogue lock")
    }

    /// Entries held (every version).
    pub fn len(&self) -> usize {
        self.lock().total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps a verified entry in memory if it is new and within bounds.
    fn admit(&self, record: NameRecord, summary: Summary, envelope: Vec<u8>) -> Admitted {
        let key = (record.publisher().to_string(), record.name.clone());
        let mut g = self.lock();
        let idx = &mut *g;
        let is_new_name = !idx.by_name.contains_key(&key);
        if is_new_name {
            if idx.names_of.get(&key.0).copied().unwrap_or(0) >= self.per_publisher {
                self.stats.over_bound.fetch_add(1, Ordering::Relaxed);
                return Admitted::Refused;
            }
            if idx.total >= self.max_entries {
                self.stats.over_bound.fetch_add(1, Ordering::Relaxed);
                return Admitted::Refused;
            }
        }
        let versions = idx.by_name.entry(key.clone()).or_default();
        if versions.iter().any(|v| v.seq == record.seq) {
            return Admitted::Known;
        }
        if versions.len() >= VERSIONS && versions.last().is_some_and(|v| v.seq > record.seq) {
            self.stats.stale.fetch_add(1, Ordering::Relaxed);
            return Admitted::Refused;
        }
        if !is_new_name && versions.len() < VERSIONS && idx.total >= self.max_entries {
            // A new version of a known name replaces its oldest when full.
            if let Some(pos) = versions.len().checked_sub(1) {
                versions.remove(pos);
                idx.total -= 1;
            }
        }
        let pos = versions
            .iter()
            .position(|v| v.seq < record.seq)
            .unwrap_or(versions.len());
        versions.insert(pos, Item::new(record, summary, envelope));
        idx.total += 1;
        if versions.len() > VERSIONS {
            versions.pop();
            idx.total -= 1;
        }
        if is_new_name {
            *idx.names_of.entry(key.0).or_default() += 1;
        }
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Admitted::New
    }

    /// The envelopes kept for `key`, to write.
    fn file_of(&self, key: &Key) -> (PathBuf, Vec<serde_bytes::ByteBuf>) {
        let g = self.lock();
        let envs = g
            .by_name
            .get(key)
            .map(|v| {
                v.iter()
                    .map(|i| serde_bytes::ByteBuf::from(i.envelope.to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        (crate::records::path(&self.dir, &format!("{}/{}", key.0, key.1)), envs)
    }

    /// Writes `key`'s file (on the calling thread).
    fn persist(&self, key: &Key) {
        let (path, envs) = self.file_of(key);
        if let Err(e) = crate::records::write_cbor(&path, &FileForm(envs)) {
            tracing::warn!(error = %e, "cannot keep a catalogue entry");
        }
    }

    /// An envelope heard from the swarm: verified, bounded, kept. Runs on
    /// the network task: the file is written on the blocking pool.
    pub fn heard(self: &Arc<Self>, envelope: &[u8]) -> Verdict {
        let entry = match catalogue::verify(envelope) {
            Ok(e) => e,
            Err((why, msg)) => {
                let c = match why {
                    Refusal::Oversized => &self.stats.oversized,
                    Refusal::Malformed => &self.stats.malformed,
                    Refusal::Forged => &self.stats.forged,
                };
                c.fetch_add(1, Ordering::Relaxed);
                tracing::info!(error = %msg, "refusing a catalogue entry");
                return Verdict::Reject;
            }
        };
        let key = (entry.record.publisher().to_string(), entry.record.name.clone());
        match self.admit(entry.record, entry.summary, envelope.to_vec()) {
            Admitted::Known => Verdict::Ignore,
            Admitted::New => {
                let me = self.clone();
                let save = move || me.persist(&key);
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn_blocking(save);
                    }
                    Err(_) => save(),
                }
                Verdict::Accept
            }
            Admitted::Refused => Verdict::Reject,
        }
    }

    /// Keeps this node's own entry (on the calling thread, durably).
    pub fn keep_own(&self, envelope: &[u8]) -> Result<(), String> {
        let entry = catalogue::verify(envelope).map_err(|(_, m)| m)?;
        let key = (entry.record.publisher().to_string(), entry.record.name.clone());
        match self.admit(entry.record, entry.summary, envelope.to_vec()) {
            Admitted::New => {
                self.persist(&key);
                Ok(())
            }
            Admitted::Known => Ok(()),
            Admitted::Refused => Err("the catalogue is at its bounds".into()),
        }
    }

    /// The newest envelope of `publisher`'s `name`.
    pub fn newest(&self, publisher: &str, name: &str) -> Option<Item> {
        self.lock()
            .by_name
            .get(&(publisher.to_string(), name.to_string()))
            .and_then(|v| v.first().cloned())
    }

    /// Every version kept of `publisher`'s `name`, newest first.
    pub fn versions(&self, publisher: &str, name: &str) -> Vec<Item> {
        self.lock()
            .by_name
            .get(&(publisher.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// The newest version listing `root` (any version of any name).
    pub fn by_root(&self, root: Cid) -> Option<Item> {
        let g = self.lock();
        g.by_name
            .values()
            .flat_map(|v| v.iter())
            .filter(|i| i.root == root)
            .max_by_key(|i| i.published)
            .cloned()
    }

    /// Items matching `q` (newest version of each name unless
    /// `all_versions`), in collection then newest-first order, paged.
    pub fn search(&self, q: &SearchQuery) -> Found {
        let words: Vec<Vec<String>> = q
            .text
            .as_deref()
            .unwrap_or("")
            .to_lowercase()
            .split(',')
            .map(|alt| alt.split_whitespace().map(String::from).collect::<Vec<_>>())
            .filter(|w| !w.is_empty())
            .collect();
        let g = self.lock();
        let mut hits: Vec<&Item> = Vec::new();
        let take = |versions: &Vec<Item>| {
            if q.all_versions || !q.ids.is_empty() {
                versions.len()
            } else {
                1
            }
        };
        if q.collections.is_empty() {
            for versions in g.by_name.values() {
                hits.extend(versions.iter().take(take(versions)).filter(|it| q.matches(it, &words)));
            }
        } else {
            // Named collections: their keys, not a scan of every name.
            let keys: std::collections::BTreeSet<Key> = q
                .collections
                .iter()
                .filter_map(|id| id.rsplit_once('.'))
                .map(|(name, publisher)| (publisher.to_string(), name.to_string()))
                .collect();
            for versions in keys.iter().filter_map(|k| g.by_name.get(k)) {
                hits.extend(versions.iter().take(take(versions)).filter(|it| q.matches(it, &words)));
            }
        }
        hits.sort_by(|a, b| {
            (a.name.as_str(), a.publisher.as_str(), std::cmp::Reverse(a.seq)).cmp(&(
                b.name.as_str(),
                b.publisher.as_str(),
                std::cmp::Reverse(b.seq),
            ))
        });
        let matched = hits.len();
        let items = hits.into_iter().skip(q.offset).take(q.limit).cloned().collect();
        Found { items, matched }
    }

    /// Up to `n` envelopes of other publishers' newest versions, the next
    /// `n` after the last call in (publisher, name) order, so repeated
    /// calls cycle through the whole catalogue.
    pub fn relay_batch(&self, me: &str, n: usize) -> Vec<Arc<Vec<u8>>> {
        let g = self.lock();
        let mut keys: Vec<&Key> = g.by_name.keys().filter(|k| k.0 != me).collect();
        if keys.is_empty() || n == 0 {
            return Vec::new();
        }
        keys.sort();
        let start = self.relay_cursor.fetch_add(n, Ordering::Relaxed) % keys.len();
        keys.iter()
            .cycle()
            .skip(start)
            .take(n.min(keys.len()))
            .filter_map(|k| g.by_name.get(*k).and_then(|v| v.first()).map(|i| i.envelope.clone()))
            .collect()
    }

    /// The copies of `root` last counted, and when.
    pub fn copies_of(&self, root: Cid) -> Option<(usize, std::time::Instant)> {
        self.copies.lock().expect("copies lock").get(&root).copied()
    }

    /// Marks a lookup of `root`'s copies as started; false when one is
    /// under way or `max` are.
    pub fn start_lookup(&self, root: Cid, max: usize) -> bool {
        let mut g = self.looking.lock().expect("looking lock");
        g.len() < max && g.insert(root)
    }

    /// Records a lookup's count (the oldest counts go past 4096 roots).
    pub fn set_copies(&self, root: Cid, n: usize, at: std::time::Instant) {
        self.looking.lock().expect("looking lock").remove(&root);
        let mut g = self.copies.lock().expect("copies lock");
        if g.len() >= 4096 {
            if let Some(oldest) = g.iter().min_by_key(|(_, (_, t))| *t).map(|(c, _)| *c) {
                g.remove(&oldest);
            }
        }
        g.insert(root, (n, at));
    }

    /// A page of the collections, in (name, publisher) order: each one's
    /// newest item and how many versions are kept; and how many there are.
    pub fn collections(&self, offset: usize, limit: usize) -> (Vec<(Item, usize)>, usize) {
        let g = self.lock();
        let mut keys: Vec<&Key> = g.by_name.keys().collect();
        keys.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        let page = keys
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|k| g.by_name.get(*k))
            .filter_map(|v| v.first().map(|i| (i.clone(), v.len())))
            .collect();
        (page, keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_net::catalogue::{envelope, Variable};
    use shoal_net::Keypair;

    fn entry(k: &Keypair, name: &str, seq: u64, title: &str, bbox: [f64; 4], time: (&str, &str)) -> Vec<u8> {
        let s = Summary {
            title: title.into(),
            variables: vec![Variable {
                name: "sst".into(),
                dims: vec!["time".into()],
                shape: vec![3],
                dtype: "float32".into(),
                long_name: "Sea Surface Temperature".into(),
                ..Variable::default()
            }],
            bbox: Some(bbox),
            time: Some((time.0.into(), time.1.into())),
            ..Summary::default()
        };
        let (bytes, c) = s.encode().unwrap();
        let root = shoal_core::cid::cid_of(shoal_core::cid::DAG_CBOR, name.as_bytes());
        let rec = NameRecord::new(k.public().to_peer_id(), name, root, seq, 1_700_000_000).with_entry(c);
        envelope(&rec.sign(k).unwrap(), &bytes).unwrap()
    }

    fn q() -> SearchQuery {
        SearchQuery {
            limit: 100,
            ..SearchQuery::default()
        }
    }

    #[test]
    fn search_filters_by_text_bbox_and_time_and_keeps_versions_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let limits = crate::config::Limits {
            catalogue_per_publisher: 3,
            catalogue_entries: 20,
            ..Default::default()
        };
        let cat = Arc::new(Catalogue::open(dir.path(), &limits).unwrap());
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let atl = entry(
            &a,
            "atlantic",
            1,
            "North Atlantic SST",
            [-80.0, 0.0, 0.0, 60.0],
            ("2000-01-01T00:00:00", "2000-12-31T00:00:00"),
        );
        assert_eq!(cat.heard(&atl), Verdict::Accept);
        assert_eq!(cat.heard(&atl), Verdict::Ignore, "known");
        let pac = entry(
            &b,
            "pacific",
            1,
            "Pacific <script>",
            [150.0, -30.0, -120.0, 30.0],
            ("2010-01-01T00:00:00", "2010-01-31T00:00:00"),
        );
        assert_eq!(cat.heard(&pac), Verdict::Accept);
        let names = |f: Found| f.items.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(cat.search(&q())), ["atlantic", "pacific"]);
        let text = |t: &str| {
            names(cat.search(&SearchQuery {
                text: Some(t.into()),
                ..q()
            }))
        };
        assert_eq!(text("atlantic"), ["atlantic"]);
        assert_eq!(text("sea surface"), ["atlantic", "pacific"], "a variable's long name");
        assert_eq!(
            text("north pacific"),
            Vec::<String>::new(),
            "every word of one alternative"
        );
        assert_eq!(text("north atlantic, pacific"), ["atlantic", "pacific"]);
        // The Pacific box crosses 180°.
        let bbox = |b| names(cat.search(&SearchQuery { bbox: Some(b), ..q() }));
        assert_eq!(bbox([170.0, 0.0, 180.0, 10.0]), ["pacific"]);
        assert_eq!(bbox([-179.0, 0.0, -170.0, 10.0]), ["pacific"]);
        assert_eq!(bbox([-50.0, 10.0, -40.0, 20.0]), ["atlantic"]);
        assert!(bbox([10.0, -80.0, 20.0, -70.0]).is_empty());
        let time = |s: Option<&str>, e: Option<&str>| {
            let q = SearchQuery {
                start: s.map(String::from),
                end: e.map(String::from),
                ..q()
            }
            .checked()
            .unwrap();
            names(cat.search(&q))
        };
        assert_eq!(time(Some("2005-01-01"), None), ["pacific"]);
        assert_eq!(time(None, Some("2000-06-01T00:00:00Z")), ["atlantic"]);
        assert_eq!(time(Some("2010-01-31"), Some("2011-01-01")), ["pacific"]);
        // Versions: newest first, at most VERSIONS, older replays refused.
        for seq in 2..=(VERSIONS as u64 + 2) {
            assert_eq!(
                cat.heard(&entry(
                    &a,
                    "atlantic",
                    seq,
                    "v",
                    [0.0, 0.0, 1.0, 1.0],
                    ("2000-01-01T00:00:00", "2000-01-01T00:00:00")
                )),
                Verdict::Accept
            );
        }
        let all = cat.search(&SearchQuery {
            all_versions: true,
            collections: vec![collection_id(&a.public().to_peer_id().to_string(), "atlantic")],
            ..q()
        });
        assert_eq!(all.matched, VERSIONS);
        assert_eq!(all.items[0].seq, VERSIONS as u64 + 2);
        assert_eq!(cat.heard(&atl), Verdict::Reject, "older than every kept version");
        // Names per publisher.
        for n in ["b1", "b2"] {
            assert_eq!(
                cat.heard(&entry(
                    &b,
                    n,
                    1,
                    n,
                    [0.0, 0.0, 1.0, 1.0],
                    ("2000-01-01T00:00:00", "2000-01-01T00:00:00")
                )),
                Verdict::Accept
            );
        }
        assert_eq!(
            cat.heard(&entry(
                &b,
                "b3",
                1,
                "b3",
                [0.0, 0.0, 1.0, 1.0],
                ("2000-01-01T00:00:00", "2000-01-01T00:00:00")
            )),
            Verdict::Reject
        );
        assert_eq!(cat.stats.over_bound.load(Ordering::Relaxed), 1);
        // Forged and garbage are counted apart.
        assert_eq!(cat.heard(b"not an entry"), Verdict::Reject);
        assert_eq!(cat.stats.malformed.load(Ordering::Relaxed), 1);
        // Kept on disk: a reopened catalogue holds the same.
        let n = cat.len();
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(cat);
        let again = Catalogue::open(dir.path(), &limits).unwrap();
        assert_eq!(again.len(), n);
    }

    #[test]
    fn collections_page_in_name_order_and_roots_find_their_item() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Arc::new(Catalogue::open(dir.path(), &crate::config::Limits::default()).unwrap());
        let k = Keypair::generate_ed25519();
        let me = k.public().to_peer_id().to_string();
        let span = ("2000-01-01T00:00:00", "2000-01-01T00:00:00");
        for name in ["c", "a", "b"] {
            for seq in 1..=2 {
                assert_eq!(
                    cat.heard(&entry(&k, name, seq, name, [0.0, 0.0, 1.0, 1.0], span)),
                    Verdict::Accept
                );
            }
        }
        let page = |o, l| {
            let (items, total) = cat.collections(o, l);
            assert_eq!(total, 3);
            items.iter().map(|(i, n)| (i.name.clone(), *n)).collect::<Vec<_>>()
        };
        assert_eq!(page(0, 2), [("a".to_string(), 2), ("b".to_string(), 2)]);
        assert_eq!(page(2, 2), [("c".to_string(), 2)]);
        assert!(page(3, 2).is_empty());
        let vs = cat.versions(&me, "b");
        assert_eq!(vs.iter().map(|i| i.seq).collect::<Vec<_>>(), [2, 1]);
        // Every version of "b" shares one root (entry() derives it from the
        // name): the newest published is found.
        let root = shoal_core::cid::cid_of(shoal_core::cid::DAG_CBOR, b"b");
        assert_eq!(cat.by_root(root).map(|i| i.name), Some("b".to_string()));
        assert!(cat
            .by_root(shoal_core::cid::cid_of(shoal_core::cid::DAG_CBOR, b"z"))
            .is_none());
        // A search named by collection looks at that collection only.
        let found = cat.search(&SearchQuery {
            collections: vec![collection_id(&me, "c"), "no.such".into()],
            all_versions: true,
            ..q()
        });
        assert_eq!(found.matched, 2);
        assert!(found.items.iter().all(|i| i.name == "c"));
    }

    #[test]
    fn times_and_boxes_parse_as_stac_gives_them() {
        assert_eq!(normalise_time("2000-01-02").unwrap(), "2000-01-02T00:00:00");
        assert_eq!(normalise_time("2000-01-02T03:04:05.5Z").unwrap(), "2000-01-02T03:04:05");
        assert_eq!(
            normalise_time("2000-01-02T03:04:05+02:00").unwrap(),
            "2000-01-02T03:04:05"
        );
        assert!(normalise_time("yesterday").is_err());
        assert!(normalise_time("2000-01-02T03").is_err());
        assert_eq!(iso_of_unix(0), "1970-01-01T00:00:00");
        assert_eq!(iso_of_unix(951_782_400), "2000-02-29T00:00:00");
        assert!(SearchQuery {
            bbox: Some([0.0, 10.0, 1.0, 5.0]),
            ..q()
        }
        .checked()
        .is_err());
        assert!(SearchQuery {
            limit: 0,
            ..SearchQuery::default()
        }
        .checked()
        .is_err());
        assert!(bbox_meets([170.0, -10.0, -170.0, 10.0], [-175.0, 0.0, -172.0, 1.0]));
        assert!(!bbox_meets([170.0, -10.0, -170.0, 10.0], [0.0, 0.0, 1.0, 1.0]));
    }
}
