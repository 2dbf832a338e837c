//! Decoding untrusted manifest bytes must never panic and must stay bounded
//! in memory. Run: `cargo +nightly fuzz run manifest_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::manifest::Manifest;
use shoal_core::Block;

fuzz_target!(|data: &[u8]| {
    let root = Block::dag_cbor(data.to_vec());
    if let Ok(m) = Manifest::decode(&root) {
        // Walk it as a page source that serves the same bytes for any CID:
        // exercises page validation and the depth cap.
        let mut fetch = |_: &shoal_core::Cid| -> Result<Block, shoal_core::Error> { Ok(root.clone()) };
        let _ = m.all_links(&mut fetch);
        let _ = m.lookup("a/b", &mut fetch);
    }
});
