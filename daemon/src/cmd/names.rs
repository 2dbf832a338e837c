//! Names: `publish`, `unpublish`, `follow`, `follows`, `unfollow`.

use std::process::ExitCode;

use anyhow::Result;
use shoal_api::*;

use super::Ctx;
use crate::render;

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
