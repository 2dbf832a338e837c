//! The CLI's commands: each asks the daemon (or, for `init` and `daemon`,
//! the repo) and shows the answer through its [`Render`]. Grouped as the
//! node's handles are: `datasets` (add, ls, cat, get, log, diff), `pins`,
//! `query`, `names` (publish, follow), `mounts`, and `node` (init, id,
//! peers, providers, mirrors, gc, fsck, stats, export-repo, import-repo).

mod datasets;
mod mounts;
mod names;
mod node;
mod pins;
mod query;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use shoal_api::client::Client;
use shoal_repo::Repo;

use crate::output::{urlencode as q, Bar};
use crate::render::{show, Render};
use crate::{Cli, Cmd};

/// What every command works with.
struct Ctx {
    repo: Repo,
    client: Client,
    /// `--json`: print machine-readable JSON instead of text.
    json: bool,
}

impl Ctx {
    /// Shows a result (JSON or text): the command succeeded.
    fn show<T: Render>(&self, r: &T) -> Result<ExitCode> {
        show(self.json, r)?;
        Ok(ExitCode::SUCCESS)
    }

    /// A long operation: progress on stderr as it streams, then its result.
    async fn streamed<T: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        label: &'static str,
        path: &str,
        req: &B,
    ) -> Result<T> {
        let mut bar = Bar::new(self.json, label);
        let r = self.client.stream(path, req, &mut |p| bar.update(p)).await;
        bar.finish();
        r
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let repo = Repo::locate(cli.home)?;
    let client = Client {
        home: repo.home.clone(),
        socket: repo.socket_path(),
    };
    let c = Ctx {
        repo,
        client,
        json: cli.json,
    };
    match cli.cmd {
        Cmd::Daemon => {
            crate::server::run(c.repo).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Init { listen, gateway } => node::init(&c, &listen, gateway.as_deref()),
        Cmd::Id => node::id(&c).await,
        Cmd::Connect { addr } => node::connect(&c, addr).await,
        Cmd::Peers => node::peers(&c).await,
        Cmd::Providers { cid } => node::providers(&c, &cid).await,
        Cmd::Mirrors => node::mirrors(&c).await,
        Cmd::Gc => node::gc(&c).await,
        Cmd::Fsck { repair } => node::fsck(&c, repair).await,
        Cmd::Stats => node::stats(&c).await,
        Cmd::ExportRepo { dest } => node::export_repo(&c, dest).await,
        Cmd::ImportRepo { src } => node::import_repo(&c, src).await,
        Cmd::Add {
            path,
            name,
            rehash,
            keep,
        } => datasets::add(&c, &path, name, rehash, keep).await,
        Cmd::Log { name } => datasets::log(&c, name).await,
        Cmd::Diff { a, b } => datasets::diff(&c, &a, &b).await,
        Cmd::Ls { target } => datasets::ls(&c, &target).await,
        Cmd::Cat { target } => datasets::cat(&c, &target).await,
        Cmd::Get { target, out, car } => datasets::get(&c, target, out, car).await,
        Cmd::Pin {
            target,
            name,
            replicas,
            from,
        } => pins::pin(&c, target, name, replicas, from).await,
        Cmd::Unpin { target } => pins::unpin(&c, target).await,
        Cmd::Pins { limit, after } => pins::list(&c, limit, after).await,
        Cmd::Query { req, out } => query::run(&c, *req, out).await,
        Cmd::Publish { name } => names::publish(&c, name).await,
        Cmd::Unpublish { name } => names::unpublish(&c, name).await,
        Cmd::Follow { target, local, keep } => names::follow(&c, target, local, keep).await,
        Cmd::Follows => names::list(&c).await,
        Cmd::Search {
            text,
            bbox,
            time,
            limit,
        } => names::search(&c, text, bbox, time, limit).await,
        Cmd::Unfollow { name } => names::unfollow(&c, name).await,
        Cmd::Mount { dir } => mounts::mount(&c, &dir, false).await,
        Cmd::Unmount { dir } => mounts::mount(&c, &dir, true).await,
        Cmd::Mounts => mounts::list(&c).await,
    }
}

/// `p` made absolute against the working directory (the daemon has its
/// own).
fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}
