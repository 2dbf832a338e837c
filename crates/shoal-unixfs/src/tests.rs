use std::collections::HashMap;

use bytes::Bytes;
use shoal_core::cid::{self, RAW};
use shoal_core::manifest::{Content, Entry};

use super::*;

#[test]
fn murmur3_matches_the_reference() {
    // Reference values from the C implementation (Python mmh3.hash64).
    assert_eq!(murmur3_x64_64(b""), 0);
    assert_eq!(murmur3_x64_64(b"hello"), 0xcbd8_a7b3_41bd_9b02);
    assert_eq!(murmur3_x64_64(b"0.123"), 0x48d5_5d91_915c_5162);
    assert_eq!(murmur3_x64_64(&[b'a'; 31]), 0x6c7e_a977_c252_d3f1);
    assert_eq!(murmur3_x64_64(b"abcdefghijklmnopq"), 0x7564_747f_88bd_a657);
}

fn raw(data: &[u8]) -> Cid {
    cid::cid_of(RAW, data)
}

fn entry(key: &str, content: Content, size: u64) -> Entry {
    Entry {
        key: key.into(),
        size,
        content,
    }
}

/// Builds a view into a map; returns the root and the blocks.
fn build(entries: &[Entry], block_size: u32) -> (Cid, HashMap<Cid, Vec<u8>>) {
    let mut blocks = HashMap::new();
    let root = {
        let mut put = |c: Cid, b: Vec<u8>| -> Result<()> {
            cid::verify(&c, &b).unwrap();
            blocks.insert(c, b);
            Ok(())
        };
        let mut v = ViewBuilder::new(block_size, &mut put);
        for e in entries {
            v.add(e).unwrap();
        }
        v.finish().unwrap()
    };
    (root, blocks)
}

#[test]
fn a_view_mirrors_the_keys_with_the_datasets_own_blocks() {
    let (a, b, c) = (raw(b"aaaa"), raw(b"bb"), raw(b"c"));
    let entries = vec![
        entry(
            ".zgroup",
            Content::Inline(Bytes::from_static(b"{\"zarr_format\": 2}")),
            18,
        ),
        entry("x/.zarray", Content::Inline(Bytes::from_static(b"{}")), 2),
        entry("x/0.0", Content::Blocks(vec![a, b]), 6),
        entry("x/0.1", Content::Blocks(vec![c]), 1),
        entry("y/z/0", Content::Blocks(vec![c]), 1),
    ];
    let (root, blocks) = build(&entries, 4);
    assert_eq!(root.codec(), cid::DAG_PB);
    let mut get = |c: &Cid| blocks.get(c).cloned().ok_or(Error::Missing(*c));
    // A one-block key is its raw block; inline metadata a new raw block.
    let path = resolve(root, &["x", "0.1"], &mut get).unwrap();
    assert_eq!(*path.last().unwrap(), c);
    let zg = *resolve(root, &[".zgroup"], &mut get).unwrap().last().unwrap();
    assert_eq!(blocks[&zg], b"{\"zarr_format\": 2}");
    // A two-block key: a File node over the two blocks, sizes 4 and 2.
    let f = *resolve(root, &["x", "0.0"], &mut get).unwrap().last().unwrap();
    let node = pb::decode_node(&blocks[&f]).unwrap();
    assert_eq!(node.links.iter().map(|l| l.cid).collect::<Vec<_>>(), [a, b]);
    let fs = pb::UnixFs::decode(&node.data).unwrap();
    assert_eq!(
        (fs.kind, fs.filesize, fs.blocksizes.clone()),
        (pb::FILE, Some(6), vec![4, 2])
    );
    assert_eq!(resolve(root, &["y", "z", "0"], &mut get).unwrap().len(), 4);
    assert!(matches!(
        resolve(root, &["x", "nope"], &mut get),
        Err(Error::NotFound(_))
    ));
    // Deterministic: the same entries, the same root.
    assert_eq!(build(&entries, 4).0, root);
    // Links of the root: the sorted children.
    let names: Vec<String> = pb::decode_node(&blocks[&root])
        .unwrap()
        .links
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, [".zgroup", "x", "y"]);
}

#[test]
fn a_large_directory_is_a_hamt_every_name_resolves_through() {
    let n: u64 = 10_000;
    let mut entries: Vec<Entry> = (0..n)
        .map(|i| entry(&format!("x/{i}.0"), Content::Blocks(vec![raw(&i.to_le_bytes())]), 8))
        .collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let (root, blocks) = build(&entries, 1 << 20);
    let mut get = |c: &Cid| blocks.get(c).cloned().ok_or(Error::Missing(*c));
    let x = resolve(root, &["x"], &mut get).unwrap()[1];
    let top = pb::decode_node(&blocks[&x]).unwrap();
    let fs = pb::UnixFs::decode(&top.data).unwrap();
    assert_eq!(
        (fs.kind, fs.fanout, fs.hash_type),
        (pb::HAMT_SHARD, Some(256), Some(0x22))
    );
    assert!(top
        .links
        .iter()
        .all(|l| l.name.len() >= 2 && l.name[..2].chars().all(|c| c.is_ascii_hexdigit())));
    for i in (0..n).step_by(97) {
        let got = *resolve(root, &["x", &format!("{i}.0")], &mut get)
            .unwrap()
            .last()
            .unwrap();
        assert_eq!(got, raw(&i.to_le_bytes()));
    }
    assert!(resolve(root, &["x", "nope"], &mut get).is_err());
    // Every block the view made is reachable from its root by links.
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![root];
    while let Some(c) = todo.pop() {
        if seen.insert(c) {
            if let Some(b) = blocks.get(&c) {
                todo.extend(links(&c, b).unwrap());
            }
        }
    }
    assert!(blocks.keys().all(|c| seen.contains(c)));
}

