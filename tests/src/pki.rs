//! A throwaway PKI for TLS tests: certificate authorities, and server and client certificates they
//! sign (valid or expired), as DER for rustls clients and as PEM files for the broker and the
//! `mosquitto_*` clients.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate with its key.
pub struct Issued {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    key_der: Vec<u8>,
}

/// What a leaf certificate is for.
pub enum Leaf<'a> {
    /// A server certificate for these names (IP addresses become IP SANs).
    Server(&'a [&'a str]),
    /// A client certificate with this Common Name and, if given, this DNS Subject Alternative Name.
    Client {
        common_name: &'a str,
        alt_name: Option<&'a str>,
    },
}

impl Ca {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate signed by this CA, valid now (or, with `expired`, only in 2020).
    pub fn issue(&self, leaf: Leaf<'_>, expired: bool) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = match leaf {
            Leaf::Server(names) => {
                let mut params = CertificateParams::new(
                    names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
                )
                .expect("server params");
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params
            }
            Leaf::Client {
                common_name,
                alt_name,
            } => {
                let mut params = CertificateParams::new(
                    alt_name.map(str::to_owned).into_iter().collect::<Vec<_>>(),
                )
                .expect("client params");
                params
                    .distinguished_name
                    .push(DnType::CommonName, common_name);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                params
            }
        };
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Issued {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

impl Issued {
    /// The private key, DER.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes `NAME.pem` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A rustls client configuration trusting `roots`, presenting `identity` if given, offering `alpn`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    identity: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("root certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("TLS versions")
    .with_root_certificates(store);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert.clone()], id.key())
            .expect("client certificate"),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}
