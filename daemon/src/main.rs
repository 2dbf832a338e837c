//! `shoal`: the daemon and the CLI that talks to it.
//!
//! Exit codes: 0 success, 1 failure (message on stderr), 2 usage error,
//! 3 no daemon running for the repo.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc returns a freed page to the OS only when the thread that owns
/// it next allocates (after `purge_delay`, 10 ms): memory a big add freed
/// stayed resident while its blocking thread idled, so a daemon's RSS
/// followed the largest thing it ever did. With `abandoned_page_purge` a
/// thread that exits (tokio's idle blocking threads do after 10 s) gives
/// its freed pages back. A zero delay would give them back at once, but
/// costs warm mount reads ~30% (pages faulted in again for every block).
#[allow(unsafe_code)]
fn tune_allocator() {
    // mimalloc 2.x option number (mimalloc.h, `mi_option_e`).
    const ABANDONED_PAGE_PURGE: libmimalloc_sys::mi_option_t = 12;
    // SAFETY: mi_option_set stores an integer in mimalloc's option table;
    // it is thread-safe and valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(ABANDONED_PAGE_PURGE, 1) };
}

mod api;
mod client;
mod config;
mod output;
mod render;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::api::*;
use crate::client::Client;
use crate::config::Repo;
use crate::output::{out, print_json, Bar};
use crate::render::show;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Peer-to-peer, content-addressed store for Zarr datasets"
)]
struct Cli {
    /// Repo directory (default ~/.shoal).
    #[arg(long, env = "SHOAL_HOME", global = true)]
    home: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (creates the repo on first run).
    Daemon,
    /// Create a repo explicitly.
    Init {
        /// Multiaddr to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4801.
        #[arg(long)]
        listen: Vec<String>,
        /// HTTP gateway address HOST:PORT (port 0: any free port; "" = off).
        /// Default 127.0.0.1:8080.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Show this daemon's peer id, listen addresses and API socket.
    Id,
    /// Connect to a peer: /ip4/HOST/tcp/PORT/p2p/PEERID.
    Connect { addr: String },
    /// List connected peers.
    Peers,
    /// Peers that provide a dataset (by CID) and are reachable now.
    Providers { cid: String },
    /// What this daemon mirrors and why: popularity, replica targets, budget.
    Mirrors,
    /// Ingest a Zarr v2/v3 directory (or a CAR file holding one, as
    /// `ipfs-car pack` writes it); prints the root CID as the last line.
    Add {
        path: PathBuf,
        /// Name the dataset (like a git ref); names keep data from GC.
        /// Re-adding under a name reads only the files whose size, mtime or
        /// inode changed since its last add.
        #[arg(long)]
        name: Option<String>,
        /// Read and hash every file, even unchanged ones (a file rewritten
        /// with the same size and mtime is otherwise taken as unchanged).
        #[arg(long)]
        rehash: bool,
        /// Versions of the name to keep (older ones are unpinned, so GC
        /// can reclaim what no kept version uses). Default 10.
        #[arg(long)]
        keep: Option<u32>,
    },
    /// A name's versions, newest first (NAME@N addresses version N).
    Log { name: String },
    /// Keys added, changed and removed from dataset A to dataset B (CIDs,
    /// names or NAME@N).
    Diff { a: String, b: String },
    /// List the keys of a dataset (TARGET = CID, NAME, or CID/path).
    Ls { target: String },
    /// Write the raw bytes of one key to stdout (TARGET/KEY).
    Cat { target: String },
    /// Write a dataset out as a Zarr directory.
    Get {
        target: String,
        /// The directory to write the dataset's files into.
        #[arg(short, long, required_unless_present = "car", conflicts_with = "car")]
        out: Option<PathBuf>,
        /// Write the dataset's UnixFS view as one CAR v1 file instead (what
        /// `ipfs dag import` and IPFS tools read).
        #[arg(long, value_name = "FILE.car")]
        car: Option<PathBuf>,
    },
    /// Pin a dataset so it is never evicted or collected.
    Pin {
        target: String,
        #[arg(long)]
        name: Option<String>,
        /// Ask the swarm to keep N reachable copies (this one included):
        /// daemons with mirror budget volunteer until N exist, and again
        /// when providers disappear.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=16))]
        replicas: Option<u8>,
    },
    /// Remove a user pin (and the name, when TARGET is a name).
    Unpin { target: String },
    /// List pinned and named datasets.
    Pins,
    /// Reduce one array over dimensions: sum, mean, min, max, count, var, std.
    Query {
        #[command(flatten)]
        req: Box<QueryRequest>,
        /// Write the result: PATH.zarr as a Zarr dataset xarray opens (the
        /// result, its coordinates, attributes, cell_methods, provenance),
        /// any other PATH as a .npy file (float64).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Mount every dataset read-only under DIR (DIR/<name or CID>/...).
    Mount { dir: PathBuf },
    /// Unmount a mount made by `shoal mount`.
    Unmount { dir: PathBuf },
    /// List this daemon's mounts.
    Mounts,
    /// Publish NAME: sign a record of its current version with this
    /// daemon's key, put it on the DHT and announce it to followers; every
    /// later version of NAME is published too.
    Publish { name: String },
    /// Stop publishing NAME (peers keep its last record until it expires).
    Unpublish { name: String },
    /// Follow PEERID/NAME: take its newest version now (fetching only the
    /// blocks not held here) and every later one as it is published.
    Follow {
        /// PEERID/NAME, as `shoal publish` prints it.
        target: String,
        /// The local name pointed at the followed versions (default NAME).
        #[arg(long = "as", value_name = "LOCAL")]
        local: Option<String>,
        /// Versions kept under the local name (older ones are unpinned).
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
    },
    /// List followed names: publisher, version held, last update, errors.
    Follows,
    /// Stop following into local name NAME (the versions held stay).
    Unfollow { name: String },
    /// Remove blocks no pin or name needs; compact pack segments.
    Gc,
    /// Verify every stored block and dataset.
    Fsck {
        /// Drop corrupt blocks and report which datasets become incomplete.
        #[arg(long)]
        repair: bool,
    },
    /// Store statistics.
    Stats,
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if matches!(cli.cmd, Cmd::Daemon) { "info" } else { "warn" })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing to say.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<client::NotRunning>().is_some() {
                3
            } else {
                1
            };
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let repo = Repo::locate(cli.home)?;
    let json = cli.json;
    let client = Client {
        home: repo.home.clone(),
        socket: repo.socket_path(),
    };
    let q = output::urlencode;
    match cli.cmd {
        Cmd::Daemon => server::run(repo).await?,
        Cmd::Init { listen, gateway } => init(&repo, json, &listen, gateway.as_deref())?,
        Cmd::Id => show(json, &client.get::<IdInfo>("/v1/id").await?)?,
        Cmd::Connect { addr } => {
            let r: ConnectResult = client.post("/v1/connect", &ConnectRequest { addr }).await?;
            show(json, &r)?
        }
        Cmd::Peers => show(json, &client.get::<Vec<shoal_net::PeerInfo>>("/v1/peers").await?)?,
        Cmd::Providers { cid } => {
            let r: ProvidersResult = client.get(&format!("/v1/providers?cid={}", q(&cid))).await?;
            show(json, &r)?
        }
        Cmd::Log { name } => {
            let versions = client.get(&format!("/v1/log?name={}", q(&name))).await?;
            show(json, &render::Log { name, versions })?
        }
        Cmd::Diff { a, b } => {
            let r: DiffResult = client.get(&format!("/v1/diff?a={}&b={}", q(&a), q(&b))).await?;
            show(json, &r)?
        }
        Cmd::Add {
            path,
            name,
            rehash,
            keep,
        } => {
            let abs = std::fs::canonicalize(&path).with_context(|| format!("cannot open {}", path.display()))?;
            let req = AddRequest {
                path: abs.display().to_string(),
                name,
                rehash,
                keep,
            };
            let r: AddResult = streamed(&client, json, "adding", "/v1/add", &req).await?;
            show(json, &r)?
        }
        Cmd::Ls { target } => {
            let mut ls = output::LsPrinter::new(json);
            client
                .lines(&format!("/v1/ls?target={}", q(&target)), &mut |l| ls.line(l))
                .await?;
            ls.finish()?;
        }
        Cmd::Cat { target } => {
            if json {
                eprintln!(
                    "error: cat writes the key's raw bytes; for its size and blocks as JSON use `shoal ls --json {target}`"
                );
                return Ok(ExitCode::from(2));
            }
            let mut out = std::io::stdout();
            client
                .download(&format!("/v1/cat?target={}", q(&target)), &mut out)
                .await?;
        }
        Cmd::Get { target, out, car } => {
            let is_car = car.is_some();
            let out = absolute(&car.or(out).expect("clap requires --out or --car"))?;
            let req = GetRequest {
                target,
                out: out.display().to_string(),
                car: is_car,
            };
            let result = streamed(&client, json, "writing", "/v1/get", &req).await?;
            show(json, &render::Got { car: is_car, result })?
        }
        Cmd::Pin { target, name, replicas } => {
            let req = PinRequest { target, name, replicas };
            let result = streamed(&client, json, "fetching", "/v1/pin", &req).await?;
            show(json, &render::Pinned { unpin: false, result })?
        }
        Cmd::Unpin { target } => {
            let req = PinRequest {
                target,
                name: None,
                replicas: None,
            };
            let result = client.post("/v1/unpin", &req).await?;
            show(json, &render::Pinned { unpin: true, result })?
        }
        Cmd::Pins => show(json, &client.get::<Vec<PinInfo>>("/v1/pins").await?)?,
        Cmd::Query { req, out } => return query(&client, json, *req, out).await,
        Cmd::Publish { name } => {
            let r: PublishResult = client.post("/v1/publish", &NameRequest { name }).await?;
            show(json, &r)?
        }
        Cmd::Unpublish { name } => {
            let r: UnpublishResult = client.post("/v1/unpublish", &NameRequest { name }).await?;
            show(json, &r)?
        }
        Cmd::Follow { target, local, keep } => {
            let follow = client
                .post("/v1/follow", &FollowRequest { target, local, keep })
                .await?;
            show(json, &render::Followed { stopped: false, follow })?
        }
        Cmd::Follows => show(json, &client.get::<Vec<FollowInfo>>("/v1/follows").await?)?,
        Cmd::Unfollow { name } => {
            let follow = client.post("/v1/unfollow", &NameRequest { name }).await?;
            show(json, &render::Followed { stopped: true, follow })?
        }
        Cmd::Mount { dir } => {
            let result = mount_call(&client, "/v1/mount", &dir).await?;
            show(json, &render::Mounted { unmount: false, result })?
        }
        Cmd::Unmount { dir } => {
            let result = mount_call(&client, "/v1/unmount", &dir).await?;
            show(json, &render::Mounted { unmount: true, result })?
        }
        Cmd::Mounts => show(json, &render::Mounts(client.get("/v1/mounts").await?))?,
        Cmd::Gc => show(json, &client.post::<_, shoal_store::GcStats>("/v1/gc", &()).await?)?,
        Cmd::Fsck { repair } => {
            let r: shoal_store::FsckReport = client.post("/v1/fsck", &FsckRequest { repair }).await?;
            show(json, &r)?;
            if !r.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Mirrors => show(json, &client.get::<MirrorsResult>("/v1/mirrors").await?)?,
        Cmd::Stats => show(json, &client.get::<StatsResult>("/v1/stats").await?)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `shoal init`: creates the repo (the daemon would on first run).
fn init(repo: &Repo, json: bool, listen: &[String], gateway: Option<&str>) -> Result<()> {
    if let Some(g) = gateway.filter(|g| !g.is_empty()) {
        g.parse::<std::net::SocketAddr>().map_err(|_| {
            anyhow::anyhow!(
                "--gateway {g:?}: expected HOST:PORT, e.g. 127.0.0.1:8080 (port 0: any free port), or \"\" for none"
            )
        })?;
    }
    let created = repo.init(listen, gateway)?;
    if json {
        print_json(&serde_json::json!({"repo": repo.home, "created": created}))?;
    } else if created {
        out!(
            "created repo at {}\nstart the daemon with: shoal --home {} daemon",
            repo.home.display(),
            repo.home.display()
        );
    } else {
        out!("repo already exists at {}", repo.home.display());
    }
    Ok(())
}

/// A long operation: progress on stderr as it streams, then its result.
async fn streamed<T: serde::de::DeserializeOwned, B: serde::Serialize>(
    client: &Client,
    json: bool,
    label: &'static str,
    path: &str,
    req: &B,
) -> Result<T> {
    let mut bar = Bar::new(json, label);
    let r = client.stream(path, req, &mut |p| bar.update(p)).await;
    bar.finish();
    r
}

/// `shoal query`: the results printed, and written to `--out` (NPY, or a
/// Zarr dataset for `.zarr` with coordinates and CF attributes).
async fn query(client: &Client, json: bool, mut req: QueryRequest, out: Option<PathBuf>) -> Result<ExitCode> {
    let zarr = out.as_ref().is_some_and(|p| p.extension().is_some_and(|e| e == "zarr"));
    if zarr && req.name.is_some() {
        eprintln!("error: --name keeps the result as a dataset; write it out with `shoal get NAME -o PATH.zarr`");
        return Ok(ExitCode::from(2));
    }
    let several = req.all || req.array.as_deref().is_some_and(|a| a.contains(','));
    if several && out.is_some() && !zarr {
        eprintln!("error: several arrays make one dataset: write it with --out PATH.zarr");
        return Ok(ExitCode::from(2));
    }
    req.coords = zarr;
    let rs: Vec<QueryResult> = client.post("/v1/query", &req).await?;
    if let Some(path) = &out {
        if zarr {
            write_result_dataset(&req, &rs, path)?;
        } else if let Some(r) = rs.first() {
            let values: Vec<f64> = r.values.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
            std::fs::write(path, shoal_query::npy::encode_f64(&r.shape, &values))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if json {
        match &rs[..] {
            [one] if !several => print_json(one)?,
            all => print_json(&all)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut how = String::new();
    if let Some(g) = req.groupby.as_ref().or(req.resample.as_ref()) {
        how += &format!(", {}", g.text());
    }
    if let Some(w) = &req.weights {
        how += &format!(", weighted by {w}");
    }
    for (i, r) in rs.iter().enumerate() {
        // "wrote PATH" once, after the last.
        let wrote = out.as_deref().filter(|_| i + 1 == rs.len());
        output::print_query(r, wrote, !req.sel.is_empty() || !req.isel.is_empty(), &how)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `mount` and `unmount` send the same request: the absolute directory.
async fn mount_call(client: &Client, path: &str, dir: &std::path::Path) -> Result<MountResult> {
    client
        .post(
            path,
            &MountRequest {
                dir: absolute(dir)?.display().to_string(),
            },
        )
        .await
}

fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Writes query results as one Zarr dataset (see `shoal_query::dataset`).
fn write_result_dataset(req: &QueryRequest, rs: &[QueryResult], path: &std::path::Path) -> Result<()> {
    let mut query = serde_json::to_value(req)?;
    if let Some(q) = query.as_object_mut() {
        q.remove("coords");
        if let Some(r) = rs.first() {
            q.insert("selection".into(), serde_json::json!(r.selection));
        }
        let arrays: Vec<&str> = rs.iter().map(|r| r.array.as_str()).collect();
        q.insert("array".into(), serde_json::json!(arrays.join(",")));
    }
    let values: Vec<Vec<f64>> = rs
        .iter()
        .map(|r| r.values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        .collect();
    shoal_query::dataset::ResultDataset {
        vars: rs
            .iter()
            .zip(&values)
            .map(|(r, values)| shoal_query::dataset::ResultVar {
                array: &r.array,
                op: r.op,
                dims: &r.dims,
                reduced: &r.reduced,
                shape: &r.shape,
                values,
                attrs: &r.attrs,
                coords: &r.coords,
            })
            .collect(),
        source: rs.first().map_or("", |r| r.root.as_str()),
        query,
    }
    .write(path)
    .with_context(|| format!("writing {}", path.display()))
}
