//! TLS test devices: the misbehaving device of `support` (see its module doc) behind rustls,
//! with certificates the tests make themselves.
//!
//! [`Pki`] is generated once per test process with rcgen: a CA, device certificates signed by it
//! (good, expired, for the wrong name) and a self-signed one for pinning. No private key is
//! checked in. [`TlsDevice`] serves HTTP/1.1 over TLS 1.2 and/or 1.3 on 127.0.0.1 and closes the
//! way embedded devices do: with close_notify, with a bare FIN (no close_notify), with RST, or
//! after an idle time; its handshake can stall, or cost what an embedded CPU's does
//! ([`TlsOptions::handshake_delay`], [`EMBEDDED_HANDSHAKE`]). It records every request, which
//! handshakes were resumed, and above all every request byte that arrived after it sent
//! close_notify or FIN ([`TlsDevice::bytes_after_close`]): the TLS form of the incident's
//! signature.
//!
//! Design as `DeviceServer`: one blocking accept thread, one thread per connection, short socket
//! timeouts that re-check the stop flag, bounded drains, and `Drop` stopping everything within
//! about a second. The TLS connection is driven by hand (`read_tls`, `process_new_packets`,
//! `write_tls` on a blocking socket), so the handshake delay sits exactly before the server's
//! first flight, and records rustls makes can be held back (the TLS 1.3 tickets).
//!
//! What rustls 0.23 allows a server to do on an established connection: a KeyUpdate on demand
//! (`refresh_traffic_keys`, TLS 1.3 only), used by [`TlsOptions::key_update_when_idle`]. It
//! cannot send a NewSessionTicket on demand: it makes `send_tls13_tickets` of them once, when the
//! handshake completes. [`TlsOptions::tickets_when_idle`] holds those back and sends them later.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{NoServerSessionStorage, ServerConfig, ServerConnection};
use rustls::{HandshakeKind, ProtocolVersion};

use super::{Received, lock, parse_head, retryable, seq_reply};

/// How often blocked connection threads re-check the stop flag.
const TICK: Duration = Duration::from_millis(50);
/// How long we keep reading (and counting late bytes) after sending close_notify or FIN.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// A handshake not done by then is dropped (a stalled client must not pin a thread).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// What an embedded device's CPU costs a handshake: the delay before its first flight for a full
/// handshake (30 ms: an ECDHE and an ECDSA signature on a small core) and for a resumed one (5 ms).
pub const EMBEDDED_HANDSHAKE: (Duration, Duration) = (Duration::from_millis(30), Duration::from_millis(5));

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// Which certificate a [`TlsDevice`] presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cert {
    /// Signed by [`Pki::ca_der`]; subjectAltNames IP 127.0.0.1, IP ::1, DNS `device.test`.
    Good,
    /// As `Good`, but valid only from 2000-01-01 to 2001-01-01.
    Expired,
    /// Signed by the CA for DNS `other.test` only (no IP SAN).
    WrongName,
    /// Self-signed, with `Good`'s names: trusted by no CA, only by a pin.
    SelfSigned,
}

/// A device certificate and its key, as the tests need them.
pub struct DeviceCert {
    pub der: CertificateDer<'static>,
    pub pem: String,
    /// The private key, PKCS#8 DER (ECDSA P-256).
    pub key_pkcs8_der: Vec<u8>,
    /// The certificate's SubjectPublicKeyInfo, DER, as rcgen wrote it into the certificate.
    pub spki_der: Vec<u8>,
    /// SHA-256 of `spki_der`.
    pub spki_sha256: [u8; 32],
    /// `spki_sha256` in curl's `--pinnedpubkey` form: `sha256//BASE64`.
    pub pin: String,
}

/// The test PKI, generated at run time (see [`Pki::get`]).
pub struct Pki {
    /// The CA certificate (self-signed, CA:true), DER and PEM.
    pub ca_der: CertificateDer<'static>,
    pub ca_pem: String,
    pub good: DeviceCert,
    pub expired: DeviceCert,
    pub wrong_name: DeviceCert,
    pub self_signed: DeviceCert,
}

