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
        if !test.serve_delay.is_zero() {
            std::thread::sleep(test.serve_delay);
        }
        let out: Vec<Option<Bytes>> = cids
            .iter()
            .map(|c| match store.get(c) {
                Ok(Some(b)) => {
                    let data = b.into_data();
                    if test.corrupt_served_blocks && !data.is_empty() {
                        let mut v = data.to_vec();
                        v[0] ^= 0xff;
                        Some(Bytes::from(v))
                    } else {
                        Some(data)
                    }
                }
                _ => None,
            })
            .collect();
        // Count served blocks for datasets we hold (the root is the
        // requester's claim; unknown roots are not counted).
        let served = out.iter().filter(|b| b.is_some()).count() as u64;
        if let Some(root) = root.filter(|_| served > 0) {
            if store.pin_kinds(root).is_ok_and(|k| !k.is_empty()) {
                pop.record(*root, Kind::Block, served);
            }
        }
        out
    })
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
        if !test.serve_delay.is_zero() {
            std::thread::sleep(test.serve_delay);
        }
        crate::query::serve(&store, &pop, &limits, &body)
    })
}
