//! A throwaway PKI for TLS tests: certificate authorities, and server and client certificates they
//! sign (valid or expired), as DER for rustls clients and as PEM files for the broker and the
//! `mosquitto_*` clients. [`Pki`] is one test's set: a CA, a server certificate, their files, and the
//! broker's TLS settings for them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use wasp::config::{CertField, TlsSettings, TlsVersion};

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

/// The certificates of one test, with their PEM files in a temporary directory.
pub struct Pki {
    pub ca: Ca,
    pub dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A CA and a server certificate for 127.0.0.1 and localhost, as `ca.pem`, `server.pem` and
    /// `server.key` in a new temporary directory.
    pub fn new() -> Pki {
        let ca = Ca::new("wasp test CA");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        ca.issue(Leaf::Server(&["127.0.0.1", "localhost"]), false)
            .write(dir.path(), "server");
        Pki { ca, dir }
    }

    /// A file of this PKI's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client certificate from this PKI's CA, written as `NAME.pem` / `NAME.key`.
    pub fn client(&self, name: &str, common_name: &str, expired: bool) -> Issued {
        let issued = self.ca.issue(
            Leaf::Client {
                common_name,
                alt_name: Some("device.example"),
            },
            expired,
        );
        issued.write(self.dir.path(), name);
        issued
    }

    /// TLS settings with the server certificate, no client certificates.
    pub fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert_file: self.path("server.pem"),
            key_file: self.path("server.key"),
            client_ca_file: None,
            require_client_cert: false,
            username_from_cert: None,
            min_version: TlsVersion::V1_2,
            reload_check: None,
        }
    }

    /// Mutual TLS: client certificates from this CA required.
    pub fn mtls_settings(&self, username_from_cert: Option<CertField>) -> TlsSettings {
        TlsSettings {
            client_ca_file: Some(self.path("ca.pem")),
            require_client_cert: true,
            username_from_cert,
            ..self.settings()
        }
    }

    /// The CA, as a client's trusted roots.
    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.ca.der()]
    }
}
