//! shoal-node: a running shoal node as a library.
//!
//! [`Node::start`] opens the block store, starts the libp2p network, the
//! block source and fetcher, request accounting and the mirror policy, and
//! returns a [`Node`] whose typed async API has one method per operation:
//! add, ls, entry/read (a key or a byte range), export, pin/unpin/pins,
//! query, mount/unmount, gc, fsck, stats, mirrors, providers, connect,
//! peers. Every failure is one [`Error`] whose variant says its kind.
//!
//! Nothing here knows HTTP, a CLI or a wire format: the `shoal` binary's
//! local API and any other face (a gateway) parse, call the node and
//! serialise.
//!
//! Modules, bottom up (no cycles): [`error`], [`config`], [`types`],
//! [`popularity`] (request accounting), `parts` (what the operations, the
//! policy and the query runner share: manifest loading, block reads,
//! "make complete here", reachable providers), `serve` (answers to peers),
//! `query` (distributed execution), [`mirror`] (the policy), `mounts`,
//! [`metrics`], `keyread` (streaming reads of one key), [`names`]
//! (published names and follows) and `node` (the API).

mod car;
pub mod config;
pub mod error;
mod keyread;
pub mod metrics;
pub mod mirror;
mod mounts;
pub mod names;
mod node;
mod parts;
pub mod popularity;
mod query;
mod records;
mod results;
mod serve;
mod trust;
pub mod types;
pub mod versions;

pub use config::{
    raise_open_files_limit, Budget, Limits, MirrorSettings, MountSettings, NodeConfig, QuerySettings, TestSwitches,
    AUTO_BUDGET_MAX,
};
pub use error::{Error, Result};
pub use keyread::KeyReader;
pub use metrics::NodeMetrics;
pub use mirror::{MirrorsView, Reason, Why};
pub use names::{Follow, NameSettings, PublishReport};
pub use node::Node;
pub use shoal_net::SwarmSettings;
pub use shoal_unixfs::WalkLimits;
pub use types::*;
pub use versions::{Diff, Version};
