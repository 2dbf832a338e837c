//! Fills a (stopped) daemon's store with N small Zarr v3 datasets, each
//! added in-process through the same path as `shoal add` (ingest, pin,
//! land; the network announces them), for the scale test and benchmark
//! (issue 29). Prints the add rate as the store grows, so a cost that
//! grows with the number of datasets shows.
//!
//! usage: datasets_fill HOME N [START]
//! (HOME is a shoal home, created if missing, listening on loopback;
//! datasets are numbered START.. so a second run adds new ones)

use std::time::Instant;

fn write_dataset(dir: &std::path::Path, i: u64) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("x/c"))?;
    std::fs::write(
        dir.join("zarr.json"),
        format!(r#"{{"zarr_format":3,"node_type":"group","attributes":{{"title":"small dataset {i}"}}}}"#),
    )?;
    std::fs::write(
        dir.join("x/zarr.json"),
        r#"{"zarr_format":3,"node_type":"array","shape":[4],"data_type":"int64","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[4]}},"chunk_key_encoding":{"name":"default","configuration":{"separator":"/"}},"fill_value":0,"codecs":[{"name":"bytes","configuration":{"endian":"little"}}],"dimension_names":["i"]}"#,
    )?;
    let vals: Vec<u8> = (0..4u64).flat_map(|k| (i * 4 + k).to_le_bytes()).collect();
    std::fs::write(dir.join("x/c/0"), vals)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let home: std::path::PathBuf = args[1].clone().into();
    let n: u64 = args[2].parse()?;
    let start: u64 = args.get(3).map_or(Ok(0), |s| s.parse())?;
    let repo = shoal_repo::Repo::locate(Some(home.clone()))?;
    repo.init(&["/ip4/127.0.0.1/tcp/0".into()], Some("127.0.0.1:0"))?;
    let cfg = repo.load_config()?.node_config(&repo)?;
    let node = shoal_node::Node::start(cfg).await?;
    let scratch = tempfile::tempdir()?;
    let t0 = Instant::now();
    let mut t = Instant::now();
    let step = (n / 10).max(1);
    for i in start..start + n {
        let dir = scratch.path().join("ds");
        write_dataset(&dir, i)?;
        node.datasets()
            .add(dir, Some(format!("small-{i}")), std::sync::Arc::new(|_| {}))
            .await?;
        if (i - start + 1).is_multiple_of(step) {
            println!(
                "{:>8} datasets: {:.2} ms per add over the last {step}",
                i + 1,
                t.elapsed().as_secs_f64() * 1000.0 / step as f64
            );
            t = Instant::now();
        }
    }
    println!("added {n} in {:.1}s", t0.elapsed().as_secs_f64());
    node.shutdown().await?;
    Ok(())
}
