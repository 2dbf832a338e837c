//! Planning: what to compute ([`QuerySpec`]) turned into a [`Plan`] over
//! one array: the selection per dimension, the reduced dimensions, the
//! result's shape, the chunks that intersect the selection, groups and
//! weights, all checked against the memory budget before anything is read.

use crate::grid::Region;
use crate::meta::{checked_product, human, ArrayInfo, MAX_DIMS};
use crate::partial::{Op, Partial};
use crate::{Error, Result};

/// Most chunks one query plans over (the chunk list is held in memory).
pub const MAX_PLAN_CHUNKS: u64 = 1 << 22;
/// Memory of one output cell's partial while computing.
pub const CELL_BYTES: u64 = (std::mem::size_of::<Partial>() + std::mem::size_of::<crate::grid::SumCount>()) as u64;
/// Memory of one planned chunk index, beyond its coordinates.
const CHUNK_INDEX_BYTES: u64 = 24;
/// Decode buffers a worker holds per chunk (encoded bytes, codec output,
/// the typed array), in units of the chunk's decoded size.
const DECODE_COPIES: u64 = 3;

/// What to compute.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QuerySpec {
    /// Path of the array inside the dataset, e.g. `sst` or `ocean/sst`.
    pub array: String,
    pub op: Op,
    /// Dimensions reduced over; empty = all.
    pub dims: Vec<String>,
    /// Index selections `dim -> start..stop` (half-open).
    pub sel: Vec<(String, u64, u64)>,
    /// Label selections, resolved into `sel` against the coordinates
    /// before planning (what peers receive has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<crate::label::LabelSel>,
    /// Also return the coordinates of the result's dimensions and the
    /// array's attributes (for a result written as a dataset).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coords: bool,
    /// Audit mode: every chunk a peer computes is computed here too and
    /// compared (by default one chunk of every request is).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_all: bool,
    /// Grouped along a time dimension (`--groupby`, `--resample`); every
    /// daemon that computes resolves the bins from the dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<crate::group::GroupSpec>,
    /// Weights: `coslat` or the path of another array of the dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    pub ddof: u64,
    pub raw: bool,
}

impl QuerySpec {
    /// `op` of `array` over every dimension, no selection, CF decoding on,
    /// ddof 0; the other fields are set with struct update syntax.
    pub fn new(array: impl Into<String>, op: Op) -> Self {
        Self {
            array: array.into(),
            op,
            dims: Vec::new(),
            sel: Vec::new(),
            labels: Vec::new(),
            coords: false,
            verify_all: false,
            group: None,
            weights: None,
            ddof: 0,
            raw: false,
        }
    }
}

/// A planned reduction.
pub struct Plan {
    pub info: ArrayInfo,
    /// Selection per dimension.
    pub ranges: Vec<std::ops::Range<u64>>,
    /// Which dimensions are reduced.
    pub reduced: Vec<bool>,
    /// Shape of the result (kept dimensions, in order).
    pub out_shape: Vec<usize>,
    pub out_dims: Vec<String>,
    /// Cells of the result.
    pub cells: u64,
    /// Per dimension, the chunk grid indices intersecting the selection.
    pub chunk_ranges: Vec<std::ops::Range<u64>>,
    /// Number of chunks intersecting the selection.
    pub chunk_count: u64,
    /// The reduction (kernels compute only what it needs).
    pub op: Op,
    /// Memory this plan may use (bytes).
    pub budget: u64,
    /// The grouped dimension: its positions map to bins, the result has
    /// one cell per bin along it.
    pub group: Option<GroupAxis>,
    pub weights: Option<Weights>,
}

/// A grouped dimension of a plan.
#[derive(Debug, Clone)]
pub struct GroupAxis {
    /// The array dimension grouped.
    pub axis: usize,
    /// The bin of each selected position.
    pub bins: Vec<u32>,
    pub n: usize,
}

/// Weights, stored over whole dimensions of the array and broadcast
/// along the others.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Per array dimension, the stride of that dimension in `values` (0 for
    /// a dimension the weights do not have).
    pub strides: Vec<usize>,
    pub values: Vec<f64>,
}

