//! What the node tests share: a node's config on loopback with short
//! deadlines, a quiet mirror policy, connecting two nodes, a raw peer.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_node::{Budget, MirrorSettings, Node, NodeConfig, SwarmSettings, TestSwitches};

/// A node in `dir` on 127.0.0.1 (a free port), with 5 s deadlines, a
/// 1 GiB query budget and blocks of `block_size`.
pub fn config(dir: &Path, block_size: u32, mirror: MirrorSettings, test: TestSwitches) -> NodeConfig {
    let listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let mut net = SwarmSettings::new(shoal_net::Keypair::generate_ed25519(), listen);
    net.request_timeout = Duration::from_secs(5);
    NodeConfig {
        provider_timeout: Duration::from_secs(5),
        block_timeout: Duration::from_secs(5),
        store_dir: dir.join("store"),
        quota: None,
        cache: Budget::Auto,
        block_size,
        mounts_record: dir.join("mounts"),
        net,
        mount: Default::default(),
        mirror,
        query: shoal_node::QuerySettings::with_memory(1 << 30),
        names: Default::default(),
        limits: Default::default(),
        scrub: shoal_node::ScrubSettings::off(),
        test,
    }
}

/// No mirroring, no gossip: tests not about the policy see none of it.
pub fn quiet() -> MirrorSettings {
    MirrorSettings {
        budget: Budget::Fixed(0),
        every: None,
        ..Default::default()
    }
}

#[path = "wait.rs"]
mod wait;
#[allow(unused_imports)] // not every suite waits
pub use wait::wait_for;

/// Adds the Zarr directory `src` to `node` unnamed; its root.
#[allow(dead_code)] // not every suite adds
pub async fn add(node: &Node, src: std::path::PathBuf) -> shoal_core::Cid {
    node.datasets()
        .add(src, None, shoal_node::no_progress())
        .await
        .unwrap()
        .root
}

/// `b` dials `a`.
pub async fn connect(a: &Node, b: &Node) {
    let addr = a.info().await.unwrap().addrs[0].clone();
    assert_eq!(b.connect(addr).await.unwrap(), a.peer_id());
}

/// A libp2p peer speaking shoal's protocols that is not a shoal node: it
/// serves nothing and answers no compute request.
pub fn raw_peer() -> shoal_net::Client {
    let mut swarm = SwarmSettings::new(
        shoal_net::Keypair::generate_ed25519(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
    );
    swarm.request_timeout = Duration::from_secs(30);
    let cfg = shoal_net::NetConfig {
        swarm,
        serve: std::sync::Arc::new(|_, _, cids| vec![None; cids.len()]),
        compute: std::sync::Arc::new(|_, _| Vec::new()),
        gossip: None,
        names: None,
        catalogue: None,
        gossip_heartbeat: Duration::from_secs(1),
    };
    let (client, event_loop) = shoal_net::EventLoop::new(cfg).unwrap();
    tokio::spawn(event_loop.run());
    client
}

/// A Zarr v3 group's metadata.
pub const GROUP: &str = r#"{"zarr_format":3,"node_type":"group","attributes":{}}"#;

/// A v3 float64 array's metadata: `shape`, `chunk`, `codecs`, `dims`.
pub fn array_meta(shape: &[u64], chunk: &[u64], codecs: serde_json::Value, dims: &[&str]) -> String {
    serde_json::json!({
        "zarr_format": 3, "node_type": "array", "shape": shape, "data_type": "float64",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0, "codecs": codecs, "attributes": {}, "dimension_names": dims,
    })
    .to_string()
}

/// The codec list of uncompressed little-endian values.
pub fn plain_bytes() -> serde_json::Value {
    serde_json::json!([{"name": "bytes", "configuration": {"endian": "little"}}])
}

/// A dataset with a data array `v` (shape [10]) and a weights array `w`
/// whose metadata declares `chunk_shape [2^40]` and whose one chunk is a
/// zstd frame declaring 2^38 decoded bytes.
pub fn hostile_weights(dir: &Path) -> PathBuf {
    let root = dir.join("zb.zarr");
    std::fs::create_dir_all(root.join("v/c")).unwrap();
    std::fs::create_dir_all(root.join("w/c")).unwrap();
    std::fs::write(root.join("zarr.json"), GROUP).unwrap();
    std::fs::write(
        root.join("v/zarr.json"),
        array_meta(&[10], &[10], plain_bytes(), &["x"]),
    )
    .unwrap();
    let v: Vec<u8> = (0..10).flat_map(|i| (i as f64).to_le_bytes()).collect();
    std::fs::write(root.join("v/c/0"), v).unwrap();
    let zstd = serde_json::json!([
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "zstd", "configuration": {"level": 0, "checksum": false}}
    ]);
    std::fs::write(root.join("w/zarr.json"), array_meta(&[10], &[1 << 40], zstd, &["x"])).unwrap();
    // Magic, single-segment with an 8-byte content size of 2^38, then RLE
    // blocks of 128 KiB - 1 each (the last one marked last).
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
    frame.extend_from_slice(&(1u64 << 38).to_le_bytes());
    let rle = |last: bool| -> [u8; 4] {
        let h = (((128 << 10) - 1) << 3) | (1 << 1) | u32::from(last);
        [h as u8, (h >> 8) as u8, (h >> 16) as u8, 0]
    };
    for i in 0..(8 << 20) / 4 - 4 {
        frame.extend_from_slice(&rle(i == (8 << 20) / 4 - 5));
    }
    std::fs::write(root.join("w/c/0"), frame).unwrap();
    root
}

/// A v3 array of shape (40, 40, 2) in chunks of one value: 3,202 keys in
/// 1,643 directories (counting the top).
pub fn many_directories(dir: &Path) -> PathBuf {
    let src = dir.join("many.zarr");
    std::fs::create_dir_all(src.join("t")).unwrap();
    std::fs::write(src.join("zarr.json"), GROUP).unwrap();
    let meta = array_meta(&[40, 40, 2], &[1, 1, 1], plain_bytes(), &["a", "b", "c"]);
    std::fs::write(src.join("t/zarr.json"), meta).unwrap();
    for i in 0..40 {
        for j in 0..40 {
            let d = src.join(format!("t/c/{i}/{j}"));
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..2 {
                std::fs::write(d.join(k.to_string()), ((i * 80 + j * 2 + k) as f64).to_le_bytes()).unwrap();
            }
        }
    }
    src
}
