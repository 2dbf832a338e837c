//! The physical limit of a local reduction, for bench/query.sh: every
//! chunk file of a zstd Zarr array read, hashed with blake3 (what
//! verification costs), decompressed into a reused buffer and its float32
//! values added into a per-thread float64 grid of one chunk's trailing
//! shape (a mean over the first dimension), on all cores. No planning, no
//! codec pipeline, no CF decoding: what the engine cannot go below.
//!
//! usage: query_limit DIR CELLS   (DIR: the array's chunk files; CELLS:
//! values per chunk row block, e.g. 512*512). Prints seconds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

fn files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable directory").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.file_name().is_some_and(|n| n != "zarr.json") {
            out.push(p);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, cells): (PathBuf, usize) = match &args[..] {
        [_, d, c] => (d.into(), c.parse().expect("CELLS is a number")),
        _ => {
            eprintln!("usage: query_limit DIR CELLS");
            std::process::exit(2);
        }
    };
    let mut list = Vec::new();
    files(&dir, &mut list);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let t = std::time::Instant::now();
    let total: f64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut grid = vec![0.0f64; cells];
                    let mut buf = Vec::new();
                    let mut z = zstd::bulk::Decompressor::new().expect("zstd");
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = list.get(i) else { break };
                        let raw = std::fs::read(p).expect("readable chunk");
                        std::hint::black_box(blake3::hash(&raw));
                        buf.clear();
                        buf.reserve(64 << 20);
                        z.decompress_to_buffer(&raw, &mut buf).expect("a zstd chunk");
                        for row in buf.chunks_exact(4 * cells) {
                            for (g, b) in grid.iter_mut().zip(row.chunks_exact(4)) {
                                *g += f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes")));
                            }
                        }
                    }
                    grid.iter().sum::<f64>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker")).sum()
    });
    std::hint::black_box(total);
    println!("{:.3}", t.elapsed().as_secs_f64());
}
