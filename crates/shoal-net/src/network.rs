//! The swarm task and its client.
//!
//! Structure after rust-libp2p's file-sharing example: [`EventLoop::run`]
//! `select!`s over swarm events, a bounded command channel, and finished
//! serve jobs. Each [`Command`] carries a oneshot for its reply. The loop
//! never blocks: serving blocks from the store runs on the blocking pool,
//! bounded by [`MAX_INBOUND_INFLIGHT`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::upgrade::Version;
use libp2p::core::Transport;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};

use crate::providers::ProviderStore;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    allow_block_list, connection_limits, identify, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use shoal_core::Cid;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{
    Answer, BlockCodec, BlockRequest, BlockResponse, ComputeCodec, COMPUTE_PROTOCOL, MAX_CIDS_PER_REQUEST,
    MAX_RESPONSE_BYTES, PROTOCOL,
};
pub use crate::shared::{NetStats, ServeFn};
use crate::{Error, Result};

/// Kademlia under our own protocol name: a private DHT, not the IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/kad/1.0.0");
/// Blocks being served at once; requests beyond are answered "skipped" so
/// a greedy peer cannot queue unbounded work on us. A request counts its
/// CIDs, at most [`BLOCKS_PER_RESPONSE`] (a response carries at most 16 MiB),
/// so the bound is on memory: 512 x 1 MiB blocks, whether they come as many
/// single-block reads (a mount's prefetch at a distance) or a few batches
/// (a pin).
pub const MAX_INBOUND_INFLIGHT: usize = 512;
/// Blocks one peer may have served at once, so a single greedy peer cannot
/// take all [`MAX_INBOUND_INFLIGHT`].
pub const MAX_INBOUND_PER_PEER: usize = 128;
/// The most blocks one response carries (16 MiB of 1 MiB blocks).
pub const BLOCKS_PER_RESPONSE: usize = 16;

/// What a block request counts against the inbound bounds.
fn request_weight(cids: usize) -> usize {
    cids.clamp(1, BLOCKS_PER_RESPONSE)
}
/// Commands buffered towards the event loop.
const COMMAND_QUEUE: usize = 256;
/// Provider batch streams at once per connection (each up to ~1.3 MB).
const MAX_PROVIDE_STREAMS: usize = 8;
/// New datasets are announced together: a sweep starts this long after
/// the first one not yet announced.
const SWEEP_DEBOUNCE: Duration = Duration::from_millis(500);
/// Peers' expired provider records are dropped, and the rest saved, this
/// often.
const PROVIDER_UPKEEP: Duration = Duration::from_secs(300);

/// A gossip message's id: the first 16 bytes of blake3(author, sequence
/// number). Same uniqueness as the default (author and sequence number),
/// a quarter of its size in every IHAVE and IWANT.
fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut h = blake3::Hasher::new();
    if let Some(src) = &m.source {
        h.update(&src.to_bytes());
    }
    h.update(&m.sequence_number.unwrap_or_default().to_be_bytes());
    gossipsub::MessageId::new(&h.finalize().as_bytes()[..16])
}

/// Judges a gossip message from its (signature-checked) author: true
/// accepts it (it is forwarded to others), false rejects it (dropped, not
/// forwarded). Called on the event loop: it must be quick and not block.
pub type GossipFn = Arc<dyn Fn(&PeerId, &[u8]) -> bool + Send + Sync>;
/// What to do with a verified name record heard over gossip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A newer version: forwarded to others.
    Accept,
    /// Known already (a re-announcement): dropped quietly.
    Ignore,
    /// Older or conflicting: dropped and counted.
    Reject,
}
/// Judges a verified name record heard on a name's topic (called on the
/// event loop: quick, non-blocking). Records that fail verification never
/// reach it.
pub type NameFn = Arc<dyn Fn(&PeerId, &crate::names::NameRecord, &[u8]) -> Verdict + Send + Sync>;
/// Judges a catalogue entry heard on the catalogue topic (its envelope, as
/// received; called on the event loop: quick, non-blocking). The judge
/// verifies it (`catalogue::verify`) and decides whether to keep it.
pub type CatalogueFn = Arc<dyn Fn(&PeerId, &[u8]) -> Verdict + Send + Sync>;
/// Answers a compute request (runs on the blocking pool).
pub type ComputeFn = Arc<dyn Fn(&PeerId, Vec<u8>) -> Vec<u8> + Send + Sync>;
/// Compute requests served at once; beyond this a peer gets an empty
/// ("busy") answer and reassigns the work. Two: one per core of a small
/// machine, so remote queries cannot starve the daemon.
pub const MAX_COMPUTE_INFLIGHT: usize = 2;

/// Where and how the swarm runs.
#[derive(Clone)]
pub struct SwarmSettings {
    pub keypair: Keypair,
    pub listen: Vec<Multiaddr>,
    /// Peers dialled at start; addresses must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    pub swarm_key: Option<PreSharedKey>,
    /// When set, only these peers may connect (both directions).
    pub allow_peers: Option<Vec<PeerId>>,
    /// How often provider records are republished.
    pub reprovide_interval: Duration,
    /// Deadline of one block request.
    pub request_timeout: Duration,
    pub max_connections: u32,
    /// Datasets this node may provide on the DHT (its own records; peers
    /// can never displace them).
    pub max_provided: usize,
    /// Peers' provider records kept ((key, provider) pairs; past it the
    /// peer holding most loses its oldest).
    pub max_remote_provider_records: usize,
    /// Where peers' provider records are saved (every few minutes and
    /// when the network stops) and loaded from at start; None = memory
    /// only.
    pub provider_store: Option<std::path::PathBuf>,
}

impl SwarmSettings {
    /// Defaults (1 h reprovide, 20 s requests, 256 connections) for this
    /// identity and these listen addresses.
    pub fn new(keypair: Keypair, listen: Vec<Multiaddr>) -> Self {
        Self {
            keypair,
            listen,
            bootstrap: Vec::new(),
            swarm_key: None,
            allow_peers: None,
            reprovide_interval: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(20),
            max_connections: 256,
            max_provided: 1 << 20,
            max_remote_provider_records: 1 << 19,
            provider_store: None,
        }
    }
}

