//! Certificate renewal without a restart: `POST /tls/reload` on the admin listener (and SIGHUP
//! to the binary) reads `[tls] cert` and `key` again. New connections get the new certificate,
//! connections already open keep working, a ticket issued before the reload resumes nothing
//! (SECURITY.md: rotate ticket keys on TLS reload), and a broken file keeps the certificate in
//! force.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{pki_types::CertificateDer, pki_types::ServerName, HandshakeKind};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::kit::{
    binary::log_field_text,
    client::{plain_client, tls_client_config_trusting},
    quoted,
    raw::get_request,
    BinaryGateway, GatewayAddrs, GatewayConfig, RawConn, TestGateway, TestUpstream, ALPN_H1,
};

const TOKEN: &str = "tls-reload-test-admin-token";

/// Two certificates for `localhost` and the paths the gateway is configured with.
struct Certs {
    _dir: tempfile::TempDir,
    old: (PathBuf, PathBuf),
    new: (PathBuf, PathBuf),
    live: (PathBuf, PathBuf),
}

impl Certs {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let make = |name: &str| {
            let out = dir.path().join(name);
            std::fs::create_dir(&out).expect("cert dir");
            sessiongate::tls::write_self_signed(&out, &["localhost".to_owned()]).expect("certificate")
        };
        let (old, new) = (make("old"), make("new"));
        let live = (dir.path().join("live-cert.pem"), dir.path().join("live-key.pem"));
        let certs = Self {
            _dir: dir,
            old,
            new,
            live,
        };
        certs.install(&certs.old);
        certs
    }

    /// Puts `pair` where the gateway reads its certificate and key.
    fn install(&self, pair: &(PathBuf, PathBuf)) {
        std::fs::copy(&pair.0, &self.live.0).expect("copy cert");
        std::fs::copy(&pair.1, &self.live.1).expect("copy key");
    }

    /// A client trusting both certificates, with a session-ticket store of its own.
    fn client(&self) -> TlsConnector {
        let config = tls_client_config_trusting(&[&self.old.0, &self.new.0], ALPN_H1);
        TlsConnector::from(Arc::new(config))
    }
}

fn der(path: &Path) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).expect("PEM certificate")
}

/// A connection that has completed one request (so that the client has read the server's
/// session tickets): which certificate it was shown, and how it was established.
async fn connect(
    addrs: &GatewayAddrs,
    client: &TlsConnector,
) -> (RawConn<TlsStream<TcpStream>>, CertificateDer<'static>, HandshakeKind) {
    let tcp = TcpStream::connect(addrs.https).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = client.connect(name, tcp).await.expect("TLS handshake");
    let (_, conn) = tls.get_ref();
    let shown = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a certificate")
        .clone()
        .into_owned();
    let kind = conn.handshake_kind().expect("handshake done");
    let mut raw = RawConn::new(tls);
    let reply = raw.roundtrip(get_request("/x", "localhost")).await.expect("request");
    assert_eq!(reply.status, 200, "{}", reply.text());
    (raw, shown, kind)
}

async fn reload(addrs: &GatewayAddrs, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = plain_client().post(addrs.admin_url("/tls/reload"));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.expect("POST /tls/reload");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_new_certificate_and_forgets_the_old_tickets() {
    let certs = Certs::new();
    let upstream = TestUpstream::start().await;
    let config = GatewayConfig::proxy_all_to(&upstream)
        .admin("token", quoted(TOKEN))
        .tls_files(&certs.live.0, &certs.live.1);
    let gw = TestGateway::start(config).await;
    let client = certs.client();
    let (old, new) = (der(&certs.old.0), der(&certs.new.0));

    let (mut open, shown, kind) = connect(&gw, &client).await;
    assert_eq!((shown, kind), (old.clone(), HandshakeKind::Full));
    let (_, shown, kind) = connect(&gw, &client).await;
    assert_eq!(
        (shown, kind),
        (old.clone(), HandshakeKind::Resumed),
        "resumption works before the reload"
    );

    assert_eq!(reload(&gw, None).await.0, 401, "a reload needs the admin token");
    certs.install(&certs.new);
    let (status, answer) = reload(&gw, Some(TOKEN)).await;
    assert_eq!(
        (status, &answer["reloaded"]),
        (200, &serde_json::json!(true)),
        "{answer}"
    );

    let (_, shown, kind) = connect(&gw, &client).await;
    assert_eq!(shown, new, "a new connection gets the new certificate");
    assert_eq!(
        kind,
        HandshakeKind::Full,
        "a ticket from before the reload resumed a session"
    );
    let (_, _, kind) = connect(&gw, &client).await;
    assert_eq!(kind, HandshakeKind::Resumed, "tickets issued after the reload resume");
    let again = open
        .roundtrip(get_request("/y", "localhost"))
        .await
        .expect("request on the open connection");
    assert_eq!(again.status, 200, "a connection open across the reload keeps working");

    // A broken file: the reload fails with the reason, and the certificate in force stays.
    std::fs::write(&certs.live.0, "not a certificate\n").expect("break the cert");
    let (status, answer) = reload(&gw, Some(TOKEN)).await;
    assert_eq!(status, 500, "{answer}");
    let reason = answer["error"].as_str().unwrap_or_default();
    assert!(reason.contains("tls.cert"), "{answer}");
    let (_, shown, _) = connect(&gw, &client).await;
    assert_eq!(shown, new);

    let metrics = gw.metrics_text().await;
    for (result, n) in [("ok", 1), ("failed", 1)] {
        let line = format!("sessiongate_tls_reloads_total{{result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_the_process_keeps_serving() {
    let certs = Certs::new();
    let upstream = TestUpstream::start().await;
    let config = GatewayConfig::proxy_all_to(&upstream).tls_files(&certs.live.0, &certs.live.1);
    let gw = BinaryGateway::start(config).await;
    let client = certs.client();
    assert_eq!(connect(&gw, &client).await.1, der(&certs.old.0));

    certs.install(&certs.new);
    gw.signal("HUP");
    let line = gw
        .wait_for_log(Duration::from_secs(10), |l| {
            log_field_text(l, "event").as_deref() == Some("tls_reloaded")
        })
        .await;
    assert!(
        log_field_text(&line, "cert").is_some_and(|c| c.ends_with("live-cert.pem")),
        "{line}"
    );
    assert_eq!(connect(&gw, &client).await.1, der(&certs.new.0));
}
