//! Local execution: plan a reduction over the chunks of one array, decode
//! each chunk (zarrs), reduce it into per-cell partials, merge.
//!
//! Semantics follow `xarray.open_zarr(path)[array].<op>(dim=...)` with
//! xarray's defaults: CF decoding (values equal to `_FillValue` or
//! `missing_value` are missing; `scale_factor`/`add_offset` applied),
//! missing values skipped, absent chunks read as the fill value. For Zarr v2
//! the array's `fill_value` acts as `_FillValue` (as xarray's default
//! `use_zarr_fill_value_as_mask` does for v2); for v3 only the
//! `_FillValue` attribute does. `raw` computes over stored values.

use std::sync::Arc;

use ndarray::ArrayD;
use serde_json::{Map, Value};
use zarrs::array::{Array, ArraySubset};

pub use crate::grid::Region;
use crate::grid::SharedGrid;
use crate::partial::{Op, Partial};
use crate::storage::ManifestStorage;
use crate::{Error, Result};

/// Most dimensions an array may have (numpy's and zarr-python's limit).
pub const MAX_DIMS: usize = 32;
/// Most chunks one query plans over (the chunk list is held in memory).
pub const MAX_PLAN_CHUNKS: u64 = 1 << 22;
/// Memory of one output cell's partial while computing.
pub const CELL_BYTES: u64 = std::mem::size_of::<Partial>() as u64;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
}

/// Array metadata as the engine needs it.
#[derive(Debug, Clone)]
pub struct ArrayInfo {
    pub shape: Vec<u64>,
    /// The regular chunk grid's chunk shape (shard shape when sharded).
    pub chunk_shape: Vec<u64>,
    pub dims: Vec<String>,
    pub dtype: String,
    dt: Dtype,
    /// Decoded bytes of one chunk (the unit a worker decodes).
    pub chunk_bytes: u64,
    /// What the stored bytes of a chunk may decode to (checked before
    /// zarrs decodes them).
    pub guard: Option<crate::storage::DecodeGuard>,
    /// Encoded values that mean "missing" (CF).
    masks: Vec<f64>,
    scale: f64,
    offset: f64,
}

fn parse_dtype(zarr_format: u8, s: &str) -> Option<Dtype> {
    let name = if zarr_format == 2 {
        match s.trim_start_matches(['<', '>', '|', '=']) {
            "i1" => "int8",
            "i2" => "int16",
            "i4" => "int32",
            "i8" => "int64",
            "u1" => "uint8",
            "u2" => "uint16",
            "u4" => "uint32",
            "u8" => "uint64",
            "f4" => "float32",
            "f8" => "float64",
            _ => return None,
        }
    } else {
        s
    };
    Some(match name {
        "int8" => Dtype::I8,
        "int16" => Dtype::I16,
        "int32" => Dtype::I32,
        "int64" => Dtype::I64,
        "uint8" => Dtype::U8,
        "uint16" => Dtype::U16,
        "uint32" => Dtype::U32,
        "uint64" => Dtype::U64,
        "float32" => Dtype::F32,
        "float64" => Dtype::F64,
        _ => return None,
    })
}