impl Pki {
    /// The process's PKI, generated on first use (five ECDSA P-256 keys, a few milliseconds).
    pub fn get() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(Pki::generate)
    }

    pub fn cert(&self, which: Cert) -> &DeviceCert {
        match which {
            Cert::Good => &self.good,
            Cert::Expired => &self.expired,
            Cert::WrongName => &self.wrong_name,
            Cert::SelfSigned => &self.self_signed,
        }
    }

    /// A root store holding only the test CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("test CA is a valid trust anchor");
        roots
    }

    fn generate() -> Pki {
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("finwatch test CA (generated by the tests)");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        ca_params.not_before = date_time_ymd(1999, 1, 1);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let device_names = || {
            vec![
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                SanType::DnsName("device.test".try_into().expect("DNS name")),
            ]
        };
        let good = device_cert("device.test", device_names(), false, Some(&ca));
        let expired = device_cert("device.test (expired)", device_names(), true, Some(&ca));
        let wrong_name = device_cert(
            "other.test",
            vec![SanType::DnsName("other.test".try_into().expect("DNS name"))],
            false,
            Some(&ca),
        );
        let self_signed = device_cert("device.test (self-signed)", device_names(), false, None);
        Pki { ca_der: ca.der().clone(), ca_pem: ca.pem(), good, expired, wrong_name, self_signed }
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A server certificate with a fresh key, signed by `issuer` or (without one) self-signed;
/// `expired`: valid from 2000-01-01 to 2001-01-01 only.
fn device_cert(
    common_name: &str,
    sans: Vec<SanType>,
    expired: bool,
    issuer: Option<&Issuer<'_, KeyPair>>,
) -> DeviceCert {
    let key = KeyPair::generate().expect("device key");
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = date_time_ymd(1999, 1, 1);
    if expired {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
    }
    let cert = match issuer {
        Some(issuer) => {
            params.use_authority_key_identifier_extension = true;
            params.signed_by(&key, issuer)
        }
        None => params.self_signed(&key),
    }
    .expect("device certificate");
    let spki_der = key.subject_public_key_info();
    let spki_sha256 = sha256(&spki_der);
    DeviceCert {
        der: cert.der().clone(),
        pem: cert.pem(),
        key_pkcs8_der: key.serialize_der(),
        spki_der,
        spki_sha256,
        pin: format!("sha256//{}", base64(&spki_sha256)),
    }
}

/// rustls's ring provider, for the devices and the tests' clients. rustls 0.23.48 deprecates it
/// ("no support for post-quantum algorithms"); it is the provider without aws-lc-rs (and its
/// cmake), and loopback tests need no post-quantum key exchange.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256, from rustls's ring provider (no hashing crate of our own).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = suite.tls13().expect("a TLS 1.3 suite").common.hash_provider;
    hash.hash(data).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Standard base64 with padding (RFC 4648 §4), as curl's pins use.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [group[0], group.get(1).copied().unwrap_or(0), group.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The SubjectPublicKeyInfo (DER, tag and length included) of an X.509 certificate in DER, found
/// by walking the DER (RFC 5280 §4.1): Certificate → tbsCertificate → skip the optional `[0]`
/// version, serialNumber, signature, issuer, validity, subject. `None` for malformed input.
/// Independent of rcgen, so a pin computed from what a client received can be checked against
/// [`DeviceCert::spki_sha256`].
pub fn spki_of(cert_der: &[u8]) -> Option<&[u8]> {
    let cert = der_element(cert_der).filter(|e| e.tag == 0x30)?;
    let tbs = der_element(cert.contents).filter(|e| e.tag == 0x30)?;
    let mut rest = tbs.contents;
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest)?.rest;
    }
    for _ in 0..5 {
        rest = der_element(rest)?.rest;
    }
    der_element(rest).filter(|e| e.tag == 0x30).map(|spki| spki.whole)
}

/// One DER element (tag, length, contents) and what follows it.
struct DerElement<'a> {
    tag: u8,
    /// Tag, length and contents.
    whole: &'a [u8],
    contents: &'a [u8],
    rest: &'a [u8],
}

/// The DER element at the start of `der` (single-byte tags, definite lengths).
fn der_element(der: &[u8]) -> Option<DerElement<'_>> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |len, &b| len << 8 | usize::from(b)), &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = der.len() - rest.len();
    Some(DerElement { tag, whole: &der[..header + len], contents: &rest[..len], rest: &rest[len..] })
}

// ---------------------------------------------------------------------------------------------
// The device
// ---------------------------------------------------------------------------------------------

/// Which TLS versions a [`TlsDevice`] offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    Tls12,
    Tls13,
    Both,
}

/// What a [`TlsDevice`] does with the connection after each response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsAfter {
    /// Wait for the next request.
    KeepAlive,
    /// Send close_notify, then FIN; then count what the client still sends.
    CloseNotify,
    /// FIN without close_notify (a truncation, to TLS); then count what the client still sends.
    BareFin,
    /// Close with SO_LINGER 0, which sends RST.
    Rst,
    /// Never send anything more (after part of a response, or none): keep the connection open,
    /// discarding what arrives, until the client closes or the device is dropped.
    Stall,
}

/// The answer of a [`TlsDevice::with_handler`]'s handler to one request: plaintext written as
/// application data (part of a response, or nothing), then what the device does.
#[derive(Clone, Debug)]
pub struct TlsReply {
    pub bytes: Vec<u8>,
    pub after: TlsAfter,
}

impl TlsReply {
    /// `seq_reply`'s `200 OK` (`{"seq":N}`), then `after`.
    pub fn seq(req: &Received, after: TlsAfter) -> TlsReply {
        TlsReply { bytes: seq_reply(req).bytes, after }
    }

    /// These plaintext bytes, then `after`.
    pub fn raw(bytes: impl Into<Vec<u8>>, after: TlsAfter) -> TlsReply {
        TlsReply { bytes: bytes.into(), after }
    }
}

/// Decides the reply to each request; runs on the connection's thread.
pub type TlsHandler = Arc<dyn Fn(&Received) -> TlsReply + Send + Sync>;

/// Cut a request short, at the plaintext level, as `support::CutRequest` does on plain TCP:
/// once the device has logged `after_requests` whole requests (over all connections), the next
/// request a connection starts waiting for (after its handshake, or after its previous response)
/// is read for at least `after_bytes` bytes of *plaintext* (0: not one byte; the device decrypts
/// whole records, so it may hold up to one record more than that, never acted on); then
/// `respond` is written as application data, if not empty (an early, partial or complete
/// response), followed, unless `then` is [`TlsCut::CloseUnread`], by a pause of 50 ms so the
/// client reads it first; then the connection is cut with `then`. The cut request is never
/// logged as a request. With `once`, only the first such request is cut. As on plain TCP, the
/// cut of a connection's first request is decided at accept (in the order the client
/// connected), and carried out after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsCutRequest {
    pub after_requests: usize,
    pub once: bool,
    pub after_bytes: usize,
    pub respond: &'static [u8],
    pub then: TlsCut,
}

