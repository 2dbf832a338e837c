//! The DHT provider record store: this node's own records apart from the
//! ones peers send.
//!
//! libp2p's `MemoryStore` keeps both in one map of at most 1,024 keys, so a
//! node holding more than 1,024 datasets cannot provide them all, and a
//! peer that sends ADD_PROVIDER for 1,024 made-up keys makes this node's own
//! provides fail. Here:
//! - own records (one per dataset held) live in their own map, bounded by
//!   `max_local` (a configured ceiling far above any real collection); a
//!   peer can never displace them;
//! - peers' records are bounded in number ((key, provider) pairs, about
//!   200 bytes each), at most [`MAX_PROVIDERS_PER_KEY`] providers a key; a
//!   new record beyond the bound evicts the oldest record of the peer
//!   holding most, so a flood costs bounded memory and displaces the
//!   flooder's own records first; a provider's addresses are kept once,
//!   not per record;
//! - value records are signed name records ([`crate::names`]); they live in
//!   [`NameValues`], bounded per publisher and in all, this node's own
//!   names apart (libp2p's default store kept any 1,024 values, so one
//!   throwaway key signing 1,024 names stopped a node from putting its
//!   own).

use std::borrow::Cow;
use std::collections::hash_map::{self, HashMap};
use std::collections::{BTreeSet, VecDeque};
use std::iter;
use std::time::{Duration, Instant};

use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey as Key};
use libp2p::{Multiaddr, PeerId};

/// Providers kept per key for peers' records (Kademlia's replication factor).
pub const MAX_PROVIDERS_PER_KEY: usize = 20;

/// Name records one publisher other than this node may have kept here.
pub const MAX_NAMES_PER_PUBLISHER: usize = 64;
/// Name records of other publishers kept here in all.
pub const MAX_NAME_RECORDS: usize = 16_384;
/// Names of this node's own kept here (far above any real use).
pub const MAX_OWN_NAMES: usize = 65_536;

/// DHT value records: name records by key, each publisher's keys in the
/// order they came. A publisher past its share loses its oldest record; a
/// full table loses the oldest record of the publisher holding most. Own
/// records are bounded apart and never evicted by others'.
pub struct NameValues {
    me: PeerId,
    records: HashMap<Key, (PeerId, Record)>,
    by_publisher: HashMap<PeerId, VecDeque<Key>>,
    /// Records held for other publishers.
    others: usize,
}

impl NameValues {
    pub fn new(me: PeerId) -> Self {
        Self {
            me,
            records: HashMap::new(),
            by_publisher: HashMap::new(),
            others: 0,
        }
    }

    /// Records held: (own, others').
    pub fn counts(&self) -> (usize, usize) {
        (self.records.len() - self.others, self.others)
    }

    fn remove(&mut self, k: &Key) {
        if let Some((p, _)) = self.records.remove(k) {
            if p != self.me {
                self.others -= 1;
            }
            if let hash_map::Entry::Occupied(mut e) = self.by_publisher.entry(p) {
                e.get_mut().retain(|x| x != k);
                if e.get().is_empty() {
                    e.remove();
                }
            }
        }
    }

    fn evict_oldest_of(&mut self, p: PeerId) {
        if let Some(k) = self.by_publisher.get(&p).and_then(|q| q.front().cloned()) {
            self.remove(&k);
        }
    }

    fn put(&mut self, r: Record) -> Result<()> {
        // The publisher signed it (the caller verified the signature and
        // that it sits under its own name's key).
        let publisher = crate::names::verify(&r.value)
            .map_err(|_| Error::ValueTooLarge)?
            .publisher();
        if self.records.contains_key(&r.key) {
            self.records.insert(r.key.clone(), (publisher, r));
            return Ok(());
        }
        if publisher == self.me {
            if self.records.len() - self.others >= MAX_OWN_NAMES {
                return Err(Error::MaxRecords);
            }
        } else {
            if self.by_publisher.get(&publisher).map_or(0, |q| q.len()) >= MAX_NAMES_PER_PUBLISHER {
                self.evict_oldest_of(publisher);
            }
            if self.others >= MAX_NAME_RECORDS {
                let me = self.me;
                let largest = self
                    .by_publisher
                    .iter()
                    .filter(|(p, _)| **p != me)
                    .max_by_key(|(_, q)| q.len())
                    .map(|(p, _)| *p);
                if let Some(p) = largest {
                    self.evict_oldest_of(p);
                }
            }
            self.others += 1;
        }
        self.by_publisher.entry(publisher).or_default().push_back(r.key.clone());
        self.records.insert(r.key.clone(), (publisher, r));
        Ok(())
    }
}

