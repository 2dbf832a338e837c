//! shoal-api: the local API of the shoal daemon, the one contract between
//! the daemon and its clients (the CLI, tests, any other tool).
//!
//! Every request and reply type is defined here and only here: the node,
//! the store and the network report in their own types, and [`convert`]
//! turns those into these wire shapes, so a change inside a crate never
//! changes what a client reads without a change here. [`client`] is the
//! Rust client: HTTP/1.1 over the repo's Unix socket.
//!
//! HTTP/1.1 over the repo's Unix socket. Plain calls answer one JSON value.
//! Long calls (`add`, `get`) answer newline-delimited JSON: zero or more
//! [`Event::Progress`] lines, then exactly one `Done` or `Error` line. Errors
//! are `{"error": "...", "kind": "..."}` with a matching HTTP status.

pub mod client;
pub mod convert;
mod types;

pub use types::*;