/// What a [`TlsDevice`] does at a [`TlsCutRequest`]'s cut. The closes by FIN then hold the
/// socket open without reading another byte (a client still writing fills the buffers and
/// blocks, instead of completing its write into the device's receive buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsCut {
    /// close_notify, then FIN; then hold.
    CloseNotify,
    /// FIN without close_notify; then hold.
    BareFin,
    /// Close with SO_LINGER 0 (RST).
    Rst,
    /// Hold the connection open without reading or writing until the device is dropped.
    Stall,
    /// A plain `close()` right after `respond` (no close_notify, no pause), the rest of the
    /// request unread: the kernel resets the connection. An embedded server answering early and
    /// being done with the request.
    CloseUnread,
}

/// How a [`TlsDevice`] behaves. `TlsOptions::default()`: the good certificate, TLS 1.2 and 1.3,
/// keep-alive, no delays, resumption on.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    pub cert: Cert,
    pub versions: Versions,
    pub after: TlsAfter,
    /// Close a connection on which no byte of a request has arrived for this long after the
    /// handshake or after a response: close_notify then FIN, or with `idle_close_bare_fin` a bare
    /// FIN.
    pub idle_close: Option<Duration>,
    pub idle_close_bare_fin: bool,
    /// Read the ClientHello and never answer (until the client closes or the device is dropped).
    pub stall_handshake: bool,
    /// Delay before the server's first flight: (full handshake, resumed handshake). See
    /// [`EMBEDDED_HANDSHAKE`].
    pub handshake_delay: (Duration, Duration),
    /// Session resumption: TLS 1.3 tickets (stateless, 2 per full handshake), TLS 1.2 session IDs
    /// and tickets. `false`: no session storage, no tickets.
    pub resumption: bool,
    /// TLS 1.3: hold back the NewSessionTickets rustls makes at the end of the handshake and send
    /// them once the connection has been idle (no byte of a request) for this long after the
    /// handshake; anything the device writes earlier (a response) sends them first.
    pub tickets_when_idle: Option<Duration>,
    /// TLS 1.3: send a KeyUpdate (update_requested) when no byte of a request has arrived for this
    /// long after the handshake or a response; once per idle period.
    pub key_update_when_idle: Option<Duration>,
    /// Application data (a stray response) sent this long into an idle period: a client must
    /// retire the connection (the stream is out of step), where tickets and KeyUpdates keep it.
    pub unsolicited_when_idle: Option<Duration>,
    /// Cut a request short (see [`TlsCutRequest`]).
    pub cut_request: Option<TlsCutRequest>,
}

impl Default for TlsOptions {
    fn default() -> TlsOptions {
        TlsOptions {
            cert: Cert::Good,
            versions: Versions::Both,
            after: TlsAfter::KeepAlive,
            idle_close: None,
            idle_close_bare_fin: false,
            stall_handshake: false,
            handshake_delay: (Duration::ZERO, Duration::ZERO),
            resumption: true,
            tickets_when_idle: None,
            key_update_when_idle: None,
            unsolicited_when_idle: None,
            cut_request: None,
        }
    }
}

/// What the device saw of one connection's handshake.
#[derive(Clone, Debug)]
pub struct TlsConnInfo {
    pub version: Option<ProtocolVersion>,
    pub kind: Option<HandshakeKind>,
    /// The SNI the client sent (none for an IP address).
    pub sni: Option<String>,
}

/// A TLS test device on 127.0.0.1. Dropping it stops all its threads.
pub struct TlsDevice {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

struct Shared {
    options: TlsOptions,
    handler: Option<TlsHandler>,
    /// Requests cut by `TlsOptions::cut_request`, and of those the ones read up to the cut point.
    cuts: AtomicUsize,
    cuts_read: AtomicUsize,
    config: Arc<ServerConfig>,
    stop: AtomicBool,
    accepted: AtomicUsize,
    log: Mutex<Vec<Received>>,
    late_log: Mutex<Vec<Received>>,
    conn_info: Mutex<BTreeMap<usize, TlsConnInfo>>,
    handshake_errors: Mutex<Vec<(usize, String)>>,
    full: AtomicUsize,
    resumed: AtomicUsize,
    stalled: AtomicUsize,
    close_notifies: AtomicUsize,
    fins: AtomicUsize,
    fins_done: AtomicUsize,
    rsts: AtomicUsize,
    rsts_done: AtomicUsize,
    key_updates: AtomicUsize,
    strays: AtomicUsize,
    idle_tickets: AtomicUsize,
    after_close: AtomicUsize,
    raw_after_close: AtomicUsize,
    closed_by_client: AtomicUsize,
    closed_after_close: AtomicUsize,
}

impl TlsDevice {
    pub fn start(options: TlsOptions) -> TlsDevice {
        TlsDevice::start_with(options, None)
    }

