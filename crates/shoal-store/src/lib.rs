//! shoal-store: the local block store.
//!
//! Layout of a store directory:
//!
//! ```text
//! index.redb              redb: CID -> location, segments, pins, names, clock
//! roots.journal           every change to pins, names, views, replica targets
//! segments/NNNNNNNNNNNN.pack   append-only pack files of framed blocks
//! ```
//!
//! The index is the fast copy of what the segments (self-describing) and
//! the journal say: without it, the store rebuilds it at open.
//!
//! Invariants:
//! - Block bytes are appended to the active segment and `fsync`ed before the
//!   index transaction that points at them commits. An index entry therefore
//!   always points at durable bytes; bytes without an entry (a crash between
//!   the two steps) are cut off when the store next opens, using each
//!   segment's committed length recorded in the same transaction.
//! - Every read is verified against its CID; wrong bytes are never returned.
//! - GC marks from pins (any kind), names and open [`Session`]s; data written
//!   by an add in progress is protected by its session until it is pinned.
//! - Quota eviction only removes data not reachable from user pins, names or
//!   sessions, least recently used first.
//!
//! The API is synchronous; call it from `spawn_blocking` in async code.

mod backup;
mod error;
mod fsck;
mod gc;
mod index;
mod journal;
mod pin;
mod recover;
mod scrub;
mod segment;
mod store;

pub use backup::BackupReport;
pub use error::{Error, Result};
pub use fsck::{BadBlock, FsckReport, IncompleteDataset};
pub use gc::GcStats;
pub use recover::{LostSegment, Rebuilt, Recovery};
pub use scrub::{ScrubState, ScrubStep};
pub use store::{
    validate_name, PinKind, PinKinds, PutStats, ReplicaTarget, Session, StatsReport, Store, StoreOptions,
    MAX_PENDING_TICKS,
};

/// The store's format version, kept in the index (`meta.format`) and
/// checked at open: 1 = stores made before the version was recorded; 2
/// adds who set each carried replica target; 3 frames every block in its
/// segment (CID and length before the bytes) and keeps the roots journal.
/// An older store is migrated (new tables are created empty; appends go to
/// a new, framed segment), a newer one refused untouched.
pub const FORMAT: u64 = 3;
