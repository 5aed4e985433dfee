//! The TLS test devices (tests/support/tls.rs) checked with a plain blocking rustls client: what
//! each device does must be what a client sees, before the client's own TLS tests rely on it.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, ProtocolVersion,
    SignatureScheme, StreamOwned, SupportedProtocolVersion,
};
use support::tls::*;
use support::wait_until;

const WAIT: Duration = Duration::from_secs(5);
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn client_config(versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(Pki::get().roots())
        .with_no_client_auth();
    Arc::new(config)
}

fn ip_name() -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into())
}

/// TCP-connects (no TLS byte sent yet), with 5 s socket timeouts.
fn connect_as(device: &TlsDevice, config: &Arc<ClientConfig>, name: ServerName<'static>) -> Tls {
    let tcp = TcpStream::connect(device.addr()).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("read timeout");
    tcp.set_write_timeout(Some(WAIT)).expect("write timeout");
    let conn = ClientConnection::new(Arc::clone(config), name).expect("client connection");
    StreamOwned::new(conn, tcp)
}

fn connect(device: &TlsDevice, config: &Arc<ClientConfig>) -> Tls {
    connect_as(device, config, ip_name())
}

fn handshake(tls: &mut Tls) -> io::Result<()> {
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(())
}

/// The rustls error inside an I/O error from `complete_io`.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// GET `path`; returns the response body (Content-Length framing).
fn get(tls: &mut Tls, path: &str) -> Vec<u8> {
    write!(tls, "GET {path} HTTP/1.1\r\nHost: device\r\n\r\n").expect("write request");
    tls.flush().expect("flush request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = response.parse(&buf).expect("response head") {
            assert_eq!(response.code, Some(200));
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap())
                .expect("Content-Length");
            if buf.len() >= len + length {
                assert_eq!(buf.len(), len + length, "nothing after the response");
                return buf[len..].to_vec();
            }
        }
        let n = tls.read(&mut chunk).expect("read response");
        assert!(n > 0, "EOF inside a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_client_trusting_the_ca_completes_handshakes_and_requests_with_both_versions() {
    let device = TlsDevice::start(TlsOptions::default());
    for (i, (versions, version)) in
        [(TLS13, ProtocolVersion::TLSv1_3), (TLS12, ProtocolVersion::TLSv1_2)].into_iter().enumerate()
    {
        let mut tls = connect(&device, &client_config(versions));
        handshake(&mut tls).expect("handshake");
        assert_eq!(tls.conn.protocol_version(), Some(version));
        assert_eq!(get(&mut tls, "/a"), format!("{{\"seq\":{}}}", 2 * i).as_bytes());
        assert_eq!(get(&mut tls, "/b"), format!("{{\"seq\":{}}}", 2 * i + 1).as_bytes());
        let info = &device.connection_info()[&i];
        assert_eq!(
            (info.version, info.kind, info.sni.as_deref()),
            (Some(version), Some(HandshakeKind::Full), None)
        );
    }
    let requests = device.requests();
    let seen: Vec<_> = requests.iter().map(|r| (r.conn, r.index_on_conn, r.target.as_str())).collect();
    assert_eq!(seen, [(0, 0, "/a"), (0, 1, "/b"), (1, 0, "/a"), (1, 1, "/b")]);
    assert_eq!((device.handshakes_full(), device.handshakes_resumed()), (2, 0));
    assert_eq!(device.url("/x"), format!("https://127.0.0.1:{}/x", device.port()));
    assert_eq!(device.url_named("/x"), format!("https://device.test:{}/x", device.port()));
}

#[test]
fn the_good_certificate_carries_the_name_device_test_and_the_device_records_the_sni() {
    let device = TlsDevice::start(TlsOptions::default());
    let name = ServerName::try_from("device.test").unwrap();
    let mut tls = connect_as(&device, &client_config(TLS13), name);
    handshake(&mut tls).expect("handshake for device.test");
    assert_eq!(get(&mut tls, "/"), b"{\"seq\":0}");
    assert_eq!(device.connection_info()[&0].sni.as_deref(), Some("device.test"));
}

#[test]
fn a_second_connection_resumes_and_is_counted_for_both_versions() {
    for versions in [TLS13, TLS12] {
        let device = TlsDevice::start(TlsOptions::default());
        let config = client_config(versions);
        for expected in [HandshakeKind::Full, HandshakeKind::Resumed] {
            let mut tls = connect(&device, &config);
            handshake(&mut tls).expect("handshake");
            // The request's answer comes after the TLS 1.3 tickets: the client has them.
            get(&mut tls, "/");
            assert_eq!(tls.conn.handshake_kind(), Some(expected), "{versions:?}");
        }
        assert_eq!((device.handshakes_full(), device.handshakes_resumed()), (1, 1), "{versions:?}");
        let kinds: Vec<_> = device.connection_info().values().map(|i| i.kind).collect();
        assert_eq!(kinds, [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)]);
    }
}

