//! shoal-node: a running shoal node as a library.
//!
//! [`Node::start`] opens the block store, starts the libp2p network, the
//! block source and fetcher, request accounting, the mirror policy and the
//! names' tasks, and returns a [`Node`]: a cheap handle over one shared
//! context whose operations are grouped by what they act on, one typed
//! async method each: [`Node::datasets`] (resolve, add, ls, read, export,
//! versions), [`Node::pins`], [`Node::queries`], [`Node::names`] (publish,
//! follow), [`Node::mounts`], [`Node::mirrors`]; the node itself keeps
//! start/shutdown, peers, gc/fsck/stats and counters. Every failure is
//! one [`Error`] whose variant says its kind.
//!
//! Nothing here knows HTTP, a CLI or a wire format: the `shoal` binary's
//! local API and any other face (a gateway) parse, call the node and
//! serialise.
//!
//! Modules, bottom up (no cycles): [`error`], [`config`], [`types`],
//! [`popularity`] (request accounting), `records` (durable blake3-named
//! files, `unix_now`), `trust` (serve limits, caught liars), `services`
//! (the store, network and block source that the handles, the policy and
//! the query runner share: manifest loading, block reads, "make complete
//! here", reachable providers), `serve` (answers to peers), `query`
//! (distributed execution), [`mirror`] (the policy), `mounts` (the mount
//! table), `dag_fetch` (a UnixFS DAG fetched block by block into a CAR,
//! for pins over bitswap), [`metrics`], `keyread` (streaming reads of one key), [`names`]
//! (the registry of published names and follows) and `node` (the handle
//! and its per-area handles in `node/`).

mod car;
pub mod catalogue;
pub mod config;
mod dag_fetch;
pub mod error;
mod keyread;
pub mod metrics;
pub mod mirror;
mod mounts;
pub mod names;
mod node;
pub mod popularity;
mod query;
mod records;
mod results;
mod serve;
mod services;
mod summary;
mod trust;
pub mod types;
pub mod versions;

pub use config::{
    raise_open_files_limit, Budget, Limits, MirrorSettings, MountSettings, NodeConfig, QuerySettings, ScrubSettings,
    TestSwitches, AUTO_BUDGET_MAX,
};
pub use error::{Error, Result};
pub use keyread::KeyReader;
pub use metrics::NodeMetrics;
pub use mirror::{MirrorsView, Reason, Why};
pub use names::{Follow, NameSettings, PublishReport};
pub use node::{
    Arrays, Datasets, DurabilityStats, Mirrors, Mounts, Names, Node, Pins, Queries, QueryRun, RepairReport, StageInfo,
    Stages, KEPT_BESIDE_THE_STORE,
};
pub use shoal_net::fetch::speculative::spawn as run_ahead;
pub use shoal_net::{Multiaddr, SwarmSettings};
pub use shoal_unixfs::WalkLimits;
pub use types::*;
pub use versions::{Diff, Version};
