//! Names: `publish`, `unpublish`, `follow`, `follows`, `unfollow`.

use std::process::ExitCode;

use anyhow::Result;
use shoal_api::*;

use super::Ctx;
use crate::render;

/// `shoal search`: the catalogue, by words, bbox and time range.
pub async fn search(
    c: &Ctx,
    text: Vec<String>,
    bbox: Option<String>,
    time: Option<String>,
    limit: usize,
) -> Result<ExitCode> {
    let bbox = match bbox {
        None => None,
        Some(b) => {
            let v: Vec<f64> = b
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("--bbox {b:?}: expected WEST,SOUTH,EAST,NORTH in degrees"))?;
            let [w, s, e, n] = v[..] else {
                anyhow::bail!("--bbox {b:?}: expected four numbers, WEST,SOUTH,EAST,NORTH");
            };
            Some([w, s, e, n])
        }
    };
    let open = |s: &str| (!s.is_empty() && s != "..").then(|| s.to_string());
    let (start, end) = match time.as_deref() {
        None => (None, None),
        Some(t) => match t.split_once('/') {
            Some((a, b)) => (open(a), open(b)),
            None => (open(t), open(t)),
        },
    };
    let text = (!text.is_empty()).then(|| text.join(" "));
    let req = SearchRequest {
        text,
        bbox,
        start,
        end,
        limit,
    };
    let r: SearchResult = c.client.post("/v1/search", &req).await?;
    c.show(&render::Search(r))
}

pub async fn publish(c: &Ctx, name: String) -> Result<ExitCode> {
    let r: PublishResult = c.client.post("/v1/publish", &NameRequest { name }).await?;
    c.show(&r)
}

pub async fn unpublish(c: &Ctx, name: String) -> Result<ExitCode> {
    let r: UnpublishResult = c.client.post("/v1/unpublish", &NameRequest { name }).await?;
    c.show(&r)
}

pub async fn follow(c: &Ctx, target: String, local: Option<String>, keep: Option<u32>) -> Result<ExitCode> {
    let follow = c
        .client
        .post("/v1/follow", &FollowRequest { target, local, keep })
        .await?;
    c.show(&render::Followed { stopped: false, follow })
}

pub async fn list(c: &Ctx) -> Result<ExitCode> {
    c.show(&c.client.get::<Vec<FollowInfo>>("/v1/follows").await?)
}

pub async fn unfollow(c: &Ctx, name: String) -> Result<ExitCode> {
    let follow = c.client.post("/v1/unfollow", &NameRequest { name }).await?;
    c.show(&render::Followed { stopped: true, follow })
}
