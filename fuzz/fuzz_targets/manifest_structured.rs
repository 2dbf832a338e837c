//! Structure-aware manifest fuzzing: build a real (paged) manifest from
//! arbitrary keys and sizes, then mutate a few bytes of its root or one of
//! its pages and decode and walk the result. Most of each input stays valid
//! CBOR, so the fuzzer reaches the count, size, range and depth checks that
//! random bytes rarely get past. Run: `cargo +nightly fuzz run manifest_structured`.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shoal_core::manifest::{Content, Entry, Manifest, ManifestBuilder};
use shoal_core::{chunk, Block, Cid};

#[derive(Debug, Arbitrary)]
struct Input {
    /// key index -> size (keys are generated valid; sizes are arbitrary).
    keys: BTreeMap<u16, u32>,
    page_target: u16,
    /// Which block to mutate (root = 0), and (offset, xor) pairs.
    target: u8,
    mutations: Vec<(u16, u8)>,
}

fuzz_target!(|input: Input| {
    let bs = 1024;
    let mut b = ManifestBuilder::new(3, bs).with_page_target(usize::from(input.page_target).max(256));
    let meta = Bytes::from_static(br#"{"zarr_format":3,"node_type":"group"}"#);
    let _ = b.push(Entry {
        key: "zarr.json".into(),
        size: meta.len() as u64,
        content: Content::Inline(meta),
    });
    for (k, size) in input.keys.iter().take(2000) {
        let size = u64::from(*size % 100_000);
        let cids = (0..chunk::block_count(size, bs)).map(|i| *Block::raw(vec![(i % 251) as u8, *k as u8]).cid()).collect();
        let _ = b.push(Entry {
            key: format!("a/c/{}/{}", k / 100, k % 100),
            size,
            content: Content::Blocks(cids),
        });
    }
    let Ok(built) = b.build() else { return };
    let mut blocks: Vec<Block> = std::iter::once(built.root.clone()).chain(built.blocks.iter().cloned()).collect();
    let i = usize::from(input.target) % blocks.len();
    let mut data = blocks[i].data().to_vec();
    for (off, x) in input.mutations.iter().take(16) {
        if !data.is_empty() {
            let at = usize::from(*off) % data.len();
            data[at] ^= x;
        }
    }
    // The mutated block is served under the original CID (as a peer that
    // lies would, were it not verified) to reach page validation.
    let original = *blocks[i].cid();
    blocks[i] = Block::dag_cbor(data);
    let by_cid: HashMap<Cid, Block> = blocks
        .iter()
        .enumerate()
        .map(|(j, b)| (if j == i { original } else { *b.cid() }, b.clone()))
        .collect();
    let root = by_cid[built.root.cid()].clone();
    let Ok(m) = Manifest::decode(&root) else { return };
    let mut fetch = |c: &Cid| -> Result<Block, shoal_core::Error> {
        by_cid.get(c).cloned().ok_or(shoal_core::Error::ManifestEncode("absent".into()))
    };
    let _ = m.all_links(&mut fetch);
    let _ = m.entries(&mut fetch);
    let _ = m.lookup("a/c/1/1", &mut fetch);
});
