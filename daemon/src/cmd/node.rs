//! The node itself: `init`, `id`, `connect`, `peers`, `providers`,
//! `mirrors`, `gc`, `fsck`, `stats`.

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
