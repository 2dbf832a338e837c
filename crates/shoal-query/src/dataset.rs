//! A query result written as a Zarr dataset that xarray opens: each
//! result under its array's name, the coordinates of their dimensions (stored values
//! and attributes as in the source, so times decode as they did there), the
//! array's attributes without its storage encoding, CF `cell_methods`, and
//! provenance. Zarr v2 with consolidated metadata, uncompressed float64
//! chunks of at most [`CHUNK_BYTES`].

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::Op;

/// Largest chunk written, bytes.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Attributes that describe how the source was stored, not what it means:
/// the result holds decoded float64 values.
const ENCODING_ATTRS: [&str; 8] = [
    "_FillValue",
    "missing_value",
    "scale_factor",
    "add_offset",
    "_ARRAY_DIMENSIONS",
    "dtype",
    "_Unsigned",
    "coordinates",
];

/// One coordinate of the result: float64 values, integers (`int`), or
/// strings (`labels`, e.g. seasons).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResultCoord {
    pub dim: String,
    pub values: Vec<f64>,
    pub attrs: Map<String, Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub int: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl ResultCoord {
    pub fn new(dim: &str, values: Vec<f64>, attrs: Map<String, Value>) -> Self {
        ResultCoord {
            dim: dim.into(),
            values,
            attrs,
            int: false,
            labels: Vec::new(),
        }
    }

    /// The coordinate of a grouped dimension: integer keys, season names,
    /// or bin edges in the time coordinate's units (with its `units` and
    /// `calendar`, so they decode as the source's times do).
    pub fn of_labels(dim: &str, labels: &crate::group::Labels, time_attrs: &Map<String, Value>) -> Self {
        use crate::group::Labels;
        match labels {
            Labels::Int(v) => ResultCoord {
                int: true,
                ..Self::new(dim, v.iter().map(|x| *x as f64).collect(), Map::new())
            },
            Labels::Str(v) => ResultCoord {
                labels: v.clone(),
                ..Self::new(dim, Vec::new(), Map::new())
            },
            Labels::Time(v) => {
                let attrs = time_attrs
                    .iter()
                    .filter(|(k, _)| !ENCODING_ATTRS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Self::new(dim, v.clone(), attrs)
            }
        }
    }

    /// Number of positions.
    pub fn len(&self) -> usize {
        if self.labels.is_empty() {
            self.values.len()
        } else {
            self.labels.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One variable of a result.
#[derive(Debug, Clone)]
pub struct ResultVar<'a> {
    /// The source array's path in its dataset; the variable is named by
    /// its last component.
    pub array: &'a str,
    pub op: Op,
    pub dims: &'a [String],
    pub reduced: &'a [String],
    pub shape: &'a [usize],
    /// Row-major values, NaN where no valid input.
    pub values: &'a [f64],
    /// The source array's attributes.
    pub attrs: &'a Map<String, Value>,
    /// Coordinates of its dimensions (shared ones are written once).
    pub coords: &'a [ResultCoord],
}

impl ResultVar<'_> {
    fn name(&self) -> &str {
        self.array.rsplit('/').next().unwrap_or(self.array)
    }
}

/// What is written.
#[derive(Debug, Clone)]
pub struct ResultDataset<'a> {
    pub vars: Vec<ResultVar<'a>>,
    /// Provenance: the input dataset's root CID and the query.
    pub source: &'a str,
    pub query: Value,
}

fn cf_method(op: Op) -> &'static str {
    match op {
        Op::Sum => "sum",
        Op::Mean => "mean",
        Op::Min => "minimum",
        Op::Max => "maximum",
        Op::Var => "variance",
        Op::Std => "standard_deviation",
        // Not a CF method: the number of valid values.
        Op::Count => "count",
    }
}

/// The array's `.zarray` for float64 values of `shape`, chunked along the
/// first dimension so a chunk stays under [`CHUNK_BYTES`].
fn zarray(shape: &[usize]) -> (Value, usize) {
    let row: usize = shape.iter().skip(1).product::<usize>().max(1) * 8;
    let first = shape.first().copied().unwrap_or(1);
    let rows = (CHUNK_BYTES / row).clamp(1, first.max(1));
    let mut chunks: Vec<usize> = shape.to_vec();
    if let Some(c) = chunks.first_mut() {
        *c = rows;
    }
    let meta = json!({
        "zarr_format": 2,
        "shape": shape,
        "chunks": chunks,
        "dtype": "<f8",
        "compressor": null,
        "fill_value": "NaN",
        "filters": null,
        "order": "C",
        "dimension_separator": ".",
    });
    (meta, rows)
}

