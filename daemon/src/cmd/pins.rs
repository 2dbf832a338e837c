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

/// Pins asked of the daemon per request: a store of 100,000 datasets is
/// listed in pages of 20,000, each printed as it arrives.
const PAGE: usize = 20_000;

pub async fn list(c: &Ctx, limit: Option<usize>, after: Option<String>) -> Result<ExitCode> {
    let mut after = after;
    let mut left = limit.unwrap_or(usize::MAX);
    let mut all = Vec::new();
    let mut first = true;
    loop {
        let want = left.min(PAGE);
        let mut path = format!("/v1/pins?limit={want}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page: Vec<PinInfo> = c.client.get(&path).await?;
        let full = page.len() == want;
        left -= page.len();
        after = page.last().map(|p| p.root.clone()).or(after);
        if c.json {
            all.extend(page);
        } else if first || !page.is_empty() {
            render::pins_page(&page, first)?;
        }
        first = false;
        if !full || left == 0 {
            break;
        }
    }
    if c.json {
        return c.show(&all);
    }
    Ok(ExitCode::SUCCESS)
}