/// A peer holding provider records here: where it is reachable (the
/// addresses its newest record carried) and its keys in arrival order
/// (may hold keys since removed or refreshed).
struct Holder {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    keys: VecDeque<Key>,
    count: usize,
}

pub struct ProviderStore {
    me: PeerId,
    values: NameValues,
    mine: HashMap<Key, ProviderRecord>,
    max_local: usize,
    /// Peers' records: per key, (holder slot, expiry in seconds since
    /// `epoch`), 8 bytes a record beside the key.
    others: HashMap<Key, Vec<(u32, u32)>>,
    holders: Vec<Option<Holder>>,
    slots: HashMap<PeerId, u32>,
    free: Vec<u32>,
    /// Holders by record count, for eviction from the largest.
    by_count: BTreeSet<(usize, u32)>,
    records: usize,
    max_records: usize,
    epoch: Instant,
}

/// A provider, its addresses and the keys held for it, with their expiry.
pub type HeldFor = (PeerId, Vec<Multiaddr>, Vec<(Key, Instant)>);

/// Addresses kept per holder.
const MAX_HOLDER_ADDRS: usize = 8;

impl ProviderStore {
    /// A store that keeps at most `max_local` of this node's own records
    /// and `max_records` of peers' (key, provider) records.
    pub fn new(me: PeerId, max_local: usize, max_records: usize) -> Self {
        Self {
            me,
            values: NameValues::new(me),
            mine: HashMap::new(),
            max_local,
            others: HashMap::new(),
            holders: Vec::new(),
            slots: HashMap::new(),
            free: Vec::new(),
            by_count: BTreeSet::new(),
            records: 0,
            max_records: max_records.max(1),
            epoch: Instant::now(),
        }
    }

    /// Name records held: (own, others').
    pub fn name_records(&self) -> (usize, usize) {
        self.values.counts()
    }

    /// Keys with peers' provider records held now.
    pub fn remote_keys(&self) -> usize {
        self.others.len()
    }

    /// Peers' (key, provider) records held now.
    pub fn remote_records(&self) -> usize {
        self.records
    }

