//! shoal-core: the pure data model of shoal. No I/O, no async.
//!
//! - [`cid`]: content identifiers. Every block is named by a CIDv1 whose
//!   multihash is blake3 (0x1e, 32 bytes): codec `raw` (0x55) for data
//!   blocks, `dag-cbor` (0x71) for manifest nodes. These are valid IPFS CIDs.
//! - [`block`]: a [`Block`] is bytes together with the CID they hash to. The
//!   only ways to make one hash the bytes, so holding a `Block` is proof that
//!   it was verified.
//! - [`chunk`]: splitting a file into blocks of at most the block size.
//! - [`manifest`]: the dataset manifest, a paged, sorted key -> blocks map
//!   with the small Zarr metadata documents inline in the root.

pub mod block;
pub mod chunk;
pub mod cid;
pub mod error;
pub mod key;
pub mod manifest;
pub mod progress;
pub mod text;

pub use block::Block;
pub use cid::Cid;
pub use error::Error;
pub use progress::Progress;

/// Default maximum block size: 1 MiB. Large enough that hashing and I/O
/// amortise per-block overhead, small enough that one block is a cheap unit
/// to fetch from a peer and to retry.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;

/// Hard ceiling on any block shoal stores, serves or accepts (4 MiB). A
/// `--block-size` flag may raise the default up to this, never beyond, so a
/// peer can never make us allocate more than this for one block.
pub const MAX_BLOCK_SIZE: u32 = 4 << 20;
