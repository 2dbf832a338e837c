//! `shoal query`: the distributed reduction, its results printed and
//! written out (`--out`: NPY, or a Zarr dataset for `.zarr`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use shoal_api::*;

use super::Ctx;
use crate::output::{print_json, print_query};

/// `shoal query`: the results printed, and written to `--out` (NPY, or a
/// Zarr dataset for `.zarr` with coordinates and CF attributes).
pub async fn run(c: &Ctx, mut req: QueryRequest, out: Option<PathBuf>) -> Result<ExitCode> {
    let zarr = out.as_ref().is_some_and(|p| p.extension().is_some_and(|e| e == "zarr"));
    if zarr && req.name.is_some() {
        eprintln!("error: --name keeps the result as a dataset; write it out with `shoal get NAME -o PATH.zarr`");
        return Ok(ExitCode::from(2));
    }
    let several = req.all || req.array.as_deref().is_some_and(|a| a.contains(','));
    if several && out.is_some() && !zarr {
        eprintln!("error: several arrays make one dataset: write it with --out PATH.zarr");
        return Ok(ExitCode::from(2));
    }
    req.coords = zarr;
    let rs: Vec<QueryResult> = c.client.post("/v1/query", &req).await?;
    if let Some(path) = &out {
        if zarr {
            write_result_dataset(&req, &rs, path)?;
        } else if let Some(r) = rs.first() {
            let values: Vec<f64> = r.values.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
            std::fs::write(path, shoal_query::npy::encode_f64(&r.shape, &values))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if c.json {
        match &rs[..] {
            [one] if !several => print_json(one)?,
            all => print_json(&all)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut how = String::new();
    if let Some(g) = req.groupby.as_ref().or(req.resample.as_ref()) {
        how += &format!(", {}", g.text());
    }
    if let Some(w) = &req.weights {
        how += &format!(", weighted by {w}");
    }
    for (i, r) in rs.iter().enumerate() {
        // "wrote PATH" once, after the last.
        let wrote = out.as_deref().filter(|_| i + 1 == rs.len());
        print_query(r, wrote, !req.sel.is_empty() || !req.isel.is_empty(), &how)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes query results as one Zarr dataset (see `shoal_query::dataset`).
fn write_result_dataset(req: &QueryRequest, rs: &[QueryResult], path: &Path) -> Result<()> {
    let mut query = serde_json::to_value(req)?;
    if let Some(q) = query.as_object_mut() {
        q.remove("coords");
        if let Some(r) = rs.first() {
            q.insert("selection".into(), serde_json::json!(r.selection));
        }
        let arrays: Vec<&str> = rs.iter().map(|r| r.array.as_str()).collect();
        q.insert("array".into(), serde_json::json!(arrays.join(",")));
    }
    let values: Vec<Vec<f64>> = rs
        .iter()
        .map(|r| r.values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        .collect();
    shoal_query::dataset::ResultDataset {
        vars: rs
            .iter()
            .zip(&values)
            .map(|(r, values)| shoal_query::dataset::ResultVar {
                array: &r.array,
                op: r.op,
                dims: &r.dims,
                reduced: &r.reduced,
                shape: &r.shape,
                values,
                attrs: &r.attrs,
                coords: &r.coords,
            })
            .collect(),
        source: rs.first().map_or("", |r| r.root.as_str()),
        query,
    }
    .write(path)
    .with_context(|| format!("writing {}", path.display()))
}
