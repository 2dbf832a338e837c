//! Catalogue entries: what a published version of a name holds, signed by
//! its publisher, so peers can find datasets by what they contain.
//!
//! A publisher derives a [`Summary`] from the dataset itself (title,
//! variables, time extent, bbox, size), encodes it as DAG-CBOR and puts its
//! CID into the name record it signs ([`NameRecord::entry`]): the record's
//! signature covers the summary. The entry travels as an [`envelope`]
//! (the signed record and the summary bytes) on one gossipsub topic,
//! [`TOPIC`], that every daemon subscribes to. A peer checks it before
//! anything is kept or forwarded ([`verify`]): size, the record's
//! signature against the publisher's key, the summary's CID against the
//! record, and every bound of the summary (counts, lengths, a finite
//! bbox on the globe). What is kept, and how many per publisher, is the
//! node's decision.

use serde::{Deserialize, Serialize};
use shoal_core::{cid, Cid};

use crate::names::{self, NameRecord};

/// Largest envelope accepted (signed record and summary).
pub const MAX_ENTRY_BYTES: usize = 16 << 10;
/// The gossipsub topic every daemon hears catalogue entries on.
pub const TOPIC: &str = "/shoal/catalogue/1";
/// Most variables a summary lists.
pub const MAX_VARIABLES: usize = 64;
/// Most dimensions of one variable.
pub const MAX_DIMS: usize = 32;
/// Longest description, bytes.
pub const MAX_DESCRIPTION: usize = 2048;
/// Longest other text field, bytes.
pub const MAX_FIELD: usize = 256;

/// One array of a dataset, as a catalogue lists it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Variable {
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "d")]
    pub dims: Vec<String>,
    #[serde(rename = "s")]
    pub shape: Vec<u64>,
    #[serde(rename = "t")]
    pub dtype: String,
    #[serde(rename = "u", default, skip_serializing_if = "String::is_empty")]
    pub units: String,
    #[serde(rename = "l", default, skip_serializing_if = "String::is_empty")]
    pub long_name: String,
    #[serde(rename = "sn", default, skip_serializing_if = "String::is_empty")]
    pub standard_name: String,
    /// A coordinate (a 1-D array named as its dimension).
    #[serde(rename = "c", default)]
    pub coord: bool,
}

/// What a version of a dataset holds, derived from the dataset itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// CF `title` (the name when it has none).
    #[serde(rename = "ti")]
    pub title: String,
    /// CF `summary` (or `description`, `comment`).
    #[serde(rename = "de", default)]
    pub description: String,
    #[serde(rename = "in", default)]
    pub institution: String,
    #[serde(rename = "so", default)]
    pub source: String,
    #[serde(rename = "va", default)]
    pub variables: Vec<Variable>,
    /// Variables left out past [`MAX_VARIABLES`].
    #[serde(rename = "vm", default)]
    pub more_variables: u64,
    /// First and last time (`YYYY-MM-DDTHH:MM:SS` in `calendar`).
    #[serde(rename = "tx", default, skip_serializing_if = "Option::is_none")]
    pub time: Option<(String, String)>,
    #[serde(rename = "ca", default, skip_serializing_if = "String::is_empty")]
    pub calendar: String,
    /// West, south, east, north (degrees; west > east crosses 180°).
    #[serde(rename = "bb", default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
    /// Bytes of every key.
    #[serde(rename = "sz")]
    pub size: u64,
    #[serde(rename = "ke")]
    pub keys: u64,
    #[serde(rename = "zf")]
    pub zarr_format: u8,
    /// The dataset's UnixFS view (what `ipfs://` opens).
    #[serde(rename = "vw", default, skip_serializing_if = "Option::is_none")]
    pub view: Option<Cid>,
    /// The variable a quick-look shows.
    #[serde(rename = "th", default, skip_serializing_if = "String::is_empty")]
    pub thumbnail: String,
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn text_ok(what: &str, s: &str, max: usize, newlines: bool) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what}: {} bytes (at most {max})", s.len()));
    }
    if s.chars()
        .any(|c| c.is_control() && !(newlines && (c == '\n' || c == '\t')))
    {
        return Err(format!("{what}: control characters"));
    }
    Ok(())
}