impl Weights {
    /// Weights over the array dimensions `dims` (with their sizes in
    /// `shape`, row-major `values`); checked against the array: every
    /// weight dimension must be one of its own with the same size, and no
    /// weight may be missing.
    pub fn new(info: &ArrayInfo, name: &str, dims: &[String], shape: &[u64], values: Vec<f64>) -> Result<Weights> {
        let bad = |why: String| Error::Selection(format!("weights {name}: {why}"));
        let mut strides = vec![0usize; info.dims.len()];
        let mut s = 1usize;
        for (d, n) in dims.iter().zip(shape).rev() {
            let i = info.dims.iter().position(|x| x == d).ok_or_else(|| {
                bad(format!(
                    "dimension {d} is not one of the array's ({})",
                    info.dims.join(", ")
                ))
            })?;
            if info.shape[i] != *n {
                return Err(bad(format!("{d} has {n} positions, the array {}", info.shape[i])));
            }
            strides[i] = s;
            s *= *n as usize;
        }
        if values.len() != s {
            return Err(bad(format!("{} values for shape {shape:?}", values.len())));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(bad("weights cannot contain missing values".into()));
        }
        Ok(Weights { strides, values })
    }
}

/// What a plan needs beyond the metadata, read from the dataset.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub group: Option<crate::group::Grouping>,
    pub weights: Option<Weights>,
}

impl Plan {
    /// Dimensions reduced: those not in the result, and the grouped one.
    pub fn reduced_dims(&self) -> Vec<String> {
        self.info
            .dims
            .iter()
            .enumerate()
            .filter(|(i, _)| self.reduced[*i] || self.group.as_ref().is_some_and(|g| g.axis == *i))
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Whether values are weighted.
    pub fn weighted(&self) -> bool {
        self.weights.is_some()
    }

    /// Memory a local run on `threads` workers needs: the output grid the
    /// workers share, the remote answers' grid and one more for chunks
    /// computed after the peers (merged, then freed), each worker's decode
    /// buffers, and the chunk list.
    pub fn memory(&self, threads: usize) -> u64 {
        let t = threads as u64;
        let grids = self.cells.saturating_mul(CELL_BYTES).saturating_mul(3);
        let decode = self.info.chunk_bytes.saturating_mul(DECODE_COPIES).saturating_mul(t);
        let list = self
            .chunk_count
            .saturating_mul(CHUNK_INDEX_BYTES + 8 * self.ranges.len() as u64);
        grids.saturating_add(decode).saturating_add(list)
    }

    /// The most workers (up to `want`) whose memory fits the budget; an
    /// error that says what to do when not even one fits.
    pub fn threads_within(&self, want: usize) -> Result<usize> {
        (1..=want.max(1)).rev().find(|t| self.memory(*t) <= self.budget).ok_or_else(|| {
            Error::TooBig(format!(
                "this query needs about {} ({} result cells at {CELL_BYTES} bytes, three grids; chunks of {} decoded) but the query memory budget is {}: select less (--sel DIM=A:B), reduce over more dimensions (--dim), or raise [query] memory in config.toml",
                human(self.memory(1)),
                self.cells,
                human(self.info.chunk_bytes),
                human(self.budget)
            ))
        })
    }

    /// The whole result.
    pub fn full_region(&self) -> Region {
        Region {
            origin: vec![0; self.out_shape.len()],
            shape: self.out_shape.clone(),
        }
    }

    /// Every chunk intersecting the selection, in row-major grid order.
    pub fn chunks(&self) -> impl Iterator<Item = Vec<u64>> + '_ {
        let n = self.chunk_ranges.len();
        let mut next: Option<Vec<u64>> =
            (self.chunk_count > 0).then(|| self.chunk_ranges.iter().map(|r| r.start).collect());
        std::iter::from_fn(move || {
            let cur = next.take()?;
            let mut idx = cur.clone();
            for d in (0..n).rev() {
                idx[d] += 1;
                if idx[d] < self.chunk_ranges[d].end {
                    next = Some(idx);
                    break;
                }
                idx[d] = self.chunk_ranges[d].start;
            }
            Some(cur)
        })
    }