impl Dtype {
    fn size(self) -> u64 {
        match self {
            Dtype::I8 | Dtype::U8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }
}

fn u64s(v: Option<&Value>) -> Option<Vec<u64>> {
    v?.as_array()?.iter().map(Value::as_u64).collect()
}

/// The name of the codec whose output is stored (a checksum appended after
/// it does not change where the frame starts).
fn outermost(codecs: &[Value]) -> Option<String> {
    codecs
        .iter()
        .rev()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .find(|n| *n != "crc32c")
        .map(str::to_string)
}

fn checked_product(v: &[u64]) -> Option<u64> {
    v.iter().try_fold(1u64, |a, b| a.checked_mul(*b))
}

/// The chunk shape and the decode guard, from the metadata; refuses shapes
/// that no real array has (so nothing later overflows or allocates what
/// the metadata claims).
fn chunking(
    array: &str,
    zarr_format: u8,
    meta: &Map<String, Value>,
    shape: &[u64],
    elem: u64,
    budget: u64,
) -> Result<(Vec<u64>, u64, Option<crate::storage::DecodeGuard>)> {
    let bad = |why: String| Error::Metadata(format!("{array}: {why}"));
    if shape.len() > MAX_DIMS {
        return Err(bad(format!("{} dimensions (at most {MAX_DIMS})", shape.len())));
    }
    checked_product(shape).ok_or_else(|| bad(format!("shape {shape:?} has more than 2^64 elements")))?;
    let name = |c: &Value| c.get("name").and_then(Value::as_str).map(str::to_string);
    let (chunk, last_codec, inner) = if zarr_format == 3 {
        let grid = meta.get("chunk_grid");
        if grid.and_then(|g| g.get("name")).and_then(Value::as_str) != Some("regular") {
            return Err(Error::Unsupported(format!(
                "{array}: only regular chunk grids are supported"
            )));
        }
        let chunk = u64s(
            grid.and_then(|g| g.get("configuration"))
                .and_then(|c| c.get("chunk_shape")),
        )
        .ok_or_else(|| bad("no chunk_shape".into()))?;
        let codecs = meta
            .get("codecs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let shard = codecs.iter().find(|c| name(c).as_deref() == Some("sharding_indexed"));
        match shard.and_then(|c| c.get("configuration")) {
            Some(cfg) => {
                let inner = u64s(cfg.get("chunk_shape")).ok_or_else(|| bad("sharding without chunk_shape".into()))?;
                let inner_codecs = cfg.get("codecs").and_then(Value::as_array).cloned().unwrap_or_default();
                (chunk, outermost(&inner_codecs), Some(inner))
            }
            None => (chunk, outermost(&codecs), None),
        }
    } else {
        let chunk = u64s(meta.get("chunks")).ok_or_else(|| bad("no chunks".into()))?;
        let id = meta
            .get("compressor")
            .and_then(|c| c.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        (chunk, id, None)
    };
    let unit = inner.as_deref().unwrap_or(&chunk);
    for c in [&chunk, unit] {
        if c.len() != shape.len() || c.contains(&0) {
            return Err(bad(format!("chunk shape {c:?} does not fit shape {shape:?}")));
        }
    }
    let bytes = |c: &[u64]| checked_product(c).and_then(|n| n.checked_mul(elem));
    let chunk_bytes = bytes(&chunk).ok_or_else(|| bad(format!("chunk shape {chunk:?} overflows")))?;
    let unit_bytes = bytes(unit).ok_or_else(|| bad(format!("chunk shape {unit:?} overflows")))?;
    // One stored chunk decodes to `unit_bytes`: past the request's budget
    // it is refused before anything is read (a chunk shape of 2^40 on an
    // array of 10 values is valid metadata and 8 TiB of decode buffer).
    if unit_bytes > budget {
        return Err(Error::TooBig(format!(
            "{array}: one chunk of shape {unit:?} decodes to {}, more than this request's memory budget of {}; refusing to decode it",
            human(unit_bytes),
            human(budget)
        )));
    }
    // Every compressor's output is checked against `unit_bytes` before
    // zarrs allocates for it; one whose size cannot be checked is refused
    // (fail closed), not decoded on trust.
    let codec = match last_codec.as_deref() {
        Some("zstd") => Some(crate::storage::Codec::Zstd),
        Some("blosc") => Some(crate::storage::Codec::Blosc),
        Some("gzip") => Some(crate::storage::Codec::Gzip),
        Some("zlib") => Some(crate::storage::Codec::Zlib),
        // No compressor: what is decoded is what is stored.
        None | Some("bytes") => None,
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "{array}: compressor {other:?}: its decoded size cannot be checked before decoding, so queries do not decode it (zstd, blosc, gzip, zlib or none are)"
            )))
        }
    };
    let guard = codec.map(|codec| crate::storage::DecodeGuard {
        prefix: format!("{array}/"),
        codec,
        max_decoded: unit_bytes,
    });
    Ok((chunk, chunk_bytes, guard))
}

/// A fill/missing value from JSON: a number, "NaN"/"Infinity", or (xarray
/// on v3) base64 of a little-endian f64.
fn json_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            s => base64_f64(s),
        },
        _ => None,
    }
}

fn base64_f64(s: &str) -> Option<f64> {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHA.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    let arr: [u8; 8] = out.try_into().ok()?;
    Some(f64::from_le_bytes(arr))
}

fn values(v: Option<&Value>) -> Vec<f64> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(json_number).collect(),
        Some(v) => json_number(v).into_iter().collect(),
        None => Vec::new(),
    }
}

