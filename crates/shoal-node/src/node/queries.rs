//! [`Queries`]: the queries: distributed reductions, the data variables a query
//! of several arrays covers, results kept as named datasets.

use std::sync::Arc;

use std::time::Instant;

use shoal_core::Cid;
use shoal_store::PinKind;

use super::NodeCtx;
use crate::error::{Error, Result};
use crate::popularity::Kind;
use crate::types::*;

/// Queries run from the node (from [`super::Node::queries`]).
#[derive(Clone)]
pub struct Queries {
    pub(super) ctx: Arc<NodeCtx>,
}

/// The arrays a query reduces.
pub enum Arrays {
    /// Named: one, or several comma-separated (`sst,tas`).
    Listed(String),
    /// Every data variable that has the reduced (and grouped) dimensions.
    All,
}

/// What [`Queries::run`] did: a report per array and, when the result was
/// kept under a name, its root and whether it came from the cache.
pub struct QueryRun {
    pub reports: Vec<QueryReport>,
    pub kept: Option<(Cid, bool)>,
}

impl Queries {
    /// Runs `spec` over each of `arrays` of the target (`spec.array` is
    /// set per array), or, with `keep = (NAME, no_cache)`, keeps the
    /// result as the dataset NAME (see [`Queries::query_into`]).
    pub async fn run(
        &self,
        target: &Target,
        arrays: Arrays,
        spec: shoal_query::QuerySpec,
        keep: Option<(&str, bool)>,
    ) -> Result<QueryRun> {
        let arrays: Vec<String> = match arrays {
            Arrays::All => {
                let mut dims = spec.dims.clone();
                dims.extend(spec.group.as_ref().map(|g| g.dim.clone()));
                let found = self.data_arrays(target, dims.clone()).await?;
                if found.is_empty() {
                    let of = target.name.clone().unwrap_or_else(|| target.root.to_string());
                    return Err(Error::BadRequest(format!(
                        "no data variable of {of} has the dimensions ({})",
                        dims.join(", ")
                    )));
                }
                found
            }
            Arrays::Listed(list) => {
                let arrays: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(String::from)
                    .collect();
                if arrays.is_empty() {
                    return Err(Error::BadRequest("name an array (or several: a,b), or --all".into()));
                }
                arrays
            }
        };
        let specs: Vec<shoal_query::QuerySpec> = arrays
            .into_iter()
            .map(|array| shoal_query::QuerySpec { array, ..spec.clone() })
            .collect();
        if let Some((name, no_cache)) = keep {
            let (reports, root, cached) = self.query_into(target, specs, name, no_cache).await?;
            return Ok(QueryRun {
                reports,
                kept: Some((root, cached)),
            });
        }
        let mut reports = Vec::with_capacity(specs.len());
        for spec in specs {
            reports.push(self.query(target, spec).await?);
        }
        Ok(QueryRun { reports, kept: None })
    }

    /// Reduces one array of a dataset: chunks held here run on all cores,
    /// the rest run on peers that hold them (only partials come back), and
    /// what nobody computes is fetched and computed here.
    pub async fn query(&self, target: &Target, spec: shoal_query::QuerySpec) -> Result<QueryReport> {
        let _busy = self.ctx.busy();
        let root = target.dataset("query").map_err(|_| {
            Error::BadRequest("query takes a dataset (CID or NAME) and the array path separately".into())
        })?;
        self.ctx.services.pop.record(root, Kind::Query, 1);
        let spec = shoal_query::QuerySpec {
            array: spec.array.trim_matches('/').to_string(),
            ..spec
        };
        let m = self.ctx.metrics.clone();
        m.queries.inc();
        let started = Instant::now();
        let r = self
            .ctx
            .blocking(move |n| crate::query::execute(&n.services, root, spec))
            .await;
        m.query_seconds.observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            m.query_errors.inc();
        }
        r
    }

    /// The data variables of a dataset that have every dimension in
    /// `dims` (what `shoal query --all` reduces).
    pub async fn data_arrays(&self, target: &Target, dims: Vec<String>) -> Result<Vec<String>> {
        let root = target.dataset("query")?;
        self.ctx
            .blocking(move |n| crate::query::data_arrays(&n.services, root, &dims))
            .await
    }

    /// Runs a query and keeps its result as a named dataset (a Zarr group:
    /// the values, their coordinates, attributes, cell_methods, provenance;
    /// pinned, mountable, readable over the gateway), or, when the same
    /// query (normalised) of the same root was kept before and its result
    /// is still complete here, names that result without computing.
    /// Several arrays (one spec each) make one dataset. Returns the
    /// reports (from the cache on a hit), the result's root and whether it
    /// came from the cache.
    pub async fn query_into(
        &self,
        target: &Target,
        specs: Vec<shoal_query::QuerySpec>,
        name: &str,
        no_cache: bool,
    ) -> Result<(Vec<QueryReport>, Cid, bool)> {
        shoal_store::validate_name(name)?;
        let root = target.dataset("query")?;
        if specs.is_empty() {
            return Err(Error::BadRequest("no array to query".into()));
        }
        let specs: Vec<shoal_query::QuerySpec> = specs
            .into_iter()
            .map(|spec| shoal_query::QuerySpec {
                array: spec.array.trim_matches('/').to_string(),
                coords: true,
                ..spec
            })
            .collect();
        let key = crate::results::key(root, &specs);
        let file = self.ctx.results_dir.join(&key);
        if !no_cache {
            let (nm, file) = (name.to_string(), file.clone());
            let hit = self
                .ctx
                .blocking(move |n| {
                    let Some(cached) = crate::results::load(&file) else {
                        return Ok(None);
                    };
                    if !n.services.complete_here(&cached.result) {
                        return Ok(None);
                    }
                    let store = &n.services.store;
                    store.pin(&cached.result, PinKind::User)?;
                    let previous = store.resolve_name(&nm)?;
                    store.set_name(&nm, &cached.result)?;
                    n.record_version(&nm, previous, cached.result, 0, None)?;
                    Ok(Some(cached))
                })
                .await?;
            if let Some(c) = hit {
                self.ctx.names().republish(name).await;
                return Ok((c.reports(root), c.result, true));
            }
        }
        let mut reports = Vec::with_capacity(specs.len());
        for spec in &specs {
            reports.push(self.query(target, spec.clone()).await?);
        }
        let tmp = self.ctx.results_dir.join(format!("{key}.partial"));
        let out = tmp.join("result.zarr");
        {
            let (reports, tmp, out) = (reports.clone(), tmp.clone(), out.clone());
            let query = if specs.len() == 1 {
                serde_json::to_value(&specs[0])
            } else {
                serde_json::to_value(&specs)
            }
            .map_err(|e| Error::Internal(e.to_string()))?;
            self.ctx
                .blocking(move |_| {
                    let _ = std::fs::remove_dir_all(&tmp);
                    std::fs::create_dir_all(&tmp).map_err(|e| Error::Internal(format!("{}: {e}", tmp.display())))?;
                    crate::results::write(&reports, query, &out)
                })
                .await?;
        }
        let added = self
            .ctx
            .datasets()
            .add_with(out, Some(name.to_string()), AddOptions::default(), no_progress())
            .await;
        let _ = std::fs::remove_dir_all(&tmp);
        let added = added?;
        crate::results::save(&file, added.root, &reports);
        Ok((reports, added.root, false))
    }
}
