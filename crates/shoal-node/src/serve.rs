//! What this node answers peers: block requests and compute requests. Both
//! run on the network layer's bounded blocking workers; both count what
//! they serve as requests of the dataset (popularity).

use std::sync::Arc;

use bytes::Bytes;
use shoal_store::Store;

use crate::config::TestSwitches;
use crate::popularity::{Kind, Popularity};

/// Serves blocks from the local store; a block missing or corrupt here is
/// answered "not here" (never wrong bytes, unless the test switch says so).
pub(crate) fn blocks(store: Arc<Store>, pop: Arc<Popularity>, test: TestSwitches) -> shoal_net::ServeFn {
    Arc::new(move |_peer, root, cids| {
        faults::delay(&test);
        let out: Vec<Option<Bytes>> = cids
            .iter()
            .map(|c| match store.get(c) {
                Ok(Some(b)) => faults::served_block(&test, c, b.into_data()),
                _ => None,
            })
            .collect();
        // Count served blocks for datasets we hold (the root is the
        // requester's claim; unknown roots are not counted). Bitswap names
        // no dataset: a dataset's root or its view's root among the blocks
        // served stands for it (an IPFS node's read starts there).
        let served = out.iter().filter(|b| b.is_some()).count() as u64;
        let root = match root {
            Some(r) => Some(*r),
            None => cids
                .iter()
                .zip(&out)
                .filter(|(_, b)| b.is_some())
                .find_map(|(c, _)| dataset_named_by(&store, c)),
        };
        if let Some(root) = root.filter(|_| served > 0) {
            if store.pin_kinds(&root).is_ok_and(|k| !k.is_empty()) {
                pop.record(root, Kind::Block, served);
            }
        }
        out
    })
}

/// The dataset a block stands for when it is one's root or its view's.
fn dataset_named_by(store: &Store, c: &shoal_core::Cid) -> Option<shoal_core::Cid> {
    match c.codec() {
        shoal_core::cid::DAG_CBOR => Some(*c),
        shoal_core::cid::DAG_PB => store.dataset_of_view(c).ok().flatten(),
        _ => None,
    }
}

/// Computes partials for a peer's query from local blocks only.
pub(crate) fn compute(
    store: Arc<Store>,
    pop: Arc<Popularity>,
    limits: Arc<crate::query::ServeLimits>,
    test: TestSwitches,
) -> shoal_net::ComputeFn {
    Arc::new(move |peer, body| {
        tracing::debug!(%peer, bytes = body.len(), "compute request");
        faults::delay(&test);
        let mut answer = crate::query::serve(&store, &pop, &limits, &body);
        faults::answer(&test, &mut answer);
        answer
    })
}

/// The test faults ([`TestSwitches`]), compiled in only with the
/// `test-faults` feature: without it every hook is the honest identity and
/// the node refuses to start with a switch set.
#[cfg(not(feature = "test-faults"))]
mod faults {
    use super::*;

    pub(super) fn delay(_: &TestSwitches) {}

    pub(super) fn served_block(_: &TestSwitches, _: &shoal_core::Cid, data: Bytes) -> Option<Bytes> {
        Some(data)
    }

    pub(super) fn answer(_: &TestSwitches, _: &mut [u8]) {}
}

#[cfg(feature = "test-faults")]
mod faults {
    use super::*;

    pub(super) fn delay(test: &TestSwitches) {
        if !test.serve_delay.is_zero() {
            std::thread::sleep(test.serve_delay);
        }
    }

    /// Withheld (chunks), corrupted (first byte flipped) or as stored.
    pub(super) fn served_block(test: &TestSwitches, c: &shoal_core::Cid, data: Bytes) -> Option<Bytes> {
        if test.withhold_chunk_blocks && c.codec() == shoal_core::cid::RAW {
            return None;
        }
        if test.corrupt_served_blocks && !data.is_empty() {
            let mut v = data.to_vec();
            v[0] ^= 0xff;
            return Some(Bytes::from(v));
        }
        Some(data)
    }

    pub(super) fn answer(test: &TestSwitches, answer: &mut [u8]) {
        if test.wrong_partials {
            lie(answer);
        }
    }

    /// The wrong-partials test switch: adds one to the sum of the answer's
    /// first cell (header length, header, cell count, then cells of a u32
    /// index, a u64 count and an f64 sum first).
    fn lie(answer: &mut [u8]) {
        let Some(h) = answer
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize)
        else {
            return;
        };
        let n_at = 4 + h;
        let has_cells = answer
            .get(n_at..n_at + 4)
            .is_some_and(|b| u32::from_le_bytes(b.try_into().expect("4")) > 0);
        let sum_at = n_at + 4 + 4 + 8;
        if let (true, Some(b)) = (has_cells, answer.get_mut(sum_at..sum_at + 8)) {
            let v = f64::from_le_bytes((&*b).try_into().expect("8")) + 1.0;
            b.copy_from_slice(&v.to_le_bytes());
        }
    }
}