    /// The output cells a chunk's part of the selection covers. Refuses a
    /// chunk index of the wrong rank or outside the selection (a compute
    /// request names chunks; they are checked here, not trusted).
    pub fn chunk_region(&self, chunk: &[u64]) -> Result<Region> {
        if chunk.len() != self.ranges.len() {
            return Err(Error::Selection(format!(
                "chunk index {chunk:?} has {} dimensions, the array {}",
                chunk.len(),
                self.ranges.len()
            )));
        }
        let (mut origin, mut shape) = (Vec::new(), Vec::new());
        for (d, &c) in chunk.iter().enumerate() {
            if !self.chunk_ranges[d].contains(&c) {
                return Err(Error::Selection(format!(
                    "chunk index {chunk:?} is outside the selection"
                )));
            }
            if !self.reduced[d] {
                let cs = self.info.chunk_shape[d];
                let r = &self.ranges[d];
                // In range, so c * cs < shape: no overflow.
                let lo = (c * cs).max(r.start) - r.start;
                let hi = (c * cs).saturating_add(cs).min(r.end) - r.start;
                match &self.group {
                    Some(g) if g.axis == d => {
                        let bins = &g.bins[lo as usize..hi as usize];
                        let (a, b) = (bins.iter().min(), bins.iter().max());
                        let (a, b) = (u64::from(*a.unwrap_or(&0)), u64::from(*b.unwrap_or(&0)));
                        origin.push(a);
                        shape.push((b - a + 1) as usize);
                    }
                    _ => {
                        origin.push(lo);
                        shape.push((hi - lo) as usize);
                    }
                }
            }
        }
        Ok(Region { origin, shape })
    }
}

/// Plans a reduction of `spec` within `budget` bytes. Everything is
/// computed from the metadata, nothing is allocated: a result over 2^32
/// cells or a selection over [`MAX_PLAN_CHUNKS`] chunks is refused here;
/// the caller checks the memory of what it will run
/// ([`Plan::threads_within`] for a local run, [`Plan::chunk_region`]
/// sizes for a compute request).
pub fn plan(info: ArrayInfo, spec: &QuerySpec, budget: u64) -> Result<Plan> {
    plan_with(info, spec, budget, Extras::default())
}

