//! The node itself: `init`, `id`, `connect`, `peers`, `providers`,
//! `mirrors`, `gc`, `fsck`, `stats`, `export-repo`, `import-repo`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use shoal_api::*;

use super::{q, Ctx};
use crate::output::{out, print_json};

/// `shoal init`: creates the repo (the daemon would on first run).
pub fn init(c: &Ctx, listen: &[String], gateway: Option<&str>) -> Result<ExitCode> {
    if let Some(g) = gateway.filter(|g| !g.is_empty()) {
        g.parse::<std::net::SocketAddr>().map_err(|_| {
            anyhow::anyhow!(
                "--gateway {g:?}: expected HOST:PORT, e.g. 127.0.0.1:8080 (port 0: any free port), or \"\" for none"
            )
        })?;
    }
    let (repo, json) = (&c.repo, c.json);
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
    Ok(ExitCode::SUCCESS)
}

pub async fn id(c: &Ctx) -> Result<ExitCode> {
    c.show(&c.client.get::<IdInfo>("/v1/id").await?)
}

pub async fn connect(c: &Ctx, addr: String) -> Result<ExitCode> {
    let r: ConnectResult = c.client.post("/v1/connect", &ConnectRequest { addr }).await?;
    c.show(&r)
}

pub async fn peers(c: &Ctx) -> Result<ExitCode> {
    c.show(&c.client.get::<Vec<PeerEntry>>("/v1/peers").await?)
}

pub async fn providers(c: &Ctx, cid: &str) -> Result<ExitCode> {
    let r: ProvidersResult = c.client.get(&format!("/v1/providers?cid={}", q(cid))).await?;
    c.show(&r)
}

pub async fn mirrors(c: &Ctx) -> Result<ExitCode> {
    c.show(&c.client.get::<MirrorsResult>("/v1/mirrors").await?)
}

pub async fn gc(c: &Ctx) -> Result<ExitCode> {
    c.show(&c.client.post::<_, GcResult>("/v1/gc", &()).await?)
}

/// Fails (exit 1) when the store is not clean.
pub async fn fsck(c: &Ctx, repair: bool) -> Result<ExitCode> {
    let r: FsckResult = c.client.post("/v1/fsck", &FsckRequest { repair }).await?;
    c.show(&r)?;
    Ok(if r.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn stats(c: &Ctx) -> Result<ExitCode> {
    c.show(&c.client.get::<StatsResult>("/v1/stats").await?)
}

/// `shoal export-repo DEST`: through the running daemon (a consistent copy
/// while it works), else from the repo directly.
pub async fn export_repo(c: &Ctx, dest: PathBuf) -> Result<ExitCode> {
    let dest = std::path::absolute(&dest)?;
    let req = ExportRepoRequest {
        dest: dest.display().to_string(),
    };
    let r = match c.client.post::<_, ExportRepoResult>("/v1/export-repo", &req).await {
        Ok(r) => r,
        Err(e) if e.downcast_ref::<shoal_api::client::NotRunning>().is_some() => {
            let repo = c.repo.clone();
            tokio::task::spawn_blocking(move || export_offline(&repo, &dest)).await??
        }
        Err(e) => return Err(e),
    };
    c.show(&r)
}

/// The export with no daemon running: the store opened here.
fn export_offline(repo: &shoal_repo::Repo, dest: &Path) -> Result<ExportRepoResult> {
    let report = repo.export(dest, |to| {
        let store = shoal_store::Store::open(repo.store_path(), Default::default())?;
        Ok(store.backup(to, shoal_node::KEPT_BESIDE_THE_STORE)?)
    })?;
    Ok(ExportRepoResult::new(dest.display().to_string(), &report))
}

/// `shoal import-repo SRC`: this repo becomes a copy of an exported one.
pub async fn import_repo(c: &Ctx, src: PathBuf) -> Result<ExitCode> {
    if c.client.get::<IdInfo>("/v1/id").await.is_ok() {
        anyhow::bail!(
            "a daemon is running on {}; stop it first (import-repo replaces its store)",
            c.repo.home.display()
        );
    }
    let repo = c.repo.clone();
    let (bytes, stats) = tokio::task::spawn_blocking(move || -> Result<_> {
        let bytes = repo.import(&src)?;
        // Opening it checks the copy (and recovers what it can).
        let store = shoal_store::Store::open(repo.store_path(), Default::default())?;
        Ok((bytes, store.stats()?))
    })
    .await??;
    if c.json {
        print_json(
            &serde_json::json!({"repo": c.repo.home, "bytes": bytes, "blocks": stats.blocks, "pins": stats.pins, "names": stats.names}),
        )?;
    } else {
        out!(
            "imported {} blocks, {} pins, {} names ({} bytes copied) into {}\nstart the daemon with: shoal --home {} daemon",
            stats.blocks,
            stats.pins,
            stats.names,
            bytes,
            c.repo.home.display(),
            c.repo.home.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