    /// A device whose handler decides the reply to each request and what follows it
    /// ([`TlsOptions::after`] is then unused).
    pub fn with_handler(
        options: TlsOptions,
        handler: impl Fn(&Received) -> TlsReply + Send + Sync + 'static,
    ) -> TlsDevice {
        TlsDevice::start_with(options, Some(Arc::new(handler)))
    }

    fn start_with(options: TlsOptions, handler: Option<TlsHandler>) -> TlsDevice {
        let config = server_config(&options);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared {
            options,
            handler,
            cuts: AtomicUsize::new(0),
            cuts_read: AtomicUsize::new(0),
            config,
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            late_log: Mutex::new(Vec::new()),
            conn_info: Mutex::new(BTreeMap::new()),
            handshake_errors: Mutex::new(Vec::new()),
            full: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
            stalled: AtomicUsize::new(0),
            close_notifies: AtomicUsize::new(0),
            fins: AtomicUsize::new(0),
            fins_done: AtomicUsize::new(0),
            rsts: AtomicUsize::new(0),
            rsts_done: AtomicUsize::new(0),
            key_updates: AtomicUsize::new(0),
            strays: AtomicUsize::new(0),
            idle_tickets: AtomicUsize::new(0),
            after_close: AtomicUsize::new(0),
            raw_after_close: AtomicUsize::new(0),
            closed_by_client: AtomicUsize::new(0),
            closed_after_close: AtomicUsize::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name("tls-device-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn accept thread");
        TlsDevice { addr, shared, accept_thread: Some(accept_thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    /// `https://device.test:PORT{path}`: for SNI and name checks, with a resolver the test installs
    /// that maps `device.test` to 127.0.0.1.
    pub fn url_named(&self, path: &str) -> String {
        format!("https://device.test:{}{}", self.addr.port(), path)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(SeqCst)
    }

    /// Handshake details of each connection that completed one, by connection index.
    pub fn connection_info(&self) -> BTreeMap<usize, TlsConnInfo> {
        lock(&self.shared.conn_info).clone()
    }

    /// Completed full handshakes (with or without a HelloRetryRequest).
    pub fn handshakes_full(&self) -> usize {
        self.shared.full.load(SeqCst)
    }

    /// Completed resumed handshakes.
    pub fn handshakes_resumed(&self) -> usize {
        self.shared.resumed.load(SeqCst)
    }

    /// Handshakes that failed, with rustls's error (e.g. the client's alert refusing the
    /// certificate): (connection, error).
    pub fn handshake_errors(&self) -> Vec<(usize, String)> {
        lock(&self.shared.handshake_errors).clone()
    }

    /// ClientHellos received and never answered ([`TlsOptions::stall_handshake`]).
    pub fn stalled_handshakes(&self) -> usize {
        self.shared.stalled.load(SeqCst)
    }

    /// Requests answered, in arrival order (`seq` numbers them).
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.shared.log).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Requests answered that match `pred`.
    pub fn count_matching(&self, pred: impl Fn(&Received) -> bool) -> usize {
        lock(&self.shared.log).iter().filter(|r| pred(r)).count()
    }

    /// Requests cut short by [`TlsOptions::cut_request`] (counted when the cut is decided).
    pub fn requests_cut(&self) -> usize {
        self.shared.cuts.load(SeqCst)
    }

    /// Cut requests of which all `after_bytes` plaintext bytes arrived before the cut: with
    /// `after_bytes` past the head, requests the device acted on.
    pub fn requests_cut_after_reading(&self) -> usize {
        self.shared.cuts_read.load(SeqCst)
    }

    /// Whole requests that arrived after the device sent close_notify or FIN on their connection
    /// (never answered; `seq` numbers them apart from [`TlsDevice::requests`]).
    pub fn requests_after_close(&self) -> Vec<Received> {
        lock(&self.shared.late_log).clone()
    }

    /// Request bytes (decrypted application data) that arrived after the device sent
    /// close_notify or FIN on their connection, over all connections. Bytes already queued when
    /// the device closed (sent before the client could have seen the close) are not counted.
    pub fn bytes_after_close(&self) -> usize {
        self.shared.after_close.load(SeqCst)
    }

    /// All TCP payload bytes that arrived after the device's close_notify or FIN, TLS records of
    /// any kind: includes a client's own close_notify (a 24-byte record with TLS 1.3 AES-GCM), which is
    /// correct behaviour.
    pub fn tls_bytes_after_close(&self) -> usize {
        self.shared.raw_after_close.load(SeqCst)
    }

    /// close_notify alerts sent (counted before sending).
    pub fn close_notifies_sent(&self) -> usize {
        self.shared.close_notifies.load(SeqCst)
    }

    /// TCP FINs sent, after a close_notify or bare (counted before sending).
    pub fn fins_sent(&self) -> usize {
        self.shared.fins.load(SeqCst)
    }

    /// FINs whose `shutdown(Write)` has returned: on loopback, queued at the client.
    pub fn fins_completed(&self) -> usize {
        self.shared.fins_done.load(SeqCst)
    }

    pub fn rsts_sent(&self) -> usize {
        self.shared.rsts.load(SeqCst)
    }

    /// RSTs whose close has returned: on loopback, at the client.
    pub fn rsts_completed(&self) -> usize {
        self.shared.rsts_done.load(SeqCst)
    }

    /// Stray responses sent on idle connections ([`TlsOptions::unsolicited_when_idle`]).
    pub fn strays_sent(&self) -> usize {
        self.shared.strays.load(SeqCst)
    }

    /// KeyUpdates sent ([`TlsOptions::key_update_when_idle`]).
    pub fn key_updates_sent(&self) -> usize {
        self.shared.key_updates.load(SeqCst)
    }

    /// Connections whose held-back tickets were sent because the connection was idle
    /// ([`TlsOptions::tickets_when_idle`]), not ahead of a response.
    pub fn tickets_sent_when_idle(&self) -> usize {
        self.shared.idle_tickets.load(SeqCst)
    }

    /// Connections the client closed (EOF, reset or its close_notify) before the device closed
    /// them, handshakes included.
    pub fn connections_closed_by_client(&self) -> usize {
        self.shared.closed_by_client.load(SeqCst)
    }

    /// Connections the client closed (EOF) after the device's close_notify or FIN.
    pub fn clients_closed_after_close(&self) -> usize {
        self.shared.closed_after_close.load(SeqCst)
    }
}

impl Drop for TlsDevice {
    fn drop(&mut self) {
        super::stop_device(&self.shared.stop, self.accept_thread.take(), self.addr);
    }
}

fn server_config(options: &TlsOptions) -> Arc<ServerConfig> {
    let cert = Pki::get().cert(options.cert);
    let versions: &[&'static rustls::SupportedProtocolVersion] = match options.versions {
        Versions::Tls12 => &[&rustls::version::TLS12],
        Versions::Tls13 => &[&rustls::version::TLS13],
        Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pkcs8_der.clone()));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)
        .expect("device certificate and key");
    if options.resumption {
        // Stateless tickets for TLS 1.3 and 1.2; the default session store serves TLS 1.2 IDs.
        config.ticketer = rustls::crypto::ring::Ticketer::new().expect("ticketer");
    } else {
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Arc::new(config)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) -> Vec<JoinHandle<()>> {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    // Blocking accept, unblocked by `Drop` connecting once after setting `stop`.
    loop {
        let accepted = listener.accept();
        if shared.stop.load(SeqCst) {
            break;
        }
        let Ok((stream, _)) = accepted else {
            thread::sleep(Duration::from_millis(1));
            continue;
        };
        let id = shared.accepted.fetch_add(1, SeqCst);
        // The cut of a connection's first request is claimed here, in accept order (the order
        // the client connected in), not when the connection's thread gets through its
        // handshake: with two handshakes under way (a warm spare and another connection), the
        // threads would otherwise race for it.
        let cut_first = shared.options.cut_request.is_some_and(|cut| shared.claim_cut(cut));
        let shared = Arc::clone(&shared);
        conns.retain(|h| !h.is_finished());
        let handle = thread::Builder::new()
            .name(format!("tls-device-conn-{id}"))
            .spawn(move || serve(stream, id, &shared, cut_first))
            .expect("spawn connection thread");
        conns.push(handle);
    }
    conns
}

/// Result of one bounded socket read.
enum Raw {
    Data(usize),
    Eof,
    /// The caller's deadline passed.
    Timeout,
    /// Server stopping, or an I/O error; `reset` tells whether it was a reset.
    Gone {
        reset: bool,
    },
}

/// Why waiting for a request ended without one.
enum NoRequest {
    ClientClosed,
    Idle,
    Gone,
}

struct TlsConn<'a> {
    stream: TcpStream,
    tls: ServerConnection,
    id: usize,
    shared: &'a Shared,
    /// Decrypted bytes not yet consumed as a request.
    plain: Vec<u8>,
    /// TLS records held back ([`TlsOptions::tickets_when_idle`]), sent before anything else.
    held: Vec<u8>,
    handshake_done: Instant,
}

/// `cut_first`: the connection's first request is to be cut (claimed at accept).
fn serve(stream: TcpStream, id: usize, shared: &Shared, cut_first: bool) {
    let setup = (stream.set_nonblocking(false))
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_write_timeout(Some(TICK)));
    if setup.is_err() {
        return;
    }
    let Ok(tls) = ServerConnection::new(Arc::clone(&shared.config)) else {
        return;
    };
    let mut c = TlsConn {
        stream,
        tls,
        id,
        shared,
        plain: Vec::new(),
        held: Vec::new(),
        handshake_done: Instant::now(),
    };
    if !c.handshake() {
        return;
    }
    let options = &shared.options;
    for index_on_conn in 0.. {
        if let Some(cut) = options.cut_request
            && (if index_on_conn == 0 { cut_first } else { shared.claim_cut(cut) })
        {
            return c.cut(cut);
        }
        let req = match c.next_request(index_on_conn) {
            Ok(req) => req,
            Err(NoRequest::ClientClosed) => {
                shared.closed_by_client.fetch_add(1, SeqCst);
                return;
            }
            Err(NoRequest::Idle) => return c.close(!options.idle_close_bare_fin),
            Err(NoRequest::Gone) => return,
        };
        let reply = match &shared.handler {
            Some(handler) => handler(&req),
            None => TlsReply::seq(&req, options.after),
        };
        if !(reply.bytes.is_empty() || c.send(&reply.bytes)) {
            return;
        }
        match reply.after {
            TlsAfter::KeepAlive => {}
            TlsAfter::CloseNotify => return c.close(true),
            TlsAfter::BareFin => return c.close(false),
            TlsAfter::Rst => return c.rst(),
            TlsAfter::Stall => {
                c.plain.clear();
                return c.discard_until_closed();
            }
        }
    }
}

impl Shared {
    /// Whether the request a connection is about to wait for is to be cut.
    fn claim_cut(&self, cut: TlsCutRequest) -> bool {
        if lock(&self.log).len() < cut.after_requests {
            return false;
        }
        if cut.once {
            self.cuts.compare_exchange(0, 1, SeqCst, SeqCst).is_ok()
        } else {
            self.cuts.fetch_add(1, SeqCst);
            true
        }
    }
}

impl TlsConn<'_> {
    fn stopped(&self) -> bool {
        self.shared.stop.load(SeqCst)
    }

