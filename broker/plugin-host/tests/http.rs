//! The `http` import with the production client (reqwest over rustls) against a real HTTPS server on
//! 127.0.0.1, whose certificate is signed by a CA made for the test and trusted through the grant's
//! `ca_file`. The guest is `http-probe`: its `authenticate` fetches the URL in the password.

mod common;

use common::host;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wasp_plugin_host::test_programs as guests;
use wasp_plugin_host::types::*;
use wasp_plugin_host::*;

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTPS server on 127.0.0.1:0 with a certificate for `127.0.0.1` and `localhost`, signed by a CA
/// whose PEM is in `ca_file`. Paths: `/ok` (200, JSON), `/redirect` (302 to `/ok`), `/big` (2 MiB),
/// `/echo` (200, the request body), `/hang` (never answers).
struct Server {
    port: u16,
    ca_file: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wasp test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to serve.
                    if let Ok(stream) = acceptor.accept(socket).await {
                        serve(stream, log).await;
                    }
                });
            }
        });
        Self {
            port,
            ca_file,
            seen,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn grant(&self) -> HttpGrant {
        HttpGrant {
            hosts: vec![format!("127.0.0.1:{}", self.port)],
            ca_file: Some(self.ca_file.clone()),
            allow_plain_http: false,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

/// Serves one request per connection (HTTP/1.1, `connection: close`).
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_owned();
    let path = start.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    log.lock().push(Seen {
        method,
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let (status, extra, payload): (&str, &str, Vec<u8>) = match path.as_str() {
        "/ok" => (
            "200 OK",
            "content-type: application/json\r\n",
            br#"{"keys":[]}"#.to_vec(),
        ),
        "/redirect" => ("302 Found", "location: /ok\r\n", Vec::new()),
        "/big" => ("200 OK", "", vec![b'x'; 2 << 20]),
        "/echo" => ("200 OK", "content-type: text/plain\r\n", body),
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        _ => ("404 Not Found", "", Vec::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
        payload.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.write_all(&payload).await;
    let _ = stream.shutdown().await;
}

async fn probe(
    host: &PluginHost,
    grant: Option<HttpGrant>,
    config: &str,
    call_timeout: Duration,
) -> Result<Plugin, HostError> {
    let mut spec = PluginSpec::new("probe", guests::HTTP_PROBE);
    spec.config_json = config.to_owned();
    spec.http = grant;
    spec.limits.call_timeout = call_timeout;
    host.load(spec, HostServices::default()).await
}

/// Authenticates with the URL as password and `method` as user name (`None`: GET).
async fn fetch(plugin: &Plugin, method: Option<&str>, url: &str) -> AuthVerdict {
    let request = AuthRequest {
        client: ClientInfo {
            client_id: "c1".to_owned(),
            username: method.map(str::to_owned),
            listener: "default".to_owned(),
            peer_address: "127.0.0.1:50000".to_owned(),
            protocol: ProtocolVersion::V5,
            tls_identity: None,
        },
        password: Some(url.as_bytes().to_vec()),
        auth_method: None,
        auth_data: None,
        reauthentication: false,
    };
    plugin.authenticate(&request).await.unwrap()
}

fn denial(verdict: AuthVerdict) -> (u8, String) {
    match verdict {
        AuthVerdict::Deny(Denial {
            reason_code,
            reason,
        }) => (reason_code, reason.unwrap_or_default()),
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_grants_ca_file_reaches_the_server() {
    let server = Server::start().await;
    let host = host();
    let plugin = probe(&host, Some(server.grant()), "{}", Duration::from_secs(5))
        .await
        .unwrap();

    let verdict = fetch(&plugin, None, &server.url("/ok")).await;
    assert_eq!(
        verdict,
        AuthVerdict::Allow(vec![
            ("status".to_owned(), "200".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("body".to_owned(), r#"{"keys":[]}"#.to_owned()),
        ])
    );
    let verdict = fetch(&plugin, Some("POST"), &server.url("/echo")).await;
    assert!(
        matches!(&verdict, AuthVerdict::Allow(attributes) if attributes[2].1 == "hello"),
        "{verdict:?}"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/ok")
    );
    assert_eq!(seen[0].header("x-probe"), Some("1"));
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("POST", "/echo")
    );
    assert_eq!(seen[1].body, b"hello");
    assert_eq!(seen[1].header("content-type"), Some("text/plain"));

    // Redirects are the plugin's business: the 302 comes back, `/ok` is not fetched.
    assert_eq!(
        denial(fetch(&plugin, None, &server.url("/redirect")).await),
        (0x87, "status 302".to_owned())
    );
    assert_eq!(server.seen().len(), 3);
    // Bodies over 1 MiB are refused.
    let (code, reason) = denial(fetch(&plugin, None, &server.url("/big")).await);
    assert_eq!(code, 0x80);
    assert!(reason == "too-large", "{reason}");

    let stats = plugin.stats();
    assert_eq!((stats.http_requests, stats.http_failures), (4, 1));
    assert_eq!(
        stats.failures.total(),
        0,
        "HTTP errors are answers, not failed calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_the_grant_and_plain_http_are_refused_before_any_connection() {
    let server = Server::start().await;
    let host = host();
    let plugin = probe(&host, Some(server.grant()), "{}", Duration::from_secs(5))
        .await
        .unwrap();
    // The same server under another name, another port, plain HTTP.
    for url in [
        format!("https://localhost:{}/ok", server.port),
        "https://127.0.0.1/ok".to_owned(),
        format!("http://127.0.0.1:{}/ok", server.port),
    ] {
        let (code, reason) = denial(fetch(&plugin, None, &url).await);
        assert_eq!(code, 0x80);
        assert!(reason.starts_with("not-allowed: "), "{url}: {reason}");
    }
    let (_, reason) = denial(
        fetch(
            &plugin,
            None,
            &format!("https://localhost:{}/", server.port),
        )
        .await,
    );
    assert!(
        reason.contains(&format!("localhost:{}", server.port)),
        "{reason}"
    );
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    assert_eq!(plugin.stats().http_failures, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_file_the_certificate_is_not_trusted() {
    let server = Server::start().await;
    let host = host();
    let grant = HttpGrant {
        ca_file: None,
        ..server.grant()
    };
    let plugin = probe(&host, Some(grant), "{}", Duration::from_secs(5))
        .await
        .unwrap();
    let (code, reason) = denial(fetch(&plugin, None, &server.url("/ok")).await);
    assert_eq!(code, 0x80);
    assert!(reason.starts_with("transport: "), "{reason}");
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    assert!(server.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_is_a_timeout_answer_within_the_calls_deadline() {
    let server = Server::start().await;
    let host = host();
    let deadline = Duration::from_millis(400);
    let plugin = probe(&host, Some(server.grant()), "{}", deadline)
        .await
        .unwrap();
    let started = Instant::now();
    let verdict = fetch(&plugin, None, &server.url("/hang")).await;
    let elapsed = started.elapsed();
    // The guest got `error::timeout` in time to answer: the call itself succeeded.
    assert_eq!(denial(verdict), (0x80, "timeout".to_owned()));
    assert!(
        elapsed >= deadline - deadline_margin(deadline) - Duration::from_millis(20)
            && elapsed < deadline,
        "{elapsed:?}"
    );
    assert_eq!(plugin.stats().failures.total(), 0);
    assert_eq!(server.seen().len(), 1);

    // The request's own timeout, when shorter, wins.
    let plugin = probe(
        &host,
        Some(server.grant()),
        r#"{"timeout_ms": 50}"#,
        deadline,
    )
    .await
    .unwrap();
    let started = Instant::now();
    assert_eq!(
        denial(fetch(&plugin, None, &server.url("/hang")).await),
        (0x80, "timeout".to_owned())
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(50) && elapsed < Duration::from_millis(250),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_fetches_through_the_same_grant() {
    let server = Server::start().await;
    let host = host();
    let kv = Arc::new(MemoryKv::default());
    let mut spec = PluginSpec::new("probe", guests::HTTP_PROBE);
    spec.config_json = format!(r#"{{"tick_url": "{}"}}"#, server.url("/ok"));
    spec.http = Some(server.grant());
    spec.limits.call_timeout = Duration::from_secs(5);
    let services = HostServices {
        kv: kv.clone(),
        ..HostServices::default()
    };
    let plugin = host.load(spec, services).await.unwrap();
    assert_eq!(plugin.tick().await, Ok(30));
    assert_eq!(kv.get("tick-body"), Some(br#"{"keys":[]}"#.to_vec()));
    assert_eq!(plugin.stats().ticks, 1);
}

#[tokio::test]
async fn an_http_importer_without_a_grant_or_with_a_bad_one_is_refused_at_load() {
    let host = host();
    let error = probe(&host, None, "{}", Duration::from_secs(1))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, HostError::Http { .. }), "{error:?}");
    assert!(text.starts_with("plugin `probe`: "), "{text}");
    assert!(text.contains("add http = { hosts = ["), "{text}");

    let bad_ca = HttpGrant {
        hosts: vec!["idp.example.com".to_owned()],
        ca_file: Some("/nonexistent/ca.pem".into()),
        allow_plain_http: false,
    };
    let text = probe(&host, Some(bad_ca), "{}", Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("/nonexistent/ca.pem"), "{text}");

    let bad_host = HttpGrant {
        hosts: vec!["https://idp.example.com".to_owned()],
        ..HttpGrant::default()
    };
    let text = probe(&host, Some(bad_host), "{}", Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("https://idp.example.com"), "{text}");

    // A component that does not import `http` needs no grant (allow-deny never calls it).
    assert!(
        host.load(
            PluginSpec::new("plain", guests::ALLOW_DENY),
            HostServices::default()
        )
        .await
        .is_ok()
    );
}
