//! Pin kinds (why a root is kept) and the clock pins are dated by: a leaf
//! the store, the journal and recovery share.

/// Why a root is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinKind {
    /// Asked for by a user: never evicted, only `unpin` removes it.
    User,
    /// Held because the dataset is popular: evictable under quota pressure.
    Mirror,
    /// Read through (mount, query): evictable, least recently used first.
    Cache,
}

impl PinKind {
    pub const ALL: [PinKind; 3] = [PinKind::User, PinKind::Mirror, PinKind::Cache];
    pub(crate) fn bit(self) -> u8 {
        match self {
            PinKind::User => 1,
            PinKind::Mirror => 2,
            PinKind::Cache => 4,
        }
    }
}

/// The set of kinds a root is pinned with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinKinds(pub(crate) u8);

impl PinKinds {
    pub fn contains(self, k: PinKind) -> bool {
        self.0 & k.bit() != 0
    }
    pub fn kinds(self) -> Vec<PinKind> {
        PinKind::ALL.into_iter().filter(|k| self.contains(*k)).collect()
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