    fn secs(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.epoch).as_secs().min(u32::MAX as u64) as u32
    }

    fn slot_of(&mut self, peer: PeerId) -> u32 {
        if let Some(s) = self.slots.get(&peer) {
            return *s;
        }
        let h = Holder {
            peer,
            addrs: Vec::new(),
            keys: VecDeque::new(),
            count: 0,
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.holders[s as usize] = Some(h);
                s
            }
            None => {
                self.holders.push(Some(h));
                (self.holders.len() - 1) as u32
            }
        };
        self.slots.insert(peer, s);
        self.by_count.insert((0, s));
        s
    }

    fn holder(&mut self, s: u32) -> &mut Holder {
        self.holders[s as usize].as_mut().expect("a live holder slot")
    }

    /// Changes a holder's count (and its place in `by_count`); a holder
    /// left with nothing is freed.
    fn recount(&mut self, s: u32, up: bool) {
        let h = self.holders[s as usize].as_mut().expect("a live holder slot");
        self.by_count.remove(&(h.count, s));
        if up {
            h.count += 1;
            self.records += 1;
        } else {
            h.count -= 1;
            self.records -= 1;
        }
        if h.count == 0 {
            let peer = h.peer;
            self.holders[s as usize] = None;
            self.slots.remove(&peer);
            self.free.push(s);
        } else {
            self.by_count.insert((h.count, s));
        }
    }

    /// Removes `s`'s record of `k`, if held.
    fn remove_record(&mut self, k: &Key, s: u32) -> bool {
        let hash_map::Entry::Occupied(mut e) = self.others.entry(k.clone()) else {
            return false;
        };
        let before = e.get().len();
        e.get_mut().retain(|(h, _)| *h != s);
        let removed = e.get().len() < before;
        if e.get().is_empty() {
            e.remove();
        }
        if removed {
            self.recount(s, false);
        }
        removed
    }

    /// Makes room for one record: the oldest record of the peer holding
    /// most goes (a flood displaces the flooder's own records first).
    fn evict_one(&mut self) {
        let Some(&(_, s)) = self.by_count.iter().next_back() else {
            return;
        };
        loop {
            let Some(k) = self.holder(s).keys.pop_front() else {
                return;
            };
            if self.remove_record(&k, s) {
                return;
            }
        }
    }

    /// Stores `peer`'s record of `key` until `expires`; a new one beyond
    /// the bound evicts (see [`Self::evict_one`]). Full (every provider
    /// slot of the key taken by earlier providers): false.
    pub fn add_remote(&mut self, key: Key, peer: PeerId, addrs: &[Multiaddr], expires: Instant) -> bool {
        let exp = self.secs(expires);
        let known = self.slots.get(&peer).copied();
        if let Some(v) = self.others.get_mut(&key) {
            if let Some(e) = v.iter_mut().find(|(h, _)| Some(*h) == known) {
                e.1 = exp;
                return true;
            }
            if v.len() >= MAX_PROVIDERS_PER_KEY {
                // The first providers heard keep their place (a Sybil
                // flood of one key cannot push them out).
                return false;
            }
        }
        if self.records >= self.max_records {
            self.evict_one();
        }
        let s = self.slot_of(peer);
        self.others.entry(key.clone()).or_default().push((s, exp));
        let h = self.holders[s as usize].as_mut().expect("a live holder slot");
        if !addrs.is_empty() && h.addrs.as_slice() != addrs {
            h.addrs = addrs.iter().take(MAX_HOLDER_ADDRS).cloned().collect();
        }
        h.keys.push_back(key);
        // Keys removed since leave stale entries behind: compact when they
        // outnumber the live ones.
        if h.keys.len() > 2 * (h.count + 1) + 64 {
            let others = &self.others;
            h.keys
                .retain(|k| others.get(k).is_some_and(|v| v.iter().any(|(x, _)| *x == s)));
        }
        self.recount(s, true);
        true
    }

    /// Drops peers' records past their expiry; returns how many.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let now = self.secs(now);
        let mut gone: Vec<(Key, u32)> = Vec::new();
        for (k, v) in &self.others {
            gone.extend(v.iter().filter(|(_, e)| *e <= now).map(|(s, _)| (k.clone(), *s)));
        }
        for (k, s) in &gone {
            self.remove_record(k, *s);
        }
        gone.len()
    }

    /// Peers' records by provider, for saving.
    pub fn remote_by_holder(&self) -> Vec<HeldFor> {
        let mut out: HashMap<u32, Vec<(Key, Instant)>> = HashMap::new();
        for (k, v) in &self.others {
            for (s, e) in v {
                out.entry(*s)
                    .or_default()
                    .push((k.clone(), self.epoch + Duration::from_secs(*e as u64)));
            }
        }
        out.into_iter()
            .filter_map(|(s, keys)| {
                let h = self.holders[s as usize].as_ref()?;
                Some((h.peer, h.addrs.clone(), keys))
            })
            .collect()
    }

    /// Peers' records in the on-disk form (see [`Self::load_remote`]):
    /// `MAGIC, u32 holders, holders × (u8 len, peer id, u8 naddrs,
    /// naddrs × (u16 len, addr), u32 nkeys, nkeys × (u8 len, key, u64
    /// expiry in Unix seconds))`.
    pub fn save_remote(&self) -> Vec<u8> {
        let (now, unix) = (Instant::now(), unix_now());
        let mut out = Vec::with_capacity(16 + self.records * 48);
        out.extend(SAVE_MAGIC);
        let holders = self.remote_by_holder();
        out.extend((holders.len() as u32).to_be_bytes());
        for (peer, addrs, keys) in holders {
            let p = peer.to_bytes();
            out.push(p.len() as u8);
            out.extend(&p);
            out.push(addrs.len() as u8);
            for a in &addrs {
                out.extend((a.as_ref().len() as u16).to_be_bytes());
                out.extend(a.as_ref());
            }
            out.extend((keys.len() as u32).to_be_bytes());
            for (k, e) in keys {
                out.push(k.as_ref().len() as u8);
                out.extend(k.as_ref());
                out.extend((unix + e.saturating_duration_since(now).as_secs()).to_be_bytes());
            }
        }
        out
    }

    /// Loads records saved by [`Self::save_remote`], dropping expired ones
    /// (the bounds apply as to any record). Returns how many were kept; a
    /// malformed file is an error and nothing after the fault is loaded.
    pub fn load_remote(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        use crate::codec::bad;
        let (now, unix) = (Instant::now(), unix_now());
        let mut r = crate::sweep::Reader(bytes);
        if r.take(SAVE_MAGIC.len())? != SAVE_MAGIC {
            return Err(bad("not a shoal provider record file"));
        }
        let mut kept = 0;
        for _ in 0..r.u32()? {
            let plen = r.u8()? as usize;
            let peer = PeerId::from_bytes(r.take(plen)?).map_err(|e| bad(format!("bad peer id: {e}")))?;
            let mut addrs = Vec::new();
            for _ in 0..r.u8()? {
                let len = r.u16()? as usize;
                let a = Multiaddr::try_from(r.take(len)?.to_vec()).map_err(|e| bad(format!("bad address: {e}")))?;
                addrs.push(a);
            }
            for _ in 0..r.u32()? {
                let klen = r.u8()? as usize;
                let key = Key::new(&r.take(klen)?);
                let exp = r.u64()?;
                if exp > unix && peer != self.me {
                    let left = Duration::from_secs(exp - unix);
                    kept += self.add_remote(key, peer, &addrs, now + left) as usize;
                }
            }
        }
        Ok(kept)
    }

    fn record_of(&self, key: &Key, s: u32, e: u32) -> Option<ProviderRecord> {
        let h = self.holders[s as usize].as_ref()?;
        Some(ProviderRecord {
            key: key.clone(),
            provider: h.peer,
            expires: Some(self.epoch + Duration::from_secs(e as u64)),
            addresses: h.addrs.clone(),
        })
    }
}

