//! The security upgrade of peer connections: libp2p TLS 1.3 (`/tls/1.0.0`,
//! the libp2p TLS spec) preferred, Noise (`/noise`) accepted for peers
//! that do not speak TLS.
//!
//! Why our own TLS upgrade and not `libp2p::tls::Config`: that config lists
//! ChaCha20-Poly1305 first, which, like Noise's only cipher, runs at
//! ~2.8 GB/s per core here, against ~11 GB/s for AES-GCM with AES-NI/VAES
//! (ring, 16 KiB records). A pin's bytes are sealed once and opened once;
//! on loopback the cipher was the largest single item in both daemons'
//! profiles (29% and 24%). Ours offers AES-128-GCM first and, as a server,
//! picks by its own order, so any libp2p TLS peer ends up on AES-GCM.
//! Certificates and their checks are the libp2p ones
//! (`libp2p::tls::certificate`: self-signed, carrying the host key's
//! signature over the certificate key); a peer's id comes from its
//! certificate and the swarm checks it against the dialled address.
//! docs/decisions/0014-tls-aes-gcm.md.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::future::Either;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::Keypair;
use libp2p::tls::certificate;
use libp2p::{noise, PeerId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CommonState, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The protocol names, in the order a dialler proposes them.
const TLS: &str = "/tls/1.0.0";
const NOISE: &str = "/noise";
/// ALPN value the libp2p TLS spec requires.
const ALPN: &[u8] = b"libp2p";

/// A secured stream: TLS or Noise, whichever the two sides agreed on.
pub(crate) type Secured<C> = Either<futures_rustls::TlsStream<C>, noise::Output<C>>;

/// TLS (AES-GCM first) or Noise; see the module docs.
#[derive(Clone)]
pub(crate) struct Security {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    noise: noise::Config,
}

impl Security {
    pub(crate) fn new(key: &Keypair) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let (cert, private) = certificate::generate(key)?;
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ];
        // rustls' `with_single_cert` would parse the certificate with
        // webpki, which refuses the libp2p extension (critical, unknown to
        // it): hand rustls the certified key directly.
        let own = Arc::new(OwnCert(Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert],
            provider.key_provider.load_private_key(private)?,
        ))));
        let provider = Arc::new(provider);
        let versions = &[&rustls::version::TLS13];
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(Arc::new(PeerCert))
            .with_cert_resolver(own.clone());
        // Our order, not the client's: AES-GCM even with a client that
        // lists ChaCha20 first (libp2p's own TLS config does).
        server.ignore_client_order = true;
        server.alpn_protocols = vec![ALPN.to_vec()];
        // No session resumption: every peer has the same (absent) server
        // name, so a client would offer one peer's ticket to the next, and
        // each connection is long-lived anyway. Every handshake checks the
        // peer's certificate.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerCert))
            .with_client_cert_resolver(own);
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            noise: noise::Config::new(key)?,
        })
    }
}

impl UpgradeInfo for Security {
    type Info = &'static str;
    type InfoIter = [&'static str; 2];

    fn protocol_info(&self) -> Self::InfoIter {
        [TLS, NOISE]
    }
}

impl<C> InboundConnectionUpgrade<C> for Security
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Secured<C>);
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, info: &'static str) -> Self::Future {
        async move {
            if info == NOISE {
                let (peer, s) = self
                    .noise
                    .upgrade_inbound(socket, info)
                    .await
                    .map_err(std::io::Error::other)?;
                return Ok((peer, Either::Right(s)));
            }
            let s = futures_rustls::TlsAcceptor::from(self.server).accept(socket).await?;
            let peer = peer_of(s.get_ref().1)?;
            Ok((peer, Either::Left(s.into())))
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Security
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Secured<C>);
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, info: &'static str) -> Self::Future {
        async move {
            if info == NOISE {
                let (peer, s) = self
                    .noise
                    .upgrade_outbound(socket, info)
                    .await
                    .map_err(std::io::Error::other)?;
                return Ok((peer, Either::Right(s)));
            }
            // The spec: no server name (SNI) is sent.
            let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
            let s = futures_rustls::TlsConnector::from(self.client)
                .connect(name, socket)
                .await?;
            let peer = peer_of(s.get_ref().1)?;
            Ok((peer, Either::Left(s.into())))
        }
        .boxed()
    }
}

/// This node's certificate, as server and as client.
#[derive(Debug)]
struct OwnCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for OwnCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The peer id in the one certificate the handshake verified.
fn peer_of(state: &CommonState) -> std::io::Result<PeerId> {
    match state.peer_certificates() {
        Some([cert]) => Ok(certificate::parse(cert).map_err(std::io::Error::other)?.peer_id()),
        _ => Err(std::io::Error::other(
            "a libp2p TLS peer presents exactly one certificate",
        )),
    }
}

/// Accepts exactly the certificates the libp2p TLS spec defines (any peer
/// may connect; who it is comes from the certificate) and checks the
/// handshake signature with the certificate's key.
#[derive(Debug)]
struct PeerCert;

impl PeerCert {
    fn check(end: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a libp2p TLS peer presents exactly one certificate".into(),
            ));
        }
        certificate::parse(end).map(|_| ()).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(e))))
        })
    }

    fn tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let other = |e: Arc<dyn std::error::Error + Send + Sync>| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(e)))
        };
        certificate::parse(cert)
            .map_err(|e| other(Arc::new(e)))?
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(|e| other(Arc::new(e)))?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn schemes() -> Vec<SignatureScheme> {
        use SignatureScheme::*;
        vec![
            ECDSA_NISTP256_SHA256,
            ECDSA_NISTP384_SHA384,
            ED25519,
            RSA_PSS_SHA256,
            RSA_PSS_SHA384,
            RSA_PSS_SHA512,
            RSA_PKCS1_SHA256,
            RSA_PKCS1_SHA384,
            RSA_PKCS1_SHA512,
        ]
    }
}

