//! End-to-end harness: real `shoal` daemons in temp repos, driven through
//! the real CLI, with the pinned Python venv for zarr-python checks.
//!
//! Every daemon is killed on drop, so a failing test leaves no process
//! behind. Every wait is bounded.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal");

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The venv Python with zarr/xarray pinned by `scripts/setup-venv.sh`.
/// Missing Python is a failure, not a skip: these are the tests that matter.
pub fn python() -> PathBuf {
    let p = std::env::var_os("SHOAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "Python venv not found at {} (set SHOAL_PYTHON or run scripts/setup-venv.sh; .ci/run does this)",
        p.display()
    );
    p
}

/// Runs a script from tests/python with the venv; panics with its output on failure.
pub fn py(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg(workspace().join("tests/python").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Daemon {
    pub home: PathBuf,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// A fresh repo with optional extra config, daemon started.
    pub fn start_with(config: Option<&str>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("repo");
        let mut d = Daemon {
            home,
            child: None,
            _dir: Some(dir),
        };
        d.cli_ok(&["init"]);
        if let Some(c) = config {
            std::fs::write(d.home.join("config.toml"), c).unwrap();
        }
        d.restart();
        d
    }

    pub fn start() -> Daemon {
        Self::start_with(None)
    }

    /// Starts (or restarts) the daemon process and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("daemon.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("--home")
            .arg(&self.home)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.cli(&["id"]);
            if out.status.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: the crash case.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("daemon did not stop within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "shoal {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.cli_ok(&a)).unwrap()
    }

    /// `--json` output even when the command exits non-zero (fsck).
    pub fn json_allow_fail(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_slice(&self.cli(&a).stdout).unwrap()
    }

    /// `shoal add`, returning the root CID (last line of output).
    pub fn add(&self, path: &Path, name: Option<&str>) -> String {
        let mut args = vec!["add", path.to_str().unwrap()];
        if let Some(n) = name {
            args.extend(["--name", n]);
        }
        let out = self.cli_ok(&args);
        out.lines().last().unwrap().trim().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Asserts two directory trees are byte-identical (like `diff -r`).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let status = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// The test datasets written by zarr-python, generated once per test binary.
pub fn datasets() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        py("make_datasets.py", &[d.path()]);
        d
    })
    .path()
}

/// Copies a directory tree (for tests that modify a dataset).
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}
