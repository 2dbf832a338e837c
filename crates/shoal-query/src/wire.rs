//! Compute requests between daemons (`/shoal/query/1.0.0`).
//!
//! Request: JSON `{root, spec, chunks}`. Response: a JSON header (which
//! chunks were computed, which the peer lacks) followed by the merged
//! partials of the computed chunks in a compact binary form, only non-empty
//! cells and only the fields the op needs: `u32 n`, then n x (u32 cell,
//! u64 count, f64 sum [, f64 min, f64 max] [, f64 m2] [, f64 wsum]) with
//! min/max for min and max, m2 for var and std, wsum for weighted
//! reductions. A mean moves 20 bytes per cell.
//! An empty response means "busy". Decoding checks every length and cell
//! index against the requester's own plan before anything is merged.
//!
//! Trust: block bytes are verified by hash, but partials cannot be; compute
//! peers are trusted to compute honestly (use an allow-list or swarm key to
//! choose whom to trust). Malformed answers are rejected and reassigned.

use serde::{Deserialize, Serialize};

use crate::grid::Region;
use crate::partial::{Op, Partial};
use crate::plan::Plan;
use crate::QuerySpec;

/// Chunks per compute request: large enough to amortise a round trip, small
/// enough that a slow or dead peer loses little work when reassigned.
pub const MAX_CHUNKS_PER_REQUEST: usize = 64;

/// What a response's cells carry: the op, and whether it is weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    pub op: Op,
    pub weighted: bool,
}

impl Fields {
    pub fn of(spec: &QuerySpec) -> Fields {
        Fields {
            op: spec.op,
            weighted: spec.weights.is_some(),
        }
    }

    /// Unweighted `op`.
    pub fn plain(op: Op) -> Fields {
        Fields { op, weighted: false }
    }

    /// (min and max, m2, wsum)
    fn which(self) -> (bool, bool, bool) {
        (matches!(self.op, Op::Min | Op::Max), self.op.needs_m2(), self.weighted)
    }

    fn cell_bytes(self) -> usize {
        let (mm, m2, w) = self.which();
        4 + 8 + 8 + if mm { 16 } else { 0 } + if m2 { 8 } else { 0 } + if w { 8 } else { 0 }
    }
}

impl Plan {
    /// What the partials of this plan carry on the wire.
    pub fn fields(&self) -> Fields {
        Fields {
            op: self.op,
            weighted: self.weighted(),
        }
    }
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

/// Upper bound of the response bytes for `cells` non-empty cells.
pub fn response_bytes(cells: u64, f: Fields) -> u64 {
    cells.saturating_mul(f.cell_bytes() as u64)
}

/// Builds a response region by region: a serving daemon holds one region's
/// grid at a time, and cells go out with their index in the whole result.
#[derive(Debug)]
pub struct Encoder {
    f: Fields,
    cells: Vec<u8>,
    n: u32,
}

impl Encoder {
    pub fn new(f: Fields) -> Self {
        Self {
            f,
            cells: Vec::new(),
            n: 0,
        }
    }

