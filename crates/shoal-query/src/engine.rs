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

use crate::partial::{merge_into, Op, Partial};
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
    let codec = match last_codec.as_deref() {
        Some("zstd") => Some(crate::storage::Codec::Zstd),
        Some("blosc") => Some(crate::storage::Codec::Blosc),
        Some("gzip") => Some(crate::storage::Codec::Gzip),
        _ => None,
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
    let (chunk_shape, chunk_bytes, guard) = chunking(array, zarr_format, &meta, &shape, dt.size())?;
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
}

/// A box of output cells: `origin` and `shape` over the kept dimensions,
/// relative to the start of the selection. A worker's grid covers one
/// region, so a compute request allocates only the cells its chunks touch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region {
    pub origin: Vec<u64>,
    pub shape: Vec<usize>,
}

impl Region {
    pub fn cells(&self) -> usize {
        self.shape.iter().product::<usize>().max(1)
    }
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
    /// Memory a local run on `threads` workers needs: one output grid per
    /// worker plus the merged grid and the remote answers' grid, each
    /// worker's decode buffers, and the chunk list.
    pub fn memory(&self, threads: usize) -> u64 {
        let t = threads as u64;
        let grids = self.cells.saturating_mul(CELL_BYTES).saturating_mul(t + 2);
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
                "this query needs about {} ({} result cells at {CELL_BYTES} bytes per worker, chunks of {} decoded) but the query memory budget is {}: select less (--sel DIM=A:B), reduce over more dimensions (--dim), or raise [query] memory in config.toml",
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
                let lo = (c * cs).max(r.start);
                let hi = (c * cs).saturating_add(cs).min(r.end);
                origin.push(lo - r.start);
                shape.push((hi - lo) as usize);
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
    let reduced: Vec<bool> = info
        .dims
        .iter()
        .map(|d| spec.dims.is_empty() || spec.dims.contains(d))
        .collect();
    let kept: Vec<u64> = ranges
        .iter()
        .zip(&reduced)
        .filter(|(_, r)| !**r)
        .map(|(x, _)| x.end - x.start)
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
        .filter(|(_, r)| !**r)
        .map(|(d, _)| d.clone())
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

/// Walks `data` (row-major, `shape`) in memory order, calling `f(cell, v)`
/// for every element, where `cell` is the element's output cell: the
/// innermost axis is either kept (a run of consecutive cells) or reduced
/// (one cell), so no transpose or per-element index arithmetic is needed.
#[inline(always)]
fn walk<T: Num>(data: &[T], shape: &[usize], out_stride: &[usize], mut f: impl FnMut(usize, T)) {
    let nd = shape.len();
    if nd == 0 {
        if let Some(v) = data.first() {
            f(0, *v);
        }
        return;
    }
    let last = shape[nd - 1];
    let last_stride = out_stride[nd - 1];
    let mut idx = vec![0usize; nd - 1];
    for row in data.chunks_exact(last.max(1)) {
        let base: usize = idx.iter().zip(out_stride).map(|(i, s)| i * s).sum();
        if last_stride == 0 {
            for &v in row {
                f(base, v);
            }
        } else {
            for (j, &v) in row.iter().enumerate() {
                f(base + j, v);
            }
        }
        for d in (0..nd - 1).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Decodes `subset` in its stored type and accumulates it into `out`, the
/// worker's output grid, where the subset's share of the output starts at
/// `offset` (kept dimensions). Decoding happens before anything is added,
/// so a chunk that fails leaves `out` untouched.
///
/// sum, mean, count, min and max add each value straight into its output
/// cell: no per-chunk buffers, no merge pass. var and std first reduce the
/// chunk to per-cell (count, sum, M2) around each cell's chunk mean (two
/// passes, for accuracy) and merge those with the parallel formula.
fn kernel<T: Num>(
    array: &Array<ManifestStorage>,
    plan: &Plan,
    subset: &ArraySubset,
    offset: &[u64],
    grid_shape: &[usize],
    out: &mut [Partial],
) -> Result<()> {
    let op = plan.op;
    let data: ArrayD<T> = array
        .retrieve_array_subset::<ArrayD<T>>(subset)
        .map_err(|e| Error::Decode(e.to_string()))?;
    let data = data.as_standard_layout();
    let flat = data.as_slice().expect("standard layout is contiguous");
    let shape = data.shape().to_vec();
    // Row-major strides of the output grid, per kept dimension.
    let mut gstride = vec![0usize; grid_shape.len()];
    let mut s = 1;
    for k in (0..gstride.len()).rev() {
        gstride[k] = s;
        s *= grid_shape[k];
    }
    let base: usize = offset.iter().zip(&gstride).map(|(o, g)| *o as usize * g).sum();
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
    if !op.needs_m2() {
        let mut kept = gstride.iter();
        let out_stride: Vec<usize> = plan
            .reduced
            .iter()
            .map(|r| {
                if *r {
                    0
                } else {
                    *kept.next().expect("one stride per kept dim")
                }
            })
            .collect();
        let minmax = matches!(op, Op::Min | Op::Max);
        walk(flat, &shape, &out_stride, |c, raw| {
            let v = decode(raw);
            if !v.is_nan() {
                let p = &mut out[base + c];
                p.count += 1;
                p.sum += v;
                if minmax {
                    p.min = p.min.min(v);
                    p.max = p.max.max(v);
                }
            }
        });
        return Ok(());
    }
    // var/std: chunk-local cells first.
    let kept_shape: Vec<usize> = shape
        .iter()
        .zip(&plan.reduced)
        .filter(|(_, r)| !**r)
        .map(|(n, _)| *n)
        .collect();
    let cells: usize = kept_shape.iter().product();
    let mut local_stride = vec![0usize; shape.len()];
    let mut s = 1;
    for d in (0..shape.len()).rev() {
        if !plan.reduced[d] {
            local_stride[d] = s;
            s *= shape[d];
        }
    }
    let mut count = vec![0u64; cells];
    let mut sum = vec![0.0f64; cells];
    walk(flat, &shape, &local_stride, |c, raw| {
        let v = decode(raw);
        if !v.is_nan() {
            count[c] += 1;
            sum[c] += v;
        }
    });
    let mean: Vec<f64> = sum
        .iter()
        .zip(&count)
        .map(|(s, n)| if *n > 0 { s / *n as f64 } else { 0.0 })
        .collect();
    let mut m2 = vec![0.0f64; cells];
    walk(flat, &shape, &local_stride, |c, raw| {
        let v = decode(raw);
        if !v.is_nan() {
            let d = v - mean[c];
            m2[c] += d * d;
        }
    });
    // Local cell -> output cell, in row-major order over the kept shape.
    let mut idx = vec![0usize; kept_shape.len()];
    for c in 0..cells {
        let g = base + idx.iter().zip(&gstride).map(|(i, s)| i * s).sum::<usize>();
        let p = Partial {
            count: count[c],
            sum: sum[c],
            m2: m2[c],
            ..Partial::EMPTY
        };
        out[g] = out[g].merge(p);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < kept_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}

/// Reduces one chunk (intersected with the selection) into `out`, a grid
/// over `region` (row-major), which must contain the chunk's region.
pub fn reduce_chunk_into(
    array: &Array<ManifestStorage>,
    plan: &Plan,
    chunk: &[u64],
    region: &Region,
    out: &mut [Partial],
) -> Result<()> {
    let mine = plan.chunk_region(chunk)?;
    let inside = mine
        .origin
        .iter()
        .zip(&mine.shape)
        .zip(region.origin.iter().zip(&region.shape))
        .all(|((o, n), (ro, rn))| o >= ro && o + *n as u64 <= ro + *rn as u64);
    if !inside || out.len() != region.cells() {
        return Err(Error::Selection(format!(
            "chunk {chunk:?} lies outside the grid it is reduced into"
        )));
    }
    let bounds = array
        .chunk_subset_bounded(chunk)
        .map_err(|e| Error::Decode(e.to_string()))?;
    let sel = ArraySubset::new_with_ranges(&plan.ranges);
    let part = bounds.overlap(&sel).map_err(|e| Error::Decode(e.to_string()))?;
    let offset: Vec<u64> = mine.origin.iter().zip(&region.origin).map(|(o, r)| o - r).collect();
    let g = &region.shape;
    match plan.info.dt {
        Dtype::I8 => kernel::<i8>(array, plan, &part, &offset, g, out),
        Dtype::I16 => kernel::<i16>(array, plan, &part, &offset, g, out),
        Dtype::I32 => kernel::<i32>(array, plan, &part, &offset, g, out),
        Dtype::I64 => kernel::<i64>(array, plan, &part, &offset, g, out),
        Dtype::U8 => kernel::<u8>(array, plan, &part, &offset, g, out),
        Dtype::U16 => kernel::<u16>(array, plan, &part, &offset, g, out),
        Dtype::U32 => kernel::<u32>(array, plan, &part, &offset, g, out),
        Dtype::U64 => kernel::<u64>(array, plan, &part, &offset, g, out),
        Dtype::F32 => kernel::<f32>(array, plan, &part, &offset, g, out),
        Dtype::F64 => kernel::<f64>(array, plan, &part, &offset, g, out),
    }
}

/// Merged partials of the chunks that succeeded, and the chunks that failed
/// (index into the chunk list, error).
pub type ChunkResults = (Vec<Partial>, Vec<(usize, Error)>);

/// Computes `chunks` on `threads` threads into a grid over `region`. A
/// chunk that fails (for example because its blocks are not available)
/// does not stop the others: its index is returned with the error, and its
/// data is left out of the partials. The caller has checked the memory:
/// `threads` grids of `region` plus one merged grid.
pub fn compute_chunks(
    array: &Array<ManifestStorage>,
    plan: &Plan,
    chunks: &[Vec<u64>],
    threads: usize,
    region: &Region,
) -> ChunkResults {
    let cells = region.cells();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<ChunkResults> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1).min(chunks.len().max(1)))
            .map(|_| {
                let next = &next;
                s.spawn(move || {
                    let mut out = vec![Partial::EMPTY; cells];
                    let mut failed = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else { break };
                        match reduce_chunk_into(array, plan, chunk, region, &mut out) {
                            Ok(()) => {}
                            Err(e) => failed.push((i, e)),
                        }
                    }
                    (out, failed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    // Merge into the first worker's grid (no extra grid).
    let mut results = results.into_iter();
    let (mut out, mut failed) = results
        .next()
        .unwrap_or_else(|| (vec![Partial::EMPTY; cells], Vec::new()));
    for (r, f) in results {
        merge_into(&mut out, &r);
        failed.extend(f);
    }
    failed.sort_by_key(|f| f.0);
    (out, failed)
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

/// Most values a coordinate read for label selection may have.
pub const MAX_COORD_VALUES: u64 = 1 << 22;

fn all_values<T: Num>(array: &Array<ManifestStorage>, n: u64) -> Result<Vec<f64>> {
    let data: ArrayD<T> = array
        .retrieve_array_subset::<ArrayD<T>>(&ArraySubset::new_with_shape(vec![n]))
        .map_err(|e| Error::Decode(e.to_string()))?;
    Ok(data.iter().map(|v| v.f()).collect())
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
pub fn read_coordinate(storage: ManifestStorage, zarr_format: u8, path: &str) -> Result<crate::label::Coordinate> {
    let info = array_info(&storage, zarr_format, path, false, &[])?;
    if info.shape.len() != 1 {
        return Err(Error::Selection(format!(
            "{path} has {} dimensions; a coordinate for label selection has one",
            info.shape.len()
        )));
    }
    let n = info.shape[0];
    if n > MAX_COORD_VALUES {
        return Err(Error::TooBig(format!(
            "coordinate {path} has {n} values (at most {MAX_COORD_VALUES} for label selection; use --isel)"
        )));
    }
    let attrs = array_attrs(&storage, zarr_format, path)?;
    let storage = Arc::new(storage.with_guard(info.guard.clone()));
    let array = Array::open(storage, &format!("/{path}"))
        .map_err(|e| Error::Metadata(format!("cannot open coordinate {path}: {e}")))?;
    let raw = match info.dt {
        Dtype::I8 => all_values::<i8>(&array, n),
        Dtype::I16 => all_values::<i16>(&array, n),
        Dtype::I32 => all_values::<i32>(&array, n),
        Dtype::I64 => all_values::<i64>(&array, n),
        Dtype::U8 => all_values::<u8>(&array, n),
        Dtype::U16 => all_values::<u16>(&array, n),
        Dtype::U32 => all_values::<u32>(&array, n),
        Dtype::U64 => all_values::<u64>(&array, n),
        Dtype::F32 => all_values::<f32>(&array, n),
        Dtype::F64 => all_values::<f64>(&array, n),
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
