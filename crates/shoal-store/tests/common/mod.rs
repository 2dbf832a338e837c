//! Helpers shared by the store tests: small datasets built from real
//! manifests, and a byte-flipper for corruption tests.
#![allow(dead_code)]

use bytes::Bytes;
use shoal_core::manifest::{Content, Entry, ManifestBuilder};
use shoal_core::{chunk, Block, Cid};
use shoal_store::{Session, Store};

/// A dataset: a manifest root plus all its blocks.
pub struct Dataset {
    pub root: Block,
    pub blocks: Vec<Block>,
}

impl Dataset {
    pub fn all(&self) -> Vec<Block> {
        let mut v = self.blocks.clone();
        v.push(self.root.clone());
        v
    }
    pub fn root(&self) -> Cid {
        *self.root.cid()
    }
    pub fn bytes(&self) -> u64 {
        self.all().iter().map(|b| b.len() as u64).sum()
    }
}

/// Builds a dataset of `files` keys with the given sizes; `seed` varies the
/// content so different seeds share no blocks.
pub fn dataset(seed: u64, sizes: &[usize], block_size: u32) -> Dataset {
    let mut b = ManifestBuilder::new(3, block_size);
    let mut blocks = Vec::new();
    b.push(Entry {
        key: "zarr.json".into(),
        size: 2,
        content: Content::Inline(Bytes::from_static(b"{}")),
    })
    .unwrap();
    for (i, size) in sizes.iter().enumerate() {
        // blake3 XOF output: unique per (seed, file), so no two blocks of
        // any test dataset collide and byte totals are exact.
        let mut data = vec![0u8; *size];
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes()).update(&(i as u64).to_le_bytes());
        h.finalize_xof().fill(&mut data);
        let mut cids = Vec::new();
        for (s, e) in chunk::block_ranges(*size as u64, block_size) {
            let blk = Block::raw(Bytes::copy_from_slice(&data[s as usize..e as usize]));
            cids.push(*blk.cid());
            blocks.push(blk);
        }
        b.push(Entry {
            key: format!("a/c/{i}"),
            size: *size as u64,
            content: Content::Blocks(cids),
        })
        .unwrap();
    }
    let built = b.build().unwrap();
    blocks.extend(built.blocks);
    Dataset {
        root: built.root,
        blocks,
    }
}

pub fn put(store: &Store, ds: &Dataset, session: Option<&Session>) {
    store.put_many(&ds.all(), session).unwrap();
}

/// Flips one byte of a stored block on disk.
pub fn flip_byte(store: &Store, cid: &Cid) {
    use std::os::unix::fs::FileExt;
    let (path, offset, _len) = store.locate(cid).unwrap().unwrap();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}
