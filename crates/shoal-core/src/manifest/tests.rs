use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn entry(key: &str, size: u64, bs: u32) -> Entry {
    if key::is_metadata(key) {
        return Entry {
            key: key.into(),
            size,
            content: Content::Inline(Bytes::from(vec![b'{'; size as usize])),
        };
    }
    let blocks = (0..chunk::block_count(size, bs))
        .map(|i| *Block::raw(format!("{key}#{i}").into_bytes()).cid())
        .collect();
    Entry {
        key: key.into(),
        size,
        content: Content::Blocks(blocks),
    }
}

fn store(built: &BuiltManifest) -> HashMap<Cid, Block> {
    built.blocks.iter().map(|b| (*b.cid(), b.clone())).collect()
}

/// `got` is the entry `want` was pushed as: the same, or (metadata past
/// the root's inline budget, INLINE_BUDGET_BYTES) spilled into raw blocks
/// holding the same bytes.
fn same_entry(got: &Entry, want: &Entry, blocks: &HashMap<Cid, Block>) -> bool {
    match (&got.content, &want.content) {
        (Content::Blocks(cids), Content::Inline(data)) => {
            let bytes: Vec<u8> = cids.iter().flat_map(|c| blocks[c].data().iter().copied()).collect();
            got.key == want.key && got.size == want.size && bytes == data[..]
        }
        _ => got == want,
    }
}