type RecordRef<'a> = fn(&'a (PeerId, Record)) -> Cow<'a, Record>;

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = iter::Map<hash_map::Values<'a, Key, (PeerId, Record)>, RecordRef<'a>>;
    type ProvidedIter<'a> =
        iter::Map<hash_map::Values<'a, Key, ProviderRecord>, fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>>;

    fn get(&self, k: &Key) -> Option<Cow<'_, Record>> {
        self.values.records.get(k).map(|(_, r)| Cow::Borrowed(r))
    }

    fn put(&mut self, r: Record) -> Result<()> {
        self.values.put(r)
    }

    fn remove(&mut self, k: &Key) {
        self.values.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.values.records.values().map(|(_, r)| Cow::Borrowed(r))
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider == self.me {
            if self.mine.len() >= self.max_local && !self.mine.contains_key(&record.key) {
                return Err(Error::MaxProvidedKeys);
            }
            self.mine.insert(record.key.clone(), record);
            return Ok(());
        }
        let expires = record
            .expires
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(DEFAULT_TTL_SECS));
        self.add_remote(record.key, record.provider, &record.addresses, expires);
        Ok(())
    }

    fn providers(&self, key: &Key) -> Vec<ProviderRecord> {
        let mut out: Vec<ProviderRecord> = self.mine.get(key).cloned().into_iter().collect();
        if let Some(o) = self.others.get(key) {
            out.extend(o.iter().filter_map(|(s, e)| self.record_of(key, *s, *e)));
        }
        out
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.mine.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, k: &Key, p: &PeerId) {
        if *p == self.me {
            self.mine.remove(k);
            return;
        }
        if let Some(s) = self.slots.get(p).copied() {
            self.remove_record(k, s);
        }
    }
}

