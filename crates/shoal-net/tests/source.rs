//! The block source stores what it fetched behind the reader: a reader has
//! verified bytes at once, the store holds them once the write-behind has
//! settled, and a store that cannot take them (over its quota) costs the
//! reader nothing.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal_core::{Block, Cid};
use shoal_net::{BlockSource, FetchOptions, Fetcher, ServeFn};
use shoal_store::{Store, StoreOptions};
use support::{listening, serves_nothing, swarm};

/// `n` blocks of 1 MiB, each different.
fn blocks(n: u32) -> Vec<Block> {
    (0..n)
        .map(|i| {
            let mut data = vec![0u8; 1 << 20];
            blake3::Hasher::new()
                .update(&i.to_le_bytes())
                .finalize_xof()
                .fill(&mut data);
            Block::raw(Bytes::from(data))
        })
        .collect()
}

/// What a test holds: the block source, its store, the root, and what must
/// live as long as they do (the provider's swarm, the store directory).
type Setup = (BlockSource, Arc<Store>, Cid, (shoal_net::Client, tempfile::TempDir));

/// A provider of `blocks` under a made-up root, and a block source with an
/// empty store (`quota`) connected to it.
async fn source(blocks: &[Block], quota: Option<u64>) -> Setup {
    let by_cid: Arc<HashMap<Cid, Block>> = Arc::new(blocks.iter().map(|b| (*b.cid(), b.clone())).collect());
    let serve: ServeFn =
        Arc::new(move |_, _, cids| cids.iter().map(|c| by_cid.get(c).map(|b| b.data().clone())).collect());
    let provider = swarm(serve);
    let root = *Block::dag_cbor(b"a dataset".to_vec()).cid();
    provider.provide(root).await.unwrap();
    let net = swarm(serves_nothing());
    net.dial(listening(&provider).await).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            dir.path(),
            StoreOptions {
                quota,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let fetcher = Fetcher {
        net,
        store: store.clone(),
        opts: FetchOptions::default(),
    };
    (BlockSource::new(fetcher), store, root, (provider, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_blocks_reach_the_store_behind_the_readers() {
    let want = blocks(24);
    let (src, store, root, _dir) = source(&want, None).await;
    let src = Arc::new(src);
    let got = futures::future::join_all(want.iter().map(|b| {
        let (src, cid) = (src.clone(), *b.cid());
        async move { tokio::time::timeout(Duration::from_secs(30), src.get(cid, root)).await }
    }))
    .await;
    for (b, g) in want.iter().zip(got) {
        assert_eq!(g.expect("bounded").expect("fetched").data(), b.data());
    }
    src.settle(Duration::from_secs(10)).await;
    for b in &want {
        assert!(store.has(b.cid()).unwrap(), "{} not stored", b.cid());
    }
    // Stored in batches, not one by one, and read back locally now.
    assert_eq!(src.stats().fetched.load(std::sync::atomic::Ordering::Relaxed), 24);
    let again = src.get(*want[3].cid(), root).await.unwrap();
    assert_eq!(again.data(), want[3].data());
    assert_eq!(src.stats().fetched.load(std::sync::atomic::Ordering::Relaxed), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_take_them_costs_the_readers_nothing() {
    let want = blocks(4);
    // A quota below one block: every write-behind batch is refused.
    let (src, store, root, _dir) = source(&want, Some(512 << 10)).await;
    for b in &want {
        let got = tokio::time::timeout(Duration::from_secs(30), src.get(*b.cid(), root))
            .await
            .expect("bounded")
            .expect("the reader has its block");
        assert_eq!(got.data(), b.data());
    }
    src.settle(Duration::from_secs(10)).await;
    for b in &want {
        assert!(!store.has(b.cid()).unwrap());
    }
    // Nothing stuck: the next read fetches again and succeeds.
    let again = src.get(*want[0].cid(), root).await.unwrap();
    assert_eq!(again.data(), want[0].data());
}