    fn is_tls13(&self) -> bool {
        self.tls.protocol_version() == Some(ProtocolVersion::TLSv1_3)
    }

    /// Runs the handshake; false if it failed, stalled or the device stopped.
    fn handshake(&mut self) -> bool {
        let options = &self.shared.options;
        let deadline = Instant::now() + HANDSHAKE_LIMIT;
        let mut first_flight = true;
        let mut chunk = [0u8; 16 * 1024];
        while self.tls.is_handshaking() {
            if self.tls.wants_write() {
                if first_flight {
                    // The ClientHello is processed and the server's first flight is ready.
                    first_flight = false;
                    if options.stall_handshake {
                        self.shared.stalled.fetch_add(1, SeqCst);
                        self.discard_until_closed();
                        return false;
                    }
                    let resumed = self.tls.handshake_kind() == Some(HandshakeKind::Resumed);
                    let delay = if resumed { options.handshake_delay.1 } else { options.handshake_delay.0 };
                    if !self.sleep(delay) {
                        return false;
                    }
                }
                if !self.flush() {
                    return false;
                }
                continue;
            }
            match self.read_raw(&mut chunk, Some(deadline)) {
                Raw::Data(n) => {
                    if let Err(e) = self.feed(&chunk[..n]) {
                        lock(&self.shared.handshake_errors).push((self.id, e.to_string()));
                        // The alert rustls queued for the client, if any.
                        self.flush();
                        return false;
                    }
                }
                Raw::Eof | Raw::Gone { reset: true } => {
                    self.shared.closed_by_client.fetch_add(1, SeqCst);
                    return false;
                }
                Raw::Timeout => {
                    lock(&self.shared.handshake_errors).push((self.id, "handshake timed out".into()));
                    return false;
                }
                Raw::Gone { reset: false } => return false,
            }
        }
        self.handshake_done = Instant::now();
        let kind = self.tls.handshake_kind();
        let info = TlsConnInfo {
            version: self.tls.protocol_version(),
            kind,
            sni: self.tls.server_name().map(String::from),
        };
        lock(&self.shared.conn_info).insert(self.id, info);
        match kind {
            Some(HandshakeKind::Resumed) => self.shared.resumed.fetch_add(1, SeqCst),
            _ => self.shared.full.fetch_add(1, SeqCst),
        };
        // TLS 1.3: what rustls has to write on completing the handshake is its NewSessionTickets.
        if options.tickets_when_idle.is_some() && self.is_tls13() {
            while self.tls.wants_write() {
                if self.tls.write_tls(&mut self.held).is_err() {
                    return false;
                }
            }
            return true;
        }
        self.flush()
    }