const SAVE_MAGIC: &[u8] = b"shoal-providers-1";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Expiry of a peer's record that came without one (libp2p sets one on
/// every record it stores; this is a guard).
const DEFAULT_TTL_SECS: u64 = 4 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    fn name_record(kp: &libp2p::identity::Keypair, name: &str) -> Record {
        let root = shoal_core::cid::cid_of(shoal_core::cid::DAG_CBOR, name.as_bytes());
        let r = crate::names::NameRecord::new(kp.public().to_peer_id(), name, root, 1, 0);
        Record::new(crate::names::dht_key(&r.publisher(), name), r.sign(kp).unwrap())
    }

    /// Issue 24 finding 5: the DHT value store kept libp2p's default 1,024
    /// records, so one key signing 1,024 names stopped a node from putting
    /// its own.
    #[test]
    fn regression_24_a_publisher_flooding_names_keeps_its_share_and_ours_stay() {
        let me = libp2p::identity::Keypair::generate_ed25519();
        let mut s = ProviderStore::new(me.public().to_peer_id(), 10, 10);
        let evil = libp2p::identity::Keypair::generate_ed25519();
        for i in 0..2000 {
            s.put(name_record(&evil, &format!("junk{i}"))).unwrap();
        }
        assert_eq!(s.name_records(), (0, MAX_NAMES_PER_PUBLISHER));
        // The newest are kept.
        assert!(s.get(&name_record(&evil, "junk1999").key).is_some());
        assert!(s.get(&name_record(&evil, "junk0").key).is_none());
        for i in 0..1100 {
            s.put(name_record(&me, &format!("mine{i}"))).unwrap();
        }
        assert_eq!(s.name_records(), (1100, MAX_NAMES_PER_PUBLISHER));
        // An honest publisher still has room.
        let other = libp2p::identity::Keypair::generate_ed25519();
        s.put(name_record(&other, "sst")).unwrap();
        assert!(s.get(&name_record(&other, "sst").key).is_some());
        assert_eq!(s.records().count(), 1100 + MAX_NAMES_PER_PUBLISHER + 1);
        s.remove(&name_record(&other, "sst").key);
        assert_eq!(s.name_records(), (1100, MAX_NAMES_PER_PUBLISHER));
    }

    fn key(i: u32) -> Key {
        Key::new(&i.to_be_bytes())
    }

    #[test]
    fn own_records_are_never_displaced_and_peers_records_stay_bounded() {
        let me = PeerId::random();
        let mut s = ProviderStore::new(me, 5000, 100);
        for i in 0..1100 {
            s.add_provider(ProviderRecord::new(key(i), me, vec![])).unwrap();
        }
        // A flood of made-up keys from other peers.
        let evil = PeerId::random();
        for i in 0..10_000 {
            s.add_provider(ProviderRecord::new(key(1_000_000 + i), evil, vec![]))
                .unwrap();
        }
        assert_eq!(s.remote_keys(), 100);
        assert_eq!(s.remote_records(), 100);
        assert_eq!(s.provided().count(), 1100);
        for i in 0..1100 {
            assert_eq!(s.providers(&key(i))[0].provider, me);
        }
        // Still room for new datasets of our own.
        s.add_provider(ProviderRecord::new(key(5_000_000), me, vec![])).unwrap();
        // Many providers of one key: the first ones keep their place.
        for _ in 0..50 {
            s.add_provider(ProviderRecord::new(key(7), PeerId::random(), vec![]))
                .unwrap();
        }
        assert_eq!(s.providers(&key(7)).len(), 1 + MAX_PROVIDERS_PER_KEY);
        s.remove_provider(&key(7), &me);
        assert_eq!(s.providers(&key(7)).len(), MAX_PROVIDERS_PER_KEY);
        // The local ceiling is a clear error, not a silent drop.
        let mut small = ProviderStore::new(me, 2, 10);
        small.add_provider(ProviderRecord::new(key(1), me, vec![])).unwrap();
        small.add_provider(ProviderRecord::new(key(2), me, vec![])).unwrap();
        assert!(small.add_provider(ProviderRecord::new(key(3), me, vec![])).is_err());
    }

    #[test]
    fn a_flood_displaces_the_flooder_first_and_records_expire_and_survive_a_save() {
        let me = PeerId::random();
        let mut s = ProviderStore::new(me, 10, 1000);
        let honest = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let later = Instant::now() + Duration::from_secs(3600);
        for i in 0..300 {
            assert!(s.add_remote(key(i), honest, std::slice::from_ref(&addr), later));
        }
        let evil = PeerId::random();
        for i in 0..50_000 {
            s.add_remote(key(1_000_000 + i), evil, &[], later);
        }
        assert_eq!(s.remote_records(), 1000);
        for i in 0..300 {
            let p = s.providers(&key(i));
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].provider, honest);
            assert_eq!(p[0].addresses, vec![addr.clone()]);
        }
        // Refreshing a record does not add one.
        s.add_remote(key(0), honest, &[], later);
        assert_eq!(s.remote_records(), 1000);

        // Saved and loaded: the same records (expired ones dropped).
        let saved = s.save_remote();
        let mut t = ProviderStore::new(me, 10, 1000);
        assert_eq!(t.load_remote(&saved).unwrap(), 1000);
        assert_eq!(t.providers(&key(5))[0].provider, honest);
        assert!(t.load_remote(b"garbage").is_err());
        assert!(t.load_remote(&saved[..saved.len() - 3]).is_err());

        // Expired records go.
        let soon = Instant::now() + Duration::from_secs(1);
        let mut u = ProviderStore::new(me, 10, 1000);
        u.add_remote(key(1), honest, &[], soon);
        u.add_remote(key(2), honest, &[], later);
        assert_eq!(u.purge_expired(Instant::now() + Duration::from_secs(5)), 1);
        assert_eq!(u.remote_records(), 1);
        assert!(u.providers(&key(1)).is_empty());
    }
}
