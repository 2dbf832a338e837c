//! Array metadata as the engine needs it: the element type, the chunk
//! grid, CF decoding (`_FillValue`/`missing_value`, `scale_factor`,
//! `add_offset`), and whole reads of small arrays (coordinates, weights).
//!
//! Semantics follow `xarray.open_zarr(path)[array]` with xarray's
//! defaults: values equal to `_FillValue` or `missing_value` are missing,
//! `scale_factor`/`add_offset` applied, absent chunks read as the fill
//! value. For Zarr v2 the array's `fill_value` acts as `_FillValue` (as
//! xarray's default `use_zarr_fill_value_as_mask` does for v2); for v3 only
//! the `_FillValue` attribute does.

use std::sync::Arc;

use ndarray::ArrayD;
use serde_json::{Map, Value};
use zarrs::array::{Array, ArraySubset};

use crate::storage::ManifestStorage;
use crate::{Error, Result};

/// Most dimensions an array may have (numpy's and zarr-python's limit).
pub const MAX_DIMS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
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
    pub(crate) dt: Dtype,
    /// Decoded bytes of one chunk (the unit a worker decodes).
    pub chunk_bytes: u64,
    /// What the stored bytes of a chunk may decode to (checked before
    /// zarrs decodes them).
    pub guard: Option<crate::storage::DecodeGuard>,
    /// Set when a stored chunk is its values in C order, little-endian,
    /// zstd-compressed or not, and nothing else: the engine then decodes
    /// it itself, straight into a buffer each worker keeps.
    pub plain: Option<crate::storage::Plain>,
    /// Encoded values that mean "missing" (CF).
    pub(crate) masks: Vec<f64>,
    pub(crate) scale: f64,
    pub(crate) offset: f64,
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

/// A codec's name in a codec list entry (`{"name": ..., "configuration": ...}`).
fn codec_name(c: &Value) -> Option<&str> {
    c.get("name").and_then(Value::as_str)
}

/// The name of the codec whose output is stored (a checksum appended after
/// it does not change where the frame starts).
fn outermost(codecs: &[Value]) -> Option<String> {
    codecs
        .iter()
        .rev()
        .filter_map(codec_name)
        .find(|n| *n != "crc32c")
        .map(str::to_string)
}

pub(crate) fn checked_product(v: &[u64]) -> Option<u64> {
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
        let shard = codecs.iter().find(|c| codec_name(c) == Some("sharding_indexed"));
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
    let plain = plain_layout(zarr_format, &meta, dt.size());
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
        plain,
        masks,
        scale,
        offset,
    })
}

/// Whether a stored chunk of this array is exactly its values in C order
/// and this machine's (little-endian) byte order, zstd-compressed or not:
/// v3 codecs `bytes` (little-endian) then at most `zstd`; v2 no filters,
/// order C, a little-endian (or one-byte) dtype and no compressor or zstd.
/// Anything else (sharding, transpose, checksums, blosc, big-endian) is
/// decoded by zarrs.
fn plain_layout(zarr_format: u8, meta: &Map<String, Value>, elem: u64) -> Option<crate::storage::Plain> {
    use crate::storage::Plain;
    if cfg!(target_endian = "big") {
        return None;
    }
    if zarr_format == 3 {
        let codecs = meta.get("codecs")?.as_array()?;
        let bytes = codecs.first()?;
        let endian = bytes
            .get("configuration")
            .and_then(|c| c.get("endian"))
            .and_then(Value::as_str);
        if codec_name(bytes) != Some("bytes") || !(endian == Some("little") || (endian.is_none() && elem == 1)) {
            return None;
        }
        return match &codecs[1..] {
            [] => Some(Plain::Raw),
            [z] if codec_name(z) == Some("zstd") => Some(Plain::Zstd),
            _ => None,
        };
    }
    let dtype = meta.get("dtype").and_then(Value::as_str)?;
    let filters = meta.get("filters").unwrap_or(&Value::Null);
    let order = meta.get("order").and_then(Value::as_str).unwrap_or("C");
    let no_filters = filters.is_null() || filters.as_array().is_some_and(Vec::is_empty);
    if !(dtype.starts_with('<') || dtype.starts_with('|')) || !no_filters || order != "C" {
        return None;
    }
    match meta.get("compressor").unwrap_or(&Value::Null) {
        Value::Null => Some(Plain::Raw),
        c if c.get("id").and_then(Value::as_str) == Some("zstd") => Some(Plain::Zstd),
        _ => None,
    }
}

/// A stored element type, widened to f64 for accumulation.
pub(crate) trait Num: Copy + bytemuck::Pod + zarrs::array::ElementOwned + Send + Sync + 'static {
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

pub(crate) use shoal_core::text::human_size as human;
