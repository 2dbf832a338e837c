//! Speculative reads: the blocks of a key read before anybody asked for it
//! (the gateway's read-ahead) are read and verified on a few threads of
//! their own, at a lower CPU priority (nice +[`NICE`] over the daemon's).
//!
//! The reader this work is for usually runs on the same machine, and on
//! two cores it is the reader's own CPU (decoding, reducing) that sets the
//! pace: a daemon verifying the next chunks at the same priority as the
//! reader's threads takes cores from them, one that gives way does not.
//! The read-ahead still runs in the reader's gaps (it waits for its key to
//! be decoded), and work somebody waits for (a request's own blocks, the
//! mount, a query) keeps the normal priority.
//!
//! Bounds: [`Pool::THREADS`] threads; at most [`QUEUE`] jobs queued, past
//! which a job runs on tokio's blocking pool at the normal priority (no
//! read is refused or lost).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

use crate::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// Niceness the pool's threads add to the daemon's.
pub const NICE: i32 = 10;
/// Jobs queued at most.
pub const QUEUE: usize = 256;

/// A few low-priority threads and their bounded queue.
pub struct Pool {
    tx: SyncSender<Job>,
}

impl Pool {
    /// Threads: the machine's cores, at most this many.
    pub const THREADS: usize = 4;

    /// A pool of `threads` threads (at least one) and `queue` queued jobs.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Pool> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("shoal-ahead-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Pool { tx })
    }

    /// Queues `job` for the pool's threads; gives it back when the queue
    /// is full (or the threads are gone), for the caller to run elsewhere.
    fn try_spawn(&self, job: Job) -> std::result::Result<(), Job> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }

    /// Runs `f` on the pool (or, when its queue is full, on tokio's
    /// blocking pool) and returns what it returned.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        if let Err(job) = self.try_spawn(job) {
            super::blocking(move || {
                job();
                Ok(())
            })
            .await?;
        }
        rx.await
            .map_err(|_| Error::Config("a speculative read's thread ended".into()))
    }
}

/// The process-wide pool, started on first use; `None` if its threads
/// could not be started (the reads then take tokio's blocking pool).
pub fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pool::new(cores.min(Pool::THREADS), QUEUE)
            .inspect_err(
                |e| tracing::warn!(error = %e, "no read-ahead threads; read-ahead runs at the normal priority"),
            )
            .ok()
    })
    .as_ref()
}

/// Runs `job` on the process-wide pool without waiting for it; when its
/// queue is full or its threads could not start, on tokio's blocking pool
/// (outside a runtime, on the calling thread). Nothing is refused.
pub fn spawn(job: impl FnOnce() + Send + 'static) {
    let job: Job = Box::new(job);
    let job = match pool() {
        Some(pool) => match pool.try_spawn(job) {
            Ok(()) => return,
            Err(job) => job,
        },
        None => job,
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(job)),
        Err(_) => job(),
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        let job = match rx.lock().expect("pool queue lock").recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job();
    }
}

/// Lowers this thread's priority by [`NICE`] (Linux: niceness is per
/// thread). Where that is not allowed, the thread runs as it is.
fn lower_priority() {
    let me = rustix::thread::gettid();
    let now = rustix::process::getpriority_process(Some(me)).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(Some(me), (now + NICE).min(19)) {
        tracing::debug!(error = %e, "read-ahead threads keep the daemon's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_run_at_lower_priority_and_return_their_result() {
        let pool = Pool::new(2, 4).unwrap();
        let mine = rustix::process::getpriority_process(None).unwrap();
        let theirs = pool
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap())
            .await
            .unwrap();
        assert_eq!(theirs, (mine + NICE).min(19));
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn a_full_queue_runs_the_job_elsewhere_rather_than_refusing_it() {
        let pool = Arc::new(Pool::new(1, 1).unwrap());
        // Occupy the one thread and the one queue place.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let busy = {
            let (pool, held) = (pool.clone(), held.clone());
            tokio::spawn(async move {
                pool.run(move || {
                    let _ = held.lock().unwrap().recv_timeout(Duration::from_secs(10));
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| "queued").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The pool is busy and its queue full: this one runs at once on
        // tokio's blocking pool.
        let overflow = tokio::time::timeout(Duration::from_secs(5), pool.run(|| "overflow"))
            .await
            .expect("a full queue must not block the caller");
        assert_eq!(overflow.unwrap(), "overflow");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap(), "queued");
    }
}
