//! The dataset manifest: one Zarr hierarchy version as a tree of DAG-CBOR
//! blocks. Its root CID is the dataset's identity.
//!
//! Layout (field names are short because they repeat millions of times):
//!
//! ```text
//! root  { v: 1, z: zarr_format, b: block_size, n: keys, s: bytes,
//!         m: [inline metadata entries], t: node }
//! node  { e: [entry] }              a leaf: sorted entries
//!       { c: [child] }              an inner node: sorted key ranges
//! entry { k: key, s: size, b: [raw CID], i?: inline bytes }
//! child { c: node CID, f: first key, l: last key, n: keys, s: bytes }
//! ```
//!
//! The small metadata documents (`zarr.json`, `.zarray`, `.zattrs`,
//! `.zgroup`, `.zmetadata`) live in the root, so a dataset opens in one
//! round trip. Every other key lives in the tree `t`; a dataset with few keys
//! has them all in the root's leaf, a large one is split into pages of about
//! [`PAGE_TARGET_BYTES`] and, when even the list of pages is large, into
//! inner nodes. No block ever exceeds [`MAX_MANIFEST_BLOCK`].
//!
//! Decoding is for untrusted bytes: the input is size-capped, every key is
//! validated ([`crate::key::validate`]), entries must be strictly sorted,
//! block lists must match the sizes, and a page must hold exactly the key
//! range and count its parent promised. Traversal depth is capped.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::chunk;
use crate::cid::{self, Cid};
use crate::error::{Error, Result};
use crate::key;

/// Manifest format version written in `v`.
pub const FORMAT_VERSION: u64 = 1;
/// Largest manifest block accepted or produced.
pub const MAX_MANIFEST_BLOCK: usize = 1 << 20;
/// Target encoded size of a page. 256 KiB holds ~3,000 chunk keys, so a
/// million-chunk dataset is ~330 pages whose index still fits in the root.
pub const PAGE_TARGET_BYTES: usize = 256 << 10;
/// Inline metadata budget of the root; documents beyond it become blocks.
pub const INLINE_BUDGET_BYTES: usize = 512 << 10;
/// Largest single document kept inline.
pub const INLINE_MAX_DOC: usize = 256 << 10;
/// Deepest tree accepted. With 256 KiB pages, depth 4 holds ~10^13 keys; a
/// deeper tree can only come from a hostile peer.
pub const MAX_DEPTH: usize = 6;

/// What a key's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Stored inside the manifest (small metadata documents).
    Inline(Bytes),
    /// The concatenation of these raw blocks.
    Blocks(Vec<Cid>),
}

/// One Zarr key of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub content: Content,
}

impl Entry {
    pub fn blocks(&self) -> &[Cid] {
        match &self.content {
            Content::Blocks(b) => b,
            Content::Inline(_) => &[],
        }
    }
}

/// A reference from an inner node to a child page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRef {
    pub cid: Cid,
    pub first: String,
    pub last: String,
    pub count: u64,
    pub bytes: u64,
}

/// A decoded tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Leaf(Vec<Entry>),
    Inner(Vec<ChildRef>),
}

/// A decoded, validated manifest root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub cid: Cid,
    pub zarr_format: u8,
    pub block_size: u32,
    /// Number of keys (metadata + tree).
    pub key_count: u64,
    /// Sum of the sizes of all keys.
    pub total_bytes: u64,
    /// Inline metadata entries, sorted.
    pub metadata: Vec<Entry>,
    /// The top of the key tree.
    pub top: Node,
}

