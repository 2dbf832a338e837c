//! Request handlers that panic never keep their slot: two swarms on
//! loopback, the serving one with handlers that panic for their first
//! requests.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal_net::codec::Answer;
use shoal_net::{Client, ComputeFn, ServeFn};
use support::{busy, listening, serves_nothing, swarm_with};

fn swarm(serve: ServeFn, compute: ComputeFn) -> Client {
    swarm_with(serve, compute, |s| s.request_timeout = Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_gives_its_slot_back() {
    // Panics more times than there are compute slots (2) and more than a
    // request's worth of block slots, then works.
    let panics = 24;
    let (served, computed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let serve: ServeFn = {
        let n = served.clone();
        Arc::new(move |_, _, cids| {
            if n.fetch_add(1, Ordering::SeqCst) < panics {
                panic!("serve handler bug");
            }
            cids.iter().map(|_| Some(Bytes::from_static(b"x"))).collect()
        })
    };
    let compute: ComputeFn = {
        let n = computed.clone();
        Arc::new(move |_, _| {
            if n.fetch_add(1, Ordering::SeqCst) < panics {
                panic!("compute handler bug");
            }
            b"done".to_vec()
        })
    };
    let server = swarm(serve, compute);
    let client = swarm(serves_nothing(), busy());
    let addr = listening(&server).await;
    let peer = client.dial(addr).await.unwrap();
    let cid = shoal_core::cid::cid_of(shoal_core::cid::RAW, b"x");

    // One at a time: every panicking request is answered, never hangs.
    for i in 0..panics {
        let r = client
            .compute(peer, b"{}".to_vec(), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(r.is_empty(), "request {i}: a panic answers busy");
        let r = client.request(peer, None, vec![cid]).await.unwrap();
        assert!(
            matches!(r.answers[0].1, Answer::DontHave),
            "request {i}: {:?}",
            r.answers
        );
    }
    // The slots came back: the handlers now answer.
    let r = client
        .compute(peer, b"{}".to_vec(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r, b"done");
    let r = client.request(peer, None, vec![cid]).await.unwrap();
    assert!(matches!(&r.answers[0].1, Answer::Data(d) if &d[..] == b"x"));
    let counted = server.stats().handler_panics.load(Ordering::Relaxed);
    assert_eq!(counted, 2 * panics as u64);
}
