//! Compute requests between daemons (`/shoal/query/1.0.0`).
//!
//! Request: JSON `{root, spec, chunks}`. Response: a JSON header (which
//! chunks were computed, which the peer lacks) followed by the merged
//! partials of the computed chunks in a compact binary form, only non-empty
//! cells and only the fields the op needs: `u32 n`, then n x (u32 cell,
//! u64 count, f64 sum [, f64 min, f64 max] [, f64 m2]) with min/max for
//! min and max, m2 for var and std. A mean moves 20 bytes per cell.
//! An empty response means "busy". Decoding checks every length and cell
//! index against the requester's own plan before anything is merged.
//!
//! Trust: block bytes are verified by hash, but partials cannot be; compute
//! peers are trusted to compute honestly (use an allow-list or swarm key to
//! choose whom to trust). Malformed answers are rejected and reassigned.

use serde::{Deserialize, Serialize};

use crate::partial::{Op, Partial};
use crate::QuerySpec;

/// Chunks per compute request: large enough to amortise a round trip, small
/// enough that a slow or dead peer loses little work when reassigned.
pub const MAX_CHUNKS_PER_REQUEST: usize = 64;

/// Which optional fields a response carries for `op`.
fn fields(op: Op) -> (bool, bool) {
    (matches!(op, Op::Min | Op::Max), op.needs_m2())
}

fn cell_bytes(op: Op) -> usize {
    let (mm, m2) = fields(op);
    4 + 8 + 8 + if mm { 16 } else { 0 } + if m2 { 8 } else { 0 }
}

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

pub fn encode_response(h: &ComputeHeader, grid: &[Partial], op: Op) -> Vec<u8> {
    let (mm, m2) = fields(op);
    let header = serde_json::to_vec(h).expect("header serialises");
    let cells: Vec<(usize, &Partial)> = grid.iter().enumerate().filter(|(_, p)| p.count > 0).collect();
    let mut out = Vec::with_capacity(8 + header.len() + cells.len() * cell_bytes(op));
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&(cells.len() as u32).to_le_bytes());
    for (i, p) in cells {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&p.count.to_le_bytes());
        out.extend_from_slice(&p.sum.to_le_bytes());
        if mm {
            out.extend_from_slice(&p.min.to_le_bytes());
            out.extend_from_slice(&p.max.to_le_bytes());
        }
        if m2 {
            out.extend_from_slice(&p.m2.to_le_bytes());
        }
    }
    out
}

fn take(b: &[u8], at: usize, n: usize) -> Result<&[u8], String> {
    b.get(at..at + n).ok_or_else(|| "truncated response".to_string())
}

fn f64_at(b: &[u8], at: usize) -> f64 {
    f64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes a response to a request of `asked` chunks, for a plan with
/// `cells` output cells computing `op`.
pub fn decode_response(b: &[u8], cells: usize, asked: usize, op: Op) -> Result<(ComputeHeader, Vec<Partial>), String> {
    let (mm, m2) = fields(op);
    let hlen = u32::from_le_bytes(take(b, 0, 4)?.try_into().expect("4 bytes")) as usize;
    let header: ComputeHeader = serde_json::from_slice(take(b, 4, hlen)?).map_err(|e| format!("bad header: {e}"))?;
    if header.computed.iter().chain(&header.missing).any(|i| *i >= asked) {
        return Err("chunk index out of range".into());
    }
    let mut at = 4 + hlen;
    let n = u32::from_le_bytes(take(b, at, 4)?.try_into().expect("4 bytes")) as usize;
    at += 4;
    let cb = cell_bytes(op);
    if n > cells || b.len() != at + n * cb {
        return Err(format!("{n} cells in {} bytes for a {cells}-cell result", b.len()));
    }
    let mut grid = vec![Partial::EMPTY; cells];
    for _ in 0..n {
        let c = u32::from_le_bytes(b[at..at + 4].try_into().expect("4")) as usize;
        let mut p = Partial {
            count: u64::from_le_bytes(b[at + 4..at + 12].try_into().expect("8")),
            sum: f64_at(b, at + 12),
            ..Partial::EMPTY
        };
        let mut k = at + 20;
        if mm {
            (p.min, p.max) = (f64_at(b, k), f64_at(b, k + 8));
            k += 16;
        }
        if m2 {
            p.m2 = f64_at(b, k);
        }
        let bad_minmax = mm && (p.min.is_nan() || p.max.is_nan() || p.min > p.max);
        let bad_m2 = m2 && (p.m2.is_nan() || p.m2 < 0.0);
        let bad = c >= cells || p.count == 0 || p.sum.is_nan() || bad_minmax || bad_m2;
        if bad {
            return Err(format!("invalid partial for cell {c}"));
        }
        grid[c] = p;
        at += cb;
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
        let b = encode_response(&h, &grid, Op::Var);
        let (h2, g2) = decode_response(&b, 5, 3, Op::Var).unwrap();
        assert_eq!(h2.computed, vec![0, 2]);
        // var carries count, sum and m2 (min/max are not sent).
        for (a, b) in g2.iter().zip(&grid) {
            assert_eq!((a.count, a.sum, a.m2), (b.count, b.sum, b.m2));
        }
        assert!(
            decode_response(&b, 2, 3, Op::Var).is_err(),
            "cell index beyond the plan"
        );
        assert!(
            decode_response(&b, 5, 2, Op::Var).is_err(),
            "chunk index beyond the request"
        );
        assert!(decode_response(&b, 5, 3, Op::Mean).is_err(), "layout of another op");
        for cut in [0, 3, 10, b.len() - 1] {
            assert!(decode_response(&b[..cut], 5, 3, Op::Var).is_err());
        }
        // A mean carries count and sum only, and min/max stay unset.
        let b = encode_response(&h, &grid, Op::Mean);
        let (_, g3) = decode_response(&b, 5, 3, Op::Mean).unwrap();
        assert_eq!(g3[1].count, 3);
        assert_eq!(g3[1].sum, 7.0);
        assert_eq!(b.len(), 4 + serde_json::to_vec(&h).unwrap().len() + 4 + 2 * 20);
    }
}