// ---- wire format -------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct WireEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    b: Vec<Cid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<serde_bytes::ByteBuf>,
    k: String,
    s: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireChild {
    c: Cid,
    f: String,
    l: String,
    n: u64,
    s: u64,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct WireNode {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    c: Vec<WireChild>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    e: Vec<WireEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireRoot {
    b: u32,
    m: Vec<WireEntry>,
    n: u64,
    s: u64,
    t: WireNode,
    v: u64,
    z: u8,
}

fn to_wire_entry(e: &Entry) -> WireEntry {
    match &e.content {
        Content::Inline(data) => WireEntry {
            b: Vec::new(),
            i: Some(serde_bytes::ByteBuf::from(data.to_vec())),
            k: e.key.clone(),
            s: e.size,
        },
        Content::Blocks(b) => WireEntry {
            b: b.clone(),
            i: None,
            k: e.key.clone(),
            s: e.size,
        },
    }
}

fn to_wire_node(node: &Node) -> WireNode {
    match node {
        Node::Leaf(entries) => WireNode {
            c: Vec::new(),
            e: entries.iter().map(to_wire_entry).collect(),
        },
        Node::Inner(children) => WireNode {
            c: children
                .iter()
                .map(|c| WireChild {
                    c: c.cid,
                    f: c.first.clone(),
                    l: c.last.clone(),
                    n: c.count,
                    s: c.bytes,
                })
                .collect(),
            e: Vec::new(),
        },
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let bytes = serde_ipld_dagcbor::to_vec(v).map_err(|e| Error::ManifestEncode(e.to_string()))?;
    if bytes.len() > MAX_MANIFEST_BLOCK {
        return Err(Error::ManifestEncode(format!(
            "a manifest node encodes to {} bytes, above the {MAX_MANIFEST_BLOCK}-byte limit",
            bytes.len()
        )));
    }
    Ok(bytes)
}

// ---- decoding and validation --------------------------------------------

struct Checker<'a> {
    cid: &'a Cid,
    block_size: u32,
}

impl Checker<'_> {
    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::ManifestInvalid {
            cid: *self.cid,
            reason: reason.into(),
        }
    }

    fn entry(&self, w: WireEntry, inline_allowed: bool) -> Result<Entry> {
        key::validate(&w.k).map_err(|e| self.invalid(e.to_string()))?;
        let content = match w.i {
            Some(data) => {
                if !inline_allowed {
                    return Err(self.invalid(format!("key {:?}: inline data outside the root", w.k)));
                }
                if !w.b.is_empty() || data.len() as u64 != w.s {
                    return Err(self.invalid(format!("key {:?}: inline size mismatch", w.k)));
                }
                Content::Inline(Bytes::from(data.into_vec()))
            }
            None => {
                if inline_allowed {
                    return Err(self.invalid(format!("key {:?}: root metadata must be inline", w.k)));
                }
                if w.b.len() as u64 != chunk::block_count(w.s, self.block_size) {
                    return Err(self.invalid(format!(
                        "key {:?}: {} blocks for {} bytes at block size {}",
                        w.k,
                        w.b.len(),
                        w.s,
                        self.block_size
                    )));
                }
                for b in &w.b {
                    if cid::check_supported(b).is_err() || b.codec() != cid::RAW {
                        return Err(self.invalid(format!("key {:?}: block {b} is not a raw blake3 CID", w.k)));
                    }
                }
                Content::Blocks(w.b)
            }
        };
        Ok(Entry {
            key: w.k,
            size: w.s,
            content,
        })
    }

    fn entries(&self, ws: Vec<WireEntry>, inline: bool) -> Result<Vec<Entry>> {
        let mut out: Vec<Entry> = Vec::with_capacity(ws.len());
        for w in ws {
            let e = self.entry(w, inline)?;
            if let Some(prev) = out.last() {
                if prev.key >= e.key {
                    return Err(self.invalid(format!("keys not strictly sorted at {:?}", e.key)));
                }
            }
            out.push(e);
        }
        Ok(out)
    }

    fn node(&self, w: WireNode) -> Result<Node> {
        match (w.c.is_empty(), w.e.is_empty()) {
            (false, false) => Err(self.invalid("node has both entries and children")),
            (false, true) => {
                let mut out: Vec<ChildRef> = Vec::with_capacity(w.c.len());
                for c in w.c {
                    key::validate(&c.f).map_err(|e| self.invalid(e.to_string()))?;
                    key::validate(&c.l).map_err(|e| self.invalid(e.to_string()))?;
                    if c.f > c.l || c.n == 0 || c.c.codec() != cid::DAG_CBOR {
                        return Err(self.invalid(format!("bad child range {:?}..{:?}", c.f, c.l)));
                    }
                    if let Some(prev) = out.last() {
                        if prev.last >= c.f {
                            return Err(self.invalid("child ranges overlap or are unsorted"));
                        }
                    }
                    cid::check_supported(&c.c).map_err(|e| self.invalid(e.to_string()))?;
                    out.push(ChildRef {
                        cid: c.c,
                        first: c.f,
                        last: c.l,
                        count: c.n,
                        bytes: c.s,
                    });
                }
                Ok(Node::Inner(out))
            }
            _ => Ok(Node::Leaf(self.entries(w.e, false)?)),
        }
    }
}

