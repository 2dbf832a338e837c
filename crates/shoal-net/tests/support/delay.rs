//! A TCP proxy that delays each direction by a fixed one-way time, and
//! optionally caps its rate: how tests and benchmarks emulate distance on
//! one machine (this kernel has no `sch_netem`). Put it between two peers
//! (dial the proxy's address) or between an HTTP server and its clients.
//!
//! The proxy acknowledges TCP locally and delivers each chunk it read
//! `one_way` later, so application round trips (a request and its
//! response, a window update) take the emulated time; at most 64 MiB per
//! direction waits inside it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Chunks read at once, and chunks waiting per direction.
const CHUNK: usize = 64 << 10;
const QUEUED: usize = 1024;

pub struct DelayProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `listen` (port 0: any) and forwards every connection to
/// `target`, each direction delayed by `one_way` and, with `rate`, paced to
/// that many bytes per second.
pub async fn start(
    listen: SocketAddr,
    target: SocketAddr,
    one_way: Duration,
    rate: Option<u64>,
) -> std::io::Result<DelayProxy> {
    let l = TcpListener::bind(listen).await?;
    let addr = l.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((inbound, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                tokio::join!(pipe(ir, ow, one_way, rate), pipe(or, iw, one_way, rate));
            });
        }
    });
    Ok(DelayProxy { addr, task })
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    rate: Option<u64>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(QUEUED);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut next_free = Instant::now();
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due.max(next_free)).await;
            if to.write_all(&data).await.is_err() {
                break;
            }
            if let Some(r) = rate {
                next_free = Instant::now() + Duration::from_secs_f64(data.len() as f64 / r as f64);
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
