//! Published names: signed, sequence-numbered records that say "the newest
//! version of NAME, as published by PEER, is ROOT", as IPNS records do.
//!
//! A record travels two ways: put on the DHT under [`dht_key`] (so a
//! follower finds it even when the publisher is offline, from the peers
//! that hold it), and announced over gossipsub on the name's own [`topic`]
//! (so followers learn of a new version within seconds). Either way it is
//! checked before anything is stored or forwarded: size, decoding, the
//! signature against the key it carries, that key against the publisher,
//! the name against the key or topic it came under. Which of two valid
//! records wins is the higher sequence number ([`newer`]).
//!
//! Wire format: DAG-CBOR `{r: bytes, k: bytes, s: bytes}`: the record's own
//! DAG-CBOR bytes (`{p: publisher peer id bytes, n: name, c: root, q: seq,
//! t: unix seconds, e: the catalogue summary's CID, optional}`), the publisher's protobuf-encoded public key, and its
//! signature over [`SIGNING_PREFIX`] followed by the record bytes.

use libp2p::identity::{Keypair, PublicKey};
use libp2p::kad::RecordKey;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use shoal_core::{cid, Cid};

/// Largest signed record accepted.
pub const MAX_RECORD_BYTES: usize = 2048;
/// Longest name.
pub const MAX_NAME_BYTES: usize = 200;
/// What a signature covers besides the record (no other shoal signature
/// can be replayed as a name record).
pub const SIGNING_PREFIX: &[u8] = b"shoal name record v1:";
/// DHT keys of name records start with this.
pub const DHT_PREFIX: &str = "/shoal-name/";
/// Gossipsub topics of names start with this.
pub const TOPIC_PREFIX: &str = "/shoal/name/1/";

/// A name record as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    #[serde(rename = "p", with = "serde_bytes")]
    publisher: Vec<u8>,
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "c")]
    pub root: Cid,
    #[serde(rename = "q")]
    pub seq: u64,
    /// When it was signed (unix seconds; informational).
    #[serde(rename = "t")]
    pub time: u64,
    /// The CID of this version's catalogue summary (DAG-CBOR), when the
    /// publisher made one (`crate::catalogue`): the signature covers it.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Cid>,
}

#[derive(Serialize, Deserialize)]
struct Signed {
    #[serde(rename = "r", with = "serde_bytes")]
    record: Vec<u8>,
    #[serde(rename = "k", with = "serde_bytes")]
    key: Vec<u8>,
    #[serde(rename = "s", with = "serde_bytes")]
    sig: Vec<u8>,
}

impl NameRecord {
    pub fn new(publisher: PeerId, name: &str, root: Cid, seq: u64, time: u64) -> NameRecord {
        NameRecord {
            publisher: publisher.to_bytes(),
            name: name.to_string(),
            root,
            seq,
            time,
            entry: None,
        }
    }

    /// The record with its catalogue summary's CID.
    pub fn with_entry(self, entry: Cid) -> NameRecord {
        NameRecord {
            entry: Some(entry),
            ..self
        }
    }

    pub fn publisher(&self) -> PeerId {
        PeerId::from_bytes(&self.publisher).expect("checked when decoded or built")
    }

    /// Signs the record with the publisher's key.
    pub fn sign(&self, key: &Keypair) -> Result<Vec<u8>, String> {
        if key.public().to_peer_id() != self.publisher() {
            return Err("the key is not the publisher's".into());
        }
        let record = serde_ipld_dagcbor::to_vec(self).map_err(|e| e.to_string())?;
        let mut msg = SIGNING_PREFIX.to_vec();
        msg.extend_from_slice(&record);
        let sig = key.sign(&msg).map_err(|e| e.to_string())?;
        let out = serde_ipld_dagcbor::to_vec(&Signed {
            record,
            key: key.public().encode_protobuf(),
            sig,
        })
        .map_err(|e| e.to_string())?;
        if out.len() > MAX_RECORD_BYTES {
            return Err(format!(
                "the record takes {} bytes (at most {MAX_RECORD_BYTES})",
                out.len()
            ));
        }
        Ok(out)
    }
}

