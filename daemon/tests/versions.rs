//! Living datasets: versions of a name (log, diff, NAME@N, retention) and
//! incremental re-adds, through the real CLI.

mod common;

use common::*;

#[test]
fn versions_log_diff_at_n_and_retention() {
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("ds");
    copy_tree(&datasets().join("v2_blosc"), &src);
    let v1 = d.json(&["add", src.to_str().unwrap(), "--name", "t"]);
    assert_eq!(v1["version"], 1);
    // A changed chunk, a new one, a removed one.
    let chunk = src.join("temp/0.0.0");
    let mut data = std::fs::read(&chunk).unwrap();
    data[10] ^= 0xff;
    std::fs::write(&chunk, &data).unwrap();
    std::fs::write(src.join("notes.txt"), b"appended").unwrap();
    std::fs::remove_file(src.join("temp/1.1.1")).unwrap();
    let v2 = d.json(&["add", src.to_str().unwrap(), "--name", "t"]);
    assert_eq!(v2["version"], 2);
    assert!(v2["reused_files"].as_u64().unwrap() > 10, "{v2}");
    // Re-adding the same tree records no new version.
    assert_eq!(d.json(&["add", src.to_str().unwrap(), "--name", "t"])["version"], 2);

    let log = d.json(&["log", "t"]);
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0]["version"].as_u64(), log[1]["version"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(log[0]["root"], v2["root"]);
    assert_eq!(log[0]["parent"], v1["root"]);
    assert!(log[0]["time"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        (
            log[0]["added"].as_u64(),
            log[0]["changed"].as_u64(),
            log[0]["removed"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{log:?}"
    );
    let text = d.cli_ok(&["log", "t"]);
    assert!(text.starts_with("t@2  ") && text.contains("+1 ~1 -1 keys"), "{text}");

    let diff = d.json(&["diff", "t@1", "t@2"]);
    assert_eq!(diff["added"][0][0], "notes.txt");
    assert_eq!(diff["changed"][0][0], "temp/0.0.0");
    assert_eq!(diff["removed"][0][0], "temp/1.1.1");
    // NAME@N wherever a TARGET goes: the old version still has the key.
    let old = d.cli(&["cat", "t@1/temp/1.1.1"]);
    assert!(old.status.success());
    assert!(!d.cli(&["cat", "t@2/temp/1.1.1"]).status.success());

    // Retention: keep 1 unpins the older versions; GC reclaims their blocks.
    std::fs::write(src.join("notes.txt"), b"appended again").unwrap();
    let v3 = d.json(&["add", src.to_str().unwrap(), "--name", "t", "--keep", "1"]);
    assert_eq!(v3["version"], 3);
    let pins = d.json(&["pins"]);
    assert_eq!(pins.as_array().unwrap().len(), 1, "{pins}");
    assert!(d.json(&["gc"])["removed_blocks"].as_u64().unwrap() > 0);
    let out = d.cli(&["ls", "t@1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no version 1"));
    assert!(d.cli(&["fsck"]).status.success());

    // Bad input: unknown name, --keep 0.
    let out = d.cli(&["log", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no dataset named"));
    let out = d.cli(&["add", src.to_str().unwrap(), "--name", "t", "--keep", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keep must be at least 1"));
}
