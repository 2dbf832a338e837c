//! `shoal`: the daemon and the CLI that talks to it.
//!
//! Exit codes: 0 success, 1 failure (message on stderr), 2 usage error,
//! 3 no daemon running for the repo.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd;
mod output;
mod render;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use shoal_api::QueryRequest;

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
        /// Peers to fetch from (repeatable): a multiaddr ending in
        /// /p2p/PEER_ID. For the CID of a UnixFS directory (what `ipfs add`
        /// and helia make), the IPFS nodes to fetch it from over bitswap.
        #[arg(long, value_name = "MULTIADDR")]
        from: Vec<String>,
    },
    /// Remove a user pin (and the name, when TARGET is a name).
    Unpin { target: String },
    /// List pinned and named datasets (by name, then root), in pages.
    Pins {
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Those after this root (the last of a previous listing).
        #[arg(long)]
        after: Option<String>,
    },
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
    /// Search the swarm's catalogue (every published version's title,
    /// description, institution and variables; all words must match).
    Search {
        /// Words to find (none: every dataset).
        text: Vec<String>,
        /// Only datasets whose bbox meets WEST,SOUTH,EAST,NORTH (degrees).
        #[arg(long, value_name = "W,S,E,N", allow_hyphen_values = true)]
        bbox: Option<String>,
        /// Only datasets whose time extent meets START/END (RFC 3339
        /// dates; either side may be `..`), or one date.
        #[arg(long, value_name = "START/END")]
        time: Option<String>,
        /// Most datasets listed.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
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
    /// Store statistics, the scrub and repairs.
    Stats,
    /// Write a copy of this repo (config, identity, store, names and
    /// versions) into DEST, consistent while the daemon runs; a daemon
    /// starts on DEST as it is (`shoal --home DEST daemon`).
    ExportRepo {
        /// A new (or empty) directory.
        dest: PathBuf,
    },
    /// Make this repo (which must hold no store yet) a copy of an exported
    /// one. Run it with no daemon on this repo.
    ImportRepo {
        /// A directory written by `shoal export-repo`.
        src: PathBuf,
    },
}

fn main() -> ExitCode {
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
    match rt.block_on(cmd::run(cli)) {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing to say.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<shoal_api::client::NotRunning>().is_some() {
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