/// Signs `r` with `key` whoever its publisher is: a forged record, for
/// tests that check forgeries are refused. Never used by shoal itself.
#[doc(hidden)]
pub fn forge(r: &NameRecord, key: &Keypair) -> Vec<u8> {
    let record = serde_ipld_dagcbor::to_vec(r).expect("a record encodes");
    let mut msg = SIGNING_PREFIX.to_vec();
    msg.extend_from_slice(&record);
    serde_ipld_dagcbor::to_vec(&Signed {
        record,
        key: key.public().encode_protobuf(),
        sig: key.sign(&msg).expect("ed25519 signs"),
    })
    .expect("a record encodes")
}

/// Checks a name: non-empty, bounded, no `/` (it is one path segment of a
/// topic and a DHT key), no control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("a published name has 1 to {MAX_NAME_BYTES} bytes"));
    }
    if name.contains('/') || name.chars().any(char::is_control) || name.starts_with('.') {
        return Err(format!(
            "{name:?} is not a publishable name (no '/', no control characters, no leading '.')"
        ));
    }
    Ok(())
}

/// Decodes and verifies a signed record from an untrusted peer: bounded
/// size, the signature valid for the key it carries, that key the
/// publisher's, the name well-formed, the root a dataset root.
pub fn verify(bytes: &[u8]) -> Result<NameRecord, String> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(format!("{} bytes exceeds {MAX_RECORD_BYTES}", bytes.len()));
    }
    let s: Signed = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| format!("undecodable: {e}"))?;
    let r: NameRecord = serde_ipld_dagcbor::from_slice(&s.record).map_err(|e| format!("undecodable record: {e}"))?;
    let publisher = PeerId::from_bytes(&r.publisher).map_err(|e| format!("bad publisher: {e}"))?;
    let key = PublicKey::try_decode_protobuf(&s.key).map_err(|e| format!("bad public key: {e}"))?;
    if key.to_peer_id() != publisher {
        return Err(format!(
            "signed by {}, not by the publisher {publisher}",
            key.to_peer_id()
        ));
    }
    let mut msg = SIGNING_PREFIX.to_vec();
    msg.extend_from_slice(&s.record);
    if !key.verify(&msg, &s.sig) {
        return Err("bad signature".into());
    }
    check_name(&r.name)?;
    cid::check_supported(&r.root).map_err(|e| e.to_string())?;
    if r.root.codec() != cid::DAG_CBOR {
        return Err(format!("{} is not a dataset root", r.root));
    }
    Ok(r)
}

/// Whether `a` supersedes `b` (same publisher and name): a higher sequence
/// number wins; equal numbers do not replace each other.
pub fn newer(a: &NameRecord, b: &NameRecord) -> bool {
    a.seq > b.seq
}

/// The name policy for a record heard on gossip topic `topic`: valid
/// (size, signature, publisher's key, name, root) and announced on its own
/// name's topic. The node then judges it against what it holds.
pub fn check_heard(topic: &str, data: &[u8]) -> Result<NameRecord, String> {
    let r = verify(data)?;
    if self::topic(&r.publisher(), &r.name) != topic {
        return Err("a name record announced on another name's topic".into());
    }
    Ok(r)
}

/// The name policy for a DHT value `record` (put by a peer, or accepted
/// over gossip) beside the record `held` under its key: it must be a valid
/// name record under its own name's key and newer than the held one.
/// `Ok(true)`: store it; `Ok(false)`: it is the record held.
pub fn admit(record: &libp2p::kad::Record, held: Option<&libp2p::kad::Record>) -> Result<bool, String> {
    let is_name = record.key.as_ref().starts_with(DHT_PREFIX.as_bytes());
    let r = verify(&record.value)?;
    if !is_name || !belongs_to_key(&r, &record.key) {
        return Err("not under its own name's key".into());
    }
    let Some(held) = held else { return Ok(true) };
    if held.value == record.value {
        return Ok(false);
    }
    match verify(&held.value) {
        Ok(h) if !newer(&r, &h) => Err(format!(
            "an older record of {:?} (sequence {}, {} held)",
            r.name, r.seq, h.seq
        )),
        _ => Ok(true),
    }
}