    /// Adds the non-empty cells of `grid`, a grid over `region` of a result
    /// of `out_shape` (row-major both).
    pub fn add(&mut self, region: &Region, out_shape: &[usize], grid: &[Partial]) {
        let (mm, m2, w) = self.f.which();
        let mut gstride = vec![0usize; out_shape.len()];
        let mut s = 1;
        for k in (0..out_shape.len()).rev() {
            gstride[k] = s;
            s *= out_shape[k];
        }
        let mut idx = vec![0usize; region.shape.len()];
        for p in grid.iter().take(region.cells()) {
            if p.count > 0 {
                let global: usize = idx
                    .iter()
                    .zip(&region.origin)
                    .zip(&gstride)
                    .map(|((i, o), g)| (i + *o as usize) * g)
                    .sum();
                // Plans refuse results over 2^32 cells.
                self.cells.extend_from_slice(&(global as u32).to_le_bytes());
                self.cells.extend_from_slice(&p.count.to_le_bytes());
                self.cells.extend_from_slice(&p.sum.to_le_bytes());
                if mm {
                    self.cells.extend_from_slice(&p.min.to_le_bytes());
                    self.cells.extend_from_slice(&p.max.to_le_bytes());
                }
                if m2 {
                    self.cells.extend_from_slice(&p.m2.to_le_bytes());
                }
                if w {
                    self.cells.extend_from_slice(&p.wsum.to_le_bytes());
                }
                self.n += 1;
            }
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < region.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }

    pub fn finish(self, h: &ComputeHeader) -> Vec<u8> {
        let header = serde_json::to_vec(h).expect("header serialises");
        let mut out = Vec::with_capacity(8 + header.len() + self.cells.len());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.n.to_le_bytes());
        out.extend_from_slice(&self.cells);
        out
    }
}

/// A response whose cells are a whole result grid (or none).
pub fn encode_response(h: &ComputeHeader, grid: &[Partial], f: Fields) -> Vec<u8> {
    let mut e = Encoder::new(f);
    let region = Region {
        origin: vec![0],
        shape: vec![grid.len()],
    };
    e.add(&region, &[grid.len()], grid);
    e.finish(h)
}

fn take(b: &[u8], at: usize, n: usize) -> Result<&[u8], String> {
    b.get(at..at + n).ok_or_else(|| "truncated response".to_string())
}

fn f64_at(b: &[u8], at: usize) -> f64 {
    f64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks a response to a request of `asked` chunks of a result of `cells`
/// cells computing `op`, and returns its partials: the header must account
/// for every asked chunk exactly once (computed or missing), every cell
/// index must be inside the result and appear once, every value must be
/// possible. What it allocates is a bitmap of the result and the pairs
/// (bounded by the response's size).
pub fn response_partials(
    b: &[u8],
    cells: usize,
    asked: usize,
    f: Fields,
) -> Result<(ComputeHeader, Vec<(usize, Partial)>), String> {
    let (mm, m2, w) = f.which();
    let hlen = u32::from_le_bytes(take(b, 0, 4)?.try_into().expect("4 bytes")) as usize;
    let header: ComputeHeader = serde_json::from_slice(take(b, 4, hlen)?).map_err(|e| format!("bad header: {e}"))?;
    if header.error.is_none() {
        let mut seen = vec![false; asked];
        for &i in header.computed.iter().chain(&header.missing) {
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                Some(_) => return Err(format!("chunk {i} answered twice")),
                None => return Err("chunk index out of range".into()),
            }
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(format!("chunk {i} of the request is neither computed nor missing"));
        }
    }
    let mut at = 4 + hlen;
    let n = u32::from_le_bytes(take(b, at, 4)?.try_into().expect("4 bytes")) as usize;
    at += 4;
    let cb = f.cell_bytes();
    if n > cells || b.len() != at + n * cb || (header.error.is_some() && n > 0) {
        return Err(format!("{n} cells in {} bytes for a {cells}-cell result", b.len()));
    }
    let read = |at: usize| {
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
            k += 8;
        }
        if w {
            p.wsum = f64_at(b, k);
        }
        (c, p)
    };
    let mut seen = vec![0u64; cells.div_ceil(64)];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (c, p) = read(at + i * cb);
        let bad_minmax = mm && (p.min.is_nan() || p.max.is_nan() || p.min > p.max);
        let bad_m2 = m2 && (p.m2.is_nan() || p.m2 < 0.0);
        if c >= cells || p.count == 0 || p.sum.is_nan() || p.wsum.is_nan() || bad_minmax || bad_m2 {
            return Err(format!("invalid partial for cell {c}"));
        }
        if seen[c / 64] & (1 << (c % 64)) != 0 {
            return Err(format!("cell {c} answered twice"));
        }
        seen[c / 64] |= 1 << (c % 64);
        out.push((c, p));
    }
    Ok((header, out))
}

/// Checks a response (see [`response_partials`]) and merges its partials
/// into `grid` (the requester's whole result). Nothing is merged unless
/// everything is valid.
pub fn merge_response(b: &[u8], grid: &mut [Partial], asked: usize, f: Fields) -> Result<ComputeHeader, String> {
    let (header, pairs) = response_partials(b, grid.len(), asked, f)?;
    for (c, p) in pairs {
        grid[c] = grid[c].merge(p);
    }
    Ok(header)
}

