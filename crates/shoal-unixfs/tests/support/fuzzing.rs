//! What the fuzz suites share (shoal-unixfs and shoal-net include this
//! file): the case count and the mutation of a valid message.
#![allow(dead_code)]

/// Cases per property: 2,000 in CI, `SHOAL_FUZZ_CASES` for longer runs.
pub fn cases() -> u32 {
    std::env::var("SHOAL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Applies `edits` to `b`: each flips bits of the byte at its position,
/// or (a position one past the end) truncates the message.
pub fn mutate(mut b: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    for &(at, v) in edits {
        if b.is_empty() {
            break;
        }
        let i = at % (b.len() + 1);
        if i == b.len() {
            b.truncate(at % b.len());
        } else {
            b[i] ^= v.max(1);
        }
    }
    b
}