/// The DHT key of PEER's NAME.
pub fn dht_key(publisher: &PeerId, name: &str) -> RecordKey {
    RecordKey::new(&format!("{DHT_PREFIX}{publisher}/{name}"))
}

/// The gossipsub topic of PEER's NAME.
pub fn topic(publisher: &PeerId, name: &str) -> String {
    format!("{TOPIC_PREFIX}{publisher}/{name}")
}

/// Whether a verified record belongs under `key` (a record put under
/// another name's key is refused, so no one can shadow a name).
pub fn belongs_to_key(r: &NameRecord, key: &RecordKey) -> bool {
    dht_key(&r.publisher(), &r.name) == *key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Cid {
        cid::cid_of(cid::DAG_CBOR, b"a dataset")
    }

    #[test]
    fn the_policy_takes_records_on_their_own_topic_and_key_and_only_newer_ones() {
        let k = Keypair::generate_ed25519();
        let me = k.public().to_peer_id();
        let signed = |seq| NameRecord::new(me, "sst", root(), seq, 1_700_000_000).sign(&k).unwrap();
        assert!(check_heard(&topic(&me, "sst"), &signed(1)).is_ok());
        assert!(check_heard(&topic(&me, "other"), &signed(1)).is_err());
        let rec = |seq| libp2p::kad::Record::new(dht_key(&me, "sst"), signed(seq));
        assert_eq!(admit(&rec(2), None), Ok(true));
        assert_eq!(admit(&rec(2), Some(&rec(2))), Ok(false), "the record held");
        assert_eq!(admit(&rec(3), Some(&rec(2))), Ok(true), "newer");
        assert!(admit(&rec(1), Some(&rec(2))).is_err(), "older");
        let elsewhere = libp2p::kad::Record::new(dht_key(&me, "other"), signed(5));
        assert!(admit(&elsewhere, None).is_err(), "under another name's key");
    }

    #[test]
    fn a_signed_record_verifies_and_forgeries_do_not() {
        let k = Keypair::generate_ed25519();
        let me = k.public().to_peer_id();
        let r = NameRecord::new(me, "sst", root(), 3, 1_700_000_000);
        let b = r.sign(&k).unwrap();
        assert_eq!(verify(&b).unwrap(), r);
        assert!(belongs_to_key(&r, &dht_key(&me, "sst")));
        assert!(!belongs_to_key(&r, &dht_key(&me, "other")));
        // Another key cannot sign for this publisher.
        let other = Keypair::generate_ed25519();
        assert!(r.sign(&other).is_err());
        // A record naming this publisher, signed (validly) by another key.
        let mut s: Signed = serde_ipld_dagcbor::from_slice(&b).unwrap();
        let mut msg = SIGNING_PREFIX.to_vec();
        msg.extend_from_slice(&s.record);
        s.sig = other.sign(&msg).unwrap();
        s.key = other.public().encode_protobuf();
        let forged = serde_ipld_dagcbor::to_vec(&s).unwrap();
        assert!(verify(&forged).unwrap_err().contains("not by the publisher"));
        // A changed root under the old signature.
        let mut s: Signed = serde_ipld_dagcbor::from_slice(&b).unwrap();
        let mut r2 = r.clone();
        r2.seq = 4;
        s.record = serde_ipld_dagcbor::to_vec(&r2).unwrap();
        assert_eq!(
            verify(&serde_ipld_dagcbor::to_vec(&s).unwrap()).unwrap_err(),
            "bad signature"
        );
        // Garbage and oversize.
        assert!(verify(b"garbage").is_err());
        assert!(verify(&vec![0u8; MAX_RECORD_BYTES + 1]).is_err());
        assert!(newer(&r2, &r) && !newer(&r, &r2) && !newer(&r, &r));
    }

    #[test]
    fn names_are_one_bounded_segment() {
        assert!(check_name("sst-daily").is_ok());
        for bad in ["", "a/b", ".hidden", "x\n"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
    }
}
