//! `https://` upstreams: the upstream's certificate is verified against `[upstream_tls] ca`
//! for the host the route names, a client certificate is presented when configured (mutual
//! TLS), connections are pooled as plain ones are, and every failure is a 502 that names
//! nothing of the upstream to the client.

use std::{path::Path, sync::Arc};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

use crate::kit::{quoted, run_cli, Echo, GatewayConfig, RouteSpec, TestGateway, TestUpstream};

/// A self-signed certificate for `hosts`, written to its own directory.
struct Pair {
    dir: TempDir,
}

impl Pair {
    fn new(hosts: &[&str]) -> Pair {
        let dir = tempfile::tempdir().expect("temp dir");
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        sessiongate::tls::write_self_signed(dir.path(), &hosts).expect("certificate");
        Pair { dir }
    }

    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(self.cert())
            .expect("read cert")
            .collect::<Result<_, _>>()
            .expect("parse cert")
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_file(self.key()).expect("read key")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// An upstream serving `pair`'s certificate; with `clients`, it requires a client
/// certificate that chains to it.
async fn tls_upstream(pair: &Pair, clients: Option<&Pair>) -> TestUpstream {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(clients) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(clients.chain());
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(pair.chain(), pair.key_der())
        .expect("server config");
    TestUpstream::start_tls(Arc::new(config)).await
}

fn path_str(p: &Path) -> String {
    quoted(p.to_str().expect("utf-8 path"))
}

/// One `auth = "none"` route to `upstream` (an `https://` URL), with `[upstream_tls]` as given.
fn gateway_to(upstream: &str, upstream_tls: &str) -> GatewayConfig {
    GatewayConfig::new()
        .section(&format!("[upstream_tls]\n{upstream_tls}"))
        .route(RouteSpec::new("/", upstream))
}

async fn upstream_connect_errors(gw: &TestGateway) -> Option<f64> {
    gw.metric("sessiongate_upstream_errors_total{kind=\"connect\"}").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_by_name_or_address_and_its_connections_pooled() {
    let pair = Pair::new(&["localhost", "127.0.0.1"]);
    let upstream = tls_upstream(&pair, None).await;
    let ca = format!("ca = {}\n", path_str(&pair.cert()));

    for url in [
        format!("https://localhost:{}", upstream.addr().port()),
        format!("https://127.0.0.1:{}", upstream.addr().port()),
    ] {
        let gw = TestGateway::start(gateway_to(&url, &ca)).await;
        let accepts_before = upstream.accepts();
        let client = gw.client();
        for i in 0..10 {
            let response = client
                .get(gw.url(&format!("/over-tls/{i}")))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200, "{url}");
            let echo = Echo::from_response(response).await;
            assert_eq!(echo.upstream(), "tls-upstream", "{url}");
            assert_eq!(echo.path(), format!("/over-tls/{i}"));
            assert_eq!(echo.header_joined("x-forwarded-proto"), "https");
        }
        let opened = upstream.accepts() - accepts_before;
        assert!(opened <= 3, "{url}: 10 requests opened {opened} TLS connections");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_the_ca_did_not_sign_or_for_another_name_is_a_502() {
    let pair = Pair::new(&["localhost", "127.0.0.1"]);
    let upstream = tls_upstream(&pair, None).await;
    let stranger = Pair::new(&["localhost", "127.0.0.1"]);
    let elsewhere = Pair::new(&["app.internal"]);
    let elsewhere_upstream = tls_upstream(&elsewhere, None).await;

    for (url, ca) in [
        // Trusting another certificate for the same names.
        (format!("https://localhost:{}", upstream.addr().port()), stranger.cert()),
        // The right certificate, but the route names an address it does not hold.
        (
            format!("https://127.0.0.1:{}", elsewhere_upstream.addr().port()),
            elsewhere.cert(),
        ),
    ] {
        let gw = TestGateway::start(gateway_to(&url, &format!("ca = {}\n", path_str(&ca)))).await;
        let response = gw.client().get(gw.url("/x")).send().await.expect("request");
        assert_eq!(response.status(), 502, "{url}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("127.0.0.1") && !body.contains("certificate"), "{body}");
        assert_eq!(upstream_connect_errors(&gw).await, Some(1.0), "{url}");
    }
    assert_eq!(upstream.request_count(), 0);
    assert_eq!(elsewhere_upstream.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_requires_a_client_certificate_gets_the_configured_one() {
    let pair = Pair::new(&["localhost"]);
    let client_pair = Pair::new(&["sessiongate.client"]);
    let upstream = tls_upstream(&pair, Some(&client_pair)).await;
    let url = format!("https://localhost:{}", upstream.addr().port());
    let ca = format!("ca = {}\n", path_str(&pair.cert()));

    let with = format!(
        "{ca}client_cert = {}\nclient_key = {}\n",
        path_str(&client_pair.cert()),
        path_str(&client_pair.key())
    );
    let gw = TestGateway::start(gateway_to(&url, &with)).await;
    let response = gw.client().get(gw.url("/mtls")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(Echo::from_response(response).await.path(), "/mtls");

    let gw = TestGateway::start(gateway_to(&url, &ca)).await;
    let response = gw
        .client()
        .get(gw.url("/no-client-cert"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 502);
    assert_eq!(upstream.request_count(), 1, "served without a client certificate");
}

#[test]
fn bad_upstream_tls_settings_are_named_at_start() {
    let pair = Pair::new(&["localhost"]);
    let empty = tempfile::NamedTempFile::new().expect("temp file");
    let cases = [
        (format!("ca = {}\n", quoted("/nonexistent/ca.pem")), "upstream_tls.ca"),
        (format!("ca = {}\n", path_str(empty.path())), "upstream_tls.ca"),
        (
            format!("client_cert = {}\n", path_str(&pair.cert())),
            "upstream_tls.client_cert",
        ),
        (
            // A key that is not the certificate's.
            format!(
                "client_cert = {}\nclient_key = {}\n",
                path_str(&pair.cert()),
                path_str(&Pair::new(&["other"]).key())
            ),
            "upstream_tls.client_key",
        ),
    ];
    for (section, key) in cases {
        let prepared = gateway_to("https://localhost:8443", &section).prepare();
        let out = run_cli(["check", "--config", prepared.path.to_str().expect("utf-8 path")]);
        assert_eq!(out.code(), Some(2), "{section}: {out:?}");
        assert!(out.stderr.contains(key), "{section}: {}", out.stderr);
        let line = out.stderr.split(".toml:").nth(1).unwrap_or_default();
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "no line: {}",
            out.stderr
        );
    }
    let prepared = GatewayConfig::new()
        .route(RouteSpec::new("/", "ftp://localhost:21"))
        .prepare();
    let out = run_cli(["check", "--config", prepared.path.to_str().expect("utf-8 path")]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("http:// or https://"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_reaches_an_https_upstream() {
    use tokio_tungstenite::tungstenite::Message;

    let pair = Pair::new(&["localhost"]);
    let upstream = tls_upstream(&pair, None).await;
    let url = format!("https://localhost:{}", upstream.addr().port());
    let gw = TestGateway::start(gateway_to(&url, &format!("ca = {}\n", path_str(&pair.cert())))).await;

    let (mut ws, response) = crate::foundation::websocket::open_ws(&gw).await;
    assert_eq!(response.status(), 101);
    crate::foundation::websocket::assert_echoed(&mut ws, Message::text("over TLS both ways")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_client_certificate_is_put_in_force_by_a_reload() {
    let pair = Pair::new(&["localhost"]);
    let (old, renewed) = (Pair::new(&["gateway-2025"]), Pair::new(&["gateway-2026"]));
    // The upstream already trusts only the renewed certificate.
    let upstream = tls_upstream(&pair, Some(&renewed)).await;
    let url = format!("https://localhost:{}", upstream.addr().port());
    let files = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (files.path().join("client.pem"), files.path().join("client-key.pem"));
    std::fs::copy(old.cert(), &cert).expect("copy cert");
    std::fs::copy(old.key(), &key).expect("copy key");
    let section = format!(
        "ca = {}\nclient_cert = {}\nclient_key = {}\n",
        path_str(&pair.cert()),
        path_str(&cert),
        path_str(&key)
    );
    let token = "upstream-tls-reload-token-0123456789";
    let gw = TestGateway::start(gateway_to(&url, &section).admin("token", quoted(token))).await;
    let response = gw.client().get(gw.url("/before")).send().await.expect("request");
    assert_eq!(response.status(), 502, "the old certificate was accepted");

    std::fs::copy(renewed.cert(), &cert).expect("renew cert");
    std::fs::copy(renewed.key(), &key).expect("renew key");
    let reload = crate::kit::client::plain_client()
        .post(gw.admin_url("/reload"))
        .bearer_auth(token)
        .send()
        .await
        .expect("POST /reload");
    assert_eq!(reload.status(), 200);
    let report: serde_json::Value = reload.json().await.expect("reload report");
    assert_eq!(report["upstream_tls_reloaded"], true, "{report}");
    assert_eq!(report["restart_needed"], serde_json::json!([]), "{report}");

    let response = gw.client().get(gw.url("/after")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.targets(), ["/after"]);
}
