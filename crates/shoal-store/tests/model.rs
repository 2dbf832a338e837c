//! Property test: the store against an in-memory reference model.
//!
//! Operations: put a dataset, get a block, pin, unpin, gc, reopen. Datasets
//! overlap (dataset k holds files k, k+1, k+2) so GC must respect blocks
//! shared between a pinned and an unpinned dataset. The model tracks which
//! blocks must be present, which may be present (unpinned, not yet GC'd), and
//! which must be absent (GC'd and unreferenced).

mod common;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use proptest::prelude::*;
use shoal_core::manifest::{Content, Entry, ManifestBuilder};
use shoal_core::{Block, Cid};
use shoal_store::{PinKind, Store, StoreOptions};

const DATASETS: usize = 5;

fn file_block(f: usize) -> Block {
    let mut data = vec![0u8; 700 + f * 13];
    blake3::Hasher::new()
        .update(&(f as u64).to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    Block::raw(Bytes::from(data))
}

struct Ds {
    root: Block,
    blocks: Vec<Block>,
}

fn datasets() -> Vec<Ds> {
    (0..DATASETS)
        .map(|k| {
            let mut b = ManifestBuilder::new(2, 1024);
            let blocks: Vec<Block> = (k..k + 3).map(file_block).collect();
            for (i, blk) in blocks.iter().enumerate() {
                b.push(Entry {
                    key: format!("x/{i}"),
                    size: blk.len() as u64,
                    content: Content::Blocks(vec![*blk.cid()]),
                })
                .unwrap();
            }
            Ds {
                root: b.build().unwrap().root,
                blocks,
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    Get(usize),
    Pin(usize),
    Unpin(usize),
    Gc,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..DATASETS).prop_map(Op::Put),
        3 => (0..DATASETS + 2).prop_map(Op::Get),
        2 => (0..DATASETS).prop_map(Op::Pin),
        2 => (0..DATASETS).prop_map(Op::Unpin),
        1 => Just(Op::Gc),
        1 => Just(Op::Reopen),
    ]
}

struct Model {
    /// Blocks the store holds for sure or may hold.
    stored: HashMap<Cid, Bytes>,
    pinned: HashSet<usize>,
}

fn run(ops: Vec<Op>) {
    let ds = datasets();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut m = Model {
        stored: HashMap::new(),
        pinned: HashSet::new(),
    };
    let all_of = |d: &Ds| -> Vec<Block> {
        let mut v = d.blocks.clone();
        v.push(d.root.clone());
        v
    };
    for op in ops {
        match op {
            Op::Put(i) => {
                store.put_many(&all_of(&ds[i]), None).unwrap();
                for b in all_of(&ds[i]) {
                    m.stored.insert(*b.cid(), b.data().clone());
                }
            }
            Op::Get(f) => {
                let b = file_block(f);
                let got = store.get(b.cid()).unwrap();
                match m.stored.get(b.cid()) {
                    Some(bytes) => assert_eq!(got.map(|g| g.data().clone()).as_ref(), Some(bytes)),
                    None => assert!(got.is_none()),
                }
            }
            Op::Pin(i) => {
                let complete = all_of(&ds[i]).iter().all(|b| m.stored.contains_key(b.cid()));
                let res = store.pin(ds[i].root.cid(), PinKind::User);
                assert_eq!(res.is_ok(), complete, "{res:?}");
                if complete {
                    m.pinned.insert(i);
                }
            }
            Op::Unpin(i) => {
                let was = store.unpin(ds[i].root.cid(), PinKind::User).unwrap();
                assert_eq!(was, m.pinned.remove(&i));
            }
            Op::Gc => {
                store.gc().unwrap();
                let live: HashSet<Cid> = m
                    .pinned
                    .iter()
                    .flat_map(|i| all_of(&ds[*i]))
                    .map(|b| *b.cid())
                    .collect();
                m.stored.retain(|c, _| live.contains(c));
                let mut actual: Vec<Cid> = store.all_cids().unwrap();
                actual.sort();
                let mut expect: Vec<Cid> = m.stored.keys().copied().collect();
                expect.sort();
                assert_eq!(actual, expect);
            }
            Op::Reopen => {
                drop(store);
                store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            }
        }
        for i in &m.pinned {
            assert!(store.missing_blocks(ds[*i].root.cid()).unwrap().is_empty());
        }
    }
    assert!(store.fsck(false).unwrap().is_clean());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops);
    }
}

/// Named case for the interaction the model exists for: GC after unpinning one of two
/// overlapping datasets must keep the blocks the pinned one shares.
#[test]
fn regression_shared_blocks_survive_gc_of_the_overlapping_dataset() {
    run(vec![
        Op::Put(0),
        Op::Put(1),
        Op::Pin(0),
        Op::Pin(1),
        Op::Unpin(0),
        Op::Gc,
        Op::Reopen,
        Op::Get(1),
        Op::Get(2),
        Op::Gc,
    ]);
}
