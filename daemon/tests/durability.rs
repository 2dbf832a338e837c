//! Issue 31 (durability), as an operator meets it: bit rot found by the
//! background scrub and repaired from the other daemons without a user
//! action; `fsck --repair` fetching again on demand; a deleted segment file
//! and a deleted index recovered at start; a repo exported while its
//! daemon runs, started on, and imported.

mod common;

use std::path::Path;

use common::*;

#[path = "../../crates/shoal-node/tests/support/mod.rs"]
mod support;

/// A dataset of `files` distinct 8 KiB chunk files (one block each) under
/// a group `zarr.json`.
fn chunks(dir: &Path, files: usize) -> std::path::PathBuf {
    let src = dir.join("chunks.zarr");
    std::fs::create_dir_all(src.join("c")).unwrap();
    std::fs::write(src.join("zarr.json"), support::GROUP).unwrap();
    for i in 0..files {
        let mut data = vec![0u8; 8192];
        blake3::Hasher::new()
            .update(&(i as u64).to_le_bytes())
            .finalize_xof()
            .fill(&mut data);
        std::fs::write(src.join(format!("c/{i}")), data).unwrap();
    }
    src
}

/// Flips a byte in the middle of each given file's copy in `d`'s segments.
fn rot(d: &Daemon, files: &[std::path::PathBuf]) {
    for f in files {
        corrupt_local_copy(d, &std::fs::read(f).unwrap());
    }
}

fn durability(d: &Daemon) -> serde_json::Value {
    d.json(&["stats"])["durability"].clone()
}

const SCRUB_NOW: &str = "rate = \"64MiB\"\nevery = \"1s\"\nstart_after = \"0s\"\n";

#[test]
fn the_scrub_finds_rot_in_one_daemon_of_three_and_repairs_it_from_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let src = chunks(tmp.path(), 300);
    let a = Daemon::start();
    let b = Daemon::start();
    let c = Daemon::start_opts(Opts {
        scrub: SCRUB_NOW.into(),
        ..Default::default()
    });
    let root = a.add(&src, Some("d"));
    b.connect(&a);
    c.connect(&a);
    c.connect(&b);
    b.cli_ok(&["pin", &root]);
    c.cli_ok(&["pin", &root, "--name", "d"]);
    // Let a first pass end clean, so the rot is what the next one finds.
    wait_for(60, "a first clean scrub pass on c", || {
        (durability(&c)["scrub_passes"].as_u64()? >= 1).then_some(())
    });
    // 1% of the dataset's chunk blocks.
    let victims: Vec<_> = [17, 150, 299].iter().map(|i| src.join(format!("c/{i}"))).collect();
    rot(&c, &victims);
    let d = wait_for(90, "the scrub to find and repair the rot", || {
        let d = durability(&c);
        (d["scrub_corrupt_total"].as_u64()? >= 3 && d["repaired_blocks"].as_u64()? >= 3).then_some(d)
    });
    assert_eq!(d["scrub_corrupt_total"].as_u64(), Some(3), "{d}");
    assert!(c.cli(&["fsck"]).status.success(), "fsck clean after the repair");
    let out = tmp.path().join("out");
    c.cli_ok(&["get", "d", "-o", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    // Found and fixed: the operator sees it in `stats` and the log.
    let text = c.cli_ok(&["stats"]);
    assert!(text.contains("3 corrupt blocks found by the scrub"), "{text}");
    assert!(c
        .log()
        .contains("repaired: missing blocks fetched again from providers"));
    let (_, metrics) = http_get(&format!("{}/metrics", c.gateway()));
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("shoal_scrub_corrupt_blocks_total 3"), "{metrics}");
}

