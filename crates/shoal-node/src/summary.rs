//! What a catalogue says about a dataset, derived from the dataset itself:
//! the [`Summary`] a publisher signs (title and description from the root
//! attributes, the variables, the time extent decoded from CF time in its
//! calendar, the bbox from the latitude and longitude coordinates), and
//! the quick-look PNG of one variable ([`thumbnail`]): a mean over time
//! computed by the query engine where the chunks are, colour-mapped.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use shoal_core::Cid;
use shoal_net::catalogue::{clip, Summary, Variable, MAX_DESCRIPTION, MAX_FIELD, MAX_VARIABLES};
use shoal_query::label::TimeAxis;
use shoal_query::meta;
use shoal_query::storage::{FetchFn, ManifestStorage};
use shoal_query::{Op, QuerySpec};

use crate::error::{Error, Result};
use crate::services::Services;

/// Names a latitude / longitude coordinate goes by.
const LAT: [&str; 3] = ["lat", "latitude", "nav_lat"];
const LON: [&str; 3] = ["lon", "longitude", "nav_lon"];
/// Decoded bytes a thumbnail's mean reads at most (whole chunks along
/// time, the newest first; at least one chunk's worth).
pub const THUMBNAIL_BYTES: u64 = 64 << 20;
/// Longest side of a thumbnail, pixels.
pub const THUMBNAIL_SIDE: usize = 256;

/// One array's metadata document and attributes.
struct ArrayDoc {
    meta: Map<String, Value>,
    attrs: Map<String, Value>,
}

fn text(attrs: &Map<String, Value>, keys: &[&str], max: usize) -> String {
    let s = keys
        .iter()
        .find_map(|k| attrs.get(*k).and_then(Value::as_str))
        .unwrap_or("");
    // Control characters become spaces (a description keeps its newlines).
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect();
    clip(s.trim(), max)
}

fn one_line(s: String) -> String {
    s.replace(['\n', '\t'], " ")
}

/// The dtype as numpy names it (`<f4` and `float32` are both `float32`).
fn dtype_name(zarr_format: u8, meta: &Map<String, Value>) -> String {
    let raw = if zarr_format == 3 {
        meta.get("data_type")
    } else {
        meta.get("dtype")
    };
    let Some(s) = raw.and_then(Value::as_str) else {
        return "other".into();
    };
    if zarr_format == 3 {
        return clip(s, 32);
    }
    let t = s.trim_start_matches(['<', '>', '|', '=']);
    let (kind, size) = t.split_at(t.len().min(1));
    match (kind, size) {
        ("f", n) => format!("float{}", n.parse::<u32>().unwrap_or(0) * 8),
        ("i", n) => format!("int{}", n.parse::<u32>().unwrap_or(0) * 8),
        ("u", n) => format!("uint{}", n.parse::<u32>().unwrap_or(0) * 8),
        ("b", _) => "bool".into(),
        _ => clip(t, 32),
    }
}

/// A dataset's Zarr format, root attributes and arrays by path.
type Documents = (u8, Map<String, Value>, BTreeMap<String, ArrayDoc>);

/// Every array's metadata and the root attributes, from the metadata
/// documents the manifest keeps inline.
fn documents(parts: &Services, root: Cid) -> Result<Documents> {
    let m = parts.manifest(&root)?;
    let reader = parts.reader(root);
    let mut fetch = reader.fetch();
    let mut docs: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for e in &m.metadata {
        if e.size > 16 << 20 {
            continue;
        }
        let data = shoal_zarr::read::entry_range(&m, e, 0, e.size, &mut fetch)?;
        if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&data) {
            docs.insert(e.key.clone(), o);
        }
    }
    let v3 = m.zarr_format == 3;
    let root_attrs = if v3 {
        docs.get("zarr.json")
            .and_then(|d| d.get("attributes"))
            .and_then(Value::as_object)
            .cloned()
    } else {
        docs.get(".zattrs").cloned()
    }
    .unwrap_or_default();
    let mut arrays = BTreeMap::new();
    for (key, doc) in &docs {
        let path = if v3 {
            match key.strip_suffix("/zarr.json") {
                Some(p) if doc.get("node_type").and_then(Value::as_str) == Some("array") => p,
                _ => continue,
            }
        } else {
            match key.strip_suffix("/.zarray") {
                Some(p) => p,
                None => continue,
            }
        };
        let attrs = if v3 {
            doc.get("attributes").and_then(Value::as_object).cloned()
        } else {
            docs.get(&format!("{path}/.zattrs")).cloned()
        }
        .unwrap_or_default();
        arrays.insert(
            path.to_string(),
            ArrayDoc {
                meta: doc.clone(),
                attrs,
            },
        );
    }
    Ok((m.zarr_format, root_attrs, arrays))
}

