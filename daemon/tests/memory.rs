//! Bounded memory: no query, compute request or hostile chunk can make a
//! daemon allocate what its input claims. Each test checks the answer, that
//! the daemon still serves, and its resident memory.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use shoal_query::wire::{ComputeHeader, ComputeRequest};
use shoal_query::{Op, QuerySpec};

const MIB: u64 = 1 << 20;

fn write_json(p: &Path, v: serde_json::Value) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, v.to_string()).unwrap();
}

/// A (2, 40000, 40000) float32 array in (1, 4000, 4000) chunks with only
/// chunk (0, 0, 0) written (64 MB): its value at (lat, lon) is
/// `(7 lat + lon) % 1000`; the rest is the NaN fill value.
fn sparse_huge(dir: &Path) {
    write_json(&dir.join(".zgroup"), serde_json::json!({"zarr_format": 2}));
    write_json(
        &dir.join("x/.zarray"),
        serde_json::json!({"zarr_format": 2, "shape": [2, 40000, 40000], "chunks": [1, 4000, 4000],
            "dtype": "<f4", "compressor": null, "fill_value": "NaN", "filters": null, "order": "C"}),
    );
    write_json(
        &dir.join("x/.zattrs"),
        serde_json::json!({"_ARRAY_DIMENSIONS": ["time", "lat", "lon"]}),
    );
    let mut data = Vec::with_capacity(4000 * 4000 * 4);
    for r in 0..4000u32 {
        for c in 0..4000u32 {
            data.extend_from_slice(&(((7 * r + c) % 1000) as f32).to_le_bytes());
        }
    }
    std::fs::write(dir.join("x/0.0.0"), data).unwrap();
}

fn header(answer: &[u8]) -> ComputeHeader {
    assert!(!answer.is_empty(), "busy answer");
    let n = u32::from_le_bytes(answer[..4].try_into().unwrap()) as usize;
    serde_json::from_slice(&answer[4..4 + n]).unwrap()
}

fn mean(array: &str, dims: Vec<String>, sel: Vec<(String, u64, u64)>) -> QuerySpec {
    QuerySpec {
        dims,
        sel,
        ..QuerySpec::new(array, Op::Mean)
    }
}