#[test]
fn without_resumption_every_handshake_is_full() {
    let device = TlsDevice::start(TlsOptions { resumption: false, ..TlsOptions::default() });
    for versions in [TLS13, TLS12] {
        let config = client_config(versions);
        for _ in 0..2 {
            let mut tls = connect(&device, &config);
            handshake(&mut tls).expect("handshake");
            get(&mut tls, "/");
            assert_eq!(tls.conn.handshake_kind(), Some(HandshakeKind::Full));
        }
    }
    assert_eq!((device.handshakes_full(), device.handshakes_resumed()), (4, 0));
}

/// Reads after the response: what the client sees of the device's close.
fn read_after_response(
    after: TlsAfter,
    versions: &[&'static SupportedProtocolVersion],
) -> (TlsDevice, Tls, io::Result<usize>) {
    let device = TlsDevice::start(TlsOptions { after, ..TlsOptions::default() });
    let mut tls = connect(&device, &client_config(versions));
    handshake(&mut tls).expect("handshake");
    get(&mut tls, "/first");
    let mut byte = [0u8; 1];
    let read = tls.read(&mut byte);
    (device, tls, read)
}

#[test]
fn close_notify_reads_as_a_clean_end_and_a_request_after_it_is_counted() {
    for versions in [TLS13, TLS12] {
        let (device, mut tls, read) = read_after_response(TlsAfter::CloseNotify, versions);
        assert_eq!(read.expect("clean end after close_notify"), 0);
        assert_eq!((device.close_notifies_sent(), device.fins_sent(), device.rsts_sent()), (1, 1, 0));
        // What the incident's client did: the next request on the closed connection.
        let request = b"GET /late HTTP/1.1\r\nHost: device\r\n\r\n";
        tls.write_all(request).expect("rustls still writes after the peer's close_notify");
        tls.flush().expect("flush");
        assert!(wait_until(WAIT, || device.requests_after_close().len() == 1), "{versions:?}");
        assert_eq!(device.bytes_after_close(), request.len());
        assert!(
            device.tls_bytes_after_close() > request.len(),
            "TLS records are larger than their plaintext"
        );
        let late = &device.requests_after_close()[0];
        assert_eq!((late.conn, late.target.as_str()), (0, "/late"));
        assert_eq!(device.request_count(), 1, "the late request is not answered");
    }
}

#[test]
fn bare_fin_reads_as_an_unexpected_eof() {
    for versions in [TLS13, TLS12] {
        let (device, _tls, read) = read_after_response(TlsAfter::BareFin, versions);
        assert_eq!(read.expect_err("a truncation").kind(), ErrorKind::UnexpectedEof, "{versions:?}");
        assert_eq!((device.close_notifies_sent(), device.fins_sent(), device.rsts_sent()), (0, 1, 0));
        assert_eq!(device.bytes_after_close(), 0);
    }
}

#[test]
fn rst_reads_as_a_reset() {
    let (device, _tls, read) = read_after_response(TlsAfter::Rst, TLS13);
    assert_eq!(read.expect_err("a reset").kind(), ErrorKind::ConnectionReset);
    assert_eq!((device.close_notifies_sent(), device.fins_sent(), device.rsts_sent()), (0, 0, 1));
    assert!(wait_until(WAIT, || device.rsts_completed() == 1));
}

#[test]
fn idle_close_sends_close_notify_or_a_bare_fin_after_the_idle_time() {
    let idle = Duration::from_millis(100);
    for bare_fin in [false, true] {
        let device = TlsDevice::start(TlsOptions {
            idle_close: Some(idle),
            idle_close_bare_fin: bare_fin,
            ..TlsOptions::default()
        });
        let mut tls = connect(&device, &client_config(TLS13));
        handshake(&mut tls).expect("handshake");
        // The device's idle time starts when it has written the response: after the request.
        let asked = Instant::now();
        get(&mut tls, "/");
        let mut byte = [0u8; 1];
        let read = tls.read(&mut byte);
        assert!(asked.elapsed() >= idle, "closed {:?} after the request", asked.elapsed());
        if bare_fin {
            assert_eq!(read.expect_err("a truncation").kind(), ErrorKind::UnexpectedEof);
        } else {
            assert_eq!(read.expect("a clean end"), 0);
        }
        assert_eq!((device.close_notifies_sent(), device.fins_sent()), (usize::from(!bare_fin), 1));
    }
}

#[test]
fn a_stalled_handshake_is_never_answered() {
    let device = TlsDevice::start(TlsOptions { stall_handshake: true, ..TlsOptions::default() });
    let mut tls = connect(&device, &client_config(TLS13));
    tls.sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let started = Instant::now();
    let err = handshake(&mut tls).expect_err("no ServerHello");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err:?}");
    assert!(started.elapsed() < WAIT);
    assert!(wait_until(WAIT, || device.stalled_handshakes() == 1));
    assert_eq!(device.handshakes_full() + device.handshakes_resumed(), 0);
    drop(tls);
    assert!(wait_until(WAIT, || device.connections_closed_by_client() == 1));
}