fn variable(zarr_format: u8, path: &str, d: &ArrayDoc) -> Variable {
    let shape: Vec<u64> = d
        .meta
        .get("shape")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
        .unwrap_or_default();
    let names = if zarr_format == 3 {
        d.meta.get("dimension_names")
    } else {
        d.attrs.get("_ARRAY_DIMENSIONS")
    };
    let mut dims: Vec<String> = names
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| clip(v.as_str().unwrap_or(""), MAX_FIELD)).collect())
        .unwrap_or_default();
    if dims.len() != shape.len() {
        dims = (0..shape.len()).map(|i| format!("dim_{i}")).collect();
    }
    let mut shape = shape;
    dims.truncate(shoal_net::catalogue::MAX_DIMS);
    shape.truncate(dims.len());
    let name = clip(path, MAX_FIELD);
    let leaf = path.rsplit('/').next().unwrap_or(path);
    Variable {
        coord: dims.len() == 1 && dims[0] == leaf,
        dtype: dtype_name(zarr_format, &d.meta),
        units: one_line(text(&d.attrs, &["units"], MAX_FIELD)),
        long_name: one_line(text(&d.attrs, &["long_name"], MAX_FIELD)),
        standard_name: one_line(text(&d.attrs, &["standard_name"], MAX_FIELD)),
        name,
        dims,
        shape,
    }
}

fn is_coord_of(v: &Variable, names: &[&str], standard: &str, units: &[&str]) -> bool {
    let leaf = v.name.rsplit('/').next().unwrap_or(&v.name).to_lowercase();
    v.dims.len() == 1
        && (names.contains(&leaf.as_str()) || v.standard_name == standard || units.contains(&v.units.as_str()))
}

fn is_lat(v: &Variable) -> bool {
    is_coord_of(v, &LAT, "latitude", &["degrees_north", "degree_north", "degrees_N"])
}

fn is_lon(v: &Variable) -> bool {
    is_coord_of(v, &LON, "longitude", &["degrees_east", "degree_east", "degrees_E"])
}

fn storage(parts: &Services, root: Cid) -> Result<ManifestStorage> {
    let m = parts.manifest(&root)?;
    let reader = Arc::new(parts.reader(root));
    let fetch: FetchFn = Arc::new(move |c| reader.get(c));
    Ok(ManifestStorage::lazy(m, fetch))
}

/// A 1-D coordinate's finite values, min and max.
fn extent(
    parts: &Services,
    root: Cid,
    zarr_format: u8,
    path: &str,
) -> Option<(f64, f64, shoal_query::label::Coordinate)> {
    let s = storage(parts, root).ok()?;
    let c = meta::read_coordinate(s, zarr_format, path, parts.query.memory).ok()?;
    let (lo, hi) = c
        .values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    (lo <= hi).then_some((lo, hi, c))
}

/// West, east of longitudes `lo..=hi` in -180..180 (west > east crosses 180°).
fn longitudes(lo: f64, hi: f64) -> (f64, f64) {
    if hi - lo >= 359.0 {
        return (-180.0, 180.0);
    }
    let wrap = |x: f64| {
        let y = (x + 180.0).rem_euclid(360.0) - 180.0;
        if y == -180.0 && x > 0.0 {
            180.0
        } else {
            y
        }
    };
    (wrap(lo), wrap(hi))
}

