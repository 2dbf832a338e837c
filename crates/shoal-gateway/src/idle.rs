//! Connections that stop moving are closed.
//!
//! A response holds one of the gateway's request slots until its body is
//! sent, and a client that never reads would hold it forever (256 such
//! clients held them all). Every accepted connection is wrapped in [`Idle`]:
//! when a read, write or flush has been pending for `timeout` with no byte
//! moving either way, the operation fails with `TimedOut`, hyper drops the
//! connection, and the response's slot comes back (nginx's `send_timeout`
//! and `keepalive_timeout` in one rule). A connection in progress (bytes
//! moving) is never cut, however long it runs. Connections at once are
//! bounded too: accepting waits for a slot.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A stream whose pending operations fail after `timeout` without progress.
pub struct Idle<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// An operation is waiting (the deadline runs from when it began).
    waiting: bool,
    _slot: Option<OwnedSemaphorePermit>,
}

impl<T> Idle<T> {
    pub fn new(inner: T, timeout: Duration, slot: Option<OwnedSemaphorePermit>) -> Self {
        Idle {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
            _slot: slot,
        }
    }

    /// Pending: the deadline starts when waiting begins (after bytes moved),
    /// and the operation fails once it has passed (polling it registers the
    /// waker, so a stalled connection is woken to fail).
    fn stalled<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if !self.waiting {
            self.waiting = true;
            let at = Instant::now() + self.timeout;
            self.deadline.as_mut().reset(at);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection moved no bytes within the gateway's idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn on<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.on(cx, r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.on(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections are [`Idle`] and at most `max` at once.
pub struct Listener {
    tcp: TcpListener,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

impl Listener {
    pub fn new(tcp: TcpListener, timeout: Duration, max: usize) -> Self {
        Listener {
            tcp,
            timeout,
            slots: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Idle<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let slot = self.slots.clone().acquire_owned().await.ok();
        loop {
            match self.tcp.accept().await {
                Ok((s, addr)) => {
                    let _ = s.set_nodelay(true);
                    return (Idle::new(s, self.timeout, slot), addr);
                }
                // Out of descriptors and the like: wait rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "the gateway could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_to_a_peer_that_never_reads_fails_after_the_timeout() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut a = Idle::new(a, Duration::from_millis(100), None);
        let big = vec![0u8; 64 << 10];
        let started = std::time::Instant::now();
        let e = a.write_all(&big).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn bytes_moving_keep_a_connection_alive_past_the_timeout() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut a = Idle::new(a, Duration::from_millis(200), None);
        let reader = tokio::spawn(async move {
            let mut got = 0usize;
            let mut buf = [0u8; 512];
            while got < 8 << 10 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                got += b.read(&mut buf).await.unwrap();
            }
            got
        });
        // 8 KiB through a 1 KiB pipe read slowly: longer than the timeout
        // in all, never idle for it.
        a.write_all(&vec![1u8; 8 << 10]).await.unwrap();
        assert!(reader.await.unwrap() >= 8 << 10);
    }
}
