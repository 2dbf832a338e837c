//! Mounts: `mount`, `unmount`, `mounts`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use shoal_api::*;

use super::{absolute, Ctx};
use crate::render;

/// `mount` and `unmount` send the same request: the absolute directory.
pub async fn mount(c: &Ctx, dir: &Path, unmount: bool) -> Result<ExitCode> {
    let path = if unmount { "/v1/unmount" } else { "/v1/mount" };
    let req = MountRequest {
        dir: absolute(dir)?.display().to_string(),
    };
    let result = c.client.post(path, &req).await?;
    c.show(&render::Mounted { unmount, result })
}

pub async fn list(c: &Ctx) -> Result<ExitCode> {
    c.show(&render::Mounts(c.client.get("/v1/mounts").await?))
}
