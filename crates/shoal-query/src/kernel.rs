//! The kernel: one decoded chunk (intersected with the selection) reduced
//! into per-cell partials of a shared grid, one monomorphised loop per
//! element type, with CF decoding, groups and weights applied per value.

use ndarray::ArrayD;
use zarrs::array::{Array, ArraySubset};

use crate::grid::{Region, SharedGrid, SumCount};
use crate::meta::{Dtype, Num};
use crate::partial::{Op, Partial};
use crate::plan::{Plan, Weights};
use crate::storage::{ChunkDecoder, ManifestStorage};
use crate::{Error, Result};

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
///
/// `sums`: `op` only counts the value and adds it to the sum when it is
/// not NaN (sum, mean, count; no decoding, weights, min or max). Then rows
/// whose values go to the same cells (a reduced dimension in the chunk:
/// the time steps of a mean over time) are added together into a local
/// run of sums and counts first, which the compiler vectorises, and each
/// cell is touched once per group rather than once per row: the profile
/// of a mean over time showed half the kernel's time waiting on the
/// grid's cells. Those sums go to the band's compact sums and counts
/// ([`SumCount`], 16 bytes a cell), not its 48-byte partials.
#[allow(clippy::too_many_arguments)]
fn walk_into<T: Num>(
    data: &[T],
    shape: &[usize],
    out: &Tables,
    wt: Option<(&Tables, &[f64])>,
    grid: &SharedGrid,
    start: usize,
    sums: bool,
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
    let grouped = sums && wl.is_none() && matches!(kind, Inner::Run(_));
    let (mut acc_sum, mut acc_count, mut group) = (Vec::new(), Vec::new(), Vec::new());
    if grouped {
        (acc_sum, acc_count) = (vec![0.0f64; last], vec![0u32; last]);
    }
    for b in (0..nb).map(|i| (i + start) % nb) {
        if count[b] == count[b + 1] {
            continue;
        }
        let mut band = grid.lock(b, b);
        if grouped {
            let (first, sums) = band.sums();
            group.clear();
            group.extend_from_slice(&order[count[b]..count[b + 1]]);
            group.sort_by_key(|r| bases[*r as usize]);
            for same in group.chunk_by(|x, y| bases[*x as usize] == bases[*y as usize]) {
                let base = bases[same[0] as usize] + lo - first;
                let rows = same.iter().map(|&r| &data[r as usize * last..(r as usize + 1) * last]);
                add_summed(&mut sums[base..base + last], rows, &mut acc_sum, &mut acc_count);
            }
            continue;
        }
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

/// Adds rows of values that all go to the cells `dst` (one per position):
/// summed (NaNs skipped) and counted into `sum` and `count` first, a loop
/// the compiler vectorises, then each cell touched once.
fn add_summed<'a, T: Num>(
    dst: &mut [SumCount],
    rows: impl Iterator<Item = &'a [T]>,
    sum: &mut [f64],
    count: &mut [u32],
) {
    sum.fill(0.0);
    count.fill(0);
    for vals in rows {
        for ((s, c), v) in sum.iter_mut().zip(count.iter_mut()).zip(vals) {
            let x = v.f();
            let ok = !x.is_nan();
            *s += if ok { x } else { 0.0 };
            *c += u32::from(ok);
        }
    }
    for ((p, s), c) in dst.iter_mut().zip(sum.iter()).zip(count.iter()) {
        p.sum += s;
        p.count += u64::from(*c);
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
#[allow(clippy::too_many_arguments)]
fn kernel<T: Num>(
    array: &Array<ManifestStorage>,
    plan: &Plan,
    chunk: &[u64],
    subset: &ArraySubset,
    mine: &Region,
    region: &Region,
    grid: &SharedGrid,
    start_band: usize,
) -> Result<()> {
    let reduce =
        |flat: &[T], shape: &[usize]| reduce_values(plan, flat, shape, subset.start(), mine, region, grid, start_band);
    if let Some(done) = decode_plain(array, plan, chunk, subset, reduce)? {
        return done;
    }
    let data: ArrayD<T> = array
        .retrieve_array_subset::<ArrayD<T>>(subset)
        .map_err(|e| Error::Decode(e.to_string()))?;
    let data = data.as_standard_layout();
    let flat = data.as_slice().expect("standard layout is contiguous");
    reduce(flat, data.shape())
}

/// A worker's buffer for chunks it decodes itself, and its zstd context:
/// kept for the thread's life, grown to one chunk. Every caller of the
/// kernel runs it on threads of one query's scope (`exec::compute_chunks`'
/// workers, the node's checking threads), so the buffer goes with the
/// query; the plan's memory counts one chunk's decode buffers per worker.
struct Scratch {
    /// 8-byte words, so the bytes can be viewed as values of any type.
    buf: Vec<u64>,
    decoder: ChunkDecoder,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch {
        buf: Vec::new(),
        decoder: ChunkDecoder::new(),
    });
}

/// Decodes a whole chunk of a [`Plain`](crate::storage::Plain) array into
/// this worker's buffer and runs `f` on its values (C order, the chunk's
/// shape). `None` (zarrs decodes it instead) when the array is not plain,
/// the subset is not the whole chunk (an edge chunk, a selection's
/// boundary) or the chunk is not stored (the fill value).
fn decode_plain<T: Num, R>(
    array: &Array<ManifestStorage>,
    plan: &Plan,
    chunk: &[u64],
    subset: &ArraySubset,
    f: impl FnOnce(&[T], &[usize]) -> R,
) -> Result<Option<R>> {
    let Some(plain) = plan.info.plain else {
        return Ok(None);
    };
    let whole = array.chunk_subset(chunk).map_err(|e| Error::Decode(e.to_string()))?;
    if whole != *subset {
        return Ok(None);
    }
    let shape: Vec<usize> = subset.shape().iter().map(|n| *n as usize).collect();
    let n = shape.iter().product::<usize>() * std::mem::size_of::<T>();
    let key = array.chunk_key(chunk);
    let storage = array.storage();
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        let words = n.div_ceil(8);
        if s.buf.len() < words {
            s.buf.resize(words, 0);
        }
        let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut s.buf[..words])[..n];
        let found = storage
            .decode_into(key.as_str(), plain, bytes, &mut s.decoder)
            .map_err(Error::Decode)?;
        Ok(found.then(|| f(bytemuck::cast_slice::<u8, T>(bytes), &shape)))
    })
}