fn read_json(storage: &ManifestStorage, key: &str) -> Result<Option<Map<String, Value>>> {
    let Some(bytes) = storage.read_range(key, 0, u64::MAX).map_err(Error::Read)? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => Err(Error::Metadata(format!("{key} is not a JSON object"))),
    }
}

/// Reads an array's metadata (v2 `.zarray` + `.zattrs`, or v3 `zarr.json`).
pub fn array_info(
    storage: &ManifestStorage,
    zarr_format: u8,
    array: &str,
    raw: bool,
    arrays: &[String],
    budget: u64,
) -> Result<ArrayInfo> {
    let unknown = || Error::UnknownArray {
        array: array.to_string(),
        known: arrays.join(", "),
    };
    let (meta, attrs) = if zarr_format == 3 {
        let m = read_json(storage, &format!("{array}/zarr.json"))?.ok_or_else(unknown)?;
        if m.get("node_type").and_then(Value::as_str) != Some("array") {
            return Err(unknown());
        }
        let attrs = m
            .get("attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        (m, attrs)
    } else {
        let m = read_json(storage, &format!("{array}/.zarray"))?.ok_or_else(unknown)?;
        let attrs = read_json(storage, &format!("{array}/.zattrs"))?.unwrap_or_default();
        (m, attrs)
    };
    let shape: Vec<u64> = u64s(meta.get("shape"))
        .ok_or_else(|| Error::Metadata(format!("{array}: no shape of non-negative integers")))?;
    let dtype_key = if zarr_format == 3 { "data_type" } else { "dtype" };
    let dtype = meta.get(dtype_key).and_then(Value::as_str).unwrap_or("?").to_string();
    let dt = parse_dtype(zarr_format, &dtype).ok_or_else(|| {
        Error::Unsupported(format!(
            "array {array} has dtype {dtype}; shoal query supports int8..int64, uint8..uint64, float32 and float64"
        ))
    })?;
    let (chunk_shape, chunk_bytes, guard) = chunking(array, zarr_format, &meta, &shape, dt.size(), budget)?;
    let dims: Vec<String> = if zarr_format == 3 {
        meta.get("dimension_names")
    } else {
        attrs.get("_ARRAY_DIMENSIONS")
    }
    .and_then(Value::as_array)
    .map(|a| a.iter().map(|d| d.as_str().unwrap_or("").to_string()).collect())
    .unwrap_or_else(|| (0..shape.len()).map(|i| format!("dim_{i}")).collect());
    if dims.len() != shape.len() {
        return Err(Error::Metadata(format!(
            "{array}: {} dimension names for {} dimensions",
            dims.len(),
            shape.len()
        )));
    }
    let mut masks = Vec::new();
    let (mut scale, mut offset) = (1.0, 0.0);
    if !raw {
        if zarr_format == 2 {
            masks.extend(values(meta.get("fill_value")));
        }
        masks.extend(values(attrs.get("_FillValue")));
        masks.extend(values(attrs.get("missing_value")));
        masks.retain(|m| !m.is_nan()); // NaN is already missing
        scale = values(attrs.get("scale_factor")).first().copied().unwrap_or(1.0);
        offset = values(attrs.get("add_offset")).first().copied().unwrap_or(0.0);
    }
    Ok(ArrayInfo {
        shape,
        chunk_shape,
        dims,
        dtype,
        dt,
        chunk_bytes,
        guard,
        masks,
        scale,
        offset,
    })
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

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
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

/// A stored element type, widened to f64 for accumulation.
trait Num: Copy + zarrs::array::ElementOwned + Send + Sync + 'static {
    fn f(self) -> f64;
}

macro_rules! num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            #[inline(always)]
            fn f(self) -> f64 {
                self as f64
            }
        }
    )*};
}
num!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

/// Per dimension of a decoded subset, the offset each position adds to
/// the index it maps to (an output cell, or a weight).
type Tables = Vec<Vec<usize>>;

/// How the innermost dimension's table looks: all zero (reduced), `j`
/// consecutive cells from a start, or anything else (grouped).
enum Inner {
    Zero,
    Run(usize),
    Map,
}

fn inner(t: &[usize]) -> Inner {
    match t.first() {
        None => Inner::Zero,
        Some(_) if t.iter().all(|x| *x == 0) => Inner::Zero,
        Some(&s) if t.iter().enumerate().all(|(j, x)| *x == s + j) => Inner::Run(s),
        Some(_) => Inner::Map,
    }
}

