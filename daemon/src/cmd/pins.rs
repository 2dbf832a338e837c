//! Pins: `pin`, `unpin`, `pins`.

use std::process::ExitCode;

use anyhow::Result;
use shoal_api::*;

use super::Ctx;
use crate::render;

pub async fn pin(
    c: &Ctx,
    target: String,
    name: Option<String>,
    replicas: Option<u8>,
    from: Vec<String>,
) -> Result<ExitCode> {
    let req = PinRequest {
        target,
        name,
        replicas,
        from,
    };
    let result = c.streamed("fetching", "/v1/pin", &req).await?;
    c.show(&render::Pinned { unpin: false, result })
}

pub async fn unpin(c: &Ctx, target: String) -> Result<ExitCode> {
    let req = PinRequest {
        target,
        name: None,
        replicas: None,
        from: Vec::new(),
    };
    let result = c.client.post("/v1/unpin", &req).await?;
    c.show(&render::Pinned { unpin: true, result })
}

pub async fn list(c: &Ctx) -> Result<ExitCode> {
    c.show(&c.client.get::<Vec<PinInfo>>("/v1/pins").await?)
}
