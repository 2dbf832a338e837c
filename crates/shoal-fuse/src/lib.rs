//! shoal-fuse: datasets as a lazy, read-only directory tree.
//!
//! - [`fs`]: the filesystem core. Async `lookup`, `getattr`, `readdir`,
//!   `read` returning [`fs::FsError`]s that carry an errno. No fuser types,
//!   so it is tested without a kernel mount over any [`fs::Blocks`].
//! - [`fuse`]: the thin fuser adapter. Metadata answers come straight from
//!   the in-memory tables; anything that may touch the network (first
//!   lookup of a dataset, reads) is answered from a tokio task, so no FUSE
//!   thread ever waits on a peer.
//!
//! Layout: `MOUNT/<name or root CID>/<zarr keys...>`. A dataset's directory
//! tree is built from its manifest the first time it is looked up; after
//! that, lookup, getattr and readdir never touch the network, and inode
//! numbers stay fixed for the life of the mount.

pub mod fs;
pub mod fuse;

pub use fs::{Blocks, FsError, MountFs, MountOptions};
pub use fuse::{mount, MountHandle};
