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
