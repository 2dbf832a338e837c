//! Local execution: a plan's chunks on all cores, each worker reducing its
//! chunks into one grid the workers share.

use std::sync::Arc;

use zarrs::array::Array;

use crate::grid::{Region, SharedGrid};
use crate::kernel::reduce_chunk_into;
use crate::partial::Partial;
use crate::plan::Plan;
use crate::storage::ManifestStorage;
use crate::{Error, Result};

/// Merged partials of the chunks that succeeded, and the chunks that failed
/// (index into the chunk list, error).
pub type ChunkResults = (Vec<Partial>, Vec<(usize, Error)>);

/// Computes `chunks` on `threads` threads into one grid over `region`,
/// shared by the workers. A chunk that fails (for example because its
/// blocks are not available) does not stop the others: its index is
/// returned with the error, and its data is left out of the partials. The
/// caller has checked the memory: one grid of `region`.
pub fn compute_chunks(
    array: &Array<ManifestStorage>,
    plan: &Plan,
    chunks: &[Vec<u64>],
    threads: usize,
    region: &Region,
) -> ChunkResults {
    let grid = SharedGrid::new(region.cells());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = threads.max(1).min(chunks.len().max(1));
    let mut failed: Vec<(usize, Error)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (next, grid) = (&next, &grid);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else { break };
                        // Workers start spread over the bands.
                        let start = (w * grid.bands()) / workers + i;
                        if let Err(e) = reduce_chunk_into(array, plan, chunk, region, grid, start) {
                            failed.push((i, e));
                        }
                    }
                    failed
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    failed.sort_by_key(|f| f.0);
    (grid.into_vec(), failed)
}

/// Runs the whole plan locally within its budget; any chunk failure is an
/// error.
pub fn run_local(array: &Arc<Array<ManifestStorage>>, plan: &Plan, threads: usize) -> Result<Vec<Partial>> {
    let threads = plan.threads_within(threads)?;
    let chunks: Vec<Vec<u64>> = plan.chunks().collect();
    let (out, failed) = compute_chunks(array, plan, &chunks, threads, &plan.full_region());
    match failed.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(out),
    }
}

/// The store key holding a chunk (a shard file for sharded arrays).
pub fn chunk_key(array: &Array<ManifestStorage>, chunk: &[u64]) -> String {
    array.chunk_key(chunk).as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partial::Op;
    use crate::plan::{plan, QuerySpec};
    use crate::testing::TestArray;

    const BUDGET: u64 = 1 << 30;

    fn std_over_time() -> QuerySpec {
        QuerySpec {
            dims: vec!["time".into()],
            ..QuerySpec::new("a", Op::Std)
        }
    }

    #[test]
    fn every_chunk_on_several_workers_gives_each_cell_its_values() {
        let mut a = TestArray::new(&[5, 4, 3], &[2, 3, 2], &["time", "lat", "lon"]);
        // Values that make a sum depend on its order, so a lost or doubled
        // chunk shows.
        a.values = (0..60).map(|i| ((i * 37) % 11) as f32 * 0.25 - 1.0).collect();
        let p = plan(a.info(BUDGET), &std_over_time(), BUDGET).unwrap();
        let out = run_local(&a.open(), &p, 3).unwrap();
        assert_eq!(out.len(), 12);
        for lat in 0..4u64 {
            for lon in 0..3u64 {
                let values: Vec<f64> = (0..5).map(|t| a.at(&[t, lat, lon]) as f64).collect();
                let want = Partial::of(&values);
                let got = out[(lat * 3 + lon) as usize];
                assert_eq!(got.count, 5);
                assert!((got.sum - want.sum).abs() < 1e-9);
                assert!((got.finish(Op::Std, 0) - want.finish(Op::Std, 0)).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn a_chunk_that_cannot_be_read_is_reported_and_the_others_still_merge() {
        let mut a = TestArray::new(&[4, 6], &[2, 3], &["time", "lat"]);
        a.missing = vec![vec![1, 0]];
        let p = plan(a.info(BUDGET), &std_over_time(), BUDGET).unwrap();
        let chunks: Vec<Vec<u64>> = p.chunks().collect();
        let (out, failed) = compute_chunks(&a.open(), &p, &chunks, 2, &p.full_region());
        let missing_at = chunks.iter().position(|c| *c == vec![1, 0]).unwrap();
        assert_eq!(failed.iter().map(|f| f.0).collect::<Vec<_>>(), vec![missing_at]);
        // lat 0..3 has only time 0..2 (chunk (0, 0)); lat 3..6 all of time.
        let counts: Vec<u64> = out.iter().map(|c| c.count).collect();
        assert_eq!(counts, vec![2, 2, 2, 4, 4, 4]);
        let e = run_local(&a.open(), &p, 2).unwrap_err();
        assert!(e.to_string().contains("no block"), "{e}");
    }
}
