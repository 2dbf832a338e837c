//! The CLI as a Unix tool: closed pipes end quietly, every command that
//! prints data speaks `--json`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A v2 array of `n` one-byte chunks: `ls` prints a line per key.
fn many_keys(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("x")).unwrap();
    std::fs::write(dir.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
    std::fs::write(
        dir.join("x/.zarray"),
        format!(r#"{{"zarr_format": 2, "shape": [{n}], "chunks": [1], "dtype": "|u1", "compressor": null, "fill_value": 0, "filters": null, "order": "C"}}"#),
    )
    .unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("x/{i}")), [i as u8]).unwrap();
    }
}

/// Runs `shoal ARGS | READER` in bash; returns (shoal's exit status, its
/// stderr). The output is far larger than a pipe buffer, so shoal is still
/// writing when the reader closes.
fn piped(d: &Daemon, args: &str, reader: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr");
    let script = format!(
        "{BIN} --home {} {args} 2>{} | {reader} >/dev/null; exit ${{PIPESTATUS[0]}}",
        d.home.display(),
        err.display()
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    (out.status.code().unwrap_or(-1), std::fs::read_to_string(err).unwrap())
}

#[test]
fn ls_and_cat_into_a_reader_that_closes_early_end_quietly() {
    let d = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    many_keys(&work.path().join("many"), 4000);
    big_dataset(&work.path().join("big"), 2, 7);
    d.add(&work.path().join("many"), Some("many"));
    d.add(&work.path().join("big"), Some("big"));
    for (args, reader) in [
        ("ls many", "head -1"),
        ("ls --json many", "head -c 1"),
        ("cat big/x/0", "head -c 1"),
        ("pins", "true"),
    ] {
        let (code, err) = piped(&d, args, reader);
        assert_eq!(code, 0, "shoal {args} | {reader}: exit {code}, stderr: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("backtrace"),
            "shoal {args} | {reader} printed: {err}"
        );
    }
    // The daemon is unharmed by the dropped connections.
    assert_eq!(d.json(&["ls", "many"])["keys"], 4002);
}

#[test]
fn every_command_that_prints_data_speaks_json() {
    require_fuse();
    let a = Daemon::start();
    let b = Daemon::start();
    let work = tempfile::tempdir().unwrap();
    let root = a.add(&datasets().join("xr_v3"), Some("xr"));
    let out = work.path().join("out");
    let mnt = work.path().join("mnt");
    let _guard = MountGuard(mnt.clone());
    let addr = a.addr();
    let (out_s, mnt_s) = (out.to_str().unwrap(), mnt.to_str().unwrap());
    // Each command with --json prints one JSON document on stdout.
    let commands: Vec<(Vec<&str>, &Daemon, &str)> = vec![
        (vec!["id"], &a, "peer_id"),
        (vec!["connect", &addr], &b, "peer_id"),
        (vec!["peers"], &b, ""),
        (vec!["providers", &root], &b, "providers"),
        (vec!["ls", "xr"], &a, "entries"),
        (vec!["get", "xr", "-o", out_s], &a, "keys"),
        (vec!["pin", &root, "--name", "copy"], &b, "root"),
        (vec!["pins"], &b, ""),
        (
            vec!["query", "xr", "sst", "--op", "mean", "--dim", "time"],
            &a,
            "values",
        ),
        (vec!["mount", mnt_s], &b, "dir"),
        (vec!["mounts"], &b, ""),
        (vec!["unmount", mnt_s], &b, "dir"),
        (vec!["unpin", "copy"], &b, "changed"),
        (vec!["gc"], &b, "removed_blocks"),
        (vec!["fsck"], &a, "blocks_checked"),
        (vec!["stats"], &a, "blocks"),
        (vec!["mirrors"], &a, "budget"),
        (vec!["init"], &a, "created"),
    ];
    for (args, d, field) in commands {
        let v = d.json(&args);
        if field.is_empty() {
            assert!(v.is_array(), "shoal {args:?} --json: {v}");
        } else {
            assert!(v.get(field).is_some(), "shoal {args:?} --json has no {field:?}: {v}");
        }
    }
    // `cat` writes raw bytes; asked for JSON it says where the JSON is.
    let out = a.cli(&["cat", "--json", "xr/zarr.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shoal ls --json"));
    assert!(out.stdout.is_empty());
}