/// The summary of dataset `root` published as `name`.
pub(crate) fn summarise(parts: &Services, root: Cid, name: &str, view: Option<Cid>) -> Result<Summary> {
    let m = parts.manifest(&root)?;
    let (zf, attrs, arrays) = documents(parts, root)?;
    let mut vars: Vec<Variable> = arrays.iter().map(|(p, d)| variable(zf, p, d)).collect();
    // Data variables first, then coordinates, each in path order.
    vars.sort_by_key(|v| v.coord);
    let mut s = Summary {
        title: one_line(text(&attrs, &["title"], MAX_FIELD)),
        description: text(&attrs, &["summary", "description", "comment"], MAX_DESCRIPTION),
        institution: one_line(text(&attrs, &["institution"], MAX_FIELD)),
        source: text(&attrs, &["source"], MAX_FIELD),
        size: m.total_bytes,
        keys: m.key_count,
        zarr_format: zf,
        view,
        ..Summary::default()
    };
    if s.title.is_empty() {
        s.title = clip(name, MAX_FIELD);
    }
    // The time extent: the first CF time coordinate ("time" first).
    let mut times: Vec<&Variable> = vars
        .iter()
        .filter(|v| v.dims.len() == 1 && v.units.contains(" since "))
        .collect();
    times.sort_by_key(|v| v.name != "time");
    for v in times {
        let Some((lo, hi, c)) = extent(parts, root, zf, &v.name) else {
            continue;
        };
        let Some((units, cal)) = c.time.clone() else { continue };
        let Ok(axis) = TimeAxis::new(&units, &cal) else {
            continue;
        };
        if let (Ok(a), Ok(b)) = (axis.format(lo), axis.format(hi)) {
            s.time = Some((a, b));
            s.calendar = clip(&cal, 32);
            break;
        }
    }
    // The bbox: latitude and longitude coordinates.
    let lat = vars.iter().find(|v| is_lat(v)).map(|v| v.name.clone());
    let lon = vars.iter().find(|v| is_lon(v)).map(|v| v.name.clone());
    if let (Some(lat), Some(lon)) = (lat, lon) {
        if let (Some((s0, n0, _)), Some((w0, e0, _))) = (extent(parts, root, zf, &lat), extent(parts, root, zf, &lon)) {
            let (w, e) = longitudes(w0, e0);
            s.bbox = Some([w, s0.clamp(-90.0, 90.0), e, n0.clamp(-90.0, 90.0)]);
        }
    }
    // The quick-look: the first data variable over latitude and longitude
    // (its last two dimensions), else over any two dimensions.
    let numeric =
        |v: &&Variable| v.dtype.starts_with("float") || v.dtype.starts_with("int") || v.dtype.starts_with("uint");
    let over_map = |v: &&Variable| {
        let n = v.dims.len();
        n >= 2 && {
            let (y, x) = (v.dims[n - 2].to_lowercase(), v.dims[n - 1].to_lowercase());
            (LAT.contains(&y.as_str()) || y == "y") && (LON.contains(&x.as_str()) || x == "x")
        }
    };
    let data = || vars.iter().filter(|v| !v.coord).filter(numeric);
    if let Some(v) = data().find(over_map).or_else(|| data().find(|v| v.dims.len() >= 2)) {
        s.thumbnail = v.name.clone();
    }
    if vars.len() > MAX_VARIABLES {
        s.more_variables = (vars.len() - MAX_VARIABLES) as u64;
        vars.truncate(MAX_VARIABLES);
    }
    s.variables = vars;
    Ok(s)
}

/// The quick-look of `var` of dataset `root`: the mean over every
/// dimension but the last two (along the first, only its newest whole
/// chunks within [`THUMBNAIL_BYTES`]), colour-mapped (viridis, NaN
/// transparent), north up, at most [`THUMBNAIL_SIDE`] pixels a side, PNG.
pub(crate) fn thumbnail(parts: &Services, root: Cid, var: &str) -> Result<Vec<u8>> {
    let s = storage(parts, root)?;
    let m = parts.manifest(&root)?;
    let info = meta::array_info(&s, m.zarr_format, var, false, &[], parts.query.memory).map_err(Error::from)?;
    let n = info.shape.len();
    if n < 2 {
        return Err(Error::BadRequest(format!(
            "{var} has {n} dimensions; a quick-look needs two"
        )));
    }
    let mut spec = QuerySpec::new(var, Op::Mean);
    spec.dims = info.dims[..n - 2].to_vec();
    if n > 2 {
        let elem = info.chunk_bytes / info.chunk_shape.iter().product::<u64>().max(1);
        let step: u64 = info.shape[1..].iter().product::<u64>() * elem.max(1);
        let c = info.chunk_shape[0].max(1);
        let want = (THUMBNAIL_BYTES / step.max(1)).max(1).min(info.shape[0]);
        let start = (info.shape[0] - want) / c * c;
        spec.sel = vec![(info.dims[0].clone(), start, info.shape[0])];
    }
    let report = crate::query::execute(parts, root, spec)?;
    let (h, w) = (report.shape[0], report.shape[1]);
    // North up: latitudes stored south to north are drawn reversed.
    let ydim = &info.dims[n - 2];
    let group = var.rsplit_once('/').map(|(g, _)| format!("{g}/")).unwrap_or_default();
    let flip = extent(parts, root, m.zarr_format, &format!("{group}{ydim}"))
        .is_some_and(|(_, _, c)| c.values.len() > 1 && c.values[0] < c.values[c.values.len() - 1]);
    Ok(render(&report.values, h, w, flip))
}

