//! What the node tests share: a node's config on loopback with short
//! deadlines, a quiet mirror policy, connecting two nodes, a raw peer.
#![allow(dead_code)]

use std::path::Path;
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
        block_size,
        mounts_record: dir.join("mounts"),
        net,
        mount: Default::default(),
        mirror,
        query: shoal_node::QuerySettings::with_memory(1 << 30),
        names: Default::default(),
        limits: Default::default(),
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