/// Walks one row (`vals`, the innermost axis) whose outer offsets are
/// `base` (output) and `wbase` (weights), calling `f(cell, w, v)`.
#[inline(always)]
fn row<T: Num>(
    vals: &[T],
    base: usize,
    otab: &[usize],
    kind: &Inner,
    w: Option<(&[usize], usize)>,
    f: &mut impl FnMut(usize, usize, T),
) {
    match w {
        None => match kind {
            Inner::Zero => vals.iter().for_each(|&v| f(base, 0, v)),
            Inner::Run(s) => vals.iter().enumerate().for_each(|(j, &v)| f(base + s + j, 0, v)),
            Inner::Map => vals.iter().zip(otab).for_each(|(&v, o)| f(base + o, 0, v)),
        },
        Some((wl, wbase)) => {
            for ((&v, o), w) in vals.iter().zip(otab).zip(wl) {
                f(base + o, wbase + w, v);
            }
        }
    }
}

/// The outer offsets (output, weights) of every row of a subset of
/// `shape`, in memory order.
fn row_bases(shape: &[usize], out: &Tables, wt: Option<&Tables>) -> (Vec<usize>, Vec<usize>) {
    let nd = shape.len();
    let rows: usize = shape[..nd - 1].iter().product();
    let (mut bases, mut wbases) = (Vec::with_capacity(rows), Vec::new());
    let mut idx = vec![0usize; nd - 1];
    for _ in 0..rows {
        bases.push(idx.iter().zip(out).map(|(i, t)| t[*i]).sum());
        if let Some(wt) = wt {
            wbases.push(idx.iter().zip(wt).map(|(i, t)| t[*i]).sum());
        }
        for d in (0..nd - 1).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    (bases, wbases)
}

/// Walks `data` (row-major, `shape`) in memory order, calling `f(cell, w,
/// v)` for every element, where `cell` is the sum of the element's
/// offsets in `out` and `w` in `wt` (tables per dimension). The outer
/// dimensions' offsets are summed once per row; the innermost axis is
/// either reduced (one cell), kept (a run of consecutive cells) or mapped.
fn walk<T: Num>(data: &[T], shape: &[usize], out: &Tables, wt: Option<&Tables>, mut f: impl FnMut(usize, usize, T)) {
    let nd = shape.len();
    if nd == 0 {
        if let Some(v) = data.first() {
            f(0, 0, *v);
        }
        return;
    }
    let last = shape[nd - 1].max(1);
    let (otab, wl) = (&out[nd - 1], wt.map(|w| &w[nd - 1][..]));
    let kind = inner(otab);
    let (bases, wbases) = row_bases(shape, out, wt);
    for (r, vals) in data.chunks_exact(last).enumerate() {
        row(vals, bases[r], otab, &kind, wl.map(|w| (w, wbases[r])), &mut f);
    }
}

/// [`walk`] into a shared grid, band by band: the rows of `data` are
/// bucketed by the band their cells fall in, and each bucket is added
/// under that band's lock, starting at band `start` (workers start at
/// different bands). `op` adds one value (with its weight) to a cell.
#[allow(clippy::too_many_arguments)]
fn walk_into<T: Num>(
    data: &[T],
    shape: &[usize],
    out: &Tables,
    wt: Option<(&Tables, &[f64])>,
    grid: &SharedGrid,
    start: usize,
    op: impl Fn(&mut Partial, f64, T),
) {
    let nd = shape.len();
    let weight = |i: usize| wt.map_or(1.0, |w| w.1[i]);
    if nd == 0 {
        if let Some(v) = data.first() {
            op(grid.lock(0, 0).cell(0), weight(0), *v);
        }
        return;
    }
    let last = shape[nd - 1].max(1);
    let (otab, wl) = (&out[nd - 1], wt.map(|w| &w.0[nd - 1][..]));
    let kind = inner(otab);
    let (bases, wbases) = row_bases(shape, out, wt.map(|w| w.0));
    let (lo, hi) = (
        otab.iter().copied().min().unwrap_or(0),
        otab.iter().copied().max().unwrap_or(0),
    );
    // Rows by first band (a counting sort); rows over two bands apart.
    let nb = grid.bands();
    let mut count = vec![0usize; nb + 1];
    let mut straddle = Vec::new();
    for (r, b) in bases.iter().enumerate() {
        let (b0, b1) = (grid.band_of(b + lo), grid.band_of(b + hi));
        if b0 == b1 {
            count[b0 + 1] += 1;
        } else {
            straddle.push(r);
        }
    }
    for b in 0..nb {
        count[b + 1] += count[b];
    }
    let mut order = vec![0u32; count[nb]];
    let mut at = count.clone();
    for (r, b) in bases.iter().enumerate() {
        let (b0, b1) = (grid.band_of(b + lo), grid.band_of(b + hi));
        if b0 == b1 {
            order[at[b0]] = r as u32;
            at[b0] += 1;
        }
    }
    let weights = wt.map(|w| w.1);
    for b in (0..nb).map(|i| (i + start) % nb) {
        if count[b] == count[b + 1] {
            continue;
        }
        let mut band = grid.lock(b, b);
        let (first, cells) = band.cells();
        for &r in &order[count[b]..count[b + 1]] {
            let r = r as usize;
            let vals = &data[r * last..(r + 1) * last];
            // The row's lowest cell, in the band (the bucket was chosen by
            // it); every offset of the row is at least `lo`.
            let base = bases[r] + lo - first;
            match (wl, &kind) {
                (None, Inner::Zero) => {
                    let p = &mut cells[base];
                    vals.iter().for_each(|&v| op(p, 1.0, v));
                }
                (None, Inner::Run(_)) => {
                    let dst = &mut cells[base..base + vals.len()];
                    dst.iter_mut().zip(vals).for_each(|(p, &v)| op(p, 1.0, v));
                }
                (None, Inner::Map) => otab
                    .iter()
                    .zip(vals)
                    .for_each(|(o, &v)| op(&mut cells[base + o - lo], 1.0, v)),
                (Some(wl), _) => {
                    let (wb, ws) = (wbases[r], weights.expect("weights with their tables"));
                    for ((o, w), &v) in otab.iter().zip(wl).zip(vals) {
                        op(&mut cells[base + o - lo], ws[wb + w], v);
                    }
                }
            }
        }
    }
    // Rows over several bands (rare): element by element.
    for r in straddle {
        let b = bases[r];
        let mut band = grid.lock(grid.band_of(b + lo), grid.band_of(b + hi));
        let mut f = |c: usize, w: usize, v: T| op(band.cell(c), weight(w), v);
        let vals = &data[r * last..(r + 1) * last];
        row(vals, b, otab, &kind, wl.map(|w| (w, wbases[r])), &mut f);
    }
}

/// Row-major strides of a grid of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut g = vec![0usize; shape.len()];
    let mut s = 1;
    for k in (0..g.len()).rev() {
        g[k] = s;
        s *= shape[k];
    }
    g
}