/// [`plan`] with a grouping (resolved over the selected positions of
/// `spec.group`'s dimension) and weights read from the dataset.
pub fn plan_with(info: ArrayInfo, spec: &QuerySpec, budget: u64, extras: Extras) -> Result<Plan> {
    let unknown = |d: &String| Error::UnknownDim {
        dim: d.clone(),
        array: spec.array.clone(),
        dims: info.dims.join(", "),
    };
    if spec.dims.len() > MAX_DIMS || spec.sel.len() > MAX_DIMS {
        return Err(Error::Selection(format!("more than {MAX_DIMS} dimensions named")));
    }
    if let Some(d) = spec.dims.iter().find(|d| !info.dims.contains(d)) {
        return Err(unknown(d));
    }
    let mut ranges: Vec<std::ops::Range<u64>> = info.shape.iter().map(|n| 0..*n).collect();
    for (d, start, stop) in &spec.sel {
        let i = info.dims.iter().position(|x| x == d).ok_or_else(|| unknown(d))?;
        if start >= stop || *stop > info.shape[i] {
            return Err(Error::Selection(format!(
                "{d}={start}:{stop} is outside 0:{} (the size of {d}) or empty",
                info.shape[i]
            )));
        }
        ranges[i] = *start..*stop;
    }
    // The grouped dimension stays in the result, as its bins; by default
    // (no --dim) it is the only one reduced, as in xarray's groupby.
    let group = match (&spec.group, extras.group) {
        (Some(g), Some(resolved)) => {
            let axis = info
                .dims
                .iter()
                .position(|x| *x == g.dim)
                .ok_or_else(|| unknown(&g.dim))?;
            let len = (ranges[axis].end - ranges[axis].start) as usize;
            if resolved.bins.len() != len {
                return Err(Error::Selection(format!(
                    "{}: {} bins for {len} selected positions",
                    g.text(),
                    resolved.bins.len()
                )));
            }
            let n = resolved.labels.len();
            if resolved.bins.iter().any(|b| *b as usize >= n) {
                return Err(Error::Selection(format!("{}: a bin past the labels", g.text())));
            }
            Some((
                GroupAxis {
                    axis,
                    bins: resolved.bins,
                    n,
                },
                resolved.out_dim,
            ))
        }
        (None, None) => None,
        _ => return Err(Error::Selection("a grouping without its bins".into())),
    };
    if spec.weights.is_some() != extras.weights.is_some() {
        return Err(Error::Selection("weights named but not read".into()));
    }
    if spec.weights.is_some() && !matches!(spec.op, Op::Sum | Op::Mean | Op::Var | Op::Std) {
        return Err(Error::Unsupported(format!(
            "weighted {} is not defined; weights apply to sum, mean, var and std",
            spec.op
        )));
    }
    let grouped = |i: usize| group.as_ref().is_some_and(|g| g.0.axis == i);
    let reduced: Vec<bool> = info
        .dims
        .iter()
        .enumerate()
        .map(|(i, d)| {
            !grouped(i)
                && if group.is_some() {
                    spec.dims.contains(d)
                } else {
                    spec.dims.is_empty() || spec.dims.contains(d)
                }
        })
        .collect();
    let kept: Vec<u64> = ranges
        .iter()
        .zip(&reduced)
        .enumerate()
        .filter(|(_, (_, r))| !**r)
        .map(|(i, (x, _))| match &group {
            Some(g) if g.0.axis == i => g.0.n as u64,
            _ => x.end - x.start,
        })
        .collect();
    // The wire format numbers cells with u32.
    let cells = checked_product(&kept)
        .filter(|c| *c <= u64::from(u32::MAX))
        .ok_or_else(|| {
            Error::TooBig(format!(
                "the result would have more than 2^32 cells ({kept:?}): select less or reduce over more dimensions"
            ))
        })?;
    let chunk_ranges: Vec<std::ops::Range<u64>> = ranges
        .iter()
        .zip(&info.chunk_shape)
        .map(|(r, c)| {
            if r.is_empty() {
                0..0
            } else {
                r.start / c..(r.end - 1) / c + 1
            }
        })
        .collect();
    let chunk_count = chunk_ranges
        .iter()
        .try_fold(1u64, |a, r| a.checked_mul(r.end - r.start))
        .filter(|n| *n <= MAX_PLAN_CHUNKS)
        .ok_or_else(|| {
            Error::TooBig(format!(
                "the selection covers more than {MAX_PLAN_CHUNKS} chunks: select less (--sel DIM=A:B)"
            ))
        })?;
    let out_dims = info
        .dims
        .iter()
        .zip(&reduced)
        .enumerate()
        .filter(|(_, (_, r))| !**r)
        .map(|(i, (d, _))| match &group {
            Some(g) if g.0.axis == i => g.1.clone(),
            _ => d.clone(),
        })
        .collect();
    let plan = Plan {
        out_shape: kept.iter().map(|n| *n as usize).collect(),
        info,
        ranges,
        reduced,
        out_dims,
        cells,
        chunk_ranges,
        chunk_count,
        op: spec.op,
        budget,
        group: group.map(|g| g.0),
        weights: extras.weights,
    };
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{GroupBy, GroupSpec, Grouping, Labels};
    use crate::testing::TestArray;

    const BUDGET: u64 = 1 << 30;

    fn spec(dims: &[&str], sel: &[(&str, u64, u64)]) -> QuerySpec {
        QuerySpec {
            dims: dims.iter().map(|d| d.to_string()).collect(),
            sel: sel.iter().map(|(d, a, b)| (d.to_string(), *a, *b)).collect(),
            ..QuerySpec::new("a", Op::Mean)
        }
    }

    fn array() -> TestArray {
        TestArray::new(&[4, 6, 8], &[2, 3, 4], &["time", "lat", "lon"])
    }

    #[test]
    fn a_selection_plans_only_the_chunks_it_touches() {
        let p = plan(
            array().info(BUDGET),
            &spec(&["time"], &[("lat", 1, 3), ("lon", 4, 8)]),
            BUDGET,
        )
        .unwrap();
        assert_eq!(p.ranges, vec![0..4, 1..3, 4..8]);
        assert_eq!(p.reduced, vec![true, false, false]);
        assert_eq!(
            (p.out_shape.clone(), p.out_dims.clone()),
            (vec![2, 4], vec!["lat".to_string(), "lon".into()])
        );
        assert_eq!(p.cells, 8);
        // lat 1..3 lies in the first lat chunk (0..3), lon 4..8 in the second.
        assert_eq!(p.chunk_ranges, vec![0..2, 0..1, 1..2]);
        assert_eq!(p.chunk_count, 2);
        assert_eq!(p.chunks().collect::<Vec<_>>(), vec![vec![0, 0, 1], vec![1, 0, 1]]);
        assert_eq!(p.reduced_dims(), vec!["time".to_string()]);
    }

    #[test]
    fn no_dimension_named_reduces_them_all_into_one_cell() {
        let p = plan(array().info(BUDGET), &spec(&[], &[]), BUDGET).unwrap();
        assert_eq!(p.reduced, vec![true; 3]);
        assert!(p.out_shape.is_empty());
        assert_eq!((p.cells, p.chunk_count), (1, 8));
    }

    #[test]
    fn a_grouping_keeps_its_dimension_as_one_cell_per_bin() {
        let s = QuerySpec {
            group: Some(GroupSpec {
                dim: "time".into(),
                by: GroupBy::Month,
            }),
            ..spec(&[], &[])
        };
        let g = Grouping {
            out_dim: "month".into(),
            bins: vec![0, 1, 0, 1],
            labels: Labels::Int(vec![1, 2]),
        };
        let extras = Extras {
            group: Some(g),
            weights: None,
        };
        let p = plan_with(array().info(BUDGET), &s, BUDGET, extras).unwrap();
        // As xarray's groupby: only the grouped dimension is reduced, into
        // its bins, by default.
        assert_eq!(p.out_shape, vec![2, 6, 8]);
        assert_eq!(p.out_dims, vec!["month".to_string(), "lat".into(), "lon".into()]);
        let group = p.group.as_ref().unwrap();
        assert_eq!((group.axis, group.n, group.bins.clone()), (0, 2, vec![0, 1, 0, 1]));
        // A grouping whose bins were not read is refused.
        let e = plan(array().info(BUDGET), &s, BUDGET).err().unwrap();
        assert!(e.to_string().contains("without its bins"), "{e}");
    }

    #[test]
    fn an_unknown_dimension_or_a_bad_selection_is_refused_saying_what() {
        let info = array().info(BUDGET);
        let e = plan(info.clone(), &spec(&["depth"], &[]), BUDGET).err().unwrap();
        assert!(matches!(e, Error::UnknownDim { ref dim, .. } if dim == "depth"), "{e}");
        assert!(e.to_string().contains("time, lat, lon"), "{e}");
        for sel in [("lat", 2, 2), ("lat", 0, 7), ("lat", 5, 1)] {
            let e = plan(info.clone(), &spec(&[], &[sel]), BUDGET).err().unwrap();
            assert!(
                matches!(e, Error::Selection(_)) && e.to_string().contains("outside 0:6"),
                "{sel:?}: {e}"
            );
        }
        let weighted_min = QuerySpec {
            op: Op::Min,
            weights: Some("w".into()),
            ..spec(&[], &[])
        };
        let w = Weights::new(&info, "w", &["lat".into()], &[6], vec![1.0; 6]).unwrap();
        let extras = Extras {
            group: None,
            weights: Some(w),
        };
        let e = plan_with(info.clone(), &weighted_min, BUDGET, extras).err().unwrap();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        let e = Weights::new(&info, "w", &["lat".into()], &[5], vec![1.0; 5])
            .err()
            .unwrap();
        assert!(e.to_string().contains("lat has 5 positions, the array 6"), "{e}");
    }

    #[test]
    fn the_budget_bounds_the_workers_and_says_what_to_select_less_of() {
        let info = array().info(BUDGET);
        let p = plan(info.clone(), &spec(&["time"], &[]), BUDGET).unwrap();
        assert_eq!(p.threads_within(4).unwrap(), 4);
        // Room for one worker's grid and chunk, not for four.
        let one = p.memory(1);
        let tight = plan(info, &spec(&["time"], &[]), one).unwrap();
        assert_eq!(tight.threads_within(4).unwrap(), 1);
        let none = plan(array().info(BUDGET), &spec(&["time"], &[]), one / 4).unwrap();
        let e = none.threads_within(4).unwrap_err().to_string();
        assert!(e.contains("--sel"), "{e}");
    }
}
