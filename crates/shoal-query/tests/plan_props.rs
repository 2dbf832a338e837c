//! Array metadata from anywhere (a peer's dataset, a compute request's
//! spec) goes through the planner: shapes and chunk shapes up to 2^63, odd
//! dtypes, up to 40 dimensions. The planner never panics, never plans past
//! its budget without an error, and refuses what no real array has.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use shoal_core::manifest::{Content, Entry};
use shoal_query::storage::ManifestStorage;
use shoal_query::Op;
use shoal_query::{meta, plan, QuerySpec};

/// Interesting sizes: 0, 1, small, around chunk-ish sizes, huge, 2^63.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        2u64..100,
        Just(4000),
        Just(40_000),
        Just(u32::MAX as u64 + 1),
        Just(1 << 40),
        Just(1 << 62),
        Just(1 << 63),
        Just(u64::MAX),
    ]
}

fn dtype(v3: bool) -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = if v3 {
        vec!["float32", "float64", "int8", "uint64", "bool", "complex64", "string"]
    } else {
        vec!["<f4", "<f8", "|i1", "<u8", "|b1", "<c8", "|O"]
    };
    proptest::sample::select(names).prop_map(String::from)
}

fn storage(v3: bool, shape: &[u64], chunks: &[u64], dtype: &str, dims: &[String], codec: &str) -> ManifestStorage {
    let (key, doc) = if v3 {
        let codecs = match codec {
            "shard" => serde_json::json!([{"name": "sharding_indexed", "configuration": {
                "chunk_shape": chunks.iter().map(|c| (c / 2).max(1)).collect::<Vec<_>>(),
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 1}}],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]}}]),
            c => serde_json::json!([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": c}]),
        };
        (
            "a/zarr.json",
            serde_json::json!({"zarr_format": 3, "node_type": "array", "shape": shape, "data_type": dtype,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": 0, "codecs": codecs, "attributes": {}, "dimension_names": dims}),
        )
    } else {
        (
            "a/.zarray",
            serde_json::json!({"zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": dtype,
                "compressor": {"id": codec}, "fill_value": 0, "filters": null, "order": "C"}),
        )
    };
    let mut entries = vec![Entry {
        key: key.into(),
        size: 0,
        content: Content::Inline(Bytes::from(doc.to_string())),
    }];
    if !v3 {
        let attrs = serde_json::json!({"_ARRAY_DIMENSIONS": dims}).to_string();
        entries.push(Entry {
            key: "a/.zattrs".into(),
            size: attrs.len() as u64,
            content: Content::Inline(Bytes::from(attrs)),
        });
    }
    for e in &mut entries {
        if let Content::Inline(b) = &e.content {
            e.size = b.len() as u64;
        }
    }
    ManifestStorage::new(
        entries,
        1 << 20,
        Arc::new(|c| Err(format!("no block {c} in this test"))),
    )
}

/// The generator reaches the planner, not only the metadata checks.
#[test]
fn a_real_array_plans_and_absurd_ones_are_refused() {
    let dims: Vec<String> = vec!["time".into(), "lat".into(), "lon".into()];
    let st = storage(false, &[2, 40_000, 40_000], &[1, 4000, 4000], "<f4", &dims, "zstd");
    let info = meta::array_info(&st, 2, "a", false, &["a".into()], u64::MAX).unwrap();
    assert_eq!(info.chunk_bytes, 4000 * 4000 * 4);
    let spec = |sel: Vec<(String, u64, u64)>| QuerySpec {
        dims: vec!["time".into()],
        sel,
        ..QuerySpec::new("a", Op::Mean)
    };
    // The whole (40000, 40000) result: 1.6e9 cells, 64 GB a worker.
    let plan = plan::plan(info.clone(), &spec(vec![]), 2 << 30).unwrap();
    let e = plan.threads_within(4).unwrap_err().to_string();
    assert!(
        e.contains("query memory budget is 2.0 GiB") && e.contains("--sel"),
        "{e}"
    );
    let sel = vec![("lat".into(), 0, 1000), ("lon".into(), 0, 1000)];
    let plan = plan::plan(info, &spec(sel), 2 << 30).unwrap();
    assert!(plan.threads_within(4).unwrap() >= 1);
    assert_eq!(plan.chunks().collect::<Vec<_>>(), vec![vec![0, 0, 0], vec![1, 0, 0]]);
    for (shape, chunks) in [
        (vec![10u64; 33], vec![1u64; 33]),
        (vec![1 << 63, 1 << 63], vec![1, 1]),
        (vec![10, 10], vec![0, 5]),
        (vec![10, 10], vec![5]),
        (vec![1 << 40, 1 << 40], vec![1 << 40, 1 << 40]),
    ] {
        let d: Vec<String> = (0..shape.len()).map(|i| format!("d{i}")).collect();
        let st = storage(true, &shape, &chunks, "float64", &d, "zstd");
        assert!(
            meta::array_info(&st, 3, "a", false, &[], u64::MAX).is_err(),
            "{shape:?} / {chunks:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_planner_never_panics_and_never_exceeds_its_budget(
        v3 in any::<bool>(),
        ndim in prop_oneof![0usize..5, Just(32usize), Just(33usize), Just(40usize)],
        shape in proptest::collection::vec(size(), 40),
        chunks in proptest::collection::vec(size(), 40),
        dtype_v3 in dtype(true),
        dtype_v2 in dtype(false),
        codec in proptest::sample::select(vec!["zstd", "blosc", "gzip", "shard"]),
        reduce in proptest::collection::vec(any::<bool>(), 40),
        sel in proptest::collection::vec((0usize..40, size(), size()), 0..3),
        budget in prop_oneof![Just(1u64 << 20), Just(1u64 << 30), Just(u64::MAX)],
        op in proptest::sample::select(vec![Op::Mean, Op::Std, Op::Max]),
    ) {
        let (shape, chunks) = (&shape[..ndim], &chunks[..ndim]);
        let dims: Vec<String> = (0..ndim).map(|i| format!("d{i}")).collect();
        let dtype = if v3 { dtype_v3 } else { dtype_v2 };
        let st = storage(v3, shape, chunks, &dtype, &dims, codec);
        let Ok(info) = meta::array_info(&st, if v3 { 3 } else { 2 }, "a", false, &["a".into()], u64::MAX) else {
            return Ok(());
        };
        // What array_info accepts is a real array's metadata, and zarrs
        // opens it without panicking (an error is fine).
        prop_assert!(info.shape.len() <= meta::MAX_DIMS);
        prop_assert!(info.chunk_shape.iter().all(|c| *c > 0));
        let _ = zarrs::array::Array::open(Arc::new(st), "/a");
        let spec = QuerySpec {
            dims: dims.iter().zip(&reduce).filter(|(_, r)| **r).map(|(d, _)| d.clone()).collect(),
            sel: sel.iter().filter(|s| s.0 < ndim).map(|(i, a, b)| (dims[*i].clone(), *a, *b)).collect(),
            ..QuerySpec::new("a", op)
        };
        let Ok(plan) = plan::plan(info, &spec, budget) else {
            return Ok(());
        };
        prop_assert!(plan.cells <= u64::from(u32::MAX));
        prop_assert!(plan.chunk_count <= plan::MAX_PLAN_CHUNKS);
        if let Ok(t) = plan.threads_within(8) {
            prop_assert!(plan.memory(t) <= budget, "{} > {budget}", plan.memory(t));
            // The first few chunks have regions inside the result.
            for c in plan.chunks().take(3) {
                let r = plan.chunk_region(&c).unwrap();
                for ((o, n), full) in r.origin.iter().zip(&r.shape).zip(&plan.out_shape) {
                    prop_assert!(*o as usize + *n <= *full);
                }
            }
        }
        // Chunk indices a peer might send: wrong rank, far outside.
        prop_assert!(plan.chunk_region(&vec![0; ndim + 1]).is_err());
        prop_assert!(plan.chunk_region(&vec![u64::MAX; ndim]).is_err() || ndim == 0);
    }
}

// Fuzzing of the compute wire format (issue 24): a peer's answer, arbitrary
// or a valid one mutated, is checked whole before any partial is used.
proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn compute_answers_from_arbitrary_or_mutated_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cells in 1usize..64,
    ) {
        use shoal_query::wire;
        let spec = shoal_query::QuerySpec::new("a", shoal_query::Op::Std);
        let f = wire::Fields::of(&spec);
        let _ = wire::response_partials(&bytes, cells, 3, f);
        let grid = vec![shoal_query::Partial::EMPTY; cells];
        let header = wire::ComputeHeader { computed: vec![0, 1, 2], ..Default::default() };
        let mut good = wire::encode_response(&header, &grid, f);
        for &(at, v) in &edits {
            if good.is_empty() { break; }
            let i = at % good.len();
            good[i] ^= v.max(1);
        }
        if let Ok((_, pairs)) = wire::response_partials(&good, cells, 3, f) {
            prop_assert!(pairs.iter().all(|(c, _)| *c < cells));
        }
    }
}