/// Whether two answers for the same chunks agree (a peer's, and the same
/// chunks computed here from verified blocks): the same cells, equal
/// counts, minima and maxima, sums and M2 equal to 1e-9 relative (the
/// kernel is deterministic; the margin absorbs a peer's different build).
pub fn partials_agree(peer: &[(usize, Partial)], here: &[(usize, Partial)]) -> Result<(), String> {
    if peer.len() != here.len() {
        return Err(format!("{} cells answered, {} computed here", peer.len(), here.len()));
    }
    let mut a: Vec<&(usize, Partial)> = peer.iter().collect();
    let mut b: Vec<&(usize, Partial)> = here.iter().collect();
    a.sort_by_key(|x| x.0);
    b.sort_by_key(|x| x.0);
    let close = |x: f64, y: f64| x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + 1e-12;
    let same = |x: f64, y: f64| x == y || (x.is_infinite() && y.is_infinite() && x.signum() == y.signum());
    for ((ca, pa), (cb, pb)) in a.iter().map(|x| (x.0, x.1)).zip(b.iter().map(|x| (x.0, x.1))) {
        if ca != cb {
            return Err(format!("cell {ca} answered, cell {cb} computed here"));
        }
        if pa.count != pb.count
            || !close(pa.sum, pb.sum)
            || !same(pa.min, pb.min)
            || !same(pa.max, pb.max)
            || !close(pa.m2, pb.m2)
            || !close(pa.wsum, pb.wsum)
        {
            return Err(format!("cell {ca}: answered {pa:?}, computed here {pb:?}"));
        }
    }
    Ok(())
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
        let b = encode_response(&h, &grid, Fields::plain(Op::Var));
        let merge = |b: &[u8], cells: usize, asked: usize, op: Op| {
            let mut g = vec![Partial::EMPTY; cells];
            merge_response(b, &mut g, asked, Fields::plain(op)).map(|h| (h, g))
        };
        let (h2, g2) = merge(&b, 5, 3, Op::Var).unwrap();
        assert_eq!(h2.computed, vec![0, 2]);
        // var carries count, sum and m2 (min/max are not sent).
        for (a, b) in g2.iter().zip(&grid) {
            assert_eq!((a.count, a.sum, a.m2), (b.count, b.sum, b.m2));
        }
        assert!(merge(&b, 2, 3, Op::Var).is_err(), "cell index beyond the plan");
        assert!(merge(&b, 5, 2, Op::Var).is_err(), "chunk index beyond the request");
        assert!(merge(&b, 5, 3, Op::Mean).is_err(), "layout of another op");
        for cut in [0, 3, 10, b.len() - 1] {
            assert!(merge(&b[..cut], 5, 3, Op::Var).is_err());
        }
        // A mean carries count and sum only, and min/max stay unset.
        let b = encode_response(&h, &grid, Fields::plain(Op::Mean));
        let (_, g3) = merge(&b, 5, 3, Op::Mean).unwrap();
        assert_eq!(g3[1].count, 3);
        assert_eq!(g3[1].sum, 7.0);
        assert_eq!(b.len(), 4 + serde_json::to_vec(&h).unwrap().len() + 4 + 2 * 20);
    }

    #[test]
    fn an_answer_must_account_for_every_chunk_once() {
        let grid = vec![Partial::of(&[1.0]); 2];
        let answer = |computed: Vec<usize>, missing: Vec<usize>| {
            let h = ComputeHeader {
                computed,
                missing,
                error: None,
            };
            let mut g = vec![Partial::EMPTY; 2];
            merge_response(
                &encode_response(&h, &grid, Fields::plain(Op::Sum)),
                &mut g,
                3,
                Fields::plain(Op::Sum),
            )
            .map(|_| g)
        };
        assert!(answer(vec![0, 1], vec![2]).is_ok());
        let e = answer(vec![0, 1], vec![]).unwrap_err();
        assert!(e.contains("chunk 2") && e.contains("neither"), "{e}");
        let e = answer(vec![0, 1, 2], vec![2]).unwrap_err();
        assert!(e.contains("answered twice"), "{e}");
        // Nothing is merged from a rejected answer.
        let mut g = vec![Partial::EMPTY; 2];
        let h = ComputeHeader {
            computed: vec![0],
            ..Default::default()
        };
        assert!(merge_response(
            &encode_response(&h, &grid, Fields::plain(Op::Sum)),
            &mut g,
            2,
            Fields::plain(Op::Sum)
        )
        .is_err());
        assert!(g.iter().all(|p| p.count == 0));
    }

    #[test]
    fn a_cell_sent_twice_is_rejected_and_regions_map_to_their_cells() {
        // A 4x6 result; a region of 2x3 cells at (2, 3).
        let region = Region {
            origin: vec![2, 3],
            shape: vec![2, 3],
        };
        let grid: Vec<Partial> = (0..6).map(|i| Partial::of(&[i as f64])).collect();
        let mut e = Encoder::new(Fields::plain(Op::Sum));
        e.add(&region, &[4, 6], &grid);
        let h = ComputeHeader {
            computed: vec![0],
            ..Default::default()
        };
        let b = e.finish(&h);
        let mut full = vec![Partial::EMPTY; 24];
        merge_response(&b, &mut full, 1, Fields::plain(Op::Sum)).unwrap();
        let sums: Vec<(usize, f64)> = full
            .iter()
            .enumerate()
            .filter(|(_, p)| p.count > 0)
            .map(|(i, p)| (i, p.sum))
            .collect();
        assert_eq!(
            sums,
            vec![(15, 0.0), (16, 1.0), (17, 2.0), (21, 3.0), (22, 4.0), (23, 5.0)]
        );
        // The same region twice: every cell twice.
        let mut e = Encoder::new(Fields::plain(Op::Sum));
        e.add(&region, &[4, 6], &grid);
        e.add(&region, &[4, 6], &grid);
        let mut full = vec![Partial::EMPTY; 24];
        let err = merge_response(&e.finish(&h), &mut full, 1, Fields::plain(Op::Sum)).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        assert!(full.iter().all(|p| p.count == 0));
    }
}