#[test]
fn queries_and_compute_requests_over_the_memory_budget_are_refused_and_the_daemon_lives() {
    let d = Daemon::start_opts(Opts {
        query: "memory = \"2GiB\"".into(),
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    sparse_huge(&work.path().join("huge"));
    let root = d.add(&work.path().join("huge"), Some("huge"));
    let rss0 = d.rss();

    // The whole result would be 1.6e9 cells: refused before allocating.
    let out = d.cli(&["query", "huge", "x", "--op", "mean", "--dim", "time"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("query memory budget is 2.0 GiB") && err.contains("--sel") && err.contains("[query] memory"),
        "{err}"
    );
    let after = d.rss();
    assert!(after < rss0 + 64 * MIB, "RSS grew from {rss0} to {after}");
    d.json(&["id"]);

    // A selection that fits runs on the same array.
    let r = d.json(&[
        "query",
        "huge",
        "x",
        "--op",
        "mean",
        "--dim",
        "time",
        "--isel",
        "lat=0:1000",
        "--isel",
        "lon=0:1000",
    ]);
    assert_eq!(r["shape"], serde_json::json!([1000, 1000]));
    for (lat, lon) in [(0usize, 0usize), (3, 999), (999, 1)] {
        let want = ((7 * lat + lon) % 1000) as f64;
        assert_eq!(r["values"][lat * 1000 + lon].as_f64(), Some(want), "({lat}, {lon})");
    }

    // A raw libp2p peer asks for huge outputs and malformed plans.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw = raw_peer(&rt);
    let peer = rt.block_on(raw.dial(d.addr().parse().unwrap())).unwrap();
    let ask = |spec: QuerySpec, chunks: Vec<Vec<u64>>| {
        let body = serde_json::to_vec(&ComputeRequest {
            root: root.clone(),
            spec,
            chunks,
        })
        .unwrap();
        header(&rt.block_on(raw.compute(peer, body, Duration::from_secs(60))).unwrap())
    };
    let time = || vec!["time".to_string()];
    let rss1 = d.rss();
    let cases: Vec<(QuerySpec, Vec<Vec<u64>>, &str)> = vec![
        // One chunk's region is 16M cells (640 MB of partials).
        (mean("x", time(), vec![]), vec![vec![0, 0, 0]], "allows"),
        (
            mean("x", time(), vec![]),
            (0..64).map(|i| vec![1, i / 10, i % 10]).collect(),
            "allows",
        ),
        (
            mean("x", (0..10_000).map(|i| format!("d{i}")).collect(), vec![]),
            vec![vec![0, 0, 0]],
            "more than 32",
        ),
        (mean("x", time(), vec![]), vec![vec![0; 10_000]], "dimensions"),
        (
            mean("x", time(), vec![]),
            vec![vec![0, 1 << 63, 0]],
            "outside the selection",
        ),
        (
            mean("x", vec!["nope".into()], vec![]),
            vec![vec![0, 0, 0]],
            "no dimension",
        ),
        (
            mean("x", time(), vec![("lat".into(), 0, u64::MAX)]),
            vec![vec![0, 0, 0]],
            "outside 0:40000",
        ),
        (mean("nope", time(), vec![]), vec![vec![0, 0, 0]], "no array"),
    ];
    for (spec, chunks, want) in cases {
        let h = ask(spec, chunks);
        let e = h
            .error
            .unwrap_or_else(|| panic!("no error answer for a request that should fail ({want})"));
        assert!(e.contains(want), "{e}");
    }
    let rss2 = d.rss();
    assert!(
        rss2 < rss1 + 64 * MIB,
        "refused requests grew RSS from {rss1} to {rss2}"
    );
    let stats = d.json(&["stats"]);
    assert!(stats["compute_refused"].as_u64().unwrap() >= 2, "{stats}");
    // A request that fits is computed.
    let sel = vec![("lat".into(), 0, 100), ("lon".into(), 0, 100)];
    let h = ask(mean("x", time(), sel), vec![vec![0, 0, 0], vec![1, 0, 0]]);
    assert_eq!((h.error, h.computed), (None, vec![0, 1]));
    d.json(&["id"]);
}

/// `len` bytes of zeros as one zstd frame (a few KiB), with or without the
/// content size in its header.
fn zstd_bomb(len: u64, declare: bool) -> Vec<u8> {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    enc.include_contentsize(declare).unwrap();
    if declare {
        enc.set_pledged_src_size(Some(len)).unwrap();
    }
    let zeros = vec![0u8; MIB as usize];
    for _ in 0..len / MIB {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    enc.finish().unwrap()
}

#[test]
fn a_chunk_that_decodes_past_its_shape_is_refused_before_decoding() {
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    // (100, 100) float64 chunks are 80,000 bytes; each chunk here is a
    // small zstd stream of 256 MiB of zeros.
    let v2 = work.path().join("v2");
    write_json(&v2.join(".zgroup"), serde_json::json!({"zarr_format": 2}));
    write_json(
        &v2.join("x/.zarray"),
        serde_json::json!({"zarr_format": 2, "shape": [100, 100], "chunks": [100, 100], "dtype": "<f8",
            "compressor": {"id": "zstd", "level": 1}, "fill_value": 0.0, "filters": null, "order": "C"}),
    );
    std::fs::write(v2.join("x/0.0"), zstd_bomb(256 * MIB, true)).unwrap();
    let v3 = work.path().join("v3");
    write_json(
        &v3.join("zarr.json"),
        serde_json::json!({"zarr_format": 3, "node_type": "group"}),
    );
    write_json(
        &v3.join("x/zarr.json"),
        serde_json::json!({"zarr_format": 3, "node_type": "array", "shape": [100, 100], "data_type": "float64",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [100, 100]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0.0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 1, "checksum": false}}],
            "attributes": {}, "dimension_names": ["y", "x"]}),
    );
    std::fs::create_dir_all(v3.join("x/c/0")).unwrap();
    std::fs::write(v3.join("x/c/0/0"), zstd_bomb(256 * MIB, false)).unwrap();
    d.add(&v2, Some("v2"));
    d.add(&v3, Some("v3"));
    let rss0 = d.rss();
    for (name, key) in [("v2", "x/0.0"), ("v3", "x/c/0/0")] {
        let out = d.cli(&["query", name, "x", "--op", "sum"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("chunk {key} declares")) && err.contains("80000"),
            "{err}"
        );
    }
    let after = d.rss();
    assert!(after < rss0 + 32 * MIB, "RSS grew from {rss0} to {after}");
    d.json(&["id"]);
}