/// Reduces the values of a decoded subset (`flat`, C order, `shape`,
/// starting at array index `start`) into `grid`; see [`kernel`].
#[allow(clippy::too_many_arguments)]
fn reduce_values<T: Num>(
    plan: &Plan,
    flat: &[T],
    shape: &[usize],
    start: &[u64],
    mine: &Region,
    region: &Region,
    grid: &SharedGrid,
    start_band: usize,
) -> Result<()> {
    let op = plan.op;
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
        .map(|w| (weight_tables(w, start, shape), &w.values));
    let wtabs = wt.as_ref().map(|w| &w.0);
    let weight = |i: usize| wt.as_ref().map_or(1.0, |w| w.1[i]);
    if !op.needs_m2() {
        let tabs = out_tables(plan, start, shape, region);
        let minmax = matches!(op, Op::Min | Op::Max);
        let wt = wt.as_ref().map(|w| (&w.0, &w.1[..]));
        match wt {
            None => walk_into(
                flat,
                shape,
                &tabs,
                None,
                grid,
                start_band,
                !cf && !minmax,
                |p, _, raw| {
                    let v = decode(raw);
                    if !v.is_nan() {
                        p.count += 1;
                        p.sum += v;
                        if minmax {
                            p.min = p.min.min(v);
                            p.max = p.max.max(v);
                        }
                    }
                },
            ),
            Some(_) => walk_into(flat, shape, &tabs, wt, grid, start_band, false, |p, w, raw| {
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
    let tabs = out_tables(plan, start, shape, mine);
    let cells = mine.cells();
    let mut count = vec![0u64; cells];
    let mut sum = vec![0.0f64; cells];
    let mut wsum = vec![0.0f64; cells];
    walk(flat, shape, &tabs, wtabs, |c, wi, raw| {
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
    walk(flat, shape, &tabs, wtabs, |c, wi, raw| {
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
        Dtype::I8 => kernel::<i8>(array, plan, chunk, &part, m, g, o, sb),
        Dtype::I16 => kernel::<i16>(array, plan, chunk, &part, m, g, o, sb),
        Dtype::I32 => kernel::<i32>(array, plan, chunk, &part, m, g, o, sb),
        Dtype::I64 => kernel::<i64>(array, plan, chunk, &part, m, g, o, sb),
        Dtype::U8 => kernel::<u8>(array, plan, chunk, &part, m, g, o, sb),
        Dtype::U16 => kernel::<u16>(array, plan, chunk, &part, m, g, o, sb),
        Dtype::U32 => kernel::<u32>(array, plan, chunk, &part, m, g, o, sb),
        Dtype::U64 => kernel::<u64>(array, plan, chunk, &part, m, g, o, sb),
        Dtype::F32 => kernel::<f32>(array, plan, chunk, &part, m, g, o, sb),
        Dtype::F64 => kernel::<f64>(array, plan, chunk, &part, m, g, o, sb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan, plan_with, Extras, QuerySpec};
    use crate::testing::{positions, TestArray};

    const BUDGET: u64 = 1 << 30;

    fn spec(dims: &[&str], op: Op) -> QuerySpec {
        QuerySpec {
            dims: dims.iter().map(|d| d.to_string()).collect(),
            ..QuerySpec::new("a", op)
        }
    }

    /// Reduces `chunks` of `a` one by one into a grid over the whole result.
    fn reduce(a: &TestArray, p: &Plan, chunks: &[Vec<u64>]) -> Vec<Partial> {
        let array = a.open();
        let region = p.full_region();
        let grid = SharedGrid::new(region.cells());
        for c in chunks {
            reduce_chunk_into(&array, p, c, &region, &grid, 0).unwrap();
        }
        grid.into_vec()
    }

    #[test]
    fn one_chunk_adds_its_own_values_and_no_others() {
        let a = TestArray::new(&[4, 6], &[2, 3], &["time", "lat"]);
        // Std needs count, sum and M2 (min and max only min and max do).
        let p = plan(a.info(BUDGET), &spec(&["time"], Op::Std), BUDGET).unwrap();
        // Chunk (1, 1): time 2..4, lat 3..6.
        let out = reduce(&a, &p, &[vec![1, 1]]);
        for (lat, cell) in out.iter().enumerate() {
            if lat < 3 {
                assert_eq!(cell.count, 0, "lat {lat}");
                continue;
            }
            let (x, y) = (a.at(&[2, lat as u64]) as f64, a.at(&[3, lat as u64]) as f64);
            assert_eq!((cell.count, cell.sum), (2, x + y), "lat {lat}");
            // M2 of two values: half their squared difference.
            assert!((cell.m2 - (y - x) * (y - x) / 2.0).abs() < 1e-9);
        }
    }

    #[test]
    fn rows_into_the_same_cells_are_summed_together_and_nans_skipped() {
        // A mean over time of chunks of 3 time steps x 16 lat x 300 lon
        // into 40 x 300 cells (three bands of the grid; one row of 300
        // cells straddles two), and over time and lat (every row of a
        // chunk into the same 300 cells), with NaNs: count and sum per cell
        // as the values say, for sum, mean and count (rows summed in
        // groups) and min (one value at a time).
        let (nt, nl, nx) = (7u64, 40u64, 300u64);
        let mut a = TestArray::new(&[nt, nl, nx], &[3, 16, nx], &["time", "lat", "lon"]);
        a.values = (0..a.values.len())
            .map(|i| {
                if i % 17 == 3 {
                    f32::NAN
                } else {
                    ((i * 31) % 97) as f32 * 0.125 - 6.0
                }
            })
            .collect();
        for dims in [&["time"][..], &["time", "lat"][..]] {
            let lats: Vec<Vec<u64>> = if dims.len() == 1 {
                (0..nl).map(|l| vec![l]).collect()
            } else {
                vec![(0..nl).collect()]
            };
            for op in [Op::Sum, Op::Mean, Op::Count, Op::Min] {
                let p = plan(a.info(BUDGET), &spec(dims, op), BUDGET).unwrap();
                let out = reduce(&a, &p, &p.chunks().collect::<Vec<_>>());
                assert_eq!(out.len(), lats.len() * nx as usize);
                for (li, ls) in lats.iter().enumerate() {
                    for lon in 0..nx {
                        let vals: Vec<f64> = (0..nt)
                            .flat_map(|t| ls.iter().map(move |l| (t, *l)))
                            .map(|(t, l)| a.at(&[t, l, lon]) as f64)
                            .collect();
                        let want = Partial::of(&vals);
                        let got = out[li * nx as usize + lon as usize];
                        assert_eq!(got.count, want.count, "{dims:?} {op} cell {li} {lon}");
                        assert!((got.sum - want.sum).abs() < 1e-9, "{dims:?} {op} {got:?} {want:?}");
                        if op == Op::Min {
                            assert_eq!(got.min, want.min);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn cf_fill_values_are_missing_and_scale_and_offset_apply() {
        let mut a = TestArray::new(&[3, 4], &[2, 2], &["time", "lat"]);
        a.attrs = serde_json::json!({"_FillValue": -9999.0, "scale_factor": 0.5, "add_offset": 10.0});
        a.values[1] = -9999.0; // time 0, lat 1
        a.values[5] = f32::NAN; // time 1, lat 1
        let reduced = |op| {
            let p = plan(a.info(BUDGET), &spec(&["time"], op), BUDGET).unwrap();
            reduce(&a, &p, &p.chunks().collect::<Vec<_>>())
        };
        let (out, min, max) = (reduced(Op::Mean), reduced(Op::Min), reduced(Op::Max));
        for lat in 0..4u64 {
            let decoded: Vec<f64> = (0..3)
                .map(|t| a.at(&[t, lat]))
                .filter(|v| *v != -9999.0 && !v.is_nan())
                .map(|v| v as f64 * 0.5 + 10.0)
                .collect();
            let want = Partial::of(&decoded);
            let l = lat as usize;
            assert_eq!((out[l].count, out[l].sum), (want.count, want.sum), "lat {lat}");
            assert_eq!((min[l].min, max[l].max), (want.min, want.max), "lat {lat}");
        }
        assert_eq!(out[1].count, 1, "the fill value and NaN are both missing");
    }

    #[test]
    fn weights_multiply_each_value_along_their_dimension() {
        let a = TestArray::new(&[2, 3], &[1, 2], &["time", "lat"]);
        let info = a.info(BUDGET);
        let w = [1.0, 2.0, 4.0];
        let weights = Weights::new(&info, "w", &["lat".into()], &[3], w.to_vec()).unwrap();
        let s = QuerySpec {
            weights: Some("w".into()),
            ..spec(&[], Op::Mean)
        };
        let extras = Extras {
            group: None,
            weights: Some(weights),
        };
        let p = plan_with(info, &s, BUDGET, extras).unwrap();
        let out = reduce(&a, &p, &p.chunks().collect::<Vec<_>>());
        let (mut num, mut den) = (0.0, 0.0);
        for idx in positions(&[2, 3]) {
            num += w[idx[1] as usize] * a.at(&idx) as f64;
            den += w[idx[1] as usize];
        }
        assert_eq!(out.len(), 1);
        assert!((out[0].finish_weighted(Op::Mean) - num / den).abs() < 1e-9);
        assert_eq!(out[0].wsum, den);
    }

    #[test]
    fn a_chunk_outside_the_grid_it_is_reduced_into_is_refused() {
        let a = TestArray::new(&[4, 6], &[2, 3], &["time", "lat"]);
        let p = plan(a.info(BUDGET), &spec(&["time"], Op::Mean), BUDGET).unwrap();
        // A grid over lat 0..3 cannot take chunk (0, 1) (lat 3..6).
        let region = Region {
            origin: vec![0],
            shape: vec![3],
        };
        let grid = SharedGrid::new(region.cells());
        let e = reduce_chunk_into(&a.open(), &p, &[0, 1], &region, &grid, 0).unwrap_err();
        assert!(matches!(e, Error::Selection(_)), "{e}");
    }

    #[test]
    fn chunks_decoded_in_place_reduce_as_zarrs_decoded_ones() {
        // Interior chunks take the engine's own decoding (the test array is
        // plain: uncompressed little-endian v2), edge chunks and chunks cut
        // by a selection zarrs'; with `plain` off every chunk is zarrs'.
        // Both give the same bits, for every op, NaNs and CF decoding on.
        let mut a = TestArray::new(&[9, 10, 12], &[4, 5, 6], &["time", "lat", "lon"]);
        a.values = (0..a.values.len())
            .map(|i| {
                if i % 13 == 5 {
                    f32::NAN
                } else {
                    ((i * 7) % 23) as f32 - 4.5
                }
            })
            .collect();
        assert_eq!(a.info(BUDGET).plain, Some(crate::storage::Plain::Raw));
        a.attrs = serde_json::json!({"scale_factor": 0.5, "add_offset": 1.0, "_FillValue": 3.5});
        for op in [Op::Sum, Op::Mean, Op::Min, Op::Max, Op::Std] {
            for (dims, sel) in [(&["time"][..], None), (&["lat", "lon"][..], Some(("time", (1, 7))))] {
                let mut s = spec(dims, op);
                if let Some((d, r)) = sel {
                    s.sel = vec![(d.to_string(), r.0, r.1)];
                }
                let own = plan(a.info(BUDGET), &s, BUDGET).unwrap();
                let mut theirs = plan(a.info(BUDGET), &s, BUDGET).unwrap();
                theirs.info.plain = None;
                let chunks: Vec<_> = own.chunks().collect();
                let (x, y) = (reduce(&a, &own, &chunks), reduce(&a, &theirs, &chunks));
                assert_eq!(format!("{x:?}"), format!("{y:?}"), "{op} over {dims:?}");
            }
        }
    }
}
