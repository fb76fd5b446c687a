//! Bounded everything (SECURITY.md rule 9): body and header sizes, slow clients cut off by
//! timeouts that count from the first byte, and the connection limit.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::client::TlsStream;

use crate::kit::{
    millis, raw::get_request, secs, within, Echo, GatewayConfig, RawConn, RouteSpec, TestGateway, TestUpstream,
    ALPN_H1, ALPN_H2, SLOW_BODY,
};

/// A gateway with one route, `/`, whose bodies may be at most 1024 bytes.
async fn gateway_with_body_limit(upstream: &TestUpstream) -> TestGateway {
    TestGateway::start(GatewayConfig::new().route(RouteSpec::new("/", upstream.url()).max_body_bytes(1024))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_route_limit_is_413_and_never_forwarded() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with_body_limit(&upstream).await;
    let client = gw.client();

    let response = client
        .post(gw.url("/upload"))
        .body(vec![b'a'; 2048])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 413);
    assert_eq!(upstream.request_count(), 0, "oversized body was forwarded");

    // Exactly at the limit is fine.
    let response = client
        .post(gw.url("/upload"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .expect("request");
    assert_eq!(Echo::from_response(response).await.body_len(), 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_route_limit_is_413() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with_body_limit(&upstream).await;

    // A streamed body has no Content-Length: the limit must be enforced while reading.
    let chunks = stream::iter([
        Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 1024])),
        Ok(Bytes::from(vec![b'b'; 1024])),
    ]);
    let response = gw
        .client()
        .post(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_body_is_never_parsed_as_the_next_request() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with_body_limit(&upstream).await;
    let host = gw.host_header();

    // The 2048-byte body is itself a request. If the gateway answers 413 without draining the
    // body and keeps the connection, that request would be served next (the Pingora trap).
    let smuggled_head = format!("GET /smuggled HTTP/1.1\r\nHost: {host}\r\nX-Pad: ");
    let padding = 2048 - smuggled_head.len() - "\r\n\r\n".len();
    let body = format!("{smuggled_head}{}\r\n\r\n", "p".repeat(padding));
    assert_eq!(body.len(), 2048);
    let mut conn = gw.raw().await;
    let response = within(
        secs(5),
        "413 response",
        conn.roundtrip(format!(
            "POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2048\r\n\r\n{body}"
        )),
    )
    .await
    .expect("413 response");
    assert_eq!(response.status, 413, "{}", response.text());

    // Either the connection is closed, or the next request is the one we send now.
    let next = within(
        secs(5),
        "the connection to answer or close",
        conn.roundtrip(get_request("/after", &host)),
    )
    .await;
    if let Ok(next) = next {
        assert_eq!(next.echo().path(), "/after", "request after a 413 was desynchronised");
    }
    assert!(
        !upstream.targets().iter().any(|t| t.starts_with("/smuggled")),
        "the refused body was parsed as a request: {:?}",
        upstream.targets()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_headers_are_431() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server("max_header_bytes", "4096")).await;
    let client = gw.client();

    let response = client
        .get(gw.url("/big"))
        .header("x-big", "b".repeat(8 * 1024))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 431);
    assert_eq!(upstream.request_count(), 0);

    let response = client
        .get(gw.url("/small"))
        .header("x-big", "b".repeat(1024))
        .send()
        .await
        .expect("request");
    assert_eq!(Echo::from_response(response).await.path(), "/small");
}

