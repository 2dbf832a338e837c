//! Consolidated metadata for datasets stored without it. Plain HTTP cannot
//! list a directory, so zarr-python and xarray open a group over HTTP from
//! its consolidated metadata: `.zmetadata` (Zarr v2) or the
//! `consolidated_metadata` field of the root `zarr.json` (Zarr v3). The
//! gateway builds it from the documents the manifest keeps inline.

use serde_json::{Map, Value};

/// Basenames of v2 metadata documents that `.zmetadata` gathers.
const V2_DOCS: [&str; 3] = [".zarray", ".zgroup", ".zattrs"];

fn basename(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn parse(key: &str, data: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(data).map_err(|e| format!("metadata document {key:?} is not JSON: {e}"))
}

/// A v2 `.zmetadata` gathering every `.zarray`, `.zgroup` and `.zattrs`.
pub fn v2_consolidated(docs: &[(String, bytes::Bytes)]) -> Result<Vec<u8>, String> {
    let mut metadata = Map::new();
    for (key, data) in docs {
        if V2_DOCS.contains(&basename(key)) {
            metadata.insert(key.clone(), parse(key, data)?);
        }
    }
    let doc = serde_json::json!({ "metadata": metadata, "zarr_consolidated_format": 1 });
    Ok(serde_json::to_vec_pretty(&doc).expect("JSON values serialise"))
}

/// The root `zarr.json` of a v3 group with `consolidated_metadata` filled
/// in from every other `zarr.json`; `None` when the root is not a group or
/// already carries consolidated metadata (it is then served as stored).
pub fn v3_consolidated(docs: &[(String, bytes::Bytes)]) -> Result<Option<Vec<u8>>, String> {
    let Some((_, root)) = docs.iter().find(|(k, _)| k == "zarr.json") else {
        return Ok(None);
    };
    let mut root = parse("zarr.json", root)?;
    let Some(obj) = root.as_object_mut() else {
        return Err("the root zarr.json is not a JSON object".into());
    };
    if obj.get("node_type").and_then(Value::as_str) != Some("group")
        || obj.get("consolidated_metadata").is_some_and(|c| !c.is_null())
    {
        return Ok(None);
    }
    let mut metadata = Map::new();
    for (key, data) in docs {
        if let Some(path) = key.strip_suffix("/zarr.json") {
            metadata.insert(path.to_string(), parse(key, data)?);
        }
    }
    obj.insert(
        "consolidated_metadata".into(),
        serde_json::json!({ "kind": "inline", "must_understand": false, "metadata": metadata }),
    );
    Ok(Some(serde_json::to_vec_pretty(&root).expect("JSON values serialise")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn doc(k: &str, v: &str) -> (String, Bytes) {
        (k.to_string(), Bytes::from(v.to_string()))
    }

    #[test]
    fn v2_gathers_every_document() {
        let docs = [
            doc(".zgroup", r#"{"zarr_format":2}"#),
            doc(".zattrs", r#"{"title":"t"}"#),
            doc("a/.zarray", r#"{"shape":[2]}"#),
            doc("a/.zattrs", r#"{"_ARRAY_DIMENSIONS":["x"]}"#),
            doc("notes.txt", "not json"),
        ];
        let v: Value = serde_json::from_slice(&v2_consolidated(&docs).unwrap()).unwrap();
        assert_eq!(v["zarr_consolidated_format"], 1);
        assert_eq!(v["metadata"]["a/.zarray"]["shape"][0], 2);
        assert_eq!(v["metadata"].as_object().unwrap().len(), 4);
    }

    #[test]
    fn v3_fills_the_root_group_once() {
        let docs = [
            doc("zarr.json", r#"{"zarr_format":3,"node_type":"group","attributes":{}}"#),
            doc("g/zarr.json", r#"{"zarr_format":3,"node_type":"group"}"#),
            doc("g/a/zarr.json", r#"{"zarr_format":3,"node_type":"array","shape":[4]}"#),
        ];
        let v: Value = serde_json::from_slice(&v3_consolidated(&docs).unwrap().unwrap()).unwrap();
        let m = &v["consolidated_metadata"];
        assert_eq!(m["kind"], "inline");
        assert_eq!(m["metadata"]["g/a"]["shape"][0], 4);
        assert_eq!(m["metadata"]["g"]["node_type"], "group");
        assert_eq!(v["attributes"], serde_json::json!({}));
        // Already consolidated, or an array at the root: served as stored.
        let done = [doc("zarr.json", &serde_json::to_string(&v).unwrap())];
        assert_eq!(v3_consolidated(&done).unwrap(), None);
        let array = [doc("zarr.json", r#"{"zarr_format":3,"node_type":"array"}"#)];
        assert_eq!(v3_consolidated(&array).unwrap(), None);
        assert!(v3_consolidated(&[doc("zarr.json", "[")]).is_err());
    }
}
