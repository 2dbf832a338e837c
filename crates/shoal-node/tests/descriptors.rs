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
    let src = support::many_directories(tmp.path());
    let cfg = support::config(&tmp.path().join("n"), 1 << 20, support::quiet(), Default::default());
    let n = Node::start(cfg).await.unwrap();
    let added = n
        .datasets()
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
    let target = n.datasets().resolve("many").await.unwrap();
    let r = n
        .datasets()
        .export(&target, out.clone(), shoal_node::no_progress())
        .await;
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