/// Writes the chunks of a row-major float64 array (`rows` along the first
/// dimension per chunk) under `dir`.
fn write_chunks(dir: &Path, shape: &[usize], values: &[f64], rows: usize) -> std::io::Result<()> {
    if shape.is_empty() {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        return std::fs::write(dir.join("0"), bytes);
    }
    let row: usize = shape.iter().skip(1).product::<usize>().max(1);
    let tail = ".0".repeat(shape.len() - 1);
    for (i, start) in (0..shape[0].max(1)).step_by(rows).enumerate() {
        let end = (start + rows).min(shape[0]);
        // The last chunk is padded to the full chunk shape with NaN.
        let mut bytes = Vec::with_capacity(rows * row * 8);
        for v in &values[start * row..end * row] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        for _ in (end - start) * row..rows * row {
            bytes.extend_from_slice(&f64::NAN.to_le_bytes());
        }
        std::fs::write(dir.join(format!("{i}{tail}")), bytes)?;
    }
    Ok(())
}

fn write_json(path: &Path, v: &Value) -> std::io::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("JSON values serialise"))
}

impl ResultDataset<'_> {
    /// Writes the dataset at `path`, which must not exist or be an empty
    /// directory (nothing is overwritten). Written beside `path` first and
    /// renamed into place, so a failure leaves no half dataset.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if path.exists() && std::fs::read_dir(path)?.next().is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not empty", path.display()),
            ));
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("result");
        let tmp = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let r = self.write_into(&tmp).and_then(|_| {
            if path.exists() {
                std::fs::remove_dir(path)?;
            }
            std::fs::rename(&tmp, path)
        });
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        r
    }

    fn write_into(&self, root: &Path) -> std::io::Result<()> {
        let names: Vec<&str> = self.vars.iter().map(ResultVar::name).collect();
        let mut consolidated = Map::new();
        let mut put = |key: String, v: Value, dir: &Path| -> std::io::Result<()> {
            let file = dir.join(key.rsplit('/').next().expect("a key"));
            write_json(&file, &v)?;
            consolidated.insert(key, v);
            Ok(())
        };
        put(".zgroup".into(), json!({"zarr_format": 2}), root)?;
        let history: Vec<String> = self
            .vars
            .iter()
            .map(|v| format!("{} of {} over ({})", v.op, v.name(), v.reduced.join(", ")))
            .collect();
        put(
            ".zattrs".into(),
            json!({
                "source": self.source,
                "shoal_query": self.query,
                "history": format!("shoal query: {}", history.join("; ")),
            }),
            root,
        )?;
        let mut written: Vec<&str> = Vec::new();
        for v in &self.vars {
            v.write_into(root, &mut put)?;
        }
        // Their coordinates, once per dimension.
        for c in self.vars.iter().flat_map(|v| v.coords) {
            if names.contains(&c.dim.as_str()) || written.contains(&c.dim.as_str()) {
                continue;
            }
            written.push(&c.dim);
            c.write_into(root, &mut put)?;
        }
        write_json(
            &root.join(".zmetadata"),
            &json!({"metadata": consolidated, "zarr_consolidated_format": 1}),
        )
    }
}

/// Writes a metadata document (`key` under the dataset, in `dir`) and
/// records it for the consolidated metadata.
type Put<'p> = dyn FnMut(String, Value, &Path) -> std::io::Result<()> + 'p;

impl ResultVar<'_> {
    fn write_into(&self, root: &Path, put: &mut Put) -> std::io::Result<()> {
        let name = self.name();
        let vdir = root.join(name);
        std::fs::create_dir_all(&vdir)?;
        let (meta, rows) = zarray(self.shape);
        put(format!("{}/.zarray", name), meta, &vdir)?;
        let mut attrs: Map<String, Value> = self
            .attrs
            .iter()
            .filter(|(k, _)| !ENCODING_ATTRS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if matches!(self.op, Op::Count | Op::Var) {
            // A count has no unit; a variance has the unit squared.
            attrs.remove("units");
        }
        if !self.reduced.is_empty() {
            let method = format!("{}: {}", self.reduced.join(": "), cf_method(self.op));
            let cell = match attrs.get("cell_methods").and_then(Value::as_str) {
                Some(prev) => format!("{prev} {method}"),
                None => method,
            };
            attrs.insert("cell_methods".into(), Value::String(cell));
        }
        attrs.insert("_ARRAY_DIMENSIONS".into(), json!(self.dims));
        put(format!("{}/.zattrs", name), Value::Object(attrs), &vdir)?;
        write_chunks(&vdir, self.shape, self.values, rows)
    }
}

