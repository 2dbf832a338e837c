//! How far a long operation is: the one progress type an add, a fetch, an
//! export and a pin report through every layer.

/// Bytes and items (blocks) done of their totals (0 = not known yet), and
/// for network fetches the peers that delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub items_done: u64,
    pub items_total: u64,
    /// Peers that delivered data (network fetches).
    pub peers: u64,
}