impl ServerCertVerifier for PeerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for PeerCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use libp2p::tcp::tokio::TcpStream as Sock;
    use std::time::Duration;

    /// A connected pair of loopback sockets.
    async fn pair() -> (Sock, Sock) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = tokio::join!(tokio::net::TcpStream::connect(l.local_addr().unwrap()), l.accept());
        (Sock(a.unwrap()), Sock(b.unwrap().0))
    }

    /// Every handshake here is bounded: a hang fails the test.
    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("handshake timed out")
    }

    fn suite(s: &Secured<Sock>) -> Option<rustls::CipherSuite> {
        match s {
            Either::Left(t) => t.get_ref().1.negotiated_cipher_suite().map(|c| c.suite()),
            Either::Right(_) => None,
        }
    }

    #[tokio::test]
    async fn tls_agrees_on_aes_gcm_and_each_side_learns_the_other() {
        let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (sa, sb) = (Security::new(&ka).unwrap(), Security::new(&kb).unwrap());
        let (a, b) = pair().await;
        let server = async {
            let (peer, mut s) = sb.upgrade_inbound(b, TLS).await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.flush().await.unwrap();
            (peer, suite(&s))
        };
        let client = async {
            let (peer, mut s) = sa.upgrade_outbound(a, TLS).await.unwrap();
            s.write_all(b"hello").await.unwrap();
            s.flush().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            (peer, suite(&s), buf)
        };
        let ((server_saw, suite_b), (peer, suite_a, echoed)) = bounded(async { tokio::join!(server, client) }).await;
        assert_eq!(peer, kb.public().to_peer_id());
        assert_eq!(server_saw, ka.public().to_peer_id());
        assert_eq!(&echoed, b"hello");
        assert_eq!(suite_a, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert_eq!(suite_b, suite_a);
    }

    #[tokio::test]
    async fn every_connection_between_the_same_peers_handshakes_in_full() {
        let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (sa, sb) = (Security::new(&ka).unwrap(), Security::new(&kb).unwrap());
        for _ in 0..2 {
            let (a, b) = pair().await;
            let (inbound, outbound) = bounded(async {
                tokio::join!(sb.clone().upgrade_inbound(b, TLS), sa.clone().upgrade_outbound(a, TLS))
            })
            .await;
            let ((saw_a, si), (saw_b, so)) = (inbound.unwrap(), outbound.unwrap());
            assert_eq!((saw_a, saw_b), (ka.public().to_peer_id(), kb.public().to_peer_id()));
            for s in [&si, &so] {
                let Either::Left(t) = s else { panic!("not TLS") };
                assert_eq!(t.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Full));
            }
        }
    }

    #[tokio::test]
    async fn a_stock_libp2p_tls_client_gets_aes_gcm_too() {
        // libp2p's own TLS config lists ChaCha20 first; our server's order wins.
        let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let stock = libp2p::tls::Config::new(&ka).unwrap();
        let ours = Security::new(&kb).unwrap();
        let (a, b) = pair().await;
        let server = async {
            let (peer, s) = ours.upgrade_inbound(b, TLS).await.unwrap();
            (peer, suite(&s))
        };
        let client = async {
            let (peer, s) = stock.upgrade_outbound(a, TLS).await.unwrap();
            (peer, s.get_ref().1.negotiated_cipher_suite().map(|c| c.suite()))
        };
        let ((server_saw, server_suite), (peer, client_suite)) = bounded(async { tokio::join!(server, client) }).await;
        assert_eq!(peer, kb.public().to_peer_id());
        assert_eq!(server_saw, ka.public().to_peer_id());
        assert_eq!(server_suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert_eq!(client_suite, server_suite);
    }

    #[tokio::test]
    async fn a_noise_only_peer_still_connects() {
        let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let stock = noise::Config::new(&ka).unwrap();
        let ours = Security::new(&kb).unwrap();
        let (a, b) = pair().await;
        let server = async {
            let (peer, s) = ours.upgrade_inbound(b, NOISE).await.unwrap();
            (peer, matches!(s, Either::Right(_)))
        };
        let client = async { stock.upgrade_outbound(a, NOISE).await.unwrap().0 };
        let ((server_saw, was_noise), peer) = bounded(async { tokio::join!(server, client) }).await;
        assert_eq!(peer, kb.public().to_peer_id());
        assert_eq!(server_saw, ka.public().to_peer_id());
        assert!(was_noise);
    }

    #[tokio::test]
    async fn a_client_without_a_libp2p_certificate_is_refused() {
        // A TLS client presenting no certificate: client auth is mandatory.
        let ours = Security::new(&Keypair::generate_ed25519()).unwrap();
        let (a, b) = pair().await;
        let server = async { ours.upgrade_inbound(b, TLS).await.map(|(p, _)| p) };
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![TLS13_AES_128_GCM_SHA256];
        let mut anon = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerCert))
            .with_no_client_auth();
        anon.alpn_protocols = vec![ALPN.to_vec()];
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
        let client = async {
            let mut s = futures_rustls::TlsConnector::from(Arc::new(anon))
                .connect(name, a)
                .await?;
            // TLS 1.3: the server's verdict on our (missing) certificate
            // arrives after the client's side of the handshake completes.
            s.write_all(b"x").await?;
            s.flush().await?;
            let mut buf = [0u8; 1];
            s.read_exact(&mut buf).await
        };
        let (server, client) = bounded(async { tokio::join!(server, client) }).await;
        assert!(server.is_err(), "the server accepted a peer without a certificate");
        assert!(client.is_err());
    }
}
