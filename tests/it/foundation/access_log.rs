//! The binary's JSON access log: one line per request with the fields operators query, the
//! client IP as the gateway decided it, and never a credential (SECURITY.md rule 8).

use serde_json::Value;

use crate::kit::{
    binary::{log_field, log_field_text},
    quoted, secs, BinaryGateway, Echo, GatewayConfig, TestUpstream,
};

/// Whether `line` is the access log line of a request to a path starting with `path`.
fn is_access_line_for(line: &Value, path: &str) -> bool {
    log_field(line, "status").is_some() && log_field_text(line, "path").is_some_and(|p| p.starts_with(path))
}

/// Whether a log field is a number (or a string holding one).
fn is_numeric(line: &Value, name: &str) -> bool {
    match log_field(line, name) {
        Some(Value::Number(_)) => true,
        Some(Value::String(s)) => s.parse::<f64>().is_ok(),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_logs_one_json_line_without_credentials() {
    let upstream = TestUpstream::start().await;
    let gw = BinaryGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    let response = gw
        .client()
        .get(gw.url("/hello?x=1"))
        .header("cookie", "theme=dark; private=cookie-secret-4711")
        .header("authorization", "Bearer bearer-secret-0815")
        .send()
        .await
        .expect("request");
    Echo::from_response(response).await;

    let line = gw
        .wait_for_log(secs(5), |line| is_access_line_for(line, "/hello"))
        .await;
    assert_eq!(log_field_text(&line, "method").as_deref(), Some("GET"), "{line}");
    assert_eq!(log_field_text(&line, "status").as_deref(), Some("200"), "{line}");
    assert_eq!(log_field_text(&line, "route").as_deref(), Some("/"), "{line}");
    assert_eq!(
        log_field_text(&line, "client_ip").as_deref(),
        Some("127.0.0.1"),
        "{line}"
    );
    assert_eq!(
        log_field_text(&line, "upstream").as_deref(),
        Some(upstream.url().as_str()),
        "{line}"
    );
    for timing in ["upstream_ms", "total_ms"] {
        assert!(is_numeric(&line, timing), "{timing} in {line}");
    }

    let log = gw.stderr_text();
    for secret in ["cookie-secret-4711", "bearer-secret-0815"] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_is_the_rightmost_untrusted_forwarded_address() {
    let upstream = TestUpstream::start().await;
    let gw = BinaryGateway::start(
        GatewayConfig::proxy_all_to(&upstream).server("trusted_proxies", format!("[{}]", quoted("127.0.0.0/8"))),
    )
    .await;

    // 203.0.113.9 was typed by the client; 198.51.100.7 is what our trusted proxy saw.
    let response = gw
        .client()
        .get(gw.url("/proxied"))
        .header("x-forwarded-for", "203.0.113.9, 198.51.100.7, 127.0.0.5")
        .send()
        .await
        .expect("request");
    Echo::from_response(response).await;

    let line = gw
        .wait_for_log(secs(5), |line| is_access_line_for(line, "/proxied"))
        .await;
    assert_eq!(
        log_field_text(&line, "client_ip").as_deref(),
        Some("198.51.100.7"),
        "{line}"
    );
}
