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
//! - value records (unused by shoal) go to a default `MemoryStore`.

use std::borrow::Cow;
use std::collections::hash_map::{self, HashMap};
use std::collections::VecDeque;
use std::iter;

use libp2p::kad::store::{Error, MemoryStore, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey as Key};
use libp2p::PeerId;

/// Providers kept per key for peers' records (Kademlia's replication factor).
pub const MAX_PROVIDERS_PER_KEY: usize = 20;

pub struct ProviderStore {
    me: PeerId,
    values: MemoryStore,
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
            values: MemoryStore::new(me),
            mine: HashMap::new(),
            max_local,
            others: HashMap::new(),
            order: VecDeque::new(),
            max_remote_keys: max_remote_keys.max(1),
        }
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

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> =
        iter::Map<hash_map::Values<'a, Key, ProviderRecord>, fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>>;

    fn get(&self, k: &Key) -> Option<Cow<'_, Record>> {
        self.values.get(k)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        self.values.put(r)
    }

    fn remove(&mut self, k: &Key) {
        self.values.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.values.records()
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
