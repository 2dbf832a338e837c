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
//! - peers' records are bounded by `max_remote_keys` keys of at most
//!   `max_per_key` providers each; a new key beyond the bound evicts the
//!   oldest (first inserted), so a flood costs bounded memory and only
//!   displaces other peers' records, which their providers republish;
//! - value records are signed name records ([`crate::names`]); they live in
//!   [`NameValues`], bounded per publisher and in all, this node's own
//!   names apart (libp2p's default store kept any 1,024 values, so one
//!   throwaway key signing 1,024 names stopped a node from putting its
//!   own).

use std::borrow::Cow;
use std::collections::hash_map::{self, HashMap};
use std::collections::VecDeque;
use std::iter;

use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey as Key};
use libp2p::PeerId;

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

pub struct ProviderStore {
    me: PeerId,
    values: NameValues,
    mine: HashMap<Key, ProviderRecord>,
    max_local: usize,
    others: HashMap<Key, Vec<ProviderRecord>>,
    /// Keys of `others` in insertion order (may hold keys since removed).
    order: VecDeque<Key>,
    max_remote_keys: usize,
}

impl ProviderStore {
    pub fn new(me: PeerId, max_local: usize, max_remote_keys: usize) -> Self {
        Self {
            me,
            values: NameValues::new(me),
            mine: HashMap::new(),
            max_local,
            others: HashMap::new(),
            order: VecDeque::new(),
            max_remote_keys: max_remote_keys.max(1),
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

    fn evict_oldest(&mut self) {
        while let Some(k) = self.order.pop_front() {
            if self.others.remove(&k).is_some() {
                return;
            }
        }
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
        if !self.others.contains_key(&record.key) {
            if self.others.len() >= self.max_remote_keys {
                self.evict_oldest();
            }
            self.order.push_back(record.key.clone());
            // Keys removed since leave stale entries behind: compact when
            // they outnumber the live ones.
            if self.order.len() > 2 * self.max_remote_keys {
                let others = &self.others;
                self.order.retain(|k| others.contains_key(k));
            }
        }
        let providers = self.others.entry(record.key.clone()).or_default();
        if let Some(i) = providers.iter().position(|p| p.provider == record.provider) {
            providers[i] = record;
        } else if providers.len() < MAX_PROVIDERS_PER_KEY {
            // Full: the first providers heard keep their place (a Sybil
            // flood of one key cannot push them out).
            providers.push(record);
        }
        Ok(())
    }

    fn providers(&self, key: &Key) -> Vec<ProviderRecord> {
        let mut out: Vec<ProviderRecord> = self.mine.get(key).cloned().into_iter().collect();
        if let Some(o) = self.others.get(key) {
            out.extend(o.iter().cloned());
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
        if let hash_map::Entry::Occupied(mut e) = self.others.entry(k.clone()) {
            e.get_mut().retain(|r| r.provider != *p);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }
}

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
        assert!(s.order.len() <= 200);
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
}