#[test]
fn fsck_repair_fetches_corrupt_blocks_again_from_peers_and_says_what_it_could_not() {
    let tmp = tempfile::tempdir().unwrap();
    let src = chunks(tmp.path(), 40);
    let a = Daemon::start();
    let b = Daemon::start();
    let root = a.add(&src, Some("d"));
    b.connect(&a);
    b.cli_ok(&["pin", &root, "--name", "d"]);
    rot(&b, &[src.join("c/3"), src.join("c/30")]);
    let report = b.json_allow_fail(&["fsck", "--repair"]);
    assert_eq!(report["removed_blocks"].as_u64(), Some(2), "{report}");
    assert_eq!(report["refetched_blocks"].as_u64(), Some(2), "{report}");
    assert_eq!(report["repaired_datasets"][0].as_str(), Some(root.as_str()), "{report}");
    assert!(report["incomplete"].as_array().unwrap().is_empty(), "{report}");
    assert!(b.cli(&["fsck"]).status.success());

    // With the only other copy gone, the report says why it stays broken.
    let mut a = a;
    a.kill9();
    rot(&b, &[src.join("c/5")]);
    let out = b.cli(&["fsck", "--repair"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("could not be repaired"), "{text}");
    assert!(text.contains("(d)"), "{text}");
}

#[test]
fn a_deleted_segment_file_and_a_deleted_index_are_recovered_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let src = chunks(tmp.path(), 60);
    let a = Daemon::start();
    let root = a.add(&src, Some("d"));
    let mut b = Daemon::start_opts(Opts {
        network: format!("bootstrap = [\"{}\"]\n", a.addr()),
        ..Default::default()
    });
    b.cli_ok(&["pin", &root, "--name", "d"]);
    let seg = b.home.join("store/segments/000000000001.pack");
    let index = b.home.join("store/index.redb");

    // The index alone: rebuilt from the segments and the journal, nothing
    // fetched.
    b.stop();
    std::fs::remove_file(&index).unwrap();
    b.restart();
    let d = durability(&b);
    let rebuilt = &d["recovery"]["index_rebuilt"];
    assert_eq!(rebuilt["pins"].as_u64(), Some(1), "{d}");
    assert_eq!(rebuilt["names"].as_u64(), Some(1), "{d}");
    assert_eq!(rebuilt["bad_frames"].as_u64(), Some(0), "{d}");
    assert!(b.cli(&["fsck"]).status.success());
    assert_eq!(b.json(&["ls", "d"])["root"].as_str(), Some(root.as_str()));
    let text = b.cli_ok(&["stats"]);
    assert!(text.contains("the index was rebuilt at start"), "{text}");

    // The segment file: its blocks dropped, fetched again from a.
    b.stop();
    std::fs::remove_file(&seg).unwrap();
    b.restart();
    let d = durability(&b);
    assert_eq!(
        d["recovery"]["lost_segments"][0]["missing"].as_bool(),
        Some(true),
        "{d}"
    );
    wait_for(60, "the lost blocks fetched again from a", || {
        b.cli(&["fsck"]).status.success().then_some(())
    });
    let out = tmp.path().join("out");
    b.cli_ok(&["get", "d", "-o", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);

    // Both at once (a lost disk but for the journal): pins and names from
    // the journal, every block from a.
    b.stop();
    std::fs::remove_file(&index).unwrap();
    std::fs::remove_dir_all(b.home.join("store/segments")).unwrap();
    b.restart();
    wait_for(60, "the whole dataset fetched again from a", || {
        b.cli(&["fsck"]).status.success().then_some(())
    });
    assert_eq!(b.json(&["ls", "d"])["root"].as_str(), Some(root.as_str()));
    let log = b.log();
    assert!(log.contains("rebuilt from the segments and the roots journal"), "{log}");
}

#[test]
fn a_repo_exported_while_its_daemon_runs_starts_whole_and_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let src = chunks(tmp.path(), 50);
    let mut a = Daemon::start();
    let root = a.add(&src, Some("d"));
    // Writes go on while the copy is taken.
    let more = chunks(&tmp.path().join("more"), 80);
    let adding = a.spawn_cli(&["add", more.to_str().unwrap(), "--name", "more"]);
    let dest = tmp.path().join("backup");
    let text = a.cli_ok(&["export-repo", dest.to_str().unwrap()]);
    assert!(
        text.contains("exported") && text.contains("start a daemon on it"),
        "{text}"
    );
    assert!(wait_within(adding, 60, "the concurrent add").status.success());
    // Not over an existing copy.
    let again = a.cli(&["export-repo", dest.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    a.stop();

    // A daemon on the copy (its config listens on free ports) holds what
    // was named.
    let copy = Daemon::attach(&dest);
    assert!(copy.cli(&["fsck"]).status.success());
    let out = tmp.path().join("out");
    copy.cli_ok(&["get", "d", "-o", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    assert_eq!(copy.json(&["log", "d"]).as_array().map(|v| v.len()), Some(1));
    drop(copy);

    // With no daemon running the export reads the repo itself; import-repo
    // makes a new repo of it.
    let offline = tmp.path().join("offline");
    a.cli_ok(&["export-repo", offline.to_str().unwrap()]);
    let fresh = tmp.path().join("fresh");
    let import = || {
        let (home, src) = (fresh.to_str().unwrap(), offline.to_str().unwrap());
        std::process::Command::new(BIN)
            .args(["--home", home, "import-repo", src])
            .output()
            .unwrap()
    };
    let out = import();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported"));
    let imported = Daemon::attach(&fresh);
    assert!(imported.cli(&["fsck"]).status.success());
    assert_eq!(imported.json(&["ls", "d"])["root"].as_str(), Some(root.as_str()));
    // Importing over a repo that holds a store is refused.
    drop(imported);
    let out = import();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a store"));
    a.restart();
}
