//! One budget for every walk over an untrusted DAG.
//!
//! A DAG is not a tree: one node may be linked a thousand times, and a
//! walk that expands every reference turns a 1 MB CAR into terabytes
//! (64 links to a node of 64 links to one 1 MiB leaf is 4 GiB). Every walk
//! of UnixFS nodes that came from outside (the gateway's `/ipfs/` answers,
//! CAR import and export, directory listings) carries a [`Walk`]: it counts
//! the node references expanded and the bytes they stand for, bounds the
//! depth, and remembers what it has seen so a walk that only needs each
//! block once (a CAR, an index) never takes one twice. It fails with
//! [`Error::Budget`] naming the limit the moment a step would pass it, so
//! the caller stops before it allocates or writes anything past it.

use std::collections::HashSet;

use shoal_core::cid::Cid;

use crate::{Error, Result};

/// The limits of one walk. `Default` is generous for real datasets and
/// small against a machine: ten million references, 64 levels, 1 TiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Node references a walk may expand (a node linked twice counts twice).
    pub nodes: u64,
    /// Bytes the expanded references may stand for (a leaf linked twice
    /// counts twice: this bounds what a rebuilt file or an answer holds).
    pub bytes: u64,
    /// Deepest nesting a walk follows (directories, shards, file nodes).
    pub depth: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            // A 5M-key dataset's view is about 5M references; twice that.
            nodes: 10_000_000,
            bytes: 1 << 40,
            // Zarr hierarchies are a few levels; HAMTs add at most 8 per
            // directory; 64 is far above both and far below a stack's end.
            depth: 64,
        }
    }
}

/// The state of one walk under its [`WalkLimits`].
#[derive(Debug)]
pub struct Walk {
    limits: WalkLimits,
    seen: HashSet<Cid>,
    nodes: u64,
    bytes: u64,
}

impl Walk {
    pub fn new(limits: WalkLimits) -> Self {
        Walk {
            limits,
            seen: HashSet::new(),
            nodes: 0,
            bytes: 0,
        }
    }

    /// The limits this walk runs under.
    pub fn limits(&self) -> WalkLimits {
        self.limits
    }

    /// Counts one reference to a node at `depth`; fails past the node or
    /// depth limit (a refused reference counts nothing).
    pub fn enter(&mut self, depth: usize) -> Result<()> {
        if depth > self.limits.depth {
            return Err(Error::Budget(format!(
                "nested deeper than {} levels",
                self.limits.depth
            )));
        }
        if self.nodes >= self.limits.nodes {
            return Err(Error::Budget(format!(
                "more than {} node references",
                self.limits.nodes
            )));
        }
        self.nodes += 1;
        Ok(())
    }

    /// Counts `n` bytes the walk stands for (written, answered, listed);
    /// fails, before the caller uses them, if they pass the byte limit.
    pub fn spend(&mut self, n: u64) -> Result<()> {
        let total = self.bytes.saturating_add(n);
        if total > self.limits.bytes {
            return Err(Error::Budget(format!(
                "more than {} bytes (the walk's byte budget)",
                self.limits.bytes
            )));
        }
        self.bytes = total;
        Ok(())
    }

    /// True the first time `c` is offered: walks that take each block once
    /// skip the rest.
    pub fn first(&mut self, c: &Cid) -> bool {
        self.seen.insert(*c)
    }

    /// Node references counted so far.
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(nodes: u64, bytes: u64, depth: usize) -> WalkLimits {
        WalkLimits { nodes, bytes, depth }
    }

    #[test]
    fn a_walk_stops_at_each_limit_and_not_before() {
        let mut w = Walk::new(limits(2, 10, 3));
        w.enter(3).unwrap();
        w.enter(0).unwrap();
        assert!(matches!(w.enter(0), Err(Error::Budget(_))), "a third node passes 2");
        let mut w = Walk::new(limits(9, 10, 3));
        assert!(matches!(w.enter(4), Err(Error::Budget(_))), "depth 4 passes 3");
        w.spend(10).unwrap();
        assert!(matches!(w.spend(1), Err(Error::Budget(_))));
        assert_eq!(w.bytes(), 10, "a refused spend counts nothing");
        assert!(w.spend(u64::MAX).is_err(), "no overflow");
    }

    #[test]
    fn first_is_true_once_per_cid() {
        let mut w = Walk::new(WalkLimits::default());
        let a = shoal_core::cid::cid_of(shoal_core::cid::RAW, b"a");
        assert!(w.first(&a));
        assert!(!w.first(&a));
    }
}
