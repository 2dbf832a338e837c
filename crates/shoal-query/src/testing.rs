//! Test arrays for the planner, kernel and executor tests: a small Zarr
//! v2 float32 array held in a manifest (its chunks inline, uncompressed),
//! with the values given and CF attributes as asked.

use std::sync::Arc;

use bytes::Bytes;
use shoal_core::manifest::{Content, Entry};
use zarrs::array::Array;

use crate::meta::{self, ArrayInfo};
use crate::storage::ManifestStorage;

/// Array `a`: `shape`, chunked by `chunks`, dimensions `dims`, the values
/// row-major, `attrs` beside `_ARRAY_DIMENSIONS`. Chunks listed in
/// `missing` are in the manifest as blocks nobody can fetch.
pub(crate) struct TestArray {
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
    pub dims: Vec<&'static str>,
    pub values: Vec<f32>,
    pub attrs: serde_json::Value,
    pub missing: Vec<Vec<u64>>,
}

impl TestArray {
    pub fn new(shape: &[u64], chunks: &[u64], dims: &[&'static str]) -> TestArray {
        let n: u64 = shape.iter().product();
        TestArray {
            shape: shape.to_vec(),
            chunks: chunks.to_vec(),
            dims: dims.to_vec(),
            values: (0..n).map(|i| i as f32).collect(),
            attrs: serde_json::json!({}),
            missing: Vec::new(),
        }
    }

    /// The value at a position.
    pub fn at(&self, idx: &[u64]) -> f32 {
        let mut flat = 0u64;
        for (i, n) in idx.iter().zip(&self.shape) {
            flat = flat * n + i;
        }
        self.values[flat as usize]
    }

    pub fn storage(&self) -> ManifestStorage {
        let zarray = serde_json::json!({"zarr_format": 2, "shape": self.shape, "chunks": self.chunks,
            "dtype": "<f4", "compressor": null, "fill_value": "NaN", "filters": null, "order": "C"});
        let mut attrs = self.attrs.clone();
        attrs["_ARRAY_DIMENSIONS"] = serde_json::json!(self.dims);
        let inline = |key: &str, b: Vec<u8>| Entry {
            key: key.into(),
            size: b.len() as u64,
            content: Content::Inline(Bytes::from(b)),
        };
        let mut entries = vec![
            inline("a/.zarray", zarray.to_string().into_bytes()),
            inline("a/.zattrs", attrs.to_string().into_bytes()),
        ];
        let grid: Vec<u64> = self
            .shape
            .iter()
            .zip(&self.chunks)
            .map(|(n, c)| n.div_ceil(*c))
            .collect();
        for chunk in positions(&grid) {
            let key = format!(
                "a/{}",
                chunk.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(".")
            );
            if self.missing.contains(&chunk) {
                let cid = shoal_core::cid::cid_of(shoal_core::cid::RAW, b"a block nobody holds");
                entries.push(Entry {
                    key,
                    size: self.chunks.iter().product::<u64>() * 4,
                    content: Content::Blocks(vec![cid]),
                });
                continue;
            }
            // A full chunk, padded past the array's edge.
            let mut bytes = Vec::new();
            for inner in positions(&self.chunks) {
                let idx: Vec<u64> = chunk
                    .iter()
                    .zip(&self.chunks)
                    .zip(&inner)
                    .map(|((c, n), i)| c * n + i)
                    .collect();
                let inside = idx.iter().zip(&self.shape).all(|(i, n)| i < n);
                let v = if inside { self.at(&idx) } else { f32::NAN };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            entries.push(inline(&key, bytes));
        }
        ManifestStorage::new(entries, 1 << 20, Arc::new(|c| Err(format!("no block {c} here"))))
    }

    pub fn info(&self, budget: u64) -> ArrayInfo {
        meta::array_info(&self.storage(), 2, "a", false, &["a".into()], budget).expect("a valid test array")
    }

    pub fn open(&self) -> Arc<Array<ManifestStorage>> {
        Arc::new(Array::open(Arc::new(self.storage()), "/a").expect("zarrs opens the test array"))
    }
}

/// Every index of a grid of `shape`, row-major.
pub(crate) fn positions(shape: &[u64]) -> Vec<Vec<u64>> {
    let mut out = vec![Vec::new()];
    for n in shape {
        out = out
            .into_iter()
            .flat_map(|p| {
                (0..*n).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    out
}