fn entry_totals(es: &[Entry]) -> Option<(u64, u64)> {
    Some((es.len() as u64, es.iter().try_fold(0u64, |a, e| a.checked_add(e.size))?))
}

/// Keys and bytes under a node: its entries', or its children's claims.
/// `None` on overflow.
fn node_totals(node: &Node) -> Option<(u64, u64)> {
    match node {
        Node::Leaf(es) => entry_totals(es),
        Node::Inner(cs) => cs.iter().try_fold((0u64, 0u64), |(n, b), c| {
            Some((n.checked_add(c.count)?, b.checked_add(c.bytes)?))
        }),
    }
}

fn decode_cbor<'a, T: Deserialize<'a>>(block: &'a Block) -> Result<T> {
    if block.cid().codec() != cid::DAG_CBOR {
        return Err(Error::UnexpectedCodec {
            cid: *block.cid(),
            codec: block.cid().codec(),
            expected: "dag-cbor (0x71)",
        });
    }
    if block.len() > MAX_MANIFEST_BLOCK {
        return Err(Error::ManifestDecode {
            cid: *block.cid(),
            reason: format!("{} bytes exceeds the {MAX_MANIFEST_BLOCK}-byte limit", block.len()),
        });
    }
    serde_ipld_dagcbor::from_slice(block.data()).map_err(|e| Error::ManifestDecode {
        cid: *block.cid(),
        reason: e.to_string(),
    })
}

impl Manifest {
    /// Decodes and validates a root block.
    pub fn decode(block: &Block) -> Result<Manifest> {
        let w: WireRoot = decode_cbor(block)?;
        let ck = Checker {
            cid: block.cid(),
            block_size: w.b,
        };
        if w.v != FORMAT_VERSION {
            return Err(ck.invalid(format!("unsupported manifest version {}", w.v)));
        }
        if w.z != 2 && w.z != 3 {
            return Err(ck.invalid(format!("unsupported zarr_format {}", w.z)));
        }
        if w.b == 0 || w.b > crate::MAX_BLOCK_SIZE {
            return Err(ck.invalid(format!("block size {} out of range", w.b)));
        }
        let metadata = ck.entries(w.m, true)?;
        let top = ck.node(w.t)?;
        // Keys and bytes the root claims must be what its metadata and its
        // tree's references hold (checked arithmetic: a hostile root can
        // claim anything); each page is checked against its reference when
        // it is decoded, so a walked manifest proves its total size.
        let (meta_count, meta_bytes) = entry_totals(&metadata).ok_or_else(|| ck.invalid("sizes overflow"))?;
        let (tree_count, tree_bytes) = node_totals(&top).ok_or_else(|| ck.invalid("key count or size overflows"))?;
        let keys = meta_count
            .checked_add(tree_count)
            .ok_or_else(|| ck.invalid("key count overflows"))?;
        let bytes = meta_bytes
            .checked_add(tree_bytes)
            .ok_or_else(|| ck.invalid("size overflows"))?;
        if keys != w.n {
            return Err(ck.invalid(format!("root claims {} keys, holds {keys}", w.n)));
        }
        if bytes != w.s {
            return Err(ck.invalid(format!("root claims {} bytes, its entries and pages hold {bytes}", w.s)));
        }
        Ok(Manifest {
            cid: *block.cid(),
            zarr_format: w.z,
            block_size: w.b,
            key_count: w.n,
            total_bytes: w.s,
            metadata,
            top,
        })
    }

