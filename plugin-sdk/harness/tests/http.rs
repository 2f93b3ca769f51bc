//! Scripted HTTP and `tick` in the harness, with the `http-probe` guest: its `authenticate` sends a
//! request to the URL in the password (method = user name, GET by default) and allows on status 200
//! with attributes `status`, `content-type`, `body`; an HTTP error denies with 0x80 and the error as
//! reason (`timeout`, `not-allowed: ...`, `transport: ...`). Its `tick` GETs config `tick_url` into kv `tick-body`.

use std::time::{Duration, Instant};

use wasp_plugin_harness::*;
use wasp_plugin_host::test_programs as guests;

const JWKS: &str = "https://idp.test/jwks";

fn probe() -> Harness {
    Harness::load(guests::HTTP_PROBE)
        .http_grant(["idp.test", "127.0.0.1:8443"])
        .build()
        .unwrap()
}

fn fetch(harness: &Harness, method: Option<&str>, url: &str) -> AuthVerdict {
    let mut request = client("c1").password(url);
    if let Some(method) = method {
        request = request.username(method);
    }
    harness.authenticate(request.auth_request()).unwrap()
}

fn denial_reason(verdict: AuthVerdict) -> String {
    match verdict {
        AuthVerdict::Deny(Denial { reason, .. }) => reason.unwrap_or_default(),
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn a_scripted_response_reaches_the_guest_and_the_request_is_recorded() {
    let harness = probe();
    harness.http().respond_with(
        "GET",
        JWKS,
        HttpResponse {
            status: 200,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: br#"{"keys":[]}"#.to_vec(),
        },
    );
    harness
        .http()
        .respond("POST", "https://127.0.0.1:8443/token", 201, "created");
    assert_eq!(
        fetch(&harness, None, JWKS),
        AuthVerdict::Allow(vec![
            ("status".to_owned(), "200".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("body".to_owned(), r#"{"keys":[]}"#.to_owned()),
        ])
    );
    assert_eq!(
        denial_reason(fetch(
            &harness,
            Some("POST"),
            "https://127.0.0.1:8443/token"
        )),
        "status 201"
    );

    let requests = harness.http().requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].url.as_str()),
        ("GET", JWKS)
    );
    assert_eq!(
        requests[0].headers,
        [("x-probe".to_owned(), "1".to_owned())]
    );
    assert!(requests[0].body.is_empty());
    // No timeout of its own: the host gives what remains of the 100 ms deadline, less its 20 ms margin.
    assert!(
        requests[0].timeout <= Duration::from_millis(80) && requests[0].timeout > Duration::ZERO,
        "{:?}",
        requests[0].timeout
    );
    assert_eq!(requests[1].method, "POST");
    assert_eq!(requests[1].body, b"hello");
    assert!(
        requests[1]
            .headers
            .contains(&("content-type".to_owned(), "text/plain".to_owned()))
    );
    let stats = harness.stats();
    assert_eq!((stats.http_requests, stats.http_failures), (2, 0));
}

#[test]
fn hosts_outside_the_grant_are_refused_before_the_script() {
    let harness = probe();
    harness
        .http()
        .respond("GET", "https://evil.test/", 200, "should not be read");
    let reason = denial_reason(fetch(&harness, None, "https://evil.test/"));
    assert!(reason.starts_with("not-allowed: "), "{reason}");
    assert!(reason.contains("evil.test:443"), "{reason}");
    // The granted host on another port, and plain HTTP, are refused too.
    for url in ["https://idp.test:8443/jwks", "http://idp.test/jwks"] {
        assert!(
            denial_reason(fetch(&harness, None, url)).starts_with("not-allowed: "),
            "{url}"
        );
    }
    assert!(harness.http().requests().is_empty());
    assert_eq!(harness.stats().http_failures, 3);
}

#[test]
fn timeouts_scripted_and_real() {
    let harness = Harness::load(guests::HTTP_PROBE)
        .http_grant(["idp.test"])
        .limits(SandboxLimits {
            call_timeout: Duration::from_millis(300),
            ..SandboxLimits::default()
        })
        .build()
        .unwrap();
    harness
        .http()
        .fail("https://idp.test/slow", HttpError::Timeout)
        .hang("https://idp.test/hang");
    assert_eq!(
        denial_reason(fetch(&harness, None, "https://idp.test/slow")),
        "timeout"
    );
    // A server that never answers: the host stops waiting before the deadline, the guest still
    // answers, and the call succeeds.
    let started = Instant::now();
    assert_eq!(
        denial_reason(fetch(&harness, None, "https://idp.test/hang")),
        "timeout"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(230) && elapsed < Duration::from_millis(300),
        "{elapsed:?}"
    );
    assert_eq!(harness.stats().failures.total(), 0);
}

#[test]
fn answers_in_order_then_sticky_and_unmatched_requests_fail() {
    let harness = probe();
    harness
        .http()
        .respond("GET", JWKS, 503, "")
        .respond("GET", JWKS, 200, "v1")
        .respond("GET", JWKS, 200, "v2");
    let status_or_body = |verdict: AuthVerdict| match verdict {
        AuthVerdict::Allow(attributes) => attributes[2].1.clone(),
        other => denial_reason(other),
    };
    let seen: Vec<String> = (0..4)
        .map(|_| status_or_body(fetch(&harness, None, JWKS)))
        .collect();
    assert_eq!(seen, ["status 503", "v1", "v2", "v2"]);

    // The same URL with another method has no script.
    assert_eq!(
        denial_reason(fetch(&harness, Some("DELETE"), JWKS)),
        format!("transport: no scripted response for DELETE {JWKS}")
    );
    assert_eq!(harness.http().requests().len(), 5);
    harness.http().reset();
    assert!(harness.http().requests().is_empty());
    assert!(denial_reason(fetch(&harness, None, JWKS)).starts_with("transport: "));
}

#[test]
fn tick_runs_the_ticker_export() {
    let harness = Harness::load(guests::HTTP_PROBE)
        .http_grant(["idp.test"])
        .config_json(&format!(r#"{{"tick_url": "{JWKS}"}}"#))
        .build()
        .unwrap();
    harness.http().respond("GET", JWKS, 200, "keys-1");
    assert_eq!(harness.tick(), Ok(30));
    assert_eq!(harness.kv().get("tick-body"), Some(b"keys-1".to_vec()));
    assert_eq!(harness.stats().ticks, 1);

    let no_ticker = Harness::load(guests::AUTH_ONLY).build().unwrap();
    assert_eq!(no_ticker.tick(), Err(CallError::MissingExport("ticker")));
}

#[test]
fn a_plugin_importing_http_needs_a_grant() {
    let error = Harness::load(guests::HTTP_PROBE).build().err().unwrap();
    assert!(matches!(error, HostError::Http { .. }), "{error:?}");
    assert!(error.to_string().contains("http = { hosts"), "{error}");
}