impl Summary {
    /// Checks every bound a peer's summary must keep.
    pub fn check(&self) -> Result<(), String> {
        text_ok("title", &self.title, MAX_FIELD, false)?;
        text_ok("description", &self.description, MAX_DESCRIPTION, true)?;
        text_ok("institution", &self.institution, MAX_FIELD, false)?;
        text_ok("source", &self.source, MAX_FIELD, true)?;
        text_ok("calendar", &self.calendar, 32, false)?;
        text_ok("thumbnail", &self.thumbnail, MAX_FIELD, false)?;
        if self.variables.len() > MAX_VARIABLES {
            return Err(format!("{} variables (at most {MAX_VARIABLES})", self.variables.len()));
        }
        for v in &self.variables {
            text_ok("variable", &v.name, MAX_FIELD, false)?;
            for f in [&v.dtype, &v.units, &v.long_name, &v.standard_name] {
                text_ok(&v.name, f, MAX_FIELD, false)?;
            }
            if v.dims.len() > MAX_DIMS || v.dims.len() != v.shape.len() {
                return Err(format!("{}: {} dims for {} sizes", v.name, v.dims.len(), v.shape.len()));
            }
            for d in &v.dims {
                text_ok(&v.name, d, MAX_FIELD, false)?;
            }
        }
        if let Some((a, b)) = &self.time {
            text_ok("time", a, 40, false)?;
            text_ok("time", b, 40, false)?;
        }
        if let Some([w, s, e, n]) = self.bbox {
            let lon = |x: f64| x.is_finite() && (-180.0..=180.0).contains(&x);
            let lat = |y: f64| y.is_finite() && (-90.0..=90.0).contains(&y);
            if !(lon(w) && lon(e) && lat(s) && lat(n) && s <= n) {
                return Err(format!("bbox {:?} is not on the globe", [w, s, e, n]));
            }
        }
        Ok(())
    }

    /// The summary's DAG-CBOR bytes and their CID (what a name record
    /// carries).
    pub fn encode(&self) -> Result<(Vec<u8>, Cid), String> {
        self.check()?;
        let bytes = serde_ipld_dagcbor::to_vec(self).map_err(|e| e.to_string())?;
        let c = cid::cid_of(cid::DAG_CBOR, &bytes);
        Ok((bytes, c))
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "r", with = "serde_bytes")]
    record: Vec<u8>,
    #[serde(rename = "s", with = "serde_bytes")]
    summary: Vec<u8>,
}

/// The envelope of a signed name record and its summary's bytes.
pub fn envelope(signed_record: &[u8], summary: &[u8]) -> Result<Vec<u8>, String> {
    let out = serde_ipld_dagcbor::to_vec(&Envelope {
        record: signed_record.to_vec(),
        summary: summary.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    if out.len() > MAX_ENTRY_BYTES {
        return Err(format!(
            "the catalogue entry takes {} bytes (at most {MAX_ENTRY_BYTES})",
            out.len()
        ));
    }
    Ok(out)
}

/// A verified catalogue entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub record: NameRecord,
    pub summary: Summary,
}

/// Why an entry was refused (counted by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over [`MAX_ENTRY_BYTES`].
    Oversized,
    /// Undecodable, or a summary outside its bounds.
    Malformed,
    /// The signature, the publisher's key or the summary's CID do not hold.
    Forged,
}