    /// Decodes a page (non-root node) and checks it holds what its parent
    /// reference promised.
    pub fn decode_page(&self, block: &Block, expect: &ChildRef) -> Result<Node> {
        let w: WireNode = decode_cbor(block)?;
        let ck = Checker {
            cid: block.cid(),
            block_size: self.block_size,
        };
        let node = ck.node(w)?;
        let (first, last) = match &node {
            Node::Leaf(e) => (e.first().map(|e| e.key.as_str()), e.last().map(|e| e.key.as_str())),
            Node::Inner(c) => (c.first().map(|c| c.first.as_str()), c.last().map(|c| c.last.as_str())),
        };
        let (count, bytes) = node_totals(&node).ok_or_else(|| ck.invalid("key count or size overflows"))?;
        if first != Some(expect.first.as_str())
            || last != Some(expect.last.as_str())
            || count != expect.count
            || bytes != expect.bytes
        {
            return Err(ck.invalid(format!(
                "page holds {count} keys ({bytes} bytes) {first:?}..{last:?}, parent promised {} keys ({} bytes) {:?}..{:?}",
                expect.count, expect.bytes, expect.first, expect.last
            )));
        }
        Ok(node)
    }

    /// Visits every page of the tree (not the root), depth first, giving the
    /// callback each page's CID before it is fetched. `fetch` loads a block.
    pub fn walk_pages<E: From<Error>>(
        &self,
        fetch: &mut dyn FnMut(&Cid) -> Result<Block, E>,
        on_page: &mut dyn FnMut(&Cid, &Node) -> Result<(), E>,
    ) -> Result<(), E> {
        self.walk_node(&self.top, 0, fetch, on_page)
    }

    fn walk_node<E: From<Error>>(
        &self,
        node: &Node,
        depth: usize,
        fetch: &mut dyn FnMut(&Cid) -> Result<Block, E>,
        on_page: &mut dyn FnMut(&Cid, &Node) -> Result<(), E>,
    ) -> Result<(), E> {
        let Node::Inner(children) = node else {
            return Ok(());
        };
        if depth >= MAX_DEPTH {
            return Err(Error::ManifestInvalid {
                cid: self.cid,
                reason: format!("tree deeper than {MAX_DEPTH}"),
            }
            .into());
        }
        for child in children {
            let block = fetch(&child.cid)?;
            let page = self.decode_page(&block, child)?;
            on_page(&child.cid, &page)?;
            self.walk_node(&page, depth + 1, fetch, on_page)?;
        }
        Ok(())
    }