impl ResultCoord {
    fn write_into(&self, root: &Path, put: &mut Put) -> std::io::Result<()> {
        let c = self;
        let cdir = root.join(&c.dim);
        std::fs::create_dir_all(&cdir)?;
        let shape = [c.len()];
        if !c.labels.is_empty() || c.int {
            // Labels in one chunk: fixed-width UTF-32 strings or int64,
            // no fill value (every label is a real one).
            let (dtype, bytes): (String, Vec<u8>) = if c.int {
                let b = c.values.iter().flat_map(|v| (*v as i64).to_le_bytes()).collect();
                ("<i8".into(), b)
            } else {
                let width = c.labels.iter().map(|l| l.chars().count()).max().unwrap_or(1).max(1);
                let mut b = Vec::with_capacity(width * 4 * c.labels.len());
                for l in &c.labels {
                    let chars: Vec<char> = l.chars().collect();
                    for i in 0..width {
                        b.extend_from_slice(&chars.get(i).map_or(0, |ch| *ch as u32).to_le_bytes());
                    }
                }
                (format!("<U{width}"), b)
            };
            let meta = json!({
                "zarr_format": 2,
                "shape": shape,
                "chunks": [c.len().max(1)],
                "dtype": dtype,
                "compressor": null,
                "fill_value": null,
                "filters": null,
                "order": "C",
            });
            put(format!("{}/.zarray", c.dim), meta, &cdir)?;
            put(
                format!("{}/.zattrs", c.dim),
                json!({"_ARRAY_DIMENSIONS": [c.dim]}),
                &cdir,
            )?;
            return std::fs::write(cdir.join("0"), bytes);
        }
        let (meta, rows) = zarray(&shape);
        put(format!("{}/.zarray", c.dim), meta, &cdir)?;
        let mut attrs: Map<String, Value> = c
            .attrs
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "_ARRAY_DIMENSIONS" | "_FillValue" | "missing_value"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        attrs.insert("_ARRAY_DIMENSIONS".into(), json!([c.dim]));
        put(format!("{}/.zattrs", c.dim), Value::Object(attrs), &cdir)?;
        write_chunks(&cdir, &shape, &c.values, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_under_the_bound_and_pad_the_last() {
        let (meta, rows) = zarray(&[3000, 1000]);
        assert_eq!(rows, CHUNK_BYTES / 8000);
        assert_eq!(meta["chunks"], json!([rows, 1000]));
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f64> = (0..10).map(f64::from).collect();
        write_chunks(dir.path(), &[5, 2], &values, 2).unwrap();
        let last = std::fs::read(dir.path().join("2.0")).unwrap();
        assert_eq!(last.len(), 2 * 2 * 8);
        assert_eq!(f64::from_le_bytes(last[..8].try_into().unwrap()), 8.0);
        assert!(f64::from_le_bytes(last[16..24].try_into().unwrap()).is_nan());
        write_chunks(dir.path(), &[], &[4.5], 1).unwrap();
        assert_eq!(std::fs::read(dir.path().join("0")).unwrap(), 4.5f64.to_le_bytes());
    }

    #[test]
    fn an_existing_dataset_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"keep").unwrap();
        let attrs = Map::new();
        let reduced = ["time".to_string()];
        let d = ResultDataset {
            vars: vec![ResultVar {
                array: "t",
                op: Op::Mean,
                dims: &[],
                reduced: &reduced,
                shape: &[],
                values: &[1.0],
                attrs: &attrs,
                coords: &[],
            }],
            source: "bafy",
            query: json!({}),
        };
        assert!(d.write(dir.path()).is_err());
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"keep");
        let out = dir.path().join("r.zarr");
        d.write(&out).unwrap();
        let a: Value = serde_json::from_slice(&std::fs::read(out.join("t/.zattrs")).unwrap()).unwrap();
        assert_eq!(a["cell_methods"], "time: mean");
    }
}