fn read_all(m: &Manifest, blocks: &HashMap<Cid, Block>) -> Vec<Entry> {
    let mut out = Vec::new();
    m.for_each_entry::<Error>(&mut |c| Ok(blocks.get(c).expect("page present").clone()), &mut |e| {
        out.push(e.clone());
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn small_manifest_is_one_block_with_inline_metadata() {
    let mut b = ManifestBuilder::new(3, 1024);
    for k in ["zarr.json", "t/zarr.json", "t/c/0/0", "t/c/0/1"] {
        b.push(entry(k, 100, 1024)).unwrap();
    }
    let built = b.build().unwrap();
    assert!(built.blocks.is_empty());
    let m = Manifest::decode(&built.root).unwrap();
    assert_eq!(m.metadata.len(), 2);
    assert_eq!(m.key_count, 4);
    assert_eq!(m.total_bytes, 400);
    let keys: Vec<_> = read_all(&m, &HashMap::new()).into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["t/c/0/0", "t/c/0/1", "t/zarr.json", "zarr.json"]);
}

#[test]
fn large_manifest_pages_and_lookups_touch_one_path() {
    let mut b = ManifestBuilder::new(2, 1 << 20).with_page_target(2048);
    let keys: Vec<String> = (0..5000).map(|i| format!("a/{}.{}", i / 100, i % 100)).collect();
    for k in &keys {
        b.push(entry(k, 10, 1 << 20)).unwrap();
    }
    b.push(entry("a/.zarray", 50, 1 << 20)).unwrap();
    let built = b.build().unwrap();
    assert!(built.blocks.len() > 100);
    assert!(built.blocks.iter().all(|b| b.len() <= 4096));
    let blocks = store(&built);
    let m = Manifest::decode(&built.root).unwrap();
    let all = read_all(&m, &blocks);
    assert_eq!(all.len(), 5001);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    let mut fetched = 0;
    let e = m
        .lookup::<Error>("a/17.42", &mut |c| {
            fetched += 1;
            Ok(blocks[c].clone())
        })
        .unwrap()
        .unwrap();
    assert_eq!(e.size, 10);
    assert!(fetched <= MAX_DEPTH, "lookup fetched {fetched} pages");
    assert!(m
        .lookup::<Error>("zzz", &mut |c| Ok(blocks[c].clone()))
        .unwrap()
        .is_none());
    let links = m.all_links::<Error>(&mut |c| Ok(blocks[c].clone())).unwrap();
    assert_eq!(links.len(), 5000 + built.blocks.len());
}

#[test]
fn oversized_metadata_spills_into_blocks() {
    let mut b = ManifestBuilder::new(2, 1 << 20);
    b.push(entry(".zmetadata", (INLINE_MAX_DOC + 1) as u64, 1 << 20))
        .unwrap();
    let built = b.build().unwrap();
    let m = Manifest::decode(&built.root).unwrap();
    assert!(m.metadata.is_empty());
    let e = m
        .lookup::<Error>(".zmetadata", &mut |_| unreachable!())
        .unwrap()
        .unwrap();
    assert_eq!(e.blocks().len(), 1);
    assert_eq!(built.blocks.len(), 1);
}

#[test]
fn duplicate_and_bad_keys_are_refused() {
    let mut b = ManifestBuilder::new(2, 1024);
    b.push(entry("a", 1, 1024)).unwrap();
    b.push(entry("a", 1, 1024)).unwrap();
    assert!(b.build().is_err());
    let mut b = ManifestBuilder::new(2, 1024);
    assert!(b.push(entry("../etc/passwd", 1, 1024)).is_err());
    // In key order: a repeat or a step back is refused at once.
    let mut b = ManifestBuilder::new(2, 1024);
    b.push_sorted(entry("b", 1, 1024)).unwrap();
    let e = b.push_sorted(entry("b", 1, 1024)).unwrap_err();
    assert!(e.to_string().contains("duplicate"), "{e}");
    let e = b.push_sorted(entry("a", 1, 1024)).unwrap_err();
    assert!(e.to_string().contains("out of order"), "{e}");
}

#[test]
fn hostile_roots_are_rejected_without_panic() {
    // Unsorted keys.
    let w = WireRoot {
        b: 1024,
        m: vec![],
        n: 2,
        s: 0,
        t: WireNode {
            c: vec![],
            e: vec![
                WireEntry {
                    b: vec![],
                    i: None,
                    k: "b".into(),
                    s: 0,
                },
                WireEntry {
                    b: vec![],
                    i: None,
                    k: "a".into(),
                    s: 0,
                },
            ],
        },
        v: 1,
        z: 2,
    };
    let blk = Block::dag_cbor(serde_ipld_dagcbor::to_vec(&w).unwrap());
    assert!(matches!(Manifest::decode(&blk), Err(Error::ManifestInvalid { .. })));
    // Path traversal key.
    let w = WireRoot {
        t: WireNode {
            c: vec![],
            e: vec![WireEntry {
                b: vec![],
                i: None,
                k: "../x".into(),
                s: 0,
            }],
        },
        n: 1,
        ..w
    };
    let blk = Block::dag_cbor(serde_ipld_dagcbor::to_vec(&w).unwrap());
    assert!(Manifest::decode(&blk).is_err());
    // Garbage and truncations.
    let good = {
        let mut b = ManifestBuilder::new(3, 1024);
        b.push(entry("zarr.json", 10, 1024)).unwrap();
        b.push(entry("c/0", 3000, 1024)).unwrap();
        b.build().unwrap().root
    };
    for n in 0..good.len() {
        let _ = Manifest::decode(&Block::dag_cbor(good.data().slice(..n)));
    }
    assert!(Manifest::decode(&Block::raw(good.data().clone())).is_err());
}

#[test]
fn the_entries_after_a_key_cross_pages_and_skip_metadata() {
    let mut b = ManifestBuilder::new(2, 1 << 20).with_page_target(1024);
    let keys: Vec<String> = (0..3000).map(|i| format!("a/{:04}", i)).collect();
    for k in &keys {
        b.push(entry(k, 10, 1 << 20)).unwrap();
    }
    b.push(entry("a/.zarray", 10, 1 << 20)).unwrap();
    let built = b.build().unwrap();
    let blocks = store(&built);
    let m = Manifest::decode(&built.root).unwrap();
    assert!(!built.blocks.is_empty());
    let mut read = 0;
    let mut page = |c: &ChildRef| -> Result<Arc<Node>> {
        read += 1;
        Ok(Arc::new(m.decode_page(&blocks[&c.cid], c)?))
    };
    for (from, n) in [
        ("a/0000", 5),
        ("a/0999", 40),
        ("a/2998", 5),
        ("a/2999", 3),
        ("", 2),
        ("a/0100x", 1),
    ] {
        let got: Vec<String> = m
            .after_in(from, n, &mut page)
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        let expect: Vec<String> = keys.iter().filter(|k| k.as_str() > from).take(n).cloned().collect();
        assert_eq!(got, expect, "after {from:?}");
    }
    // Pages on the way only, not the whole tree.
    assert!(read < 60, "{read} pages read");
}

#[test]
fn encoding_is_deterministic() {
    let mk = |order: &[&str]| {
        let mut b = ManifestBuilder::new(3, 1024);
        for k in order {
            b.push(entry(k, 5, 1024)).unwrap();
        }
        *b.build().unwrap().root.cid()
    };
    assert_eq!(mk(&["a", "b", "zarr.json"]), mk(&["zarr.json", "b", "a"]));
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,3}(/[a-z0-9.]{1,4}){0,3}".prop_filter("valid", |k| key::validate(k).is_ok()),
        "[a-z]{1,3}/(zarr\\.json|\\.zarray|\\.zattrs)",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(keys in proptest::collection::btree_set(arb_key(), 0..400), page in 1024usize..8192, sizes in proptest::collection::vec(0u64..5000, 400)) {
        let bs = 1024;
        let mut b = ManifestBuilder::new(3, bs).with_page_target(page);
        let mut expect = Vec::new();
        for (k, s) in keys.iter().zip(sizes.iter()) {
            let e = entry(k, *s, bs);
            expect.push(e.clone());
            b.push(e).unwrap();
        }
        let built = b.build().unwrap();
        // The same entries given in key order, pages taken as they are
        // cut: the same manifest, block for block.
        let mut sorted = ManifestBuilder::new(3, bs).with_page_target(page);
        let mut streamed = Vec::new();
        for e in &expect {
            sorted.push_sorted(e.clone()).unwrap();
            streamed.extend(sorted.take_blocks());
        }
        let again = sorted.build().unwrap();
        streamed.extend(again.blocks);
        prop_assert_eq!(again.root.cid(), built.root.cid());
        let cids = |bs: &[Block]| bs.iter().map(|b| *b.cid()).collect::<std::collections::BTreeSet<_>>();
        prop_assert_eq!(cids(&streamed), cids(&built.blocks));
        let blocks = store(&built);
        let m = Manifest::decode(&built.root).unwrap();
        let got = read_all(&m, &blocks);
        prop_assert_eq!(got.len(), expect.len());
        for (g, e) in got.iter().zip(&expect) {
            prop_assert!(same_entry(g, e, &blocks), "{:?} read back as {:?}", e.key, g);
        }
        for e in &expect {
            let found = m.lookup::<Error>(&e.key, &mut |c| Ok(blocks[c].clone())).unwrap();
            prop_assert!(found.as_ref().is_some_and(|f| same_entry(f, e, &blocks)), "{:?} looked up as {:?}", e.key, found);
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::decode(&Block::dag_cbor(bytes));
    }
}

/// Hostile roots built from the wire structs themselves (past CBOR
/// parsing): any counts and sizes, up to u64::MAX, in entries, children
/// and the root's claims.
fn arb_wire_root() -> impl Strategy<Value = WireRoot> {
    let big = prop_oneof![0u64..4, Just(u64::MAX), Just(u64::MAX / 2 + 1), any::<u64>()];
    let child = (big.clone(), big.clone(), 0u8..4).prop_map(|(n, s, i)| WireChild {
        c: *Block::dag_cbor(vec![i]).cid(),
        f: format!("k{i}a"),
        l: format!("k{i}b"),
        n,
        s,
    });
    let leaf_entry = (0u64..3000, 0u8..50).prop_map(|(s, i)| WireEntry {
        b: (0..crate::chunk::block_count(s, 1024))
            .map(|j| *Block::raw(vec![i, j as u8]).cid())
            .collect(),
        i: None,
        k: format!("c/{i:02}"),
        s,
    });
    (
        proptest::collection::vec(child, 0..4),
        proptest::collection::btree_map(0u8..50, leaf_entry, 0..4),
        big.clone(),
        big,
        any::<bool>(),
    )
        .prop_map(|(mut c, e, n, s, inner)| {
            c.sort_by(|a, b| a.f.cmp(&b.f));
            c.dedup_by(|a, b| a.f == b.f);
            WireRoot {
                b: 1024,
                m: vec![],
                n,
                s,
                t: if inner {
                    WireNode { c, e: vec![] }
                } else {
                    WireNode {
                        c: vec![],
                        e: e.into_values().collect(),
                    }
                },
                v: 1,
                z: 3,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn structured_hostile_roots_never_panic_and_claims_must_add_up(w in arb_wire_root()) {
        let blk = Block::dag_cbor(serde_ipld_dagcbor::to_vec(&w).unwrap());
        if let Ok(m) = Manifest::decode(&blk) {
            let (keys, bytes) = match &m.top {
                Node::Leaf(e) => (e.len() as u64, e.iter().map(|e| e.size).sum::<u64>()),
                Node::Inner(c) => (c.iter().map(|c| c.count).sum(), c.iter().map(|c| c.bytes).sum()),
            };
            prop_assert_eq!(m.key_count, keys);
            prop_assert_eq!(m.total_bytes, bytes);
            // Pages that do not add up to their reference are refused.
            if let Node::Inner(children) = &m.top {
                let page = WireNode { c: vec![], e: vec![WireEntry { b: vec![], i: None, k: children[0].first.clone(), s: 0 }] };
                let pb = Block::dag_cbor(serde_ipld_dagcbor::to_vec(&page).unwrap());
                let honest = children[0].count == 1 && children[0].bytes == 0 && children[0].first == children[0].last;
                prop_assert_eq!(m.decode_page(&pb, &children[0]).is_ok(), honest);
            }
        }
    }
}

#[test]
fn a_root_that_understates_its_size_is_refused() {
    let mut b = ManifestBuilder::new(3, 1024);
    b.push(entry("zarr.json", 10, 1024)).unwrap();
    b.push(entry("c/0", 3000, 1024)).unwrap();
    let root = b.build().unwrap().root;
    let mut w: WireRoot = serde_ipld_dagcbor::from_slice(root.data()).unwrap();
    assert!(Manifest::decode(&root).is_ok());
    w.s = 1;
    let lying = Block::dag_cbor(serde_ipld_dagcbor::to_vec(&w).unwrap());
    let e = Manifest::decode(&lying).unwrap_err().to_string();
    assert!(e.contains("root claims 1 bytes"), "{e}");
}

/// CI found it (proptest, 361 keys, page 5880): metadata past the root's
/// inline budget is spilled into blocks; the round trip compared it with
/// the inline entry it was pushed as. The bytes are the same.
#[test]
fn metadata_past_the_inline_budget_reads_back_from_blocks() {
    let bs = 1024;
    let mut b = ManifestBuilder::new(3, bs);
    let doc = INLINE_MAX_DOC / 2;
    let n = INLINE_BUDGET_BYTES / doc + 2;
    let expect: Vec<Entry> = (0..n)
        .map(|i| entry(&format!("g{i:03}/zarr.json"), doc as u64, bs))
        .collect();
    for e in &expect {
        b.push(e.clone()).unwrap();
    }
    let built = b.build().unwrap();
    let blocks = store(&built);
    let m = Manifest::decode(&built.root).unwrap();
    let got = read_all(&m, &blocks);
    assert_eq!(got.len(), n);
    assert!(
        got.iter().any(|g| matches!(g.content, Content::Blocks(_))),
        "nothing spilled"
    );
    for (g, e) in got.iter().zip(&expect) {
        assert!(same_entry(g, e, &blocks), "{}", e.key);
    }
}