    /// Visits every entry in key order (metadata merged with the tree).
    pub fn for_each_entry<E: From<Error>>(
        &self,
        fetch: &mut dyn FnMut(&Cid) -> Result<Block, E>,
        f: &mut dyn FnMut(&Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut meta = self.metadata.iter().peekable();
        let mut emit = |e: &Entry, f: &mut dyn FnMut(&Entry) -> Result<(), E>| -> Result<(), E> {
            while let Some(m) = meta.next_if(|m| m.key < e.key) {
                f(m)?;
            }
            f(e)
        };
        if let Node::Leaf(entries) = &self.top {
            for e in entries {
                emit(e, f)?;
            }
        }
        self.walk_pages(fetch, &mut |_, node| {
            if let Node::Leaf(entries) = node {
                for e in entries {
                    emit(e, f)?;
                }
            }
            Ok(())
        })?;
        for m in meta {
            f(m)?;
        }
        Ok(())
    }

    /// Every entry, in key order (capacity capped so a hostile key count
    /// cannot make us reserve memory up front).
    pub fn entries<E: From<Error>>(&self, fetch: &mut dyn FnMut(&Cid) -> Result<Block, E>) -> Result<Vec<Entry>, E> {
        let mut out = Vec::with_capacity(self.key_count.min(1 << 16) as usize);
        self.for_each_entry(fetch, &mut |e| {
            out.push(e.clone());
            Ok(())
        })?;
        Ok(out)
    }

    /// Finds one key, fetching only the pages on its path.
    pub fn lookup<E: From<Error>>(
        &self,
        key: &str,
        fetch: &mut dyn FnMut(&Cid) -> Result<Block, E>,
    ) -> Result<Option<Entry>, E> {
        self.lookup_in(key, &mut |child| {
            let block = fetch(&child.cid)?;
            Ok(Arc::new(self.decode_page(&block, child)?))
        })
    }

    /// Finds one key like [`Self::lookup`], taking the decoded pages on its
    /// path from `pages` when they are there and keeping the ones it
    /// fetches and decodes (pages validated against this manifest's tree).
    pub fn lookup_cached<E: From<Error>>(
        &self,
        key: &str,
        pages: &PageCache,
        fetch: &mut dyn FnMut(&Cid) -> Result<Block, E>,
    ) -> Result<Option<Entry>, E> {
        self.lookup_in(key, &mut |child| {
            if let Some(p) = pages.get(&child.cid) {
                return Ok(p);
            }
            let block = fetch(&child.cid)?;
            let p = Arc::new(self.decode_page(&block, child)?);
            pages.put(child.cid, p.clone());
            Ok(p)
        })
    }

    /// Finds one key, taking the decoded pages on its path from `page`
    /// (which may keep them: see [`PageCache`]). Child ranges are sorted
    /// and disjoint (checked when a page is decoded): one binary search
    /// per level.
    pub fn lookup_in<E: From<Error>>(
        &self,
        key: &str,
        page: &mut dyn FnMut(&ChildRef) -> Result<Arc<Node>, E>,
    ) -> Result<Option<Entry>, E> {
        if let Ok(i) = self.metadata.binary_search_by(|e| e.key.as_str().cmp(key)) {
            return Ok(Some(self.metadata[i].clone()));
        }
        let mut held: Option<Arc<Node>> = None;
        for _ in 0..=MAX_DEPTH {
            let children = match held.as_deref().unwrap_or(&self.top) {
                Node::Leaf(entries) => {
                    return Ok(entries
                        .binary_search_by(|e| e.key.as_str().cmp(key))
                        .ok()
                        .map(|i| entries[i].clone()));
                }
                Node::Inner(children) => children,
            };
            let i = children.partition_point(|c| c.last.as_str() < key);
            let Some(child) = children.get(i).filter(|c| c.first.as_str() <= key) else {
                return Ok(None);
            };
            let next = page(child)?;
            held = Some(next);
        }
        Err(Error::ManifestInvalid {
            cid: self.cid,
            reason: format!("tree deeper than {MAX_DEPTH}"),
        }
        .into())
    }

    /// Up to `n` entries of the tree (chunk keys; inline metadata
    /// documents are not in it) whose keys come after `key`, in key order,
    /// taking decoded pages from `page` like [`Self::lookup_in`]: only the
    /// pages on the way from `key` to the last one returned are read (a
    /// reader's next files, for read-ahead).
    pub fn after_in<E: From<Error>>(
        &self,
        key: &str,
        n: usize,
        page: &mut dyn FnMut(&ChildRef) -> Result<Arc<Node>, E>,
    ) -> Result<Vec<Entry>, E> {
        let mut out = Vec::new();
        // Pages still to visit, each with the index of its next child.
        let mut stack: Vec<(Arc<Node>, usize)> = Vec::new();
        let top = Arc::new(self.top.clone());
        let start = |node: &Node| match node {
            Node::Leaf(entries) => entries.partition_point(|e| e.key.as_str() <= key),
            Node::Inner(children) => children.partition_point(|c| c.last.as_str() <= key),
        };
        let first = start(&top);
        stack.push((top, first));
        let mut visited = 0;
        while out.len() < n {
            let Some((node, i)) = stack.pop() else { break };
            match &*node {
                Node::Leaf(entries) => {
                    let take = (n - out.len()).min(entries.len().saturating_sub(i));
                    out.extend(entries[i..i + take].iter().cloned());
                }
                Node::Inner(children) => {
                    let Some(child) = children.get(i) else { continue };
                    visited += 1;
                    if stack.len() >= MAX_DEPTH || visited > n + MAX_DEPTH * 2 {
                        break;
                    }
                    let next = page(child)?;
                    let at = start(&next);
                    stack.push((node.clone(), i + 1));
                    stack.push((next, at));
                }
            }
        }
        Ok(out)
    }

    /// Every CID the dataset needs besides the root: pages and data blocks,
    /// without duplicates, in traversal order.
    pub fn all_links<E: From<Error>>(&self, fetch: &mut dyn FnMut(&Cid) -> Result<Block, E>) -> Result<Vec<Cid>, E> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut add = |c: &Cid| {
            if seen.insert(*c) {
                out.push(*c);
            }
        };
        let leaf = |node: &Node, add: &mut dyn FnMut(&Cid)| {
            if let Node::Leaf(entries) = node {
                for e in entries {
                    e.blocks().iter().for_each(&mut *add);
                }
            }
        };
        leaf(&self.top, &mut add);
        self.walk_pages(fetch, &mut |cid, node| {
            add(cid);
            leaf(node, &mut add);
            Ok(())
        })?;
        Ok(out)
    }
}