/// The client's error for a device presenting `cert`, and the device's for the same handshake.
fn refused(cert: Cert, versions: &[&'static SupportedProtocolVersion]) -> (rustls::Error, String) {
    let device = TlsDevice::start(TlsOptions { cert, ..TlsOptions::default() });
    let mut tls = connect(&device, &client_config(versions));
    let err = handshake(&mut tls).expect_err("the certificate is refused");
    let err = tls_error(&err).cloned().unwrap_or_else(|| panic!("not a rustls error: {err:?}"));
    assert!(wait_until(WAIT, || device.handshake_errors().len() == 1));
    (err, device.handshake_errors()[0].1.clone())
}

#[test]
fn the_expired_certificate_is_refused_as_expired() {
    for versions in [TLS13, TLS12] {
        let (client, device) = refused(Cert::Expired, versions);
        assert!(
            matches!(
                client,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{client:?}"
        );
        assert!(device.contains("CertificateExpired"), "{device}");
    }
}

#[test]
fn the_wrong_name_certificate_is_refused_as_not_valid_for_the_name() {
    for versions in [TLS13, TLS12] {
        let (client, device) = refused(Cert::WrongName, versions);
        assert!(
            matches!(
                client,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{client:?}"
        );
        assert!(device.contains("BadCertificate"), "{device}");
    }
}

#[test]
fn the_self_signed_certificate_is_refused_without_a_pin() {
    let (client, _) = refused(Cert::SelfSigned, TLS13);
    assert_eq!(client, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
}

/// A pinning client's verifier: accepts the end-entity certificate whose SPKI hashes to `pin`
/// (and checks the handshake signatures with it); records the SPKI it saw.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let spki =
            spki_of(end_entity).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        *self.seen.lock().unwrap() = Some(spki.to_vec());
        if sha256(spki) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

fn pinned_client(pin: [u8; 32]) -> (Arc<Pinned>, Arc<ClientConfig>) {
    let verifier = Arc::new(Pinned { pin, seen: Mutex::new(None) });
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    (verifier, Arc::new(config))
}

/// The pin is checked against the certificate bytes the client received over the wire: their SPKI
/// found by `spki_of`'s DER walk (independent of rcgen), hashed, equals the `Pki`'s pin, which
/// was computed from the SPKI rcgen wrote into the certificate (the walk itself is checked
/// against rcgen's SPKI for every certificate below).
#[test]
fn the_self_signed_pin_is_the_sha256_of_the_spki_the_client_sees() {
    let pki = Pki::get();
    let cert = &pki.self_signed;
    let device = TlsDevice::start(TlsOptions { cert: Cert::SelfSigned, ..TlsOptions::default() });
    let (verifier, config) = pinned_client(cert.spki_sha256);
    let mut tls = connect(&device, &config);
    handshake(&mut tls).expect("the pin matches");
    assert_eq!(get(&mut tls, "/"), b"{\"seq\":0}");
    let seen = verifier.seen.lock().unwrap().clone().expect("the verifier saw a certificate");
    assert_eq!(seen, cert.spki_der);
    assert_eq!(format!("sha256//{}", base64(&sha256(&seen))), cert.pin);
    assert_eq!(tls.conn.peer_certificates().unwrap()[0], cert.der);

    // A pin for another key is refused.
    let (_, config) = pinned_client(pki.good.spki_sha256);
    let mut tls = connect(&device, &config);
    let err = handshake(&mut tls).expect_err("the pin does not match");
    assert_eq!(
        tls_error(&err),
        Some(&rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
    );
}

#[test]
fn the_pki_is_generated_pem_and_der_agree() {
    let pki = Pki::get();
    assert!(std::ptr::eq(pki, Pki::get()), "once per process");
    for (pem, der) in [(&pki.ca_pem, &pki.ca_der), (&pki.good.pem, &pki.good.der)] {
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(b64, base64(der));
    }
}

#[test]
fn sha256_and_base64_match_known_vectors() {
    // RFC 4648 §10.
    for (input, output) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), output);
    }
    // FIPS 180-2 "abc".
    assert_eq!(base64(&sha256(b"abc")), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
}

#[test]
fn spki_of_finds_what_rcgen_wrote_and_each_certificate_has_its_own_key() {
    let pki = Pki::get();
    for c in [&pki.good, &pki.expired, &pki.wrong_name, &pki.self_signed] {
        assert_eq!(spki_of(&c.der), Some(&c.spki_der[..]));
        assert_eq!(c.pin, format!("sha256//{}", base64(&sha256(&c.spki_der))));
    }
    let pins: std::collections::BTreeSet<_> =
        [&pki.good, &pki.expired, &pki.wrong_name, &pki.self_signed].map(|c| c.pin.clone()).into();
    assert_eq!(pins.len(), 4, "a key per certificate");
    assert_eq!(spki_of(b"\x30\x03\x02\x01"), None, "truncated DER");
}

/// The time from TCP connect to a completed client handshake, and its kind.
fn timed_handshake(device: &TlsDevice, config: &Arc<ClientConfig>) -> (Duration, Option<HandshakeKind>) {
    let mut tls = connect(device, config);
    let started = Instant::now();
    handshake(&mut tls).expect("handshake");
    let took = started.elapsed();
    get(&mut tls, "/");
    (took, tls.conn.handshake_kind())
}

#[test]
fn the_handshake_costs_at_least_the_configured_delay() {
    let (full, resumed) = EMBEDDED_HANDSHAKE;
    for versions in [TLS13, TLS12] {
        let device =
            TlsDevice::start(TlsOptions { handshake_delay: EMBEDDED_HANDSHAKE, ..TlsOptions::default() });
        let config = client_config(versions);
        let (took, kind) = timed_handshake(&device, &config);
        assert_eq!(kind, Some(HandshakeKind::Full));
        assert!(took >= full, "full handshake took {took:?}");
        let (took, kind) = timed_handshake(&device, &config);
        assert_eq!(kind, Some(HandshakeKind::Resumed));
        assert!(took >= resumed, "resumed handshake took {took:?}");
    }
}

#[test]
fn a_key_update_on_an_idle_connection_leaves_it_usable() {
    let device = TlsDevice::start(TlsOptions {
        key_update_when_idle: Some(Duration::from_millis(50)),
        ..TlsOptions::default()
    });
    let mut tls = connect(&device, &client_config(TLS13));
    handshake(&mut tls).expect("handshake");
    assert_eq!(get(&mut tls, "/a"), b"{\"seq\":0}");
    assert!(wait_until(WAIT, || device.key_updates_sent() == 1));
    assert_eq!(get(&mut tls, "/b"), b"{\"seq\":1}");
    assert!(wait_until(WAIT, || device.key_updates_sent() == 2), "one per idle period");
    assert_eq!(get(&mut tls, "/c"), b"{\"seq\":2}");
    assert_eq!(device.connections(), 1);
}

#[test]
fn tickets_held_until_idle_arrive_on_an_idle_connection() {
    let device = TlsDevice::start(TlsOptions {
        tickets_when_idle: Some(Duration::from_millis(100)),
        ..TlsOptions::default()
    });
    let config = client_config(TLS13);
    let mut first = connect(&device, &config);
    handshake(&mut first).expect("handshake");
    // No ticket yet: a second connection is a full handshake.
    let mut second = connect(&device, &config);
    handshake(&mut second).expect("handshake");
    assert_eq!(second.conn.handshake_kind(), Some(HandshakeKind::Full));
    // The tickets arrive on the idle first connection: records, no plaintext.
    assert!(wait_until(WAIT, || device.tickets_sent_when_idle() >= 1));
    first.conn.read_tls(&mut first.sock).expect("the tickets");
    let state = first.conn.process_new_packets().expect("tickets are fine");
    assert_eq!(state.plaintext_bytes_to_read(), 0);
    let mut third = connect(&device, &config);
    handshake(&mut third).expect("handshake");
    assert_eq!(third.conn.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(get(&mut first, "/"), b"{\"seq\":0}", "the idle connection still works");
}
