//! The one bounded wait of the async test suites (shoal-node's, and
//! shoal-net's, which include this file): poll until a value comes, fail
//! the test naming what never came.

use std::time::Duration;

/// Polls `f` every 250 ms until it gives a value; fails the test after
/// `secs` seconds, naming `what`. The one bounded wait of the async tests.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
