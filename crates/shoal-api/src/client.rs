//! The CLI side of the local API: HTTP/1.1 over the repo's Unix socket.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{ApiError, Event, Progress};

/// The daemon is not running: exit code 3 so scripts can tell.
#[derive(Debug, thiserror::Error)]
#[error(
    "no shoal daemon is running for repo {home} (no answer on {socket}).\nStart one with:  shoal --home {home} daemon"
)]
pub struct NotRunning {
    pub home: String,
    pub socket: String,
}

/// An error reported by the daemon.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.error)]
pub struct Remote(pub ApiError);

pub struct Client {
    pub home: PathBuf,
    pub socket: PathBuf,
}

impl Client {
    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => anyhow!(
                    "cannot use the daemon's API socket {}: permission denied (a daemon run as a service lets the members of its `[api] group` in; ask its admin to add you)",
                    self.socket.display()
                ),
                _ => NotRunning {
                    home: self.home.display().to_string(),
                    socket: self.socket.display().to_string(),
                }
                .into(),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the daemon")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(format!("http://shoal{path}"))
            .header("host", "shoal")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        sender
            .send_request(req)
            .await
            .context("the daemon closed the connection")
    }

    async fn checked(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response<Incoming>> {
        let resp = self.send(method, path, body).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => Err(Remote(e).into()),
            Err(_) => Err(anyhow!("daemon answered {status}: {}", String::from_utf8_lossy(&bytes))),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.checked(Method::GET, path, None).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).context("unexpected reply from the daemon")
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .checked(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).context("unexpected reply from the daemon")
    }

    /// Streams a GET body to `out` chunk by chunk.
    pub async fn download(&self, path: &str, out: &mut (dyn std::io::Write + Send)) -> Result<()> {
        let mut body = self.checked(Method::GET, path, None).await?.into_body();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.context("connection to the daemon lost")?.into_data() {
                out.write_all(&data)?;
            }
        }
        out.flush()?;
        Ok(())
    }

    /// A GET whose reply is NDJSON: each line, parsed, goes to `on_line`
    /// as it arrives (nothing is held but the line being read).
    pub async fn lines<T: DeserializeOwned>(&self, path: &str, on_line: &mut dyn FnMut(T) -> Result<()>) -> Result<()> {
        let body = self.checked(Method::GET, path, None).await?.into_body();
        let lost = "lost the connection to the daemon mid-reply (did it stop?)";
        each_line(body, lost, &mut |line| {
            on_line(serde_json::from_slice(line).context("unexpected reply from the daemon")?)?;
            Ok(true)
        })
        .await?;
        Ok(())
    }

    /// A streamed call: progress events go to `on_progress`, the final
    /// `done` value is returned, an `error` event becomes an error.
    pub async fn stream<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<T> {
        let body = self
            .checked(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await?
            .into_body();
        let lost = "lost the connection to the daemon mid-operation (did it stop?)";
        let mut done = None;
        each_line(body, lost, &mut |line| {
            match serde_json::from_slice::<Event<T>>(line).context("unexpected reply from the daemon")? {
                Event::Progress(p) => on_progress(p),
                Event::Done(v) => done = Some(v),
                Event::Error(e) => return Err(Remote(e).into()),
            }
            Ok(done.is_none())
        })
        .await?;
        done.ok_or_else(|| anyhow!(lost))
    }
}

/// Feeds each line of an NDJSON `body` to `on_line` as it arrives, until
/// the body ends or `on_line` answers `false` (enough). A connection lost,
/// or a body that ends mid-line, is the error `lost`.
async fn each_line(mut body: Incoming, lost: &str, on_line: &mut dyn FnMut(&[u8]) -> Result<bool>) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| anyhow!("{lost}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            if !on_line(line)? {
                return Ok(());
            }
        }
        buf.drain(..start);
    }
    if !buf.is_empty() {
        return Err(anyhow!("{lost}"));
    }
    Ok(())
}
