//! The redb index: table definitions and small typed helpers.
//!
//! Keys are CID bytes (binary form, ~36 bytes). Values are fixed-width
//! tuples so no custom (de)serialisation can fail.

use redb::TableDefinition;
use shoal_core::Cid;

use crate::error::{Error, Result};

/// CID -> (segment, offset, length, last access tick).
pub const BLOCKS: TableDefinition<&[u8], (u64, u64, u64, u64)> = TableDefinition::new("blocks");
/// Segment id -> (committed length, live bytes).
pub const SEGMENTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("segments");
/// Root CID -> (pin kind bits, created unix seconds).
pub const PINS: TableDefinition<&[u8], (u8, u64)> = TableDefinition::new("pins");
/// Name -> root CID bytes.
pub const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names");
/// Replica targets: root CID -> (copies wanted, set-at unix seconds);
/// 0 copies = a cancelled target kept while its cancellation spreads.
pub const REPLICAS: TableDefinition<&[u8], (u8, u64)> = TableDefinition::new("replicas");
/// Who set a replica target this daemon carries: root CID -> the peer id
/// bytes of the author it was heard from. No row: the local user set it.
pub const REPLICA_AUTHORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("replica_authors");
/// UnixFS views: dataset root CID -> view root CID (dag-pb), and back.
pub const VIEWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("views");
pub const VIEW_OF: TableDefinition<&[u8], &[u8]> = TableDefinition::new("view_of");
/// Counters: "clock" (access tick), "live_bytes", "format" (the repo
/// format version, [`crate::FORMAT`]).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
    pub tick: u64,
}

impl Loc {
    pub fn from_tuple(t: (u64, u64, u64, u64)) -> Self {
        Loc {
            segment: t.0,
            offset: t.1,
            len: t.2,
            tick: t.3,
        }
    }
    pub fn tuple(self) -> (u64, u64, u64, u64) {
        (self.segment, self.offset, self.len, self.tick)
    }
}

pub fn cid_from_key(bytes: &[u8]) -> Result<Cid> {
    Cid::try_from(bytes).map_err(|e| Error::Index(format!("bad CID key in index: {e}")))
}
