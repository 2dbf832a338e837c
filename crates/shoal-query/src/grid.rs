//! The output grid of a run, shared by its workers: one grid whatever the
//! number of workers (a 4096 x 4096 result costs one grid, not one per
//! worker). Cells are split into bands, each behind its own lock; a worker
//! adds a decoded chunk band by band, holding one band's lock at a time
//! (two or more, taken in order, only for a row that straddles bands), and
//! workers start at different bands so they rarely wait for each other.
//! Each band owns its cells, so all of this is safe code.

use std::sync::{Mutex, MutexGuard};

use crate::Partial;

/// Bands per grid (at most).
const BANDS: usize = 64;
/// Smallest band, cells.
const MIN_BAND: usize = 4096;

/// A cell's running sum and count of values, kept apart from its
/// [`Partial`]: what a sum, mean or count adds, 16 bytes a cell instead of
/// 48. A mean over time adds a chunk's time steps into every cell of the
/// grid, so the grid is walked once per chunk; with the partials alone that
/// walk was the engine's largest cost after zstd (the profile's hottest
/// instructions were the loads and stores of cells 48 bytes apart). Folded
/// into the partials when the grid is taken ([`SharedGrid::into_vec`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SumCount {
    pub sum: f64,
    pub count: u64,
}

/// One band's cells: their partials, and their sums once anything added
/// one (empty until then).
struct Cells {
    partials: Vec<Partial>,
    sums: Vec<SumCount>,
}

impl Cells {
    fn into_partials(self) -> Vec<Partial> {
        let mut out = self.partials;
        for (p, s) in out.iter_mut().zip(&self.sums) {
            p.sum += s.sum;
            p.count += s.count;
        }
        out
    }
}

/// Each band owns its cells behind its own lock.
pub struct SharedGrid {
    bands: Box<[Mutex<Cells>]>,
    band: usize,
    cells: usize,
}

/// The locks of bands `first..=last`: their cells may be changed.
pub struct Band<'a> {
    /// The first locked cell.
    lo: usize,
    band: usize,
    guards: Vec<MutexGuard<'a, Cells>>,
}

impl Band<'_> {
    /// A single locked band's cells, and the index of its first.
    pub fn cells(&mut self) -> (usize, &mut [Partial]) {
        assert_eq!(self.guards.len(), 1, "one band locked");
        (self.lo, &mut self.guards[0].partials[..])
    }

    /// A single locked band's running sums and counts (see [`SumCount`]),
    /// and the index of its first cell.
    pub fn sums(&mut self) -> (usize, &mut [SumCount]) {
        assert_eq!(self.guards.len(), 1, "one band locked");
        let c = &mut *self.guards[0];
        if c.sums.is_empty() {
            c.sums = vec![SumCount::default(); c.partials.len()];
        }
        (self.lo, &mut c.sums[..])
    }

    /// The cell `c`; panics when it lies outside the locked bands.
    #[inline(always)]
    pub fn cell(&mut self, c: usize) -> &mut Partial {
        let at = c.checked_sub(self.lo).expect("a cell before the locked bands");
        if self.guards.len() == 1 {
            &mut self.guards[0].partials[at]
        } else {
            &mut self.guards[at / self.band].partials[at % self.band]
        }
    }
}

impl SharedGrid {
    pub fn new(cells: usize) -> SharedGrid {
        let band = cells.div_ceil(BANDS).max(MIN_BAND);
        let n = cells.div_ceil(band).max(1);
        SharedGrid {
            bands: (0..n)
                .map(|b| {
                    Mutex::new(Cells {
                        partials: vec![Partial::EMPTY; band.min(cells.saturating_sub(b * band))],
                        sums: Vec::new(),
                    })
                })
                .collect(),
            band,
            cells,
        }
    }

    pub fn len(&self) -> usize {
        self.cells
    }

    pub fn is_empty(&self) -> bool {
        self.cells == 0
    }

    pub fn bands(&self) -> usize {
        self.bands.len()
    }

    /// The band of cell `c`.
    pub fn band_of(&self, c: usize) -> usize {
        c / self.band
    }

    /// Locks bands `first..=last` (in order, so two workers never wait for
    /// each other in a cycle).
    pub fn lock(&self, first: usize, last: usize) -> Band<'_> {
        Band {
            lo: first * self.band,
            band: self.band,
            guards: (first..=last)
                .map(|b| self.bands[b].lock().unwrap_or_else(|e| e.into_inner()))
                .collect(),
        }
    }

    pub fn into_vec(self) -> Vec<Partial> {
        let mut out = Vec::with_capacity(self.cells);
        for b in self.bands.into_vec() {
            out.extend(b.into_inner().unwrap_or_else(|e| e.into_inner()).into_partials());
        }
        out
    }
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

    /// The smallest region holding both.
    pub fn union(&self, o: &Region) -> Region {
        let (mut origin, mut shape) = (Vec::new(), Vec::new());
        for ((a, n), (b, m)) in self.origin.iter().zip(&self.shape).zip(o.origin.iter().zip(&o.shape)) {
            let lo = *a.min(b);
            let hi = (a + *n as u64).max(b + *m as u64);
            origin.push(lo);
            shape.push((hi - lo) as usize);
        }
        Region { origin, shape }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_adding_into_one_grid_lose_nothing() {
        let g = SharedGrid::new(100_000);
        assert!(g.bands() > 1);
        std::thread::scope(|s| {
            for w in 0..4 {
                let g = &g;
                s.spawn(move || {
                    for round in 0..10 {
                        for b in (0..g.bands()).map(|i| (i + w + round) % g.bands()) {
                            let mut band = g.lock(b, b);
                            let lo = b * g.band;
                            for c in lo..(lo + g.band).min(g.len()) {
                                let p = band.cell(c);
                                p.count += 1;
                                p.sum += 1.0;
                            }
                        }
                    }
                });
            }
        });
        assert!(g.into_vec().iter().all(|p| p.count == 40 && p.sum == 40.0));
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_cell_outside_the_lock_is_refused() {
        let g = SharedGrid::new(3 * MIN_BAND);
        let mut band = g.lock(0, 0);
        band.cell(MIN_BAND);
    }
}