/// The output tables of a subset starting at `start` (array indices) with
/// `shape`, into a grid over `region`: reduced dimensions add nothing,
/// kept ones their position, the grouped one its bin's.
fn out_tables(plan: &Plan, start: &[u64], shape: &[usize], region: &Region) -> Tables {
    let gstride = strides(&region.shape);
    let mut k = 0;
    (0..shape.len())
        .map(|d| {
            if plan.reduced[d] {
                return vec![0; shape[d]];
            }
            let rel = start[d] - plan.ranges[d].start;
            let t = (0..shape[d] as u64)
                .map(|i| {
                    let pos = rel + i;
                    let o = match &plan.group {
                        Some(g) if g.axis == d => u64::from(g.bins[pos as usize]),
                        _ => pos,
                    };
                    (o - region.origin[k]) as usize * gstride[k]
                })
                .collect();
            k += 1;
            t
        })
        .collect()
}

/// The weight tables of a subset: each position's offset into the
/// weights (stored over whole dimensions).
fn weight_tables(w: &Weights, start: &[u64], shape: &[usize]) -> Tables {
    (0..shape.len())
        .map(|d| {
            (0..shape[d] as u64)
                .map(|i| (start[d] + i) as usize * w.strides[d])
                .collect()
        })
        .collect()
}

