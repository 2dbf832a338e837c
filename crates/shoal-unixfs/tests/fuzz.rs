//! Fuzzing of what comes from outside as UnixFS (issue 24): CAR streams,
//! dag-pb nodes and UnixFS data, arbitrary and mutated from valid ones.
//! Nothing may panic (the shard-name slice did), and every walk stays
//! within its budget. Bounded case counts in CI; `SHOAL_FUZZ_CASES` raises
//! them.

#[path = "support/fuzzing.rs"]
mod fuzzing;

use fuzzing::{cases, mutate};
use proptest::prelude::*;
use shoal_core::cid::{self, Cid, DAG_PB, RAW};
use shoal_unixfs::{car, dir_links, file_node, pb, step, Link, Walk, WalkLimits};

fn link(cid: Cid, name: &str, tsize: u64) -> Link {
    Link {
        cid,
        name: name.into(),
        tsize,
    }
}

/// A directory of one file and one shard over one raw leaf, as nodes.
fn valid_nodes() -> Vec<(Cid, Vec<u8>)> {
    let leaf = b"chunk".to_vec();
    let leaf_cid = cid::cid_of(RAW, &leaf);
    let fs = |kind, blocksizes: Vec<u64>| pb::UnixFs {
        kind,
        filesize: (kind == pb::FILE).then_some(5),
        blocksizes,
        fanout: (kind == pb::HAMT_SHARD).then_some(256),
        hash_type: (kind == pb::HAMT_SHARD).then_some(0x22),
        ..Default::default()
    };
    let file = pb::encode_node(&[link(leaf_cid, "", 5)], &fs(pb::FILE, vec![5]).encode());
    let file_cid = cid::cid_of(DAG_PB, &file);
    let shard = pb::encode_node(&[link(file_cid, "0Ax", 5)], &fs(pb::HAMT_SHARD, vec![]).encode());
    let shard_cid = cid::cid_of(DAG_PB, &shard);
    let dir = pb::encode_node(
        &[link(file_cid, "a", 5), link(shard_cid, "s", 5)],
        &fs(pb::DIRECTORY, vec![]).encode(),
    );
    vec![
        (cid::cid_of(DAG_PB, &dir), dir),
        (shard_cid, shard),
        (file_cid, file),
        (leaf_cid, leaf),
    ]
}

fn valid_car() -> Vec<u8> {
    let nodes = valid_nodes();
    let mut out = car::header(&[nodes[0].0]);
    for (c, b) in &nodes {
        out.extend(car::section(c, b));
    }
    out
}

/// Every reading of one node: none may panic.
fn read_all_ways(c: &Cid, b: &[u8]) {
    let _ = pb::decode_node(b).map(|n| pb::UnixFs::decode(&n.data));
    let _ = dir_links(b);
    let _ = file_node(c, b);
    for level in [0, 1, 7, 8] {
        let _ = step(b, "x", level);
    }
    let _ = shoal_unixfs::links(c, b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn nodes_from_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        read_all_ways(&cid::cid_of(DAG_PB, &bytes), &bytes);
    }

    #[test]
    fn mutated_nodes_never_panic(which in 0usize..3, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let (c, b) = valid_nodes().swap_remove(which);
        read_all_ways(&c, &mutate(b, &edits));
    }

    #[test]
    fn cars_read_within_bounds(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        junk in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        for bytes in [mutate(valid_car(), &edits), junk.clone()] {
            let Ok(mut r) = car::Reader::new(std::io::Cursor::new(bytes.clone())) else { continue };
            let mut n = 0;
            while let Ok(Some((c, data))) = r.next_block() {
                prop_assert!(data.len() <= bytes.len());
                read_all_ways(&c, &data);
                n += 1;
                prop_assert!(n <= bytes.len());
            }
        }
    }

    #[test]
    fn a_walk_never_passes_its_limits(
        nodes in 1u64..100,
        bytes in 1u64..1000,
        depth in 1usize..10,
        steps in proptest::collection::vec((0usize..12, 0u64..300), 0..200),
    ) {
        let mut w = Walk::new(WalkLimits { nodes, bytes, depth });
        for (d, b) in steps {
            let _ = w.enter(d);
            let _ = w.spend(b);
            prop_assert!(w.nodes() <= nodes && w.bytes() <= bytes);
        }
    }
}