/// Decodes and verifies an envelope from an untrusted peer.
pub fn verify(bytes: &[u8]) -> Result<Entry, (Refusal, String)> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err((
            Refusal::Oversized,
            format!("{} bytes exceeds {MAX_ENTRY_BYTES}", bytes.len()),
        ));
    }
    let env: Envelope =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| (Refusal::Malformed, format!("undecodable: {e}")))?;
    let record = names::verify(&env.record).map_err(|e| (Refusal::Forged, e))?;
    let c = cid::cid_of(cid::DAG_CBOR, &env.summary);
    if record.entry != Some(c) {
        return Err((Refusal::Forged, "the summary is not the one the record signs".into()));
    }
    let summary: Summary = serde_ipld_dagcbor::from_slice(&env.summary)
        .map_err(|e| (Refusal::Malformed, format!("undecodable summary: {e}")))?;
    summary.check().map_err(|e| (Refusal::Malformed, e))?;
    Ok(Entry { record, summary })
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    fn summary() -> Summary {
        Summary {
            title: "Sea surface temperature <b>daily</b>".into(),
            variables: vec![Variable {
                name: "sst".into(),
                dims: vec!["time".into(), "lat".into(), "lon".into()],
                shape: vec![10, 90, 180],
                dtype: "float32".into(),
                units: "K".into(),
                ..Variable::default()
            }],
            time: Some(("2000-01-01T00:00:00".into(), "2000-01-10T00:00:00".into())),
            bbox: Some([-180.0, -90.0, 180.0, 90.0]),
            size: 1 << 20,
            keys: 12,
            zarr_format: 3,
            ..Summary::default()
        }
    }

    fn signed(k: &Keypair, s: &Summary, seq: u64) -> Vec<u8> {
        let (bytes, c) = s.encode().unwrap();
        let me = k.public().to_peer_id();
        let root = cid::cid_of(cid::DAG_CBOR, b"a dataset");
        let rec = NameRecord::new(me, "sst", root, seq, 1_700_000_000).with_entry(c);
        envelope(&rec.sign(k).unwrap(), &bytes).unwrap()
    }

    #[test]
    fn an_entry_verifies_and_a_changed_summary_or_forged_record_does_not() {
        let k = Keypair::generate_ed25519();
        let s = summary();
        let e = verify(&signed(&k, &s, 1)).unwrap();
        assert_eq!(e.summary, s);
        assert_eq!(e.record.seq, 1);
        // The summary swapped under the same record.
        let mut env: Envelope = serde_ipld_dagcbor::from_slice(&signed(&k, &s, 1)).unwrap();
        let mut other = s.clone();
        other.title = "something else".into();
        env.summary = other.encode().unwrap().0;
        let swapped = serde_ipld_dagcbor::to_vec(&env).unwrap();
        assert_eq!(verify(&swapped).unwrap_err().0, Refusal::Forged);
        // A record signed by another key for this publisher.
        let other_key = Keypair::generate_ed25519();
        let (bytes, c) = s.encode().unwrap();
        let rec = NameRecord::new(k.public().to_peer_id(), "sst", c, 1, 0).with_entry(c);
        let forged = envelope(&names::forge(&rec, &other_key), &bytes).unwrap();
        assert_eq!(verify(&forged).unwrap_err().0, Refusal::Forged);
        // Garbage and oversize.
        assert_eq!(verify(b"garbage").unwrap_err().0, Refusal::Malformed);
        assert_eq!(verify(&vec![0; MAX_ENTRY_BYTES + 1]).unwrap_err().0, Refusal::Oversized);
    }

    #[test]
    fn summaries_outside_their_bounds_are_refused() {
        let mut s = summary();
        s.bbox = Some([0.0, 10.0, 20.0, 5.0]);
        assert!(s.check().is_err(), "south above north");
        s.bbox = Some([f64::NAN, 0.0, 1.0, 1.0]);
        assert!(s.check().is_err());
        let mut s = summary();
        s.title = "x".repeat(MAX_FIELD + 1);
        assert!(s.check().is_err());
        let mut s = summary();
        s.title = "a\u{7}b".into();
        assert!(s.check().is_err());
        let mut s = summary();
        s.variables = vec![s.variables[0].clone(); MAX_VARIABLES + 1];
        assert!(s.check().is_err());
        assert_eq!(clip("héllo", 2), "h");
    }
}
