//! Issue 24: `shoal get` of an ordinary dataset (a v3 array of shape
//! (40, 40, 2) in chunks of one value: 1,643 directories) stopped with "Too
//! many open files" under a 1,024 descriptor limit (systemd's default soft
//! limit): the export kept one descriptor per directory until the end.
//! Alone in its test binary: it lowers the process's own limit.

mod support;

use shoal_node::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_24_get_of_1643_directories_under_1024_descriptors() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("many.zarr");
    std::fs::create_dir_all(src.join("t")).unwrap();
    std::fs::write(
        src.join("zarr.json"),
        r#"{"zarr_format":3,"node_type":"group","attributes":{}}"#,
    )
    .unwrap();
    let meta = support::array_meta(&[40, 40, 2], &[1, 1, 1], support::plain_bytes(), &["a", "b", "c"]);
    std::fs::write(src.join("t/zarr.json"), meta).unwrap();
    for i in 0..40 {
        for j in 0..40 {
            let d = src.join(format!("t/c/{i}/{j}"));
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..2 {
                std::fs::write(d.join(k.to_string()), ((i * 80 + j * 2 + k) as f64).to_le_bytes()).unwrap();
            }
        }
    }
    let cfg = support::config(&tmp.path().join("n"), 1 << 20, support::quiet(), Default::default());
    let n = Node::start(cfg).await.unwrap();
    let added = n
        .add(src.clone(), Some("many".into()), shoal_node::no_progress())
        .await
        .unwrap();
    assert_eq!(added.keys, 3202);
    let before = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(1024),
            maximum: before.maximum,
        },
    )
    .unwrap();
    let out = tmp.path().join("out");
    let target = n.resolve("many").await.unwrap();
    let r = n.export(&target, out.clone(), shoal_node::no_progress()).await;
    setrlimit(Resource::Nofile, before).unwrap();
    let r = r.unwrap();
    assert_eq!(r.keys, 3202);
    let dirs = walk(&out);
    assert_eq!(dirs, 1643, "directories written");
    assert_eq!(std::fs::read(out.join("t/c/39/39/1")).unwrap(), 3199f64.to_le_bytes());
    n.shutdown().await.unwrap();
}

/// Directories under `p`, itself included.
fn walk(p: &std::path::Path) -> usize {
    1 + std::fs::read_dir(p)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| walk(&e.path()))
        .sum::<usize>()
}