/// The last few decoded manifest pages, by CID: a hit moves to the back,
/// the least recently used goes first. Shared by readers that walk
/// neighbouring keys (a query's chunks, a mount's directory listings).
#[derive(Debug)]
pub struct PageCache {
    max: usize,
    pages: std::sync::Mutex<Vec<(Cid, Arc<Node>)>>,
}

impl PageCache {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            pages: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn get(&self, cid: &Cid) -> Option<Arc<Node>> {
        let mut p = self.pages.lock().expect("page cache lock");
        let at = p.iter().position(|(c, _)| c == cid)?;
        let hit = p.remove(at);
        p.push(hit.clone());
        Some(hit.1)
    }

    pub fn put(&self, cid: Cid, node: Arc<Node>) {
        let mut p = self.pages.lock().expect("page cache lock");
        if p.iter().any(|(c, _)| *c == cid) {
            return;
        }
        if p.len() >= self.max {
            p.remove(0);
        }
        p.push((cid, node));
    }
}

// ---- building ------------------------------------------------------------

/// A manifest ready to store: the root plus every other block it created
/// (pages, and metadata documents too large to stay inline).
#[derive(Debug)]
pub struct BuiltManifest {
    pub root: Block,
    pub blocks: Vec<Block>,
}

/// Collects entries and encodes them as a manifest tree. Entries given in
/// any order ([`Self::push`]) are kept until [`Self::build`]; entries given
/// in key order ([`Self::push_sorted`]) are cut into leaf pages as they
/// come, so a million keys never sit in memory at once (take the pages
/// made so far with [`Self::take_blocks`]). Both give the same manifest.
#[derive(Debug)]
pub struct ManifestBuilder {
    zarr_format: u8,
    block_size: u32,
    page_target: usize,
    /// Entries pushed unsorted, fed in order at build.
    entries: Vec<Entry>,
    /// The last key fed (keys must increase).
    last: Option<String>,
    metadata: Vec<Entry>,
    inline_used: usize,
    /// Tree entries not yet cut into a page, and their estimated size.
    group: Vec<Entry>,
    group_size: usize,
    /// Leaf pages cut so far.
    leaves: Vec<ChildRef>,
    /// Blocks made and not yet taken: pages, spilled metadata.
    blocks: Vec<Block>,
    key_count: u64,
    total_bytes: u64,
}