/// `GET path` with `n` small headers `x-h-0` ... (plus the few the client adds itself).
async fn get_with_headers(client: &reqwest::Client, url: String, n: usize) -> reqwest::StatusCode {
    let mut request = client.get(url);
    for i in 0..n {
        request = request.header(format!("x-h-{i}"), "v");
    }
    request.send().await.expect("request").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_request_headers_are_431_on_http1_and_http2() {
    // The count, not the bytes: every head here is far below max_header_bytes.
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server("max_headers", "40")).await;
    let (h1, h2) = (gw.client(), gw.client_h2());
    for (name, client) in [("HTTP/1.1", &h1), ("HTTP/2", &h2)] {
        assert_eq!(get_with_headers(client, gw.url("/many"), 60).await, 431, "{name}");
        assert_eq!(get_with_headers(client, gw.url("/few"), 20).await, 200, "{name}");
    }
    assert_eq!(
        upstream.request_count(),
        2,
        "only the requests within the limit reach the upstream"
    );

    // The default, 100: hyper's own HTTP/1 bound, and the same for HTTP/2.
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    for (name, client) in [("HTTP/1.1", gw.client()), ("HTTP/2", gw.client_h2())] {
        assert_eq!(get_with_headers(&client, gw.url("/many"), 150).await, 431, "{name}");
        assert_eq!(get_with_headers(&client, gw.url("/few"), 80).await, 200, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_target_over_the_limit_is_414_on_http1_and_http2() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server("max_uri_bytes", "1024")).await;
    // The query counts: a long one is as long a target as a long path.
    let long_query = format!("/search?q={}", "a".repeat(1100));
    let fits = format!("/search?q={}", "a".repeat(900));
    for (name, client) in [("HTTP/1.1", gw.client()), ("HTTP/2", gw.client_h2())] {
        let status = |target: &str| {
            let request = client.get(gw.url(target));
            async move { request.send().await.expect("request").status() }
        };
        assert_eq!(status(&long_query).await, 414, "{name}");
        assert_eq!(status(&format!("/{}", "p".repeat(1100))).await, 414, "{name}");
        assert_eq!(status(&fits).await, 200, "{name}");
    }
    assert_eq!(
        upstream.request_count(),
        2,
        "only the targets within the limit reach the upstream"
    );
}

/// A gateway cutting off header reads after 500 ms.
async fn gateway_with_short_header_timeout(upstream: &TestUpstream) -> TestGateway {
    TestGateway::start(GatewayConfig::proxy_all_to(upstream).server_str("header_read_timeout", "500ms")).await
}

/// Fails the test unless what the gateway sent before closing is nothing or a 408.
fn assert_closed_or_408(received: &[u8]) {
    let text = String::from_utf8_lossy(received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.0 408"),
        "expected a close or 408, got: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_head_is_cut_off() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with_short_header_timeout(&upstream).await;
    let mut conn = gw.raw().await;

    conn.send("GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send half a request head");
    let received = within(secs(3), "slowloris connection to be closed", conn.read_until_closed()).await;
    assert_closed_or_408(&received);
    assert_eq!(upstream.request_count(), 0);
    // Counted for operators; the count lands just after the close the client saw.
    within(secs(3), "the cut connection to be counted", async {
        while !gw
            .metrics_text()
            .await
            .lines()
            .any(|l| l == "sessiongate_header_timeouts_total 1")
        {
            tokio::time::sleep(millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_request_head_is_cut_off_counting_from_the_first_byte() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with_short_header_timeout(&upstream).await;
    let tls = within(secs(5), "TLS connect", gw.tls_connect(ALPN_H1))
        .await
        .expect("TLS connect");
    let (reader, mut writer) = tokio::io::split(tls);

    // One byte every 100 ms keeps the connection busy forever unless the timeout counts
    // from the first byte rather than from the last one. This pacing is the attack itself.
    let trickle = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        if writer.write_all(head).await.is_err() {
            return;
        }
        let mut ticks = tokio::time::interval(millis(100));
        loop {
            ticks.tick().await;
            if writer.write_all(b"a").await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
    });
    let mut conn: RawConn<ReadHalf<TlsStream<TcpStream>>> = RawConn::new(reader);
    let received = within(secs(3), "trickling connection to be closed", conn.read_until_closed()).await;
    trickle.abort();
    assert_closed_or_408(&received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_after_the_handshake_is_cut_by_the_header_timeout() {
    let upstream = TestUpstream::start().await;
    // The keep-alive timeout stays at its default (60 s): only the header timeout can act.
    let gw = gateway_with_short_header_timeout(&upstream).await;
    let mut conn = gw.raw().await;

    let received = within(secs(3), "silent connection to be closed", conn.read_until_closed()).await;
    assert_closed_or_408(&received);
}

/// Header timeout 300 ms, keep-alive timeout 5 s.
async fn gateway_with_short_header_and_long_keepalive(upstream: &TestUpstream) -> TestGateway {
    TestGateway::start(
        GatewayConfig::proxy_all_to(upstream)
            .server_str("header_read_timeout", "300ms")
            .server_str("keepalive_timeout", "5s"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_time_between_requests_is_keepalive_time_not_header_time() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with_short_header_and_long_keepalive(&upstream).await;
    let mut conn = gw.raw().await;

    let first = conn
        .roundtrip(get_request("/first", &gw.host_header()))
        .await
        .expect("first request");
    assert_eq!(first.status, 200);
    // Idle for three header timeouts, well inside the keep-alive timeout: the idle
    // time itself is what is under test, so it cannot be awaited as an event.
    tokio::time::sleep(millis(900)).await;
    gw.assert_still_serves(&mut conn, "/second").await;
}

/// An app that answers a request as soon as its head is in, then reads the body
/// (`Content-Length`) to its end, as one that streams an upload to storage may. Raw TCP:
/// the kit's hyper upstream, asked to do the same, stopped reading after its answer.
/// Resolves to the number of body bytes it read after answering.
async fn early_answering_app() -> (String, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the app");
    let url = format!("http://{}", listener.local_addr().expect("app address"));
    let app = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept the gateway");
        let mut received = Vec::new();
        let head_end = loop {
            if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.expect("read the head");
            assert!(n > 0, "the gateway closed before the head ended");
            received.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a Content-Length on the forwarded upload");
        tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nearly answer\n")
            .await
            .expect("answer early");
        let mut rest = received.len() - head_end;
        let mut buf = vec![0u8; 4096];
        while rest < length {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest += n,
            }
        }
        rest
    });
    (url, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_that_outlasts_an_early_answer_is_not_cut_as_a_slow_head() {
    let upstream = TestUpstream::start().await;
    let (app_url, app) = early_answering_app().await;
    let gw = TestGateway::start(
        GatewayConfig::proxy_all_to(&upstream)
            .route(RouteSpec::new("/upload", app_url))
            .server_str("header_read_timeout", "300ms")
            .server_str("keepalive_timeout", "5s"),
    )
    .await;
    let mut conn = gw.raw().await;
    let chunk = [b'u'; 1024];
    let chunks = 10;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        gw.host_header(),
        chunk.len() * chunks
    );
    conn.send(head).await.expect("send the head");
    conn.send(chunk).await.expect("send the first chunk");
    let early = within(secs(5), "the early answer", conn.read_response())
        .await
        .expect("an answer before the upload ends");
    assert_eq!(early.status, 200);
    assert_eq!(early.body, b"early answer\n");
    // The rest of the upload arrives over three header timeouts after the answer:
    // time passing is what is under test. Those bytes are the body, not a slow head.
    for _ in 1..chunks {
        tokio::time::sleep(millis(100)).await;
        conn.send(chunk).await.expect("the upload goes on");
    }
    let uploaded = within(secs(5), "the upload to reach the app", app).await;
    assert_eq!(uploaded.expect("the app"), chunk.len() * chunks);
    gw.assert_still_serves(&mut conn, "/next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_response_keeps_its_connection_alive_past_both_timeouts() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(
        GatewayConfig::proxy_all_to(&upstream)
            .server_str("header_read_timeout", "300ms")
            .server_str("keepalive_timeout", "300ms"),
    )
    .await;
    let mut conn = gw.raw().await;

    // The body arrives 900 ms after the headers: three periods of each timeout.
    let slow = within(
        secs(5),
        "slow body",
        conn.roundtrip(get_request("/slow-body/900", &gw.host_header())),
    )
    .await
    .expect("response whose body outlasts both timeouts");
    assert_eq!(slow.status, 200);
    assert_eq!(slow.body, SLOW_BODY);
    // The request was in flight until its body ended, so the connection was never
    // idle and is still kept alive for the next request.
    gw.assert_still_serves(&mut conn, "/next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_after_the_tls_handshake_timeout() {
    let upstream = TestUpstream::start().await;
    let gw =
        TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server_str("tls_handshake_timeout", "500ms")).await;

    let tcp = TcpStream::connect(gw.https).await.expect("TCP connect");
    let mut conn = RawConn::new(tcp);
    let received = within(secs(3), "silent connection to be closed", conn.read_until_closed()).await;
    assert!(received.is_empty(), "server sent {} bytes", received.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait_until_one_closes() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server("max_connections", "2")).await;
    let host = gw.host_header();

    let mut first = gw.raw().await;
    let mut second = gw.raw().await;
    for (name, conn) in [("first", &mut first), ("second", &mut second)] {
        let response = within(secs(5), name, conn.roundtrip(get_request("/held", &host)))
            .await
            .unwrap_or_else(|e| panic!("{name} connection: {e}"));
        assert_eq!(response.status, 200, "{name} connection");
    }

    let third = gw.tls_connect(ALPN_H1);
    tokio::pin!(third);
    // An upper bound on a negative: the third handshake must still be pending.
    let early = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
    assert!(
        early.is_err(),
        "a third connection was handled while two were open: {:?}",
        early.map(|r| r.map(|_| "handshake completed"))
    );

    drop(first);
    let tls = within(secs(5), "third connection after one closed", third)
        .await
        .expect("TLS handshake of the third connection");
    let mut third = RawConn::new(tls);
    let response = within(
        secs(5),
        "third connection's response",
        third.roundtrip(get_request("/third", &host)),
    )
    .await
    .expect("response on the third connection");
    assert_eq!(response.echo().path(), "/third");

    drop(second);
    let response = gw
        .client()
        .get(gw.url("/afterwards"))
        .send()
        .await
        .expect("request after the limit was released");
    assert_eq!(Echo::from_response(response).await.path(), "/afterwards");
}

async fn gateway_with_short_keepalive(upstream: &TestUpstream) -> TestGateway {
    TestGateway::start(GatewayConfig::proxy_all_to(upstream).server_str("keepalive_timeout", "300ms")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with_short_keepalive(&upstream).await;
    let mut conn = gw.raw().await;

    let first = conn
        .roundtrip(get_request("/", &gw.host_header()))
        .await
        .expect("first request on the connection");
    assert_eq!(first.status, 200);
    // Idle from here on: the gateway must close the connection itself.
    let received = within(secs(3), "idle connection to be closed", conn.read_until_closed()).await;
    assert!(received.is_empty(), "server sent {} bytes", received.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_slower_than_the_keepalive_timeout_is_answered_then_the_connection_closes() {
    let upstream = TestUpstream::start().await;
    let gw = gateway_with_short_keepalive(&upstream).await;
    let mut conn = gw.raw().await;

    // In flight for three keep-alive periods: not idle, so never cut.
    let slow = within(
        secs(5),
        "slow response",
        conn.roundtrip(get_request("/delay/900", &gw.host_header())),
    )
    .await
    .expect("response to a request slower than the keep-alive timeout");
    assert_eq!(slow.status, 200);
    let received = within(secs(3), "idle connection to be closed", conn.read_until_closed()).await;
    assert!(received.is_empty(), "server sent {} bytes", received.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_http2_stream_leaves_its_connection_idle() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let upstream = TestUpstream::start().await;
    let gw = gateway_with_short_keepalive(&upstream).await;
    let tls = within(secs(5), "TLS connect", gw.tls_connect(ALPN_H2))
        .await
        .expect("TLS connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(gw.url("/delay/10000"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::spawn(sender.send_request(request));
    within(secs(3), "request to reach the upstream", async {
        while upstream.request_count() == 0 {
            tokio::time::sleep(millis(10)).await;
        }
    })
    .await;

    // Dropping the response resets the stream: nothing is in flight any more, so
    // the connection is idle and the gateway closes it after the keep-alive timeout.
    response.abort();
    let _ = within(secs(3), "idle HTTP/2 connection to be closed", conn).await;
}

/// `Content-Length` beside `Transfer-Encoding: chunked` (RFC 9112 section 6.1: chunked wins,
/// and the length must not be passed on). Were the gateway to forward the client's length with
/// the chunked body re-framed, the upstream would cut the body short and parse its rest, here
/// a request, as the next one on the pooled connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_beside_chunked_framing_never_reaches_the_upstream() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    let host = gw.host_header();

    let inner = format!("GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let body = format!("hello{inner}");
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let mut conn = gw.raw().await;
    let response = within(secs(5), "response", conn.roundtrip(request)).await;
    if let Ok(response) = &response {
        if response.status == 200 {
            let echo = response.echo();
            assert_eq!(echo.body_len(), body.len() as u64, "the upstream got another body");
            assert!(echo
                .header("content-length")
                .iter()
                .all(|l| *l == body.len().to_string()));
        } else {
            assert_eq!(response.status, 400, "{}", response.text());
        }
    }
    // A later request on another connection shares the upstream pool.
    let mut conn = gw.raw().await;
    let next = within(secs(5), "next response", conn.roundtrip(get_request("/after", &host)))
        .await
        .expect("next response");
    assert_eq!(next.echo().path(), "/after");
    assert!(
        !upstream.targets().iter().any(|t| t.starts_with("/smuggled")),
        "the body was parsed as a request: {:?}",
        upstream.targets()
    );
}