/// Decodes `subset` in its stored type and accumulates it into `grid`,
/// the run's output grid over `region` (shared by its workers; this one
/// starts at band `start`); `mine` is the part of the output the subset
/// covers. Decoding happens before anything is added, so a chunk that
/// fails leaves the grid untouched.
///
/// sum, mean, count, min and max add each value straight into its output
/// cell: no per-chunk buffers, no merge pass. var and std first reduce the
/// chunk to per-cell (count, sum, M2) over `mine` around each cell's chunk
/// mean (two passes, for accuracy) and merge those with the parallel
/// formula. With weights, `sum` is the weighted sum and `wsum` the sum of
/// the weights of the valid values.
fn kernel<T: Num>(
    array: &Array<ManifestStorage>,
    plan: &Plan,
    subset: &ArraySubset,
    mine: &Region,
    region: &Region,
    grid: &SharedGrid,
    start_band: usize,
) -> Result<()> {
    let op = plan.op;
    let data: ArrayD<T> = array
        .retrieve_array_subset::<ArrayD<T>>(subset)
        .map_err(|e| Error::Decode(e.to_string()))?;
    let data = data.as_standard_layout();
    let flat = data.as_slice().expect("standard layout is contiguous");
    let shape = data.shape().to_vec();
    let start = subset.start();
    let info = &plan.info;
    let cf = !info.masks.is_empty() || info.scale != 1.0 || info.offset != 0.0;
    let decode = |raw: T| -> f64 {
        let v = raw.f();
        if cf {
            if info.masks.contains(&v) {
                f64::NAN
            } else {
                v * info.scale + info.offset
            }
        } else {
            v
        }
    };
    let wt = plan
        .weights
        .as_ref()
        .map(|w| (weight_tables(w, start, &shape), &w.values));
    let wtabs = wt.as_ref().map(|w| &w.0);
    let weight = |i: usize| wt.as_ref().map_or(1.0, |w| w.1[i]);
    if !op.needs_m2() {
        let tabs = out_tables(plan, start, &shape, region);
        let minmax = matches!(op, Op::Min | Op::Max);
        let wt = wt.as_ref().map(|w| (&w.0, &w.1[..]));
        match wt {
            None => walk_into(flat, &shape, &tabs, None, grid, start_band, |p, _, raw| {
                let v = decode(raw);
                if !v.is_nan() {
                    p.count += 1;
                    p.sum += v;
                    if minmax {
                        p.min = p.min.min(v);
                        p.max = p.max.max(v);
                    }
                }
            }),
            Some(_) => walk_into(flat, &shape, &tabs, wt, grid, start_band, |p, w, raw| {
                let v = decode(raw);
                if !v.is_nan() {
                    p.count += 1;
                    p.sum += w * v;
                    p.wsum += w;
                }
            }),
        }
        return Ok(());
    }
    // var/std: the chunk's own cells first.
    let tabs = out_tables(plan, start, &shape, mine);
    let cells = mine.cells();
    let mut count = vec![0u64; cells];
    let mut sum = vec![0.0f64; cells];
    let mut wsum = vec![0.0f64; cells];
    walk(flat, &shape, &tabs, wtabs, |c, wi, raw| {
        let v = decode(raw);
        if !v.is_nan() {
            let w = weight(wi);
            count[c] += 1;
            sum[c] += w * v;
            wsum[c] += w;
        }
    });
    let weighted = plan.weights.is_some();
    let mean: Vec<f64> = (0..cells)
        .map(|c| {
            let n = if weighted { wsum[c] } else { count[c] as f64 };
            if n != 0.0 {
                sum[c] / n
            } else {
                0.0
            }
        })
        .collect();
    let mut m2 = vec![0.0f64; cells];
    walk(flat, &shape, &tabs, wtabs, |c, wi, raw| {
        let v = decode(raw);
        if !v.is_nan() {
            let d = v - mean[c];
            m2[c] += weight(wi) * d * d;
        }
    });
    // The chunk's cells -> the grid's, in row-major order over `mine`: the
    // grid's cells come in increasing order, so each band is locked once.
    let gstride = strides(&region.shape);
    let mut idx = vec![0usize; mine.shape.len()];
    let mut held: Option<(usize, crate::grid::Band)> = None;
    for c in 0..cells {
        let g: usize = idx
            .iter()
            .zip(&mine.origin)
            .zip(region.origin.iter().zip(&gstride))
            .map(|((i, o), (ro, s))| (i + (o - ro) as usize) * s)
            .sum();
        let p = Partial {
            count: count[c],
            sum: sum[c],
            m2: m2[c],
            wsum: if weighted { wsum[c] } else { 0.0 },
            ..Partial::EMPTY
        };
        let b = grid.band_of(g);
        if held.as_ref().is_none_or(|h| h.0 != b) {
            drop(held.take()); // unlock the previous band first
            held = Some((b, grid.lock(b, b)));
        }
        let cell = held.as_mut().expect("a band is held").1.cell(g);
        *cell = cell.merge(p);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < mine.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

/// Reduces one chunk (intersected with the selection) into `grid`, over
/// `region` (row-major), which must contain the chunk's region; the
/// worker starts adding at band `start_band`.
pub fn reduce_chunk_into(
    array: &Array<ManifestStorage>,
    plan: &Plan,
    chunk: &[u64],
    region: &Region,
    grid: &SharedGrid,
    start_band: usize,
) -> Result<()> {
    let mine = plan.chunk_region(chunk)?;
    let inside = mine
        .origin
        .iter()
        .zip(&mine.shape)
        .zip(region.origin.iter().zip(&region.shape))
        .all(|((o, n), (ro, rn))| o >= ro && o + *n as u64 <= ro + *rn as u64);
    if !inside || grid.len() != region.cells() {
        return Err(Error::Selection(format!(
            "chunk {chunk:?} lies outside the grid it is reduced into"
        )));
    }
    let bounds = array
        .chunk_subset_bounded(chunk)
        .map_err(|e| Error::Decode(e.to_string()))?;
    let sel = ArraySubset::new_with_ranges(&plan.ranges);
    let part = bounds.overlap(&sel).map_err(|e| Error::Decode(e.to_string()))?;
    let (m, g, o, sb) = (&mine, region, grid, start_band);
    match plan.info.dt {
        Dtype::I8 => kernel::<i8>(array, plan, &part, m, g, o, sb),
        Dtype::I16 => kernel::<i16>(array, plan, &part, m, g, o, sb),
        Dtype::I32 => kernel::<i32>(array, plan, &part, m, g, o, sb),
        Dtype::I64 => kernel::<i64>(array, plan, &part, m, g, o, sb),
        Dtype::U8 => kernel::<u8>(array, plan, &part, m, g, o, sb),
        Dtype::U16 => kernel::<u16>(array, plan, &part, m, g, o, sb),
        Dtype::U32 => kernel::<u32>(array, plan, &part, m, g, o, sb),
        Dtype::U64 => kernel::<u64>(array, plan, &part, m, g, o, sb),
        Dtype::F32 => kernel::<f32>(array, plan, &part, m, g, o, sb),
        Dtype::F64 => kernel::<f64>(array, plan, &part, m, g, o, sb),
    }
}

/// Merged partials of the chunks that succeeded, and the chunks that failed
/// (index into the chunk list, error).
pub type ChunkResults = (Vec<Partial>, Vec<(usize, Error)>);

/// Computes `chunks` on `threads` threads into one grid over `region`,
/// shared by the workers. A chunk that fails (for example because its
/// blocks are not available) does not stop the others: its index is
/// returned with the error, and its data is left out of the partials. The
/// caller has checked the memory: one grid of `region`.
pub fn compute_chunks(
    array: &Array<ManifestStorage>,
    plan: &Plan,
    chunks: &[Vec<u64>],
    threads: usize,
    region: &Region,
) -> ChunkResults {
    let grid = SharedGrid::new(region.cells());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = threads.max(1).min(chunks.len().max(1));
    let mut failed: Vec<(usize, Error)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (next, grid) = (&next, &grid);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else { break };
                        // Workers start spread over the bands.
                        let start = (w * grid.bands()) / workers + i;
                        if let Err(e) = reduce_chunk_into(array, plan, chunk, region, grid, start) {
                            failed.push((i, e));
                        }
                    }
                    failed
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    failed.sort_by_key(|f| f.0);
    (grid.into_vec(), failed)
}

/// Runs the whole plan locally within its budget; any chunk failure is an
/// error.
pub fn run_local(array: &Arc<Array<ManifestStorage>>, plan: &Plan, threads: usize) -> Result<Vec<Partial>> {
    let threads = plan.threads_within(threads)?;
    let chunks: Vec<Vec<u64>> = plan.chunks().collect();
    let (out, failed) = compute_chunks(array, plan, &chunks, threads, &plan.full_region());
    match failed.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(out),
    }
}

