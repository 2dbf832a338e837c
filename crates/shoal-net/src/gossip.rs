//! The popularity report daemons gossip on [`TOPIC`].
//!
//! Each daemon publishes, every few seconds, one signed [`Report`]: its own
//! request counts per dataset over a sliding window, the replica targets it
//! carries, how much mirror budget it has left and which datasets it is
//! fetching as a mirror right now. A receiver keeps only each author's latest
//! report, so what a peer can make us store is bounded by the limits below,
//! whatever it sends.
//!
//! Wire format: DAG-CBOR of [`Report`] (a map with one-letter keys; counts,
//! targets and fetching are arrays of tuples), at most [`MAX_REPORT_BYTES`].
//! [`decode`] refuses anything outside the limits rather than trimming it:
//! a well-behaved daemon never produces such a report.

use serde::{Deserialize, Serialize};
use shoal_core::{cid, Cid};

/// The gossipsub topic of popularity reports.
pub const TOPIC: &str = "/shoal/popularity/1";
/// Largest report accepted (gossipsub drops larger messages unread).
pub const MAX_REPORT_BYTES: usize = 16 << 10;
/// Datasets whose counts one report may carry (the author's most requested).
pub const MAX_COUNTS: usize = 64;
/// Replica targets one report may carry.
pub const MAX_TARGETS: usize = 64;
/// Datasets one report may say are being fetched as mirrors.
pub const MAX_FETCHING: usize = 16;
/// The largest replica target honoured: asking for more copies than this is
/// refused at `shoal pin` and rejected in gossip.
pub const MAX_REPLICAS: u8 = 16;
/// Report intervals and windows outside these bounds are rejected.
pub const MAX_EVERY_SECS: u32 = 3600;
pub const MAX_WINDOW_SECS: u32 = 7 * 24 * 3600;

/// One dataset's counts in the author's window: (root, blocks served,
/// mount opens, queries run).
pub type Count = (Cid, u32, u32, u32);

/// A replica target: (root, copies wanted, set-at unix seconds). The newest
/// `set_at` wins; `copies == 0` cancels a target.
pub type Target = (Cid, u8, u64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Format version, 1.
    #[serde(rename = "v")]
    pub version: u8,
    /// Seconds between this author's reports (receivers expire it after a few).
    #[serde(rename = "e")]
    pub every: u32,
    /// Seconds the counts cover.
    #[serde(rename = "w")]
    pub window: u32,
    /// Mirror bytes the author can still take; 0 = it does not volunteer.
    #[serde(rename = "s")]
    pub spare: u64,
    #[serde(rename = "c")]
    pub counts: Vec<Count>,
    #[serde(rename = "t")]
    pub targets: Vec<Target>,
    #[serde(rename = "f")]
    pub fetching: Vec<Cid>,
}

impl Report {
    pub fn encode(&self) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(self).expect("a report always encodes")
    }
}

fn dataset_root(c: &Cid) -> Result<(), String> {
    cid::check_supported(c).map_err(|e| e.to_string())?;
    if c.codec() != cid::DAG_CBOR {
        return Err(format!("{c} is not a dataset root (codec {:#x})", c.codec()));
    }
    Ok(())
}

fn no_duplicates<'a>(roots: impl Iterator<Item = &'a Cid>, what: &str) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for r in roots {
        dataset_root(r)?;
        if !seen.insert(r) {
            return Err(format!("{what} names {r} twice"));
        }
    }
    Ok(())
}

/// Decodes and checks a report from an untrusted peer.
pub fn decode(bytes: &[u8]) -> Result<Report, String> {
    if bytes.len() > MAX_REPORT_BYTES {
        return Err(format!("{} bytes exceeds {MAX_REPORT_BYTES}", bytes.len()));
    }
    let r: Report = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| format!("undecodable: {e}"))?;
    if r.version != 1 {
        return Err(format!("unknown version {}", r.version));
    }
    if r.every == 0 || r.every > MAX_EVERY_SECS {
        return Err(format!("report interval {}s out of range", r.every));
    }
    if r.window == 0 || r.window > MAX_WINDOW_SECS {
        return Err(format!("window {}s out of range", r.window));
    }
    if r.counts.len() > MAX_COUNTS || r.targets.len() > MAX_TARGETS || r.fetching.len() > MAX_FETCHING {
        return Err(format!(
            "too many entries ({} counts, {} targets, {} fetching)",
            r.counts.len(),
            r.targets.len(),
            r.fetching.len()
        ));
    }
    no_duplicates(r.counts.iter().map(|c| &c.0), "counts")?;
    no_duplicates(r.targets.iter().map(|t| &t.0), "targets")?;
    no_duplicates(r.fetching.iter(), "fetching")?;
    if let Some(t) = r.targets.iter().find(|t| t.1 > MAX_REPLICAS) {
        return Err(format!("replica target {} above {MAX_REPLICAS}", t.1));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn root(i: u32) -> Cid {
        *shoal_core::Block::dag_cbor(i.to_be_bytes().to_vec()).cid()
    }

    fn full() -> Report {
        Report {
            version: 1,
            every: 15,
            window: 600,
            spare: 1 << 40,
            counts: (0..MAX_COUNTS as u32).map(|i| (root(i), u32::MAX, i, i)).collect(),
            targets: (0..MAX_TARGETS as u32)
                .map(|i| (root(i), MAX_REPLICAS, u64::MAX))
                .collect(),
            fetching: (0..MAX_FETCHING as u32).map(root).collect(),
        }
    }

    #[test]
    fn a_full_report_fits_and_round_trips() {
        let r = full();
        let b = r.encode();
        eprintln!("a full report encodes to {} bytes", b.len());
        assert!(b.len() <= MAX_REPORT_BYTES, "{} bytes", b.len());
        assert_eq!(decode(&b).unwrap(), r);
    }

    #[test]
    fn out_of_bounds_reports_are_refused() {
        let mut r = full();
        r.counts.push((root(1000), 1, 1, 1));
        assert!(decode(&r.encode()).unwrap_err().contains("too many"));
        let mut r = full();
        r.targets[0].1 = MAX_REPLICAS + 1;
        assert!(decode(&r.encode()).is_err());
        let mut r = full();
        r.counts[1].0 = r.counts[0].0;
        assert!(decode(&r.encode()).unwrap_err().contains("twice"));
        let mut r = full();
        r.fetching[0] = *shoal_core::Block::raw(&b"x"[..]).cid();
        assert!(decode(&r.encode()).unwrap_err().contains("not a dataset root"));
        for (every, window) in [(0, 600), (MAX_EVERY_SECS + 1, 600), (15, 0), (15, MAX_WINDOW_SECS + 1)] {
            let mut r = full();
            r.every = every;
            r.window = window;
            assert!(decode(&r.encode()).is_err());
        }
        let mut r = full();
        r.version = 2;
        assert!(decode(&r.encode()).is_err());
        assert!(decode(&vec![0u8; MAX_REPORT_BYTES + 1]).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&bytes);
        }
    }
}
