//! Splitting a value into fixed-size blocks.
//!
//! Fixed-size (not content-defined) chunking: Zarr chunks are already the
//! unit of change, so a chunk rewritten between versions is a new key and
//! unchanged chunks keep their CIDs. Content-defined chunking would cost
//! hashing throughput and buy nothing for the common case of chunks below
//! the block size.

/// Number of blocks a value of `len` bytes splits into (0 for empty values).
pub fn block_count(len: u64, block_size: u32) -> u64 {
    len.div_ceil(u64::from(block_size))
}

/// The byte ranges `[start, end)` of the blocks of a value of `len` bytes.
pub fn block_ranges(len: u64, block_size: u32) -> impl Iterator<Item = (u64, u64)> {
    let bs = u64::from(block_size);
    (0..block_count(len, block_size)).map(move |i| (i * bs, ((i + 1) * bs).min(len)))
}

/// Length of block `index` of a value of `len` bytes.
pub fn block_len(len: u64, block_size: u32, index: u64) -> u64 {
    let bs = u64::from(block_size);
    len.saturating_sub(index * bs).min(bs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        // Interesting sizes: empty, 1, block - 1, block, block + 1, 2 blocks.
        let bs = 1024;
        for (len, n) in [(0, 0), (1, 1), (1023, 1), (1024, 1), (1025, 2), (2048, 2)] {
            assert_eq!(block_count(len, bs), n, "len {len}");
            let ranges: Vec<_> = block_ranges(len, bs).collect();
            assert_eq!(ranges.len() as u64, n);
            assert_eq!(ranges.iter().map(|(s, e)| e - s).sum::<u64>(), len);
            for (i, (s, e)) in ranges.iter().enumerate() {
                assert_eq!(block_len(len, bs, i as u64), e - s);
            }
        }
    }
}
