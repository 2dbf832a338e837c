//! Query results kept as datasets, by content address: the key is a hash
//! of the input root and the normalised query; the record names the result
//! dataset's root and keeps the report's values, so a repeated query is
//! answered without computing. Records live in `store/results/<key>`
//! (JSON, written atomically); a record whose dataset is no longer
//! complete here is ignored and the query recomputed.

use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_core::Cid;
use shoal_query::QuerySpec;

use crate::error::{Error, Result};
use crate::types::QueryReport;

/// The cache key of a query of several arrays: blake3 of the input root
/// and each array's normalised query (see [`canonical`]), in order.
pub(crate) fn key(root: Cid, specs: &[QuerySpec]) -> String {
    let all: Vec<serde_json::Value> = specs.iter().map(canonical).collect();
    let v = serde_json::json!({"root": root.to_string(), "queries": all});
    blake3::hash(v.to_string().as_bytes()).to_hex().to_string()
}

/// A query with its lists in a canonical order (dimension order does not
/// change a reduction).
fn canonical(spec: &QuerySpec) -> serde_json::Value {
    let mut dims = spec.dims.clone();
    dims.sort();
    dims.dedup();
    let mut sel = spec.sel.clone();
    sel.sort();
    let mut labels: Vec<String> = spec
        .labels
        .iter()
        .map(|l| format!("{}={:?}:{:?}:{}", l.dim, l.lo, l.hi, l.exact))
        .collect();
    labels.sort();
    serde_json::json!({
        "array": spec.array,
        "op": spec.op,
        "dims": dims,
        "sel": sel,
        "labels": labels,
        "ddof": spec.ddof,
        "raw": spec.raw,
        "group": spec.group,
        "weights": spec.weights,
    })
}

/// A kept result: its dataset's root and what the query of each array
/// reported.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Kept {
    pub result: Cid,
    reports: Vec<KeptReport>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeptReport {
    array: String,
    op: shoal_query::Op,
    dims: Vec<String>,
    reduced: Vec<String>,
    shape: Vec<usize>,
    /// NaN as null (JSON has no NaN).
    values: Vec<Option<f64>>,
    source_dtype: String,
    chunks: u64,
    selection: Vec<(String, u64, u64)>,
}

impl Kept {
    /// The reports of a kept result: nothing computed, nothing moved.
    pub fn reports(&self, root: Cid) -> Vec<QueryReport> {
        self.reports.iter().map(|r| r.report(root)).collect()
    }
}

impl KeptReport {
    fn report(&self, root: Cid) -> QueryReport {
        QueryReport {
            root,
            array: self.array.clone(),
            op: self.op,
            dims: self.dims.clone(),
            reduced: self.reduced.clone(),
            shape: self.shape.clone(),
            values: self.values.iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
            source_dtype: self.source_dtype.clone(),
            chunks: self.chunks,
            chunks_local: 0,
            chunks_remote: Vec::new(),
            chunks_fetched: 0,
            network_bytes: 0,
            elapsed: std::time::Duration::ZERO,
            selection: self.selection.clone(),
            liars: Vec::new(),
            chunks_checked: 0,
            peers_asked: 0,
            coords: Vec::new(),
            attrs: Default::default(),
        }
    }
}

pub(crate) fn load(file: &Path) -> Option<Kept> {
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

/// Keeps the record (best effort: without it the query is recomputed).
pub(crate) fn save(file: &Path, result: Cid, reports: &[QueryReport]) {
    let kept = Kept {
        result,
        reports: reports.iter().map(KeptReport::of).collect(),
    };
    let data = serde_json::to_vec(&kept).expect("the record serialises");
    if let Err(e) = crate::records::replace_file(file, &data) {
        tracing::warn!(error = %e, path = %file.display(), "cannot keep the query result record");
    }
}

impl KeptReport {
    fn of(r: &QueryReport) -> KeptReport {
        KeptReport {
            array: r.array.clone(),
            op: r.op,
            dims: r.dims.clone(),
            reduced: r.reduced.clone(),
            shape: r.shape.clone(),
            values: r.values.iter().map(|v| (!v.is_nan()).then_some(*v)).collect(),
            source_dtype: r.source_dtype.clone(),
            chunks: r.chunks,
            selection: r.selection.clone(),
        }
    }
}

/// The variable a report writes into a result dataset.
pub fn result_var(r: &QueryReport) -> shoal_query::dataset::ResultVar<'_> {
    shoal_query::dataset::ResultVar {
        array: &r.array,
        op: r.op,
        dims: &r.dims,
        reduced: &r.reduced,
        shape: &r.shape,
        values: &r.values,
        attrs: &r.attrs,
        coords: &r.coords,
    }
}

/// Writes reports of one root as a Zarr dataset at `out` (see
/// `shoal_query::dataset`).
pub(crate) fn write(reports: &[QueryReport], query: serde_json::Value, out: &Path) -> Result<()> {
    let source = reports.first().map(|r| r.root.to_string()).unwrap_or_default();
    shoal_query::dataset::ResultDataset {
        vars: reports.iter().map(result_var).collect(),
        source: &source,
        query,
    }
    .write(out)
    .map_err(|e| Error::Internal(format!("writing the result dataset {}: {e}", out.display())))
}
