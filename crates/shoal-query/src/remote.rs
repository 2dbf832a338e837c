//! Compute requests between daemons (`/shoal/query/1.0.0`).
//!
//! Request: JSON `{root, spec, chunks}`. Response: a JSON header (which
//! chunks were computed, which the peer lacks) followed by the merged
//! partials of the computed chunks in a compact binary form, only non-empty
//! cells: `u32 n`, then n x (u32 cell, u64 count, f64 sum, min, max, m2).
//! An empty response means "busy". Decoding checks every length and cell
//! index against the requester's own plan before anything is merged.
//!
//! Trust: block bytes are verified by hash, but partials cannot be; compute
//! peers are trusted to compute honestly (use an allow-list or swarm key to
//! choose whom to trust). Malformed answers are rejected and reassigned.

use serde::{Deserialize, Serialize};

use crate::partial::Partial;
use crate::QuerySpec;

/// Chunks per compute request: large enough to amortise a round trip, small
/// enough that a slow or dead peer loses little work when reassigned.
pub const MAX_CHUNKS_PER_REQUEST: usize = 64;
const CELL_BYTES: usize = 4 + 8 + 8 * 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputeRequest {
    pub root: String,
    pub spec: QuerySpec,
    pub chunks: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ComputeHeader {
    /// Indices (into the request's chunk list) that were computed.
    pub computed: Vec<usize>,
    /// Indices the peer could not compute (it lacks their blocks).
    pub missing: Vec<usize>,
    /// Set when the whole request failed (e.g. unknown dataset here).
    pub error: Option<String>,
}

pub fn encode_response(h: &ComputeHeader, grid: &[Partial]) -> Vec<u8> {
    let header = serde_json::to_vec(h).expect("header serialises");
    let cells: Vec<(usize, &Partial)> = grid.iter().enumerate().filter(|(_, p)| p.count > 0).collect();
    let mut out = Vec::with_capacity(8 + header.len() + cells.len() * CELL_BYTES);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&(cells.len() as u32).to_le_bytes());
    for (i, p) in cells {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&p.count.to_le_bytes());
        for v in [p.sum, p.min, p.max, p.m2] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Decodes a response for a plan with `cells` output cells and a request
/// of `asked` chunks.
pub fn decode_response(b: &[u8], cells: usize, asked: usize) -> Result<(ComputeHeader, Vec<Partial>), String> {
    fn take(b: &[u8], at: usize, n: usize) -> Result<&[u8], String> {
        b.get(at..at + n).ok_or_else(|| "truncated response".to_string())
    }
    let hlen = u32::from_le_bytes(take(b, 0, 4)?.try_into().expect("4 bytes")) as usize;
    let header: ComputeHeader = serde_json::from_slice(take(b, 4, hlen)?).map_err(|e| format!("bad header: {e}"))?;
    if header.computed.iter().chain(&header.missing).any(|i| *i >= asked) {
        return Err("chunk index out of range".into());
    }
    let mut at = 4 + hlen;
    let n = u32::from_le_bytes(take(b, at, 4)?.try_into().expect("4 bytes")) as usize;
    at += 4;
    if n > cells || b.len() != at + n * CELL_BYTES {
        return Err(format!("{n} cells in {} bytes for a {cells}-cell result", b.len()));
    }
    let mut grid = vec![Partial::EMPTY; cells];
    for _ in 0..n {
        let c = u32::from_le_bytes(b[at..at + 4].try_into().expect("4")) as usize;
        let count = u64::from_le_bytes(b[at + 4..at + 12].try_into().expect("8"));
        let f = |k: usize| f64::from_le_bytes(b[at + 12 + 8 * k..at + 20 + 8 * k].try_into().expect("8"));
        let p = Partial {
            count,
            sum: f(0),
            min: f(1),
            max: f(2),
            m2: f(3),
        };
        if c >= cells || count == 0 || p.min > p.max || p.m2 < 0.0 || p.m2.is_nan() {
            return Err(format!("invalid partial for cell {c}"));
        }
        grid[c] = p;
        at += CELL_BYTES;
    }
    Ok((header, grid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let mut grid = vec![Partial::EMPTY; 5];
        grid[1] = Partial::of(&[1.0, 2.0, 4.0]);
        grid[4] = Partial::of(&[-3.0]);
        let h = ComputeHeader {
            computed: vec![0, 2],
            missing: vec![1],
            error: None,
        };
        let b = encode_response(&h, &grid);
        let (h2, g2) = decode_response(&b, 5, 3).unwrap();
        assert_eq!(h2.computed, vec![0, 2]);
        assert_eq!(g2, grid);
        assert!(decode_response(&b, 2, 3).is_err(), "cell index beyond the plan");
        assert!(decode_response(&b, 5, 2).is_err(), "chunk index beyond the request");
        for cut in [0, 3, 10, b.len() - 1] {
            assert!(decode_response(&b[..cut], 5, 3).is_err());
        }
    }
}