/// Conservative estimate of an entry's encoded size, used to cut pages.
fn entry_estimate(e: &Entry) -> usize {
    let inline = match &e.content {
        Content::Inline(d) => d.len() + 8,
        Content::Blocks(b) => b.len() * 42 + 8,
    };
    e.key.len() + 24 + inline
}

fn child_estimate(c: &ChildRef) -> usize {
    c.first.len() + c.last.len() + 42 + 40
}

impl ManifestBuilder {
    pub fn new(zarr_format: u8, block_size: u32) -> Self {
        Self {
            zarr_format,
            block_size,
            page_target: PAGE_TARGET_BYTES,
            entries: Vec::new(),
            last: None,
            metadata: Vec::new(),
            inline_used: 0,
            group: Vec::new(),
            group_size: 0,
            leaves: Vec::new(),
            blocks: Vec::new(),
            key_count: 0,
            total_bytes: 0,
        }
    }

    /// Smaller pages, so tests can build multi-level trees from few keys.
    pub fn with_page_target(mut self, bytes: usize) -> Self {
        // Below ~1 KiB a page holds too few keys and the tree outgrows MAX_DEPTH.
        self.page_target = bytes.clamp(1024, PAGE_TARGET_BYTES);
        self
    }

    /// The key is valid and the content matches the size.
    fn check(&self, entry: &Entry) -> Result<()> {
        key::validate(&entry.key)?;
        let ok = match &entry.content {
            Content::Inline(d) => d.len() as u64 == entry.size,
            Content::Blocks(b) => b.len() as u64 == chunk::block_count(entry.size, self.block_size),
        };
        if !ok {
            return Err(Error::InvalidKey {
                key: entry.key.clone(),
                reason: "content does not match size",
            });
        }
        Ok(())
    }

