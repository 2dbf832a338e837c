//! The Python package (`pip install ./python`: the `shoal` package and the
//! binary in one wheel) against live daemons, with real xarray, zarr-python,
//! dask and fsspec: reads, pushdown, writes, errors, and the example
//! notebook executed. The venv is `.venv-pkg`, built by
//! `scripts/setup-python-pkg.sh` (which `scripts/test.sh` runs).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn pkg_python() -> PathBuf {
    venv_python("SHOAL_PKG_PYTHON", ".venv-pkg", "scripts/setup-python-pkg.sh")
}

/// Two connected daemons with gateways; A holds `clim`.
fn swarm() -> (Daemon, Daemon) {
    let a = Daemon::start();
    let b = Daemon::start();
    b.connect(&a);
    a.add(&datasets().join("clim_v2"), Some("clim"));
    (a, b)
}

fn run(script: &std::path::Path, a: &Daemon, b: &Daemon, secs: u64) -> String {
    let child = Command::new(pkg_python())
        .arg(script)
        .env("SHOAL_HOME", &a.home)
        .env("SHOAL_HOME_B", &b.home)
        .env("DATASETS", datasets())
        .env_remove("SHOAL_GATEWAY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_within(child, secs, &script.display().to_string());
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{} failed:\n{text}", script.display());
    text
}

#[test]
fn the_package_reads_writes_pushes_down_and_fails_clearly() {
    let (a, b) = swarm();
    let out = run(&workspace().join("tests/python/pkg_check.py"), &a, &b, 600);
    assert!(out.contains("pkg_check: all passed"), "{out}");
}

#[test]
fn the_example_notebook_executes() {
    let (a, b) = swarm();
    let out = run(&workspace().join("tests/python/run_notebook.py"), &a, &b, 600);
    assert!(out.contains("notebook: executed"), "{out}");
}

#[test]
fn the_wheel_carries_the_binary() {
    let bin = pkg_python().with_file_name("shoal");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(out.status.success(), "{}", bin.display());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// `[api] group`: a member of the group uses the daemon as themselves
/// (docker's convention); anyone else is refused by the socket's mode.
#[test]
fn a_member_of_the_api_group_uses_the_daemon_as_themselves() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = Daemon::start_opts(Opts {
        api: "group = \"54321\"".into(),
        ..Default::default()
    });
    let sock = d.home.join("api.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o777), (54321, 0o660));
    let home = std::fs::metadata(&d.home).unwrap();
    assert_eq!((home.gid(), home.mode() & 0o777), (54321, 0o710));
    // The test's temporary directory above the repo is the test's, not the
    // daemon's to open: let others through it.
    let above = d.home.parent().unwrap();
    std::fs::set_permissions(above, std::fs::Permissions::from_mode(0o711)).unwrap();
    let as_nobody = |groups: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534"])
            .args(groups)
            .arg(env!("CARGO_BIN_EXE_shoal"))
            .arg("--home")
            .arg(&d.home)
            .args(["id", "--json"])
            .output()
            .expect("setpriv (util-linux) runs the CLI as another user")
    };
    let member = as_nobody(&["--groups=54321"]);
    assert!(
        member.status.success(),
        "a group member reaches the daemon: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    let id: serde_json::Value = serde_json::from_slice(&member.stdout).unwrap();
    assert_eq!(id["peer_id"].as_str().unwrap(), d.peer_id());
    let stranger = as_nobody(&["--clear-groups"]);
    assert!(!stranger.status.success());
    let err = String::from_utf8_lossy(&stranger.stderr);
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
}