/// The swarm's settings and what answers peers.
#[derive(Clone)]
pub struct NetConfig {
    pub swarm: SwarmSettings,
    pub serve: ServeFn,
    pub compute: ComputeFn,
    /// Subscribes to the popularity topic and hands its messages here;
    /// None = this daemon neither hears nor shares popularity.
    pub gossip: Option<GossipFn>,
    /// Judges name records heard on the topics this node subscribes to;
    /// None = every one is rejected.
    pub names: Option<NameFn>,
    /// Subscribes to the catalogue topic and judges its entries there;
    /// None = this daemon neither hears nor keeps the catalogue.
    pub catalogue: Option<CatalogueFn>,
    /// Gossipsub heartbeat (mesh upkeep, IHAVE gossip). Each heartbeat
    /// costs every peer a few small messages, so it should be a fraction
    /// of the report interval, not a fixed second.
    pub gossip_heartbeat: Duration,
}

/// Receive window of a stream this node opens (a request whose response it
/// reads): one whole response. Each request opens a fresh stream, and
/// yamux's own tuning (0.13) starts every stream at 256 KiB and doubles per
/// round trip, so a response took ~6 round trips at any distance; with the
/// window granted when the stream opens (yamux 0.12 sends it with the SYN)
/// a response takes one. Memory stays bounded: only streams this node
/// opened get the window, and those are its requests in flight (bounded by
/// the fetcher); streams a peer opens start at 256 KiB and grow only as
/// this node reads their (size-limited) requests.
pub const STREAM_WINDOW: u32 = (crate::codec::MAX_RESPONSE_BYTES + shoal_core::MAX_BLOCK_SIZE as usize) as u32;
/// Streams per connection (inbound requests are bounded far below this).
const MAX_STREAMS: usize = 512;

#[allow(deprecated)] // the per-stream window is only configurable on yamux 0.12
fn muxer() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_receive_window_size(STREAM_WINDOW)
        .set_max_buffer_size(STREAM_WINDOW as usize)
        .set_max_num_streams(MAX_STREAMS);
    c
}

/// Runs a handler, turning a panic into `None` (logged and counted).
fn caught<T>(stats: &NetStats, what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            stats.handler_panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(handler = what, panic = %msg, "request handler panicked; answered and released its slot");
            None
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    allowed: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    banned: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<ProviderStore>,
    blocks: request_response::Behaviour<BlockCodec>,
    compute: request_response::Behaviour<ComputeCodec>,
    /// Provider record batches (see [`crate::sweep`]).
    provide: request_response::Behaviour<crate::sweep::ProvideCodec>,
    gossip: gossipsub::Behaviour,
    /// Raw streams: bitswap for IPFS nodes (see [`crate::bitswap`]).
    streams: libp2p_stream::Behaviour,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub addrs: Vec<String>,
}

enum Command {
    /// Dial an address; the reply names the peer that answered.
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Listening {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Provide {
        root: Cid,
    },
    FindProviders {
        root: Cid,
        reply: oneshot::Sender<HashSet<PeerId>>,
    },
    /// Ask `peer` for `cids` (of dataset `root`, as the request says).
    Request {
        peer: PeerId,
        root: Option<Cid>,
        cids: Vec<Cid>,
        reply: oneshot::Sender<Result<BlockResponse>>,
    },
    Ban {
        peer: PeerId,
    },
    Compute {
        peer: PeerId,
        body: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>>>,
    },
    IsConnected {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    StopProviding {
        root: Cid,
    },
    /// A popularity report on the gossip topic.
    Publish {
        data: Vec<u8>,
    },
    DialPeer {
        peer: PeerId,
        reply: oneshot::Sender<Result<PeerId>>,
    },
    PutName {
        signed: Vec<u8>,
    },
    GetName {
        key: RecordKey,
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
    Subscribe {
        topic: String,
        on: bool,
    },
    PublishTo {
        topic: String,
        data: Vec<u8>,
    },
}

/// A handle to the network task. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    request_timeout: Duration,
    stats: Arc<NetStats>,
    bitswap: crate::bitswap::Bitswap,
}

/// Counters of the event loop, readable from any [`Client`].
impl Client {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// The bitswap client (fetching from IPFS nodes).
    pub fn bitswap(&self) -> &crate::bitswap::Bitswap {
        &self.bitswap
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Dials an address (must end in /p2p/<id> or be reachable); returns the
    /// peer once connected. Bounded by the transport timeout.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId> {
        let shown = addr.to_string();
        match tokio::time::timeout(
            Duration::from_secs(30),
            self.call(|reply| Command::Dial { addr, reply }),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => Err(Error::Dial {
                addr: shown,
                reason: "timed out after 30s".into(),
            }),
        }
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        self.call(|reply| Command::Peers { reply }).await
    }

    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::Listening { reply }).await
    }