    /// Adds an entry. The key is validated; sizes must match the content.
    pub fn push(&mut self, entry: Entry) -> Result<()> {
        self.check(&entry)?;
        if self.last.is_some() {
            return Err(Error::ManifestEncode("push after push_sorted".into()));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Adds an entry whose key follows every key given before.
    pub fn push_sorted(&mut self, entry: Entry) -> Result<()> {
        self.check(&entry)?;
        if !self.entries.is_empty() {
            return Err(Error::ManifestEncode("push_sorted after push".into()));
        }
        self.feed(entry)
    }

    /// The blocks made so far (leaf pages, spilled metadata), to store
    /// while the rest is pushed.
    pub fn take_blocks(&mut self) -> Vec<Block> {
        std::mem::take(&mut self.blocks)
    }

    fn feed(&mut self, mut e: Entry) -> Result<()> {
        if let Some(last) = &self.last {
            if e.key <= *last {
                let reason = if e.key == *last {
                    "duplicate key"
                } else {
                    "keys out of order"
                };
                return Err(Error::InvalidKey { key: e.key, reason });
            }
        }
        self.last = Some(e.key.clone());
        self.key_count += 1;
        self.total_bytes += e.size;
        if let Content::Inline(data) = &e.content {
            if key::is_metadata(&e.key)
                && data.len() <= INLINE_MAX_DOC
                && self.inline_used + data.len() <= INLINE_BUDGET_BYTES
            {
                self.inline_used += data.len();
                self.metadata.push(e);
                return Ok(());
            }
            // Too large (or not metadata): spill into raw blocks.
            let mut cids = Vec::new();
            for (s, end) in chunk::block_ranges(e.size, self.block_size) {
                let b = Block::raw(data.slice(s as usize..end as usize));
                cids.push(*b.cid());
                self.blocks.push(b);
            }
            e.content = Content::Blocks(cids);
        }
        // Consecutive groups of about the page target, at least two
        // entries each so the tree always shrinks level by level.
        let s = entry_estimate(&e);
        if self.group.len() >= 2 && self.group_size + s > self.page_target {
            self.cut()?;
        }
        self.group_size += s;
        self.group.push(e);
        Ok(())
    }

    /// The pending group becomes a leaf page.
    fn cut(&mut self) -> Result<()> {
        let g = std::mem::take(&mut self.group);
        self.group_size = 0;
        let r = ChildRef {
            cid: Cid::default(),
            first: g[0].key.clone(),
            last: g[g.len() - 1].key.clone(),
            count: g.len() as u64,
            bytes: g.iter().map(|e| e.size).sum(),
        };
        let r = store_page(r, Node::Leaf(g), &mut self.blocks)?;
        self.leaves.push(r);
        Ok(())
    }

    pub fn build(mut self) -> Result<BuiltManifest> {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        for e in entries {
            self.feed(e)?;
        }
        let root_budget = MAX_MANIFEST_BLOCK - INLINE_BUDGET_BYTES - 4096;
        let top = if self.leaves.is_empty() && self.group_size <= self.page_target.min(root_budget) {
            Node::Leaf(std::mem::take(&mut self.group))
        } else {
            if !self.group.is_empty() {
                self.cut()?;
            }
            let mut blocks = std::mem::take(&mut self.blocks);
            let mut level = std::mem::take(&mut self.leaves);
            let mut depth = 1;
            // Each pass at least halves the level (groups hold >= 2 children).
            while level.len() > 1 && level.iter().map(child_estimate).sum::<usize>() > self.page_target.min(root_budget)
            {
                level = self.pages_from_children(level, &mut blocks)?;
                depth += 1;
            }
            if depth > MAX_DEPTH {
                return Err(Error::ManifestEncode(format!(
                    "tree of depth {depth} exceeds {MAX_DEPTH}"
                )));
            }
            self.blocks = blocks;
            Node::Inner(level)
        };
        let root = WireRoot {
            b: self.block_size,
            m: self.metadata.iter().map(to_wire_entry).collect(),
            n: self.key_count,
            s: self.total_bytes,
            t: to_wire_node(&top),
            v: FORMAT_VERSION,
            z: self.zarr_format,
        };
        let root = Block::dag_cbor(encode(&root)?);
        Ok(BuiltManifest {
            root,
            blocks: self.blocks,
        })
    }

    fn pages_from_children(&self, children: Vec<ChildRef>, blocks: &mut Vec<Block>) -> Result<Vec<ChildRef>> {
        let groups = split_by_size(children, child_estimate, self.page_target);
        groups
            .into_iter()
            .map(|g| {
                let r = ChildRef {
                    cid: Cid::default(),
                    first: g[0].first.clone(),
                    last: g[g.len() - 1].last.clone(),
                    count: g.iter().map(|c| c.count).sum(),
                    bytes: g.iter().map(|c| c.bytes).sum(),
                };
                store_page(r, Node::Inner(g), blocks)
            })
            .collect()
    }
}

fn store_page(mut r: ChildRef, node: Node, blocks: &mut Vec<Block>) -> Result<ChildRef> {
    let block = Block::dag_cbor(encode(&to_wire_node(&node))?);
    r.cid = *block.cid();
    blocks.push(block);
    Ok(r)
}

/// Splits `items` into consecutive groups of about `target` estimated bytes,
/// at least two items per group so the tree always shrinks level by level.
fn split_by_size<T>(items: Vec<T>, size: fn(&T) -> usize, target: usize) -> Vec<Vec<T>> {
    let mut groups = Vec::new();
    let mut cur = Vec::new();
    let mut cur_size = 0;
    for it in items {
        let s = size(&it);
        if cur.len() >= 2 && cur_size + s > target {
            groups.push(std::mem::take(&mut cur));
            cur_size = 0;
        }
        cur_size += s;
        cur.push(it);
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}

#[cfg(test)]
mod tests;
