//! TLS for scenarios t1–t3: the run's PKI, made at start with rcgen (a CA and a device
//! certificate signed by it, for 127.0.0.1 and the emulated link's device address; no key is
//! checked in), the device's rustls `ServerConfig` (session resumption on), and what each client
//! needs to trust the CA.
//!
//! Every Rust client and the device use rustls with the *ring* provider ([`provider`], also
//! installed as rustls's process default for the clients that take it from there: reqwest and
//! ureq); libcurl uses the system's OpenSSL.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// rustls's ring provider. rustls 0.23.48 deprecates it (no post-quantum key exchange); it is
/// the provider that builds without aws-lc-rs and cmake, and the one finwatch uses.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as rustls's process default (reqwest with `rustls-no-provider` and ureq
/// without its `_ring` feature take it from there). Idempotent.
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}

/// The run's PKI: what the device serves and what the clients trust.
pub struct Pki {
    /// The CA certificate, PEM (finwatch, reqwest, ureq, libcurl).
    pub ca_pem: String,
    /// The CA certificate, DER (rustls configs built here: hyper).
    pub ca_der: CertificateDer<'static>,
    /// The device's rustls config: its certificate and key, TLS 1.3 and 1.2, resumption on.
    pub server: Arc<ServerConfig>,
}

impl Pki {
    /// A fresh CA (ECDSA P-256, rcgen's default) and a device certificate signed by it. With
    /// `x25519_only`, the device offers no other key exchange (a diagnostic: rustls 0.23.48's
    /// ring provider puts P-384 first, so rustls clients offer a P-384 key share, which a device
    /// that has it accepts; restricted, they are asked once for X25519, which rustls then
    /// remembers for the device).
    pub fn generate(x25519_only: bool) -> Result<Pki, String> {
        let err = |what: &'static str| move |e: rcgen::Error| format!("{what}: {e}");
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("finwatch compare CA (made at run time)");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        ca_params.not_before = date_time_ymd(2000, 1, 1);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err("CA key"))?)
            .map_err(err("CA certificate"))?;

        let key = KeyPair::generate().map_err(err("device key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("compare device");
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(crate::link::DEVICE_IP)),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = date_time_ymd(2000, 1, 1);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &ca).map_err(err("device certificate"))?;

        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut device_provider = (*provider()).clone();
        if x25519_only {
            device_provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
        }
        let mut server = ServerConfig::builder_with_provider(Arc::new(device_provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("server versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .map_err(|e| format!("server certificate: {e}"))?;
        // Stateless tickets (TLS 1.3, and 1.2 tickets); the default in-memory store serves TLS
        // 1.2 session IDs. rustls sends two TLS 1.3 tickets after each full handshake.
        server.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("ticketer: {e}"))?;
        Ok(Pki { ca_pem: ca.pem(), ca_der: ca.der().clone(), server: Arc::new(server) })
    }

    /// A rustls client config trusting only the run's CA, with rustls's default session cache
    /// (resumption on): a fresh one per client, so no client resumes another's sessions.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        self.client_config_with(provider())
    }

    /// The same with X25519 offered first, as finwatch does (ring's provider lists P-384 first,
    /// which costs the device ~5× the CPU per handshake): the TLS floor's.
    pub fn client_config_x25519_first(&self) -> Result<ClientConfig, String> {
        let mut p = (*provider()).clone();
        p.kx_groups.sort_by_key(|g| g.name() != rustls::NamedGroup::X25519);
        self.client_config_with(Arc::new(p))
    }

    fn client_config_with(&self, provider: Arc<CryptoProvider>) -> Result<ClientConfig, String> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).map_err(|e| format!("CA: {e}"))?;
        Ok(ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("client versions: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
