//! Datasets: `add`, `log`, `diff`, `ls`, `cat`, `get`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use shoal_api::*;

use super::{absolute, q, Ctx};
use crate::output::LsPrinter;
use crate::render;

pub async fn add(c: &Ctx, path: &Path, name: Option<String>, rehash: bool, keep: Option<u32>) -> Result<ExitCode> {
    let abs = std::fs::canonicalize(path).with_context(|| format!("cannot open {}", path.display()))?;
    let req = AddRequest {
        path: abs.display().to_string(),
        name,
        rehash,
        keep,
    };
    let r: AddResult = c.streamed("adding", "/v1/add", &req).await?;
    c.show(&r)
}

pub async fn log(c: &Ctx, name: String) -> Result<ExitCode> {
    let versions = c.client.get(&format!("/v1/log?name={}", q(&name))).await?;
    c.show(&render::Log { name, versions })
}

pub async fn diff(c: &Ctx, a: &str, b: &str) -> Result<ExitCode> {
    let r: DiffResult = c.client.get(&format!("/v1/diff?a={}&b={}", q(a), q(b))).await?;
    c.show(&r)
}

/// Streams the listing: a million keys never sit in memory here either.
pub async fn ls(c: &Ctx, target: &str) -> Result<ExitCode> {
    let mut ls = LsPrinter::new(c.json);
    c.client
        .lines(&format!("/v1/ls?target={}", q(target)), &mut |l| ls.line(l))
        .await?;
    ls.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// The key's raw bytes on stdout (no JSON form: exit 2 with `--json`).
pub async fn cat(c: &Ctx, target: &str) -> Result<ExitCode> {
    if c.json {
        eprintln!(
            "error: cat writes the key's raw bytes; for its size and blocks as JSON use `shoal ls --json {target}`"
        );
        return Ok(ExitCode::from(2));
    }
    let mut out = std::io::stdout();
    c.client
        .download(&format!("/v1/cat?target={}", q(target)), &mut out)
        .await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn get(c: &Ctx, target: String, out: Option<PathBuf>, car: Option<PathBuf>) -> Result<ExitCode> {
    let is_car = car.is_some();
    let out = absolute(&car.or(out).expect("clap requires --out or --car"))?;
    let req = GetRequest {
        target,
        out: out.display().to_string(),
        car: is_car,
    };
    let result = c.streamed("writing", "/v1/get", &req).await?;
    c.show(&render::Got { car: is_car, result })
}