#[test]
fn out_of_order_keys_and_file_directory_clashes_are_refused() {
    let c = raw(b"c");
    let mut put = |_: Cid, _: Vec<u8>| -> Result<()> { Ok(()) };
    let mut v = ViewBuilder::new(4, &mut put);
    v.add(&entry("b", Content::Blocks(vec![c]), 1)).unwrap();
    assert!(v.add(&entry("a", Content::Blocks(vec![c]), 1)).is_err());
    let mut put = |_: Cid, _: Vec<u8>| -> Result<()> { Ok(()) };
    let mut v = ViewBuilder::new(4, &mut put);
    v.add(&entry("a", Content::Blocks(vec![c]), 1)).unwrap();
    v.add(&entry("a/b", Content::Blocks(vec![c]), 1)).unwrap();
    assert!(v.finish().is_err());
    // A key whose size does not fit its blocks.
    let mut put = |_: Cid, _: Vec<u8>| -> Result<()> { Ok(()) };
    let mut v = ViewBuilder::new(4, &mut put);
    assert!(v.add(&entry("a", Content::Blocks(vec![c, c]), 100)).is_err());
}

#[test]
fn a_car_round_trips_and_truncation_is_an_error() {
    let root = raw(b"root");
    let mut car = car::header(&[root]);
    car.extend(car::section(&root, b"root"));
    let other = raw(b"other");
    car.extend(car::section(&other, b"other"));
    let mut r = car::Reader::new(&car[..]).unwrap();
    assert_eq!(r.roots, vec![root]);
    assert_eq!(r.next_block().unwrap(), Some((root, b"root".to_vec())));
    assert_eq!(r.next_block().unwrap(), Some((other, b"other".to_vec())));
    assert_eq!(r.next_block().unwrap(), None);
    let cut = &car[..car.len() - 2];
    let mut r = car::Reader::new(cut).unwrap();
    r.next_block().unwrap();
    assert!(r.next_block().is_err());
    assert!(car::Reader::new(&b"garbage"[..]).is_err());
    assert!(car::Reader::new(&b""[..]).is_err());
}

/// kubo writes CIDv0 (dag-pb, sha2-256) for directories and files unless
/// given `--cid-version 1`: such a section is a bare multihash, no version.
#[test]
fn a_car_with_v0_cids_reads() {
    let dir = crate::ipfs::cid_for(0, DAG_PB, crate::ipfs::SHA2_256, b"dir").unwrap();
    let leaf = crate::ipfs::cid_for(1, RAW, crate::ipfs::SHA2_256, b"leaf").unwrap();
    let mut car = car::header(&[dir]);
    car.extend(car::section(&dir, b"dir"));
    car.extend(car::section(&leaf, b"leaf"));
    let mut r = car::Reader::new(&car[..]).unwrap();
    assert_eq!(r.roots, vec![dir]);
    assert_eq!(r.next_block().unwrap(), Some((dir, b"dir".to_vec())));
    assert_eq!(r.next_block().unwrap(), Some((leaf, b"leaf".to_vec())));
    assert_eq!(r.next_block().unwrap(), None);
}

/// Issue 24: a 0-byte file (a `.done` marker) made the view fail with
/// "0 bytes in 0 blocks", and with it the whole add.
#[test]
fn regression_24_an_empty_file_has_an_empty_file_node() {
    let entries = vec![
        entry(".done", Content::Blocks(Vec::new()), 0),
        entry("zarr.json", Content::Inline(Bytes::from_static(b"{}")), 2),
    ];
    let (root, blocks) = build(&entries, 4);
    let mut get = |c: &Cid| blocks.get(c).cloned().ok_or(Error::Missing(*c));
    let path = resolve(root, &[".done"], &mut get).unwrap();
    let file = path[1];
    let node = file_node(&file, &blocks[&file]).unwrap().expect("a file node");
    assert!(node.data.is_empty() && node.links.is_empty());
}

/// Issue 24 finding 8: `&name[2..]` on an untrusted shard link name that
/// has a multi-byte character at byte 1 panicked.
#[test]
fn regression_24_a_shard_link_name_split_inside_a_character_is_malformed_not_a_panic() {
    let c = raw(b"x");
    for name in ["é", "aé", "\u{1F600}x", "zz"] {
        let l = Link {
            cid: c,
            name: name.into(),
            tsize: 1,
        };
        assert!(shard_entry(&l).is_err(), "{name:?}");
    }
    let node = pb::encode_node(
        &[Link {
            cid: c,
            name: "é".into(),
            tsize: 1,
        }],
        &pb::UnixFs {
            kind: pb::HAMT_SHARD,
            fanout: Some(256),
            ..Default::default()
        }
        .encode(),
    );
    assert!(dir_links(&node).is_err());
    assert!(step(&node, "anything", 0).is_err() || step(&node, "anything", 0).unwrap() == Step::Absent);
    let ok = Link {
        cid: c,
        name: "0Aname".into(),
        tsize: 1,
    };
    assert_eq!(shard_entry(&ok).unwrap(), Some("name"));
}