    /// Announces that we hold `root` (a dataset manifest root).
    pub async fn provide(&self, root: Cid) -> Result<()> {
        self.tx
            .send(Command::Provide { root })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Providers of `root` found on the DHT within `timeout`.
    pub async fn find_providers(&self, root: Cid, timeout: Duration) -> Result<HashSet<PeerId>> {
        match tokio::time::timeout(timeout, self.call(|reply| Command::FindProviders { root, reply })).await {
            Ok(r) => r,
            Err(_) => Ok(HashSet::new()),
        }
    }

    /// Stops announcing `root` (a mirror this daemon dropped).
    pub async fn stop_providing(&self, root: Cid) -> Result<()> {
        self.tx
            .send(Command::StopProviding { root })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Stores a signed name record here and puts it on the DHT (best
    /// effort: the peers closest to its key keep it).
    pub async fn put_name(&self, signed: Vec<u8>) -> Result<()> {
        self.tx
            .send(Command::PutName { signed })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// The name records found under `key` (this node's and its peers'),
    /// unverified beyond what was checked when they were stored: callers
    /// verify and pick the newest. Waits at most `timeout`.
    pub async fn get_name(&self, key: RecordKey, timeout: Duration) -> Result<Vec<Vec<u8>>> {
        match tokio::time::timeout(timeout, self.call(|reply| Command::GetName { key, reply })).await {
            Ok(r) => r,
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Subscribes to (or, with false, leaves) a name's gossip topic.
    pub async fn subscribe(&self, topic: String, on: bool) -> Result<()> {
        self.tx
            .send(Command::Subscribe { topic, on })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Publishes bytes on a gossip topic (best effort).
    pub async fn publish_to(&self, topic: String, data: Vec<u8>) -> Result<()> {
        self.tx
            .send(Command::PublishTo { topic, data })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Publishes a popularity report on the gossip topic. Best effort: with
    /// no subscribed peer yet the message is dropped (logged at debug).
    pub async fn publish(&self, data: Vec<u8>) -> Result<()> {
        self.tx
            .send(Command::Publish { data })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Whether `peer` can be reached now: connected already, or a dial to
    /// its known addresses completes (identify included) within `timeout`.
    /// A provider record outlives the daemon that wrote it; this tells a
    /// live provider from a stale record.
    pub async fn reachable(&self, peer: PeerId, timeout: Duration) -> bool {
        if peer == self.peer_id {
            return true;
        }
        matches!(
            tokio::time::timeout(timeout, self.call(|reply| Command::DialPeer { peer, reply })).await,
            Ok(Ok(Ok(_)))
        )
    }

    /// Asks `peer` for blocks of dataset `root`. The answer is unverified.
    pub async fn request(&self, peer: PeerId, root: Option<Cid>, cids: Vec<Cid>) -> Result<BlockResponse> {
        let secs = self.request_timeout.as_secs();
        match tokio::time::timeout(
            self.request_timeout + Duration::from_secs(1),
            self.call(|reply| Command::Request {
                peer,
                root,
                cids,
                reply,
            }),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => Err(Error::Timeout { peer, secs }),
        }
    }

    /// Sends a compute request; the answer is bounded in size and time.
    pub async fn compute(&self, peer: PeerId, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        match tokio::time::timeout(timeout, self.call(|reply| Command::Compute { peer, body, reply })).await {
            Ok(r) => r?,
            Err(_) => Err(Error::Timeout {
                peer,
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Disconnects and refuses `peer` from now on (it lied to us).
    pub async fn ban(&self, peer: PeerId) -> Result<()> {
        self.stats.peers_banned.fetch_add(1, Ordering::Relaxed);
        self.tx.send(Command::Ban { peer }).await.map_err(|_| Error::Stopped)
    }

    pub async fn is_connected(&self, peer: PeerId) -> Result<bool> {
        self.call(|reply| Command::IsConnected { peer, reply }).await
    }
}

/// Answers the caller waiting on outbound request `id` (either protocol).
fn complete<T>(
    pending: &mut HashMap<OutboundRequestId, oneshot::Sender<Result<T>>>,
    id: OutboundRequestId,
    result: Result<T>,
) {
    if let Some(reply) = pending.remove(&id) {
        let _ = reply.send(result);
    }
}

fn request_failed(peer: PeerId, error: request_response::OutboundFailure) -> Error {
    Error::Request {
        peer,
        reason: error.to_string(),
    }
}

/// A DHT lookup of a name: the records found so far, and the reply.
type NameLookup = (Vec<Vec<u8>>, oneshot::Sender<Vec<Vec<u8>>>);

/// A `connect` waiting for its outcome: the address dialled and the reply.
type DialWaiter = (Multiaddr, oneshot::Sender<Result<PeerId>>);

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    stats: Arc<NetStats>,
    /// Remote addresses of established connections, for `peers`.
    peer_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    inbound: Inbound,
    owed: Owed,
    provided: HashSet<Cid>,
    sweeper: crate::sweep::Sweeper,
    provider_store: Option<std::path::PathBuf>,
    record_ttl: Duration,
    next_upkeep: Instant,
    bootstrap: Vec<Multiaddr>,
    names_fn: Option<NameFn>,
    gossip_fn: Option<GossipFn>,
    catalogue_fn: Option<CatalogueFn>,
    topic: IdentTopic,
    catalogue_topic: IdentTopic,
    /// Taken by [`EventLoop::run`] to start the bitswap server.
    bitswap: Option<(libp2p_stream::Control, Arc<crate::bitswap::client::WantTable>)>,
}

/// Peers' requests being served: the handlers, their bounds (in all and
/// per peer), and the channels their answers come back on.
struct Inbound {
    serve: ServeFn,
    compute: ComputeFn,
    blocks_inflight: usize,
    per_peer: HashMap<PeerId, usize>,
    compute_inflight: usize,
    served_tx: mpsc::Sender<(PeerId, ResponseChannel<BlockResponse>, BlockResponse)>,
    served_rx: mpsc::Receiver<(PeerId, ResponseChannel<BlockResponse>, BlockResponse)>,
    computed_tx: mpsc::Sender<(ResponseChannel<Vec<u8>>, Vec<u8>)>,
    computed_rx: mpsc::Receiver<(ResponseChannel<Vec<u8>>, Vec<u8>)>,
}

/// Answers owed to this node's clients, by the request, connection or
/// query they wait on.
#[derive(Default)]
struct Owed {
    requests: HashMap<OutboundRequestId, oneshot::Sender<Result<BlockResponse>>>,
    compute: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>>>>,
    dials: HashMap<ConnectionId, DialWaiter>,
    /// Dials whose connection is up, waiting for the peer's identify: only
    /// a peer that runs protocols with us (swarm key, allow-list passed on
    /// both sides) counts as connected.
    identify: HashMap<PeerId, Vec<DialWaiter>>,
    providers: HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<HashSet<PeerId>>)>,
    names: HashMap<QueryId, NameLookup>,
}

fn build_swarm(cfg: &NetConfig) -> Result<Swarm<Behaviour>> {
    let psk = cfg.swarm.swarm_key;
    let allow = cfg.swarm.allow_peers.clone();
    let request_timeout = cfg.swarm.request_timeout;
    let max_conns = cfg.swarm.max_connections;
    let reprovide = cfg.swarm.reprovide_interval;
    let (max_provided, max_remote) = (cfg.swarm.max_provided, cfg.swarm.max_remote_provider_records);
    let heartbeat = cfg.gossip_heartbeat;
    let provider_store = cfg.swarm.provider_store.clone();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.swarm.keypair.clone())
        .with_tokio()
        .with_other_transport(
            |key| -> std::result::Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
                // pnet runs before everything else on the raw TCP stream: a peer
                // without the swarm key cannot even negotiate a protocol.
                let base = match psk {
                    Some(psk) => {
                        either::Either::Left(tcp.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)))
                    }
                    None => either::Either::Right(tcp),
                };
                Ok(base
                    .upgrade(Version::V1Lazy)
                    .authenticate(crate::tls::Security::new(key)?)
                    .multiplex(muxer())
                    .timeout(Duration::from_secs(20)))
            },
        )
        .map_err(|e| Error::Config(e.to_string()))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            // Signed messages (the author is authenticated, so per-author
            // limits hold), validated by us before they are forwarded, and
            // bounded in size and number per RPC.
            let gcfg = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(crate::gossip::MAX_REPORT_BYTES.max(crate::catalogue::MAX_ENTRY_BYTES) + 1024)
                .max_messages_per_rpc(Some(16))
                .max_ihave_length(256)
                .heartbeat_interval(heartbeat)
                // Reports are small and tolerate a second's delay: a thinner
                // mesh (3, not 6) and lazy gossip to 3 peers cut the
                // duplicate copies each report makes (docs/benchmarks.md).
                .mesh_n(3)
                .mesh_n_low(2)
                .mesh_n_high(5)
                .mesh_outbound_min(1)
                .gossip_lazy(3)
                // Lazy gossip (IHAVE) to those 3 peers only, not a quarter
                // of all peers: with the default 0.25, every heartbeat sent
                // each message id of the last three heartbeats to N/4 peers,
                // which grows with the square of the swarm (issue 29).
                .gossip_factor(0.0)
                // A publisher sends to its mesh, not to every subscribed
                // peer (flooding made each report N copies at once).
                .flood_publish(false)
                // 16-byte ids (blake3 of author and sequence number) in
                // IHAVE/IWANT, not the 70-character default.
                .message_id_fn(message_id)
                .build()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let gossip = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gcfg)
                .map_err(std::io::Error::other)?;
            let mut kcfg = kad::Config::new(KAD_PROTOCOL);
            kcfg.set_query_timeout(Duration::from_secs(30));
            // This node's records are provided by region sweeps
            // (crate::sweep), not one query per key.
            kcfg.set_provider_publication_interval(None);
            kcfg.set_provider_record_ttl(Some(reprovide * 4));
            // Value records (name records only) are checked before they
            // are stored: see `EventLoop::store_name`.
            kcfg.set_record_filtering(kad::StoreInserts::FilterBoth);
            let mut store = ProviderStore::new(peer_id, max_provided, max_remote);
            if let Some(path) = &provider_store {
                match std::fs::read(path) {
                    Ok(bytes) => match store.load_remote(&bytes) {
                        Ok(n) => tracing::info!(records = n, path = %path.display(), "loaded peers' provider records"),
                        Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged provider record file"),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot read the provider record file"),
                }
            }
            let mut kad = kad::Behaviour::with_config(peer_id, store, kcfg);
            // Answer DHT queries even before an external address is known
            // (institution daemons on private networks, loopback tests).
            kad.set_mode(Some(kad::Mode::Server));
            let allowed = allow.clone().map(|peers| {
                let mut b = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
                for p in peers {
                    b.allow_peer(p);
                }
                b
            });
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(max_conns))
                        .with_max_established_per_peer(Some(2))
                        .with_max_pending_incoming(Some(64)),
                ),
                allowed: allowed.into(),
                banned: Default::default(),
                identify: identify::Behaviour::new(identify::Config::new("/shoal/id/1.0.0".into(), key.public())),
                ping: ping::Behaviour::default(),
                kad,
                blocks: request_response::Behaviour::new(
                    [(PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(request_timeout)
                        .with_max_concurrent_streams(MAX_INBOUND_INFLIGHT * 2),
                ),
                compute: request_response::Behaviour::new(
                    [(COMPUTE_PROTOCOL, ProtocolSupport::Full)],
                    // Computing a batch of chunks takes longer than a block
                    // fetch; the caller's own deadline is the tighter bound.
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(300))
                        .with_max_concurrent_streams(MAX_COMPUTE_INFLIGHT * 4),
                ),
                provide: request_response::Behaviour::new(
                    [(crate::sweep::PROVIDE_PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(30))
                        .with_max_concurrent_streams(MAX_PROVIDE_STREAMS),
                ),
                gossip,
                streams: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| Error::Config(e.to_string()))?
        // A stream's protocol is proposed together with its first request
        // (multistream-select V1Lazy) instead of after a negotiation round
        // trip: every request is one round trip, not two. Every protocol we
        // open is one the peer's own shoal supports; a peer that does not
        // answers the stream with an error, as a refusal would.
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(300))
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    Ok(swarm)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EventLoop {
    /// Builds the swarm and starts listening. Returns the client and the loop
    /// to spawn.
    pub fn new(cfg: NetConfig) -> Result<(Client, EventLoop)> {
        let mut swarm = build_swarm(&cfg)?;
        for addr in &cfg.swarm.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Config(format!("listen on {addr}: {e}")))?;
        }
        let topic = IdentTopic::new(crate::gossip::TOPIC);
        if cfg.gossip.is_some() {
            swarm
                .behaviour_mut()
                .gossip
                .subscribe(&topic)
                .map_err(|e| Error::Config(format!("subscribing to {}: {e}", crate::gossip::TOPIC)))?;
        }
        let catalogue_topic = IdentTopic::new(crate::catalogue::TOPIC);
        if cfg.catalogue.is_some() {
            swarm
                .behaviour_mut()
                .gossip
                .subscribe(&catalogue_topic)
                .map_err(|e| Error::Config(format!("subscribing to {}: {e}", crate::catalogue::TOPIC)))?;
        }
        let wants = Arc::new(crate::bitswap::client::WantTable::default());
        let bitswap = Some((swarm.behaviour().streams.new_control(), wants.clone()));
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (served_tx, served_rx) = mpsc::channel(MAX_INBOUND_INFLIGHT);
        let (computed_tx, computed_rx) = mpsc::channel(MAX_COMPUTE_INFLIGHT);
        let stats = Arc::new(NetStats::default());
        let client = Client {
            tx,
            peer_id: *swarm.local_peer_id(),
            request_timeout: cfg.swarm.request_timeout,
            stats: stats.clone(),
            bitswap: crate::bitswap::Bitswap::new(swarm.behaviour().streams.new_control(), wants, stats.clone()),
        };
        Ok((
            client,
            EventLoop {
                swarm,
                commands: rx,
                stats,
                peer_addrs: HashMap::new(),
                inbound: Inbound {
                    serve: cfg.serve,
                    compute: cfg.compute,
                    blocks_inflight: 0,
                    per_peer: HashMap::new(),
                    compute_inflight: 0,
                    served_tx,
                    served_rx,
                    computed_tx,
                    computed_rx,
                },
                owed: Owed::default(),
                provided: HashSet::new(),
                sweeper: crate::sweep::Sweeper::new(cfg.swarm.reprovide_interval),
                provider_store: cfg.swarm.provider_store.clone(),
                record_ttl: cfg.swarm.reprovide_interval * 4,
                next_upkeep: Instant::now() + PROVIDER_UPKEEP,
                bootstrap: cfg.swarm.bootstrap,
                names_fn: cfg.names,
                gossip_fn: cfg.gossip,
                catalogue_fn: cfg.catalogue,
                topic,
                catalogue_topic,
                bitswap,
            },
        ))
    }

    /// Runs until every [`Client`] is dropped.
    pub async fn run(mut self) {
        // The bitswap server lives as long as this loop (aborted with it).
        let _bitswap = self.bitswap.take().map(|(control, wants)| {
            let task = tokio::spawn(crate::bitswap::serve(
                control,
                self.inbound.serve.clone(),
                self.stats.clone(),
                wants,
            ));
            AbortOnDrop(task)
        });
        for addr in std::mem::take(&mut self.bootstrap) {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        loop {
            let wake = self.sweeper.wake().min(self.next_upkeep);
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => {
                        self.save_providers(false).await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => self.on_timer().await,
                Some((peer, channel, resp)) = self.inbound.served_rx.recv() => {
                    let w = request_weight(resp.answers.len());
                    self.inbound.blocks_inflight -= w;
                    if let Some(n) = self.inbound.per_peer.get_mut(&peer) {
                        *n -= w;
                        if *n == 0 {
                            self.inbound.per_peer.remove(&peer);
                        }
                    }
                    let _ = self.swarm.behaviour_mut().blocks.send_response(channel, resp);
                }
                Some((channel, resp)) = self.inbound.computed_rx.recv() => {
                    self.inbound.compute_inflight -= 1;
                    let _ = self.swarm.behaviour_mut().compute.send_response(channel, resp);
                }
            }
        }
    }

    /// Timers: the next sweep, and the provider store's upkeep.
    async fn on_timer(&mut self) {
        let now = Instant::now();
        if now >= self.next_upkeep {
            self.next_upkeep = now + PROVIDER_UPKEEP;
            let store = self.swarm.behaviour_mut().kad.store_mut();
            let gone = store.purge_expired(now);
            let held = store.remote_records() as u64;
            self.stats.provider_records_held.store(held, Ordering::Relaxed);
            if gone > 0 {
                tracing::debug!(records = gone, "dropped expired provider records of peers");
            }
            self.save_providers(true).await;
        }
        if let Some(keys) = self.sweeper.due(now, &self.provided) {
            self.start_sweep(keys);
        }
    }

    /// Saves peers' provider records (if a file is configured): written
    /// beside and renamed over, on the blocking pool; `background` does
    /// not wait for the write.
    async fn save_providers(&mut self, background: bool) {
        let Some(path) = self.provider_store.clone() else {
            return;
        };
        let bytes = self.swarm.behaviour_mut().kad.store_mut().save_remote();
        let write = move || {
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
                tracing::warn!(path = %path.display(), error = %e, "cannot save peers' provider records");
            }
        };
        let task = tokio::task::spawn_blocking(write);
        if !background {
            let _ = task.await;
        }
    }

    /// Starts a sweep over `keys`: a lookup per keyspace region.
    fn start_sweep(&mut self, keys: Vec<RecordKey>) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let peers: usize = kad.kbuckets().map(|b| b.num_entries()).sum();
        let n = keys.len();
        if peers == 0 {
            // Nobody to tell yet: held here (this node answers for its
            // own records); a peer's arrival sweeps again.
            self.stats.provides_done.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        let regions = crate::sweep::by_region(keys, crate::sweep::region_bits(peers));
        let mut lookups = HashMap::new();
        for (_, keys) in regions {
            let id = kad.get_closest_peers(keys[0].to_vec());
            lookups.insert(id, keys);
        }
        self.stats
            .provide_lookups
            .fetch_add(lookups.len() as u64, Ordering::Relaxed);
        tracing::debug!(keys = n, regions = lookups.len(), peers, "provide sweep started");
        self.sweeper.start(lookups, n);
    }

    /// A sweep's lookup found `peers` near region `id`: each key of it
    /// goes to its closest, in batches.
    fn on_sweep_lookup(&mut self, id: QueryId, peers: Vec<PeerId>, requests: u32) {
        let Some(keys) = self.sweeper.lookup_done(id) else {
            return;
        };
        self.stats
            .provide_messages
            .fetch_add(requests as u64, Ordering::Relaxed);
        let me = *self.swarm.local_peer_id();
        let peers: Vec<PeerId> = peers.into_iter().filter(|p| *p != me).collect();
        let addrs: Vec<Multiaddr> = self
            .swarm
            .external_addresses()
            .chain(self.swarm.listeners())
            .take(crate::sweep::MAX_ADDRS)
            .cloned()
            .collect();
        for (peer, keys) in crate::sweep::assign(&keys, &peers) {
            for chunk in keys.chunks(crate::sweep::MAX_KEYS_PER_BATCH) {
                let batch = crate::sweep::ProvideBatch {
                    addrs: addrs.clone(),
                    keys: chunk.to_vec(),
                };
                let id = self.swarm.behaviour_mut().provide.send_request(&peer, batch);
                self.sweeper.batch_sent(id);
            }
        }
        self.sweep_progress();
    }

    /// Counts a finished sweep; a sweep waiting on it starts.
    fn sweep_progress(&mut self) {
        if let Some((keys, took)) = self.sweeper.finish_if_done() {
            self.stats.provides_done.fetch_add(keys as u64, Ordering::Relaxed);
            tracing::debug!(keys, secs = took.as_secs_f64(), "provide sweep finished");
        }
    }

    fn on_provide(&mut self, ev: request_response::Event<crate::sweep::ProvideBatch, u32>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let expires = Instant::now() + self.record_ttl;
                    let store = self.swarm.behaviour_mut().kad.store_mut();
                    let mut stored = 0u32;
                    for k in request.keys {
                        stored += store.add_remote(k, peer, &request.addrs, expires) as u32;
                    }
                    let held = store.remote_records();
                    self.stats
                        .provider_records_stored
                        .fetch_add(stored as u64, Ordering::Relaxed);
                    self.stats.provider_records_held.store(held as u64, Ordering::Relaxed);
                    let _ = self.swarm.behaviour_mut().provide.send_response(channel, stored);
                }
                request_response::Message::Response { request_id, .. } => {
                    self.stats.provide_messages.fetch_add(1, Ordering::Relaxed);
                    self.sweeper.batch_done(request_id);
                    self.sweep_progress();
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.stats.provide_messages.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %error, "a provider batch was not delivered");
                self.sweeper.batch_done(request_id);
                self.sweep_progress();
            }
            _ => {}
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { addr, reply } => {
                let known = addr.iter().find_map(|p| match p {
                    libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                    _ => None,
                });
                if let Some(id) = known.filter(|id| self.swarm.is_connected(id)) {
                    let _ = reply.send(Ok(id));
                    return;
                }
                let opts = DialOpts::from(addr.clone());
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.owed.dials.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dial {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Peers { reply } => {
                let mut out: HashMap<PeerId, Vec<String>> = HashMap::new();
                for p in self.swarm.connected_peers() {
                    let addrs = self
                        .peer_addrs
                        .get(p)
                        .map(|a| a.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default();
                    out.insert(*p, addrs);
                }
                let _ = reply.send(
                    out.into_iter()
                        .map(|(p, addrs)| PeerInfo {
                            peer_id: p.to_string(),
                            addrs,
                        })
                        .collect(),
                );
            }
            Command::Listening { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Provide { root } => {
                if self.provided.insert(root) {
                    let key = RecordKey::new(&root.to_bytes());
                    let me = *self.swarm.local_peer_id();
                    // Held here at once (this node answers for it); its
                    // peers hear of it in the next sweep.
                    use libp2p::kad::store::RecordStore;
                    let stored = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .add_provider(kad::ProviderRecord::new(key.clone(), me, Vec::new()));
                    if let Err(e) = stored {
                        self.provided.remove(&root);
                        self.stats.provide_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%root, error = ?e, "cannot record provider entry");
                        return;
                    }
                    self.sweeper.add(key, Instant::now() + SWEEP_DEBOUNCE);
                }
            }
            Command::FindProviders { root, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(RecordKey::new(&root.to_bytes()));
                self.owed.providers.insert(id, (HashSet::new(), reply));
            }
            Command::Request {
                peer,
                root,
                cids,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .blocks
                    .send_request(&peer, BlockRequest { root, cids });
                self.owed.requests.insert(id, reply);
            }
            Command::Ban { peer } => {
                tracing::warn!(%peer, "banning peer: it sent bytes that do not match their CID");
                self.swarm.behaviour_mut().banned.block_peer(peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Compute { peer, body, reply } => {
                let id = self.swarm.behaviour_mut().compute.send_request(&peer, body);
                self.owed.compute.insert(id, reply);
            }
            Command::IsConnected { peer, reply } => {
                let _ = reply.send(self.swarm.is_connected(&peer));
            }
            Command::StopProviding { root } => {
                // Peers' copies of the record expire with their TTL.
                self.provided.remove(&root);
                let key = RecordKey::new(&root.to_bytes());
                self.sweeper.forget(&key);
                self.swarm.behaviour_mut().kad.stop_providing(&key);
            }
            Command::Publish { data } => {
                let topic = self.topic.clone();
                if let Err(e) = self.swarm.behaviour_mut().gossip.publish(topic, data) {
                    tracing::debug!(error = %e, "popularity report not published");
                }
            }
            Command::PutName { signed } => {
                let Ok(r) = crate::names::verify(&signed) else {
                    tracing::warn!("refusing to publish an invalid name record");
                    return;
                };
                let key = crate::names::dht_key(&r.publisher(), &r.name);
                let record = kad::Record::new(key, signed);
                if let Err(e) = self.swarm.behaviour_mut().kad.put_record(record, kad::Quorum::One) {
                    tracing::warn!(error = ?e, "cannot store a name record");
                }
            }
            Command::GetName { key, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.owed.names.insert(id, (Vec::new(), reply));
            }
            Command::Subscribe { topic, on } => {
                let t = IdentTopic::new(topic);
                let g = &mut self.swarm.behaviour_mut().gossip;
                let r = if on {
                    g.subscribe(&t).map(|_| ()).map_err(|e| e.to_string())
                } else {
                    g.unsubscribe(&t);
                    Ok(())
                };
                if let Err(e) = r {
                    tracing::warn!(topic = %t, error = %e, "cannot subscribe");
                }
            }
            Command::PublishTo { topic, data } => {
                if let Err(e) = self.swarm.behaviour_mut().gossip.publish(IdentTopic::new(topic), data) {
                    tracing::debug!(error = %e, "name announcement not sent");
                }
            }
            Command::DialPeer { peer, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                // Dial even while another dial is pending: that one may be a
                // stale attempt; we want this check's own outcome.
                let opts = DialOpts::peer_id(peer)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::Disconnected)
                    .build();
                let id = opts.connection_id();
                let addr = Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(peer));
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.owed.dials.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dial {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                tracing::debug!(%peer_id, "connected");
                let addrs = self.peer_addrs.entry(peer_id).or_default();
                if !addrs.contains(endpoint.get_remote_address()) {
                    addrs.push(endpoint.get_remote_address().clone());
                }
                if endpoint.is_dialer() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, endpoint.get_remote_address().clone());
                }
                if let Some(waiter) = self.owed.dials.remove(&connection_id) {
                    self.owed.identify.entry(peer_id).or_default().push(waiter);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                peer_id,
            } => {
                tracing::debug!(?peer_id, %error, "dial failed");
                if let Some((addr, reply)) = self.owed.dials.remove(&connection_id) {
                    let _ = reply.send(Err(Error::Dial {
                        addr: addr.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                self.peer_addrs.remove(&peer_id);
                for (addr, reply) in self.owed.identify.remove(&peer_id).unwrap_or_default() {
                    let why = cause
                        .as_ref()
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "closed by the peer".into());
                    let _ = reply.send(Err(Error::Dial {
                        addr: addr.to_string(),
                        reason: format!("the peer closed the connection ({why}); it may not allow this peer (allow_peers) or use another swarm key"),
                    }));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for addr in info.listen_addrs {
                    kad.add_address(&peer_id, addr);
                }
                let waiters = self.owed.identify.remove(&peer_id).unwrap_or_default();
                if !waiters.is_empty() {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                for (_, reply) in waiters {
                    let _ = reply.send(Ok(peer_id));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Blocks(ev)) => self.on_blocks(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Compute(ev)) => self.on_compute(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Provide(ev)) => self.on_provide(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed { topic, .. }))
                if topic == self.catalogue_topic.hash() =>
            {
                self.stats.catalogue_joins.fetch_add(1, Ordering::Relaxed);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed { topic, .. }))
                if topic == self.topic.hash() =>
            {
                self.stats.popularity_joins.fetch_add(1, Ordering::Relaxed);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let names = message.topic.as_str().starts_with(crate::names::TOPIC_PREFIX);
                let verdict = match (&self.gossip_fn, message.source) {
                    _ if names => self.judge_name(message.source, message.topic.as_str(), &message.data),
                    (_, Some(author)) if message.topic == self.catalogue_topic.hash() => {
                        match self.catalogue_fn.as_ref().map(|f| f(&author, &message.data)) {
                            Some(Verdict::Accept) => MessageAcceptance::Accept,
                            Some(Verdict::Ignore) => MessageAcceptance::Ignore,
                            _ => MessageAcceptance::Reject,
                        }
                    }
                    (Some(f), Some(author)) if message.topic == self.topic.hash() => {
                        if f(&author, &message.data) {
                            MessageAcceptance::Accept
                        } else {
                            MessageAcceptance::Reject
                        }
                    }
                    _ => MessageAcceptance::Reject,
                };
                self.swarm.behaviour_mut().gossip.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    verdict,
                );
            }
            _ => {}
        }
    }

    /// A name record heard on topic `topic`: checked by the name policy
    /// (`names::check_heard`), then judged by the node (newer, known, older).
    fn judge_name(&mut self, author: Option<PeerId>, topic: &str, data: &[u8]) -> MessageAcceptance {
        let verdict = match crate::names::check_heard(topic, data) {
            Ok(r) => {
                let v = match (&self.names_fn, author) {
                    (Some(f), Some(a)) => f(&a, &r, data),
                    _ => Verdict::Reject,
                };
                if v == Verdict::Accept {
                    // Kept here too, so this node answers DHT lookups for it.
                    self.store_name(kad::Record::new(
                        crate::names::dht_key(&r.publisher(), &r.name),
                        data.to_vec(),
                    ));
                }
                v
            }
            Err(why) => {
                tracing::info!(?author, topic, error = %why, "dropping a name record");
                Verdict::Reject
            }
        };
        match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Ignore => MessageAcceptance::Ignore,
            Verdict::Reject => {
                self.stats.names_rejected.fetch_add(1, Ordering::Relaxed);
                MessageAcceptance::Reject
            }
        }
    }

    /// Stores a name record a peer put (or this node accepted over gossip)
    /// if the name policy admits it (`names::admit`); anything else is
    /// refused and counted, unless it is the record held.
    fn store_name(&mut self, record: kad::Record) -> bool {
        use libp2p::kad::store::RecordStore;
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let admitted = crate::names::admit(&record, store.get(&record.key).as_deref());
        match admitted {
            Ok(false) => true,
            Ok(true) => {
                let record = kad::Record {
                    publisher: None,
                    ..record
                };
                if let Err(e) = store.put(record) {
                    tracing::warn!(error = ?e, "cannot store a name record");
                    return false;
                }
                true
            }
            Err(why) => {
                tracing::info!(error = %why, "refusing a DHT record");
                self.stats.names_rejected.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::InboundRequest {
                request: kad::InboundRequest::PutRecord {
                    record: Some(record), ..
                },
            } => {
                self.store_name(record);
            }
            // Record filtering (on for name records) hands provider records
            // here too: they go to the provider store as before (its own
            // bounds apply).
            kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { record: Some(record) },
            } => {
                use libp2p::kad::store::RecordStore;
                let store = self.swarm.behaviour_mut().kad.store_mut();
                match store.add_provider(record) {
                    Ok(()) => {
                        self.stats.provider_records_stored.fetch_add(1, Ordering::Relaxed);
                        let held = store.remote_records() as u64;
                        self.stats.provider_records_held.store(held, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(error = ?e, "a peer's provider record was not stored"),
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => match result {
                QueryResult::GetRecord(res) => {
                    let finished = match res {
                        Ok(kad::GetRecordOk::FoundRecord(r)) => {
                            if let Some((acc, _)) = self.owed.names.get_mut(&id) {
                                if acc.len() < 32 {
                                    acc.push(r.record.value);
                                }
                            }
                            step.last
                        }
                        _ => true,
                    };
                    if finished {
                        if let Some((acc, reply)) = self.owed.names.remove(&id) {
                            let _ = reply.send(acc);
                        }
                    }
                }
                QueryResult::GetProviders(res) => {
                    let finished = match res {
                        Ok(GetProvidersOk::FoundProviders { providers, .. }) => {
                            if let Some((acc, _)) = self.owed.providers.get_mut(&id) {
                                acc.extend(providers);
                            }
                            step.last
                        }
                        _ => true,
                    };
                    if finished {
                        if let Some((mut acc, reply)) = self.owed.providers.remove(&id) {
                            acc.remove(self.swarm.local_peer_id());
                            let _ = reply.send(acc);
                        }
                    }
                }
                QueryResult::GetClosestPeers(res) => {
                    let peers = match res {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    let peers = peers.into_iter().map(|p| p.peer_id).collect();
                    self.on_sweep_lookup(id, peers, stats.num_requests());
                }
                _ => {}
            },
            // A peer joined: some of our keys may belong on it now. A
            // whole sweep soon, spaced by the number of keys (see
            // `Sweeper::peer_joined`), so a dataset added before anyone
            // connected becomes findable in seconds and a churning swarm
            // cannot make a large holder re-announce everything
            // continuously.
            kad::Event::RoutingUpdated { is_new_peer: true, .. } if !self.provided.is_empty() => {
                self.sweeper.peer_joined(Instant::now(), self.provided.len());
            }
            _ => {}
        }
    }

    fn on_compute(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    if self.inbound.compute_inflight >= MAX_COMPUTE_INFLIGHT {
                        // Empty answer = busy: the requester reassigns.
                        let _ = self.swarm.behaviour_mut().compute.send_response(channel, Vec::new());
                        return;
                    }
                    self.inbound.compute_inflight += 1;
                    let (f, tx) = (self.inbound.compute.clone(), self.inbound.computed_tx.clone());
                    let stats = self.stats.clone();
                    tokio::task::spawn_blocking(move || {
                        // Whatever the handler does, the answer (and with it
                        // the slot) goes back: a panic answers "busy", so the
                        // requester reassigns the work.
                        let resp = caught(&stats, "compute", || f(&peer, request)).unwrap_or_default();
                        let _ = tx.blocking_send((channel, resp));
                    });
                }
                request_response::Message::Response { request_id, response } => {
                    complete(&mut self.owed.compute, request_id, Ok(response));
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => complete(&mut self.owed.compute, request_id, Err(request_failed(peer, error))),
            _ => {}
        }
    }

    fn on_blocks(&mut self, ev: request_response::Event<BlockRequest, BlockResponse>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let mine = self.inbound.per_peer.get(&peer).copied().unwrap_or(0);
                    let w = request_weight(request.cids.len().min(MAX_CIDS_PER_REQUEST));
                    if self.inbound.blocks_inflight + w > MAX_INBOUND_INFLIGHT || mine + w > MAX_INBOUND_PER_PEER {
                        self.stats.skipped_requests.fetch_add(1, Ordering::Relaxed);
                        let answers = request.cids.into_iter().map(|c| (c, Answer::Skipped)).collect();
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .blocks
                            .send_response(channel, BlockResponse { answers });
                        return;
                    }
                    self.inbound.blocks_inflight += w;
                    *self.inbound.per_peer.entry(peer).or_default() += w;
                    let serve = self.inbound.serve.clone();
                    let tx = self.inbound.served_tx.clone();
                    let stats = self.stats.clone();
                    tokio::task::spawn_blocking(move || {
                        let cids: Vec<Cid> = request.cids.into_iter().take(MAX_CIDS_PER_REQUEST).collect();
                        // A panic answers "don't have" for every CID.
                        let found = caught(&stats, "block serve", || serve(&peer, request.root.as_ref(), &cids))
                            .unwrap_or_else(|| vec![None; cids.len()]);
                        let mut total = 0;
                        let answers = cids
                            .into_iter()
                            .zip(found)
                            .map(|(c, d)| match d {
                                None => (c, Answer::DontHave),
                                Some(d) if total + d.len() > MAX_RESPONSE_BYTES => (c, Answer::Skipped),
                                Some(d) => {
                                    total += d.len();
                                    stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
                                    stats.bytes_sent.fetch_add(d.len() as u64, Ordering::Relaxed);
                                    (c, Answer::Data(d))
                                }
                            })
                            .collect();
                        let _ = tx.blocking_send((peer, channel, BlockResponse { answers }));
                    });
                }
                request_response::Message::Response { request_id, response } => {
                    complete(&mut self.owed.requests, request_id, Ok(response));
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => complete(&mut self.owed.requests, request_id, Err(request_failed(peer, error))),
            _ => {}
        }
    }
}