/// The store key holding a chunk (a shard file for sharded arrays).
pub fn chunk_key(array: &Array<ManifestStorage>, chunk: &[u64]) -> String {
    array.chunk_key(chunk).as_str().to_string()
}

/// Most values a coordinate (or weights array) read whole may have.
pub const MAX_COORD_VALUES: u64 = 1 << 22;

fn all_values<T: Num>(array: &Array<ManifestStorage>, shape: &[u64]) -> Result<Vec<f64>> {
    let data: ArrayD<T> = array
        .retrieve_array_subset::<ArrayD<T>>(&ArraySubset::new_with_shape(shape.to_vec()))
        .map_err(|e| Error::Decode(e.to_string()))?;
    Ok(data.as_standard_layout().iter().map(|v| v.f()).collect())
}

/// An array read whole: its metadata, the stored values as float64 and the
/// CF-decoded ones (fill values NaN, scale and offset applied). At most
/// [`MAX_COORD_VALUES`] values, each chunk decoded within `budget` bytes;
/// `storage` must hold its metadata and chunks.
pub fn read_whole(
    storage: ManifestStorage,
    zarr_format: u8,
    path: &str,
    budget: u64,
) -> Result<(ArrayInfo, Vec<f64>, Vec<f64>)> {
    let info = array_info(&storage, zarr_format, path, false, &[], budget)?;
    let n = checked_product(&info.shape).unwrap_or(u64::MAX);
    if n > MAX_COORD_VALUES {
        return Err(Error::TooBig(format!(
            "{path} has {n} values; at most {MAX_COORD_VALUES} are read whole (for labels, groups or weights)"
        )));
    }
    let storage = Arc::new(storage.with_guard(info.guard.clone()));
    let array =
        Array::open(storage, &format!("/{path}")).map_err(|e| Error::Metadata(format!("cannot open {path}: {e}")))?;
    let shape = info.shape.clone();
    let raw = match info.dt {
        Dtype::I8 => all_values::<i8>(&array, &shape),
        Dtype::I16 => all_values::<i16>(&array, &shape),
        Dtype::I32 => all_values::<i32>(&array, &shape),
        Dtype::I64 => all_values::<i64>(&array, &shape),
        Dtype::U8 => all_values::<u8>(&array, &shape),
        Dtype::U16 => all_values::<u16>(&array, &shape),
        Dtype::U32 => all_values::<u32>(&array, &shape),
        Dtype::U64 => all_values::<u64>(&array, &shape),
        Dtype::F32 => all_values::<f32>(&array, &shape),
        Dtype::F64 => all_values::<f64>(&array, &shape),
    }?;
    let values = raw
        .iter()
        .map(|&v| {
            if info.masks.contains(&v) {
                f64::NAN
            } else {
                v * info.scale + info.offset
            }
        })
        .collect();
    Ok((info, raw, values))
}