    /// Reads until one whole request has been decrypted and logs it, running the idle timers
    /// (tickets, KeyUpdate, close) while no byte of it has arrived.
    fn next_request(&mut self, index_on_conn: usize) -> Result<Received, NoRequest> {
        let options = &self.shared.options;
        let start = Instant::now();
        let mut key_update_due = options.key_update_when_idle.filter(|_| self.is_tls13()).map(|d| start + d);
        // Only after a response (index > 0): a fresh connection's first request comes at once.
        let mut stray_due = options.unsolicited_when_idle.filter(|_| index_on_conn > 0).map(|d| start + d);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let shared = self.shared;
            if let Some(req) = self.take_request(index_on_conn, &shared.log).map_err(|()| NoRequest::Gone)? {
                return Ok(req);
            }
            let idle = self.plain.is_empty();
            let tickets_due = options
                .tickets_when_idle
                .filter(|_| idle && !self.held.is_empty())
                .map(|d| self.handshake_done + d);
            let key_due = key_update_due.filter(|_| idle);
            let stray = stray_due.filter(|_| idle);
            let close_due = options.idle_close.filter(|_| idle).map(|d| start + d);
            let deadline = [tickets_due, key_due, stray, close_due].into_iter().flatten().min();
            match self.read_raw(&mut chunk, deadline) {
                Raw::Data(n) => match self.feed(&chunk[..n]) {
                    Ok(false) => {}
                    Ok(true) => return Err(NoRequest::ClientClosed),
                    Err(_) => {
                        self.flush();
                        return Err(NoRequest::Gone);
                    }
                },
                Raw::Eof | Raw::Gone { reset: true } => return Err(NoRequest::ClientClosed),
                Raw::Gone { reset: false } => return Err(NoRequest::Gone),
                Raw::Timeout => {
                    let now = Instant::now();
                    if tickets_due.is_some_and(|t| t <= now) {
                        self.shared.idle_tickets.fetch_add(1, SeqCst);
                        if !self.flush() {
                            return Err(NoRequest::Gone);
                        }
                    }
                    if stray.is_some_and(|t| t <= now) {
                        stray_due = None;
                        self.shared.strays.fetch_add(1, SeqCst);
                        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray";
                        if !self.send(bytes) {
                            return Err(NoRequest::Gone);
                        }
                    }
                    if key_due.is_some_and(|t| t <= now) {
                        key_update_due = None;
                        self.shared.key_updates.fetch_add(1, SeqCst);
                        if self.tls.refresh_traffic_keys().is_err() || !self.flush() {
                            return Err(NoRequest::Gone);
                        }
                    }
                    if close_due.is_some_and(|t| t <= now) {
                        return Err(NoRequest::Idle);
                    }
                }
            }
            // rustls may have an answer to write (its KeyUpdate after the client's).
            if self.tls.wants_write() && !self.flush() {
                return Err(NoRequest::Gone);
            }
        }
    }

    /// Takes one whole request from `plain`, if there is one, and logs it in `log`.
    fn take_request(
        &mut self,
        index_on_conn: usize,
        log: &Mutex<Vec<Received>>,
    ) -> Result<Option<Received>, ()> {
        let Some(head) = parse_head(&self.plain).map_err(|_| ())? else {
            return Ok(None);
        };
        let end = head.len + head.body_len;
        if self.plain.len() < end {
            return Ok(None);
        }
        let body = self.plain[head.len..end].to_vec();
        self.plain.drain(..end);
        let mut log = lock(log);
        let req = Received {
            conn: self.id,
            index_on_conn,
            seq: log.len(),
            method: head.method,
            target: head.target,
            headers: head.headers,
            body,
        };
        log.push(req.clone());
        Ok(Some(req))
    }

    /// Feeds TLS bytes to rustls and moves the plaintext to `plain`. `Ok(true)`: the client's
    /// close_notify has arrived.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<bool, rustls::Error> {
        let mut peer_closed = false;
        while !bytes.is_empty() {
            if let Err(e) = self.tls.read_tls(&mut bytes) {
                return Err(rustls::Error::General(e.to_string()));
            }
            let state = self.tls.process_new_packets()?;
            peer_closed |= state.peer_has_closed();
            let start = self.plain.len();
            self.plain.resize(start + state.plaintext_bytes_to_read(), 0);
            if self.tls.reader().read_exact(&mut self.plain[start..]).is_err() {
                return Err(rustls::Error::General("plaintext went missing".into()));
            }
        }
        Ok(peer_closed)
    }

    /// Sends `bytes` as application data: as much as rustls buffers at a time (its plaintext
    /// buffer is bounded: a `write_all` of a 4 MiB reply stopped at `WriteZero`), flushing
    /// between, and the rest with one last flush (a small reply leaves in one write, as one
    /// flush did before).
    fn send(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match self.tls.writer().write(bytes) {
                Ok(0) => {
                    if !self.flush() {
                        return false;
                    }
                }
                Ok(n) => bytes = &bytes[n..],
                Err(_) => return false,
            }
        }
        self.flush()
    }

    /// Writes the held records, then everything rustls has to send.
    fn flush(&mut self) -> bool {
        let mut out = std::mem::take(&mut self.held);
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut out).is_err() {
                return false;
            }
        }
        self.write_all(&out)
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.stopped() {
                return false;
            }
            match self.stream.write(bytes) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(e) if retryable(e.kind()) => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// One read from the socket into `chunk`, in TICK slices so the stop flag is honoured; a
    /// deadline closer than 30 ms (SO_RCVTIMEO's resolution is the kernel's tick) is met by
    /// polling without blocking.
    fn read_raw(&mut self, chunk: &mut [u8], deadline: Option<Instant>) -> Raw {
        if let Some(deadline) = deadline
            && deadline.saturating_duration_since(Instant::now()) < Duration::from_millis(30)
        {
            return self.read_precisely(chunk, deadline);
        }
        loop {
            if self.stopped() {
                return Raw::Gone { reset: false };
            }
            let mut timeout = TICK;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Raw::Timeout;
                }
                timeout = timeout.min(left).max(Duration::from_millis(1));
            }
            if self.stream.set_read_timeout(Some(timeout)).is_err() {
                return Raw::Gone { reset: false };
            }
            match self.stream.read(chunk) {
                Ok(0) => return Raw::Eof,
                Ok(n) => return Raw::Data(n),
                Err(e) if retryable(e.kind()) => {}
                Err(e) => return Raw::Gone { reset: e.kind() == ErrorKind::ConnectionReset },
            }
        }
    }

    fn read_precisely(&mut self, chunk: &mut [u8], deadline: Instant) -> Raw {
        if self.stream.set_nonblocking(true).is_err() {
            return Raw::Gone { reset: false };
        }
        let raw = loop {
            match self.stream.read(chunk) {
                Ok(0) => break Raw::Eof,
                Ok(n) => break Raw::Data(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || self.stopped() {
                        break Raw::Timeout;
                    }
                    thread::sleep(left.min(Duration::from_micros(100)));
                }
                Err(e) if retryable(e.kind()) => {}
                Err(e) => break Raw::Gone { reset: e.kind() == ErrorKind::ConnectionReset },
            }
        };
        if self.stream.set_nonblocking(false).is_err() {
            return Raw::Gone { reset: false };
        }
        raw
    }

    /// Feeds what is already queued on the socket to rustls, without waiting.
    fn feed_queued(&mut self) {
        if self.stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = self.stream.read(&mut chunk) {
            if self.feed(&chunk[..n]).is_err() {
                break;
            }
        }
        let _ = self.stream.set_nonblocking(false);
    }

    /// Sleeps for `d` in TICK slices; false if the device is stopping.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            if self.stopped() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(TICK));
        }
    }

    /// close_notify (with `notify`) and FIN, then reads until EOF, error, stop or DRAIN_LIMIT,
    /// counting what arrives as after the close.
    fn close(mut self, notify: bool) {
        // Bytes already queued were sent before the client could have seen this close (a request
        // crossing it, the race no client can see): decrypt them (rustls must stay in step) and
        // drop them.
        self.feed_queued();
        self.plain.clear();
        // Count first, so a client that has seen the close (its close_notify or its FIN) also
        // sees the counts.
        self.shared.fins.fetch_add(1, SeqCst);
        if notify {
            self.shared.close_notifies.fetch_add(1, SeqCst);
            self.tls.send_close_notify();
        }
        if !self.flush() {
            return;
        }
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        self.shared.fins_done.fetch_add(1, SeqCst);
        let deadline = Instant::now() + DRAIN_LIMIT;
        let mut decrypting = true;
        let mut chunk = [0u8; 16 * 1024];
        let mut index_on_conn = 0;
        loop {
            match self.read_raw(&mut chunk, Some(deadline)) {
                Raw::Data(n) => {
                    self.shared.raw_after_close.fetch_add(n, SeqCst);
                    if decrypting {
                        let before = self.plain.len();
                        decrypting = self.feed(&chunk[..n]).is_ok();
                        self.shared.after_close.fetch_add(self.plain.len() - before, SeqCst);
                        let shared = self.shared;
                        while let Ok(Some(_)) = self.take_request(index_on_conn, &shared.late_log) {
                            index_on_conn += 1;
                        }
                    }
                }
                Raw::Eof => {
                    self.shared.closed_after_close.fetch_add(1, SeqCst);
                    return;
                }
                Raw::Timeout | Raw::Gone { .. } => return,
            }
        }
    }

    /// Closes with SO_LINGER 0 so the kernel sends RST instead of FIN.
    fn rst(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        self.shared.rsts.fetch_add(1, SeqCst);
        let shared = self.shared;
        drop(self.stream);
        shared.rsts_done.fetch_add(1, SeqCst);
    }

    /// Reads at least `cut.after_bytes` plaintext bytes of the next request, then cuts (see
    /// [`TlsCutRequest`]).
    fn cut(mut self, cut: TlsCutRequest) {
        let mut chunk = [0u8; 16 * 1024];
        while self.plain.len() < cut.after_bytes {
            // At most what is still missing: ciphertext is never shorter than its plaintext, so
            // this reads at most the rest of the record that completes the count.
            let want = (cut.after_bytes - self.plain.len()).min(chunk.len());
            match self.read_raw(&mut chunk[..want], None) {
                Raw::Data(n) => match self.feed(&chunk[..n]) {
                    Ok(false) => {}
                    Ok(true) => {
                        self.shared.closed_by_client.fetch_add(1, SeqCst);
                        return;
                    }
                    Err(_) => return,
                },
                Raw::Eof | Raw::Gone { reset: true } => {
                    self.shared.closed_by_client.fetch_add(1, SeqCst);
                    return;
                }
                Raw::Timeout | Raw::Gone { reset: false } => return,
            }
        }
        self.shared.cuts_read.fetch_add(1, SeqCst);
        if !cut.respond.is_empty() {
            if !self.send(cut.respond) {
                return;
            }
            // Pause so the client reads the bytes before the cut.
            if cut.then != TlsCut::CloseUnread && !self.sleep(TICK) {
                return;
            }
        }
        match cut.then {
            TlsCut::CloseNotify | TlsCut::BareFin => {
                self.shared.fins.fetch_add(1, SeqCst);
                if cut.then == TlsCut::CloseNotify {
                    self.shared.close_notifies.fetch_add(1, SeqCst);
                    self.tls.send_close_notify();
                    if !self.flush() {
                        return;
                    }
                }
                if self.stream.shutdown(Shutdown::Write).is_err() {
                    return;
                }
                self.shared.fins_done.fetch_add(1, SeqCst);
                self.hold();
            }
            TlsCut::Rst => self.rst(),
            TlsCut::Stall => self.hold(),
            TlsCut::CloseUnread => {
                self.shared.rsts.fetch_add(1, SeqCst);
                let shared = self.shared;
                drop(self.stream);
                shared.rsts_done.fetch_add(1, SeqCst);
            }
        }
    }

    /// Keeps the socket open, reading nothing, until the device stops.
    fn hold(self) {
        while !self.stopped() {
            thread::sleep(TICK);
        }
    }

    /// Reads and drops everything until the client closes or the device stops.
    fn discard_until_closed(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.read_raw(&mut chunk, None) {
                Raw::Data(_) => {}
                Raw::Eof | Raw::Gone { reset: true } => {
                    self.shared.closed_by_client.fetch_add(1, SeqCst);
                    return;
                }
                Raw::Timeout | Raw::Gone { reset: false } => return,
            }
        }
    }
}
