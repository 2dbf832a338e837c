//! Benchmark helper: latency of random verified block reads by CID.
//!
//! usage: read_latency STORE_DIR [COUNT]
//! Opens the store (the daemon must be stopped), reads COUNT random stored
//! blocks once each, prints p50/p99/max latency and throughput.

use std::time::Instant;

use rand::seq::SliceRandom;
use shoal_store::{Store, StoreOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: read_latency STORE_DIR [COUNT]")?;
    let count: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(1000);
    let store = Store::open(&dir, StoreOptions::default())?;
    let mut cids: Vec<_> = store
        .all_cids()?
        .into_iter()
        .filter(|c| c.codec() == shoal_core::cid::RAW)
        .collect();
    cids.shuffle(&mut rand::thread_rng());
    cids.truncate(count);
    let mut lat = Vec::with_capacity(cids.len());
    let mut bytes = 0u64;
    let start = Instant::now();
    for c in &cids {
        let t = Instant::now();
        let b = store.require(c)?;
        lat.push(t.elapsed());
        bytes += b.len() as u64;
    }
    let total = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "reads={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} mean_block_KiB={:.0} MiB/s={:.0}",
        lat.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
        bytes as f64 / lat.len() as f64 / 1024.0,
        bytes as f64 / (1 << 20) as f64 / total.as_secs_f64()
    );
    Ok(())
}