/// Viridis at nine stops.
const VIRIDIS: [[f64; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 123.0],
    [59.0, 82.0, 139.0],
    [44.0, 114.0, 142.0],
    [33.0, 145.0, 140.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

fn colour(t: f64) -> [u8; 3] {
    let x = t.clamp(0.0, 1.0) * 8.0;
    let i = (x.floor() as usize).min(7);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    [0, 1, 2].map(|k| (a[k] + (b[k] - a[k]) * f).round() as u8)
}

/// `values` (h x w, row-major) as an RGBA PNG, each pixel the mean of
/// the cells it covers.
pub fn render(values: &[f64], h: usize, w: usize, flip: bool) -> Vec<u8> {
    let scale = (h.max(w) as f64 / THUMBNAIL_SIDE as f64).max(1.0);
    let (ph, pw) = (
        ((h as f64 / scale).round() as usize).max(1),
        ((w as f64 / scale).round() as usize).max(1),
    );
    let mut px = vec![f64::NAN; ph * pw];
    for (py, row) in px.chunks_mut(pw).enumerate() {
        let (y0, y1) = (py * h / ph, ((py + 1) * h / ph).max(py * h / ph + 1));
        for (qx, out) in row.iter_mut().enumerate() {
            let (x0, x1) = (qx * w / pw, ((qx + 1) * w / pw).max(qx * w / pw + 1));
            let (mut sum, mut k) = (0.0, 0u32);
            for y in y0..y1.min(h) {
                for v in &values[y * w + x0..y * w + x1.min(w)] {
                    if v.is_finite() {
                        sum += v;
                        k += 1;
                    }
                }
            }
            if k > 0 {
                *out = sum / f64::from(k);
            }
        }
    }
    let (lo, hi) = px
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut rgba = Vec::with_capacity(ph * pw * 4);
    for y in 0..ph {
        let row = if flip { ph - 1 - y } else { y };
        for &v in &px[row * pw..(row + 1) * pw] {
            if v.is_finite() {
                let [r, g, b] = colour((v - lo) / span);
                rgba.extend([r, g, b, 255]);
            } else {
                rgba.extend([0, 0, 0, 0]);
            }
        }
    }
    png(&rgba, pw as u32, ph as u32)
}

/// An 8-bit RGBA PNG of `rgba` (w x h).
pub fn png(rgba: &[u8], w: u32, h: u32) -> Vec<u8> {
    use std::io::Write;
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 6, 0, 0, 0]); // 8 bits, RGBA, deflate, no filter method, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    for row in rgba.chunks((w * 4) as usize) {
        z.write_all(&[0])
            .and_then(|_| z.write_all(row))
            .expect("writes to memory");
    }
    let idat = z.finish().expect("writes to memory");
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longitudes_wrap_into_minus_180_to_180() {
        assert_eq!(longitudes(0.0, 359.5), (-180.0, 180.0));
        assert_eq!(
            longitudes(-179.5, 179.5),
            (-180.0, 180.0),
            "cell centres of a global grid"
        );
        assert_eq!(longitudes(-170.0, 170.0), (-170.0, 170.0));
        assert_eq!(longitudes(100.0, 250.0), (100.0, -110.0), "crosses 180°");
        assert_eq!(longitudes(190.0, 200.0), (-170.0, -160.0));
        assert_eq!(longitudes(10.0, 180.0), (10.0, 180.0));
    }

    #[test]
    fn a_rendered_grid_is_a_png_of_the_right_size_with_nan_transparent() {
        let (h, w) = (600, 300);
        let mut v: Vec<f64> = (0..h * w).map(|i| (i % w) as f64).collect();
        v[0] = f64::NAN;
        let png = render(&v, h, w, false);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        let (pw, ph) = (
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
        );
        assert_eq!((pw, ph), (128, 256));
        assert_eq!(colour(0.0), [68, 1, 84]);
        assert_eq!(colour(1.0), [253, 231, 37]);
        assert_eq!(
            dtype_name(2, serde_json::json!({"dtype": "<f4"}).as_object().unwrap()),
            "float32"
        );
        assert_eq!(
            dtype_name(2, serde_json::json!({"dtype": "|u1"}).as_object().unwrap()),
            "uint8"
        );
    }
}