/// The metadata attributes of an array (v3 `attributes`, v2 `.zattrs`).
pub fn array_attrs(storage: &ManifestStorage, zarr_format: u8, array: &str) -> Result<Map<String, Value>> {
    Ok(if zarr_format == 3 {
        read_json(storage, &format!("{array}/zarr.json"))?
            .and_then(|m| m.get("attributes").and_then(Value::as_object).cloned())
            .unwrap_or_default()
    } else {
        read_json(storage, &format!("{array}/.zattrs"))?.unwrap_or_default()
    })
}

/// Reads a 1-D coordinate array whole, CF-decoded (fill values are NaN,
/// scale and offset applied), with its time units and calendar when it
/// is a CF time axis. `storage` must hold the array's metadata and chunks.
pub fn read_coordinate(
    storage: ManifestStorage,
    zarr_format: u8,
    path: &str,
    budget: u64,
) -> Result<crate::label::Coordinate> {
    let attrs = array_attrs(&storage, zarr_format, path)?;
    let (info, raw, values) = read_whole(storage, zarr_format, path, budget)?;
    if info.shape.len() != 1 {
        return Err(Error::Selection(format!(
            "{path} has {} dimensions; a coordinate has one",
            info.shape.len()
        )));
    }
    let text = |k: &str| attrs.get(k).and_then(Value::as_str).map(str::to_string);
    let time = text("units")
        .filter(|u| u.contains(" since "))
        .map(|u| (u, text("calendar").unwrap_or_else(|| "standard".into())));
    Ok(crate::label::Coordinate {
        values,
        raw,
        attrs,
        f32: info.dt == Dtype::F32 && info.scale == 1.0 && info.offset == 0.0,
        time,
    })
}
