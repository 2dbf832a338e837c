//! `delay_proxy LISTEN TARGET ONE_WAY_MS [RATE_MBIT]`: the test support
//! delay proxy as a program, for the benchmark scripts (bench/distance.sh).
//! Prints the address it listens on, then runs until killed.

#[path = "../tests/support/delay.rs"]
mod delay;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: delay_proxy LISTEN TARGET ONE_WAY_MS [RATE_MBIT]");
        std::process::exit(2);
    }
    let listen = args[1].parse().expect("LISTEN: host:port");
    let target = args[2].parse().expect("TARGET: host:port");
    let delay = std::time::Duration::from_millis(args[3].parse().expect("ONE_WAY_MS"));
    let rate = args
        .get(4)
        .map(|r| r.parse::<u64>().expect("RATE_MBIT") * 1_000_000 / 8);
    let p = delay::start(listen, target, delay, rate)
        .await
        .expect("starting the proxy");
    println!("{}", p.addr);
    std::future::pending::<()>().await;
}
