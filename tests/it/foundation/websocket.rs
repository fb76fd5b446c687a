//! WebSocket through the gateway: an HTTP/1.1 Upgrade that the upstream accepts with 101,
//! then frames both ways.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::kit::{secs, within, GatewayAddrs, GatewayConfig, TestGateway, TestUpstream, ALPN_H1};

/// A WebSocket to the gateway's `/ws` (the kit upstream's echo), handshake done: the stream
/// and the handshake's response.
pub async fn open_ws(
    gw: &GatewayAddrs,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    let tls = within(secs(5), "TLS connect", gw.tls_connect(ALPN_H1))
        .await
        .expect("TLS connect");
    let url = format!("wss://{}/ws", gw.host_header());
    within(
        secs(5),
        "WebSocket handshake",
        tokio_tungstenite::client_async(url, tls),
    )
    .await
    .expect("WebSocket handshake through the gateway")
}

/// Sends `message` on `ws` and asserts that the same message comes back (the kit's echo).
pub async fn assert_echoed(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    message: Message,
) {
    ws.send(message.clone()).await.expect("send message");
    let echoed = within(secs(5), "echoed message", ws.next())
        .await
        .expect("connection open")
        .expect("message");
    assert_eq!(echoed, message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_are_echoed_through_the_gateway() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    let (mut ws, response) = open_ws(&gw).await;
    assert_eq!(response.status(), 101);

    let messages = [
        Message::text("hello through the gateway"),
        Message::binary(vec![0u8, 1, 2, 254, 255]),
        Message::text("ünïcödé ✓"),
    ];
    for message in messages {
        assert_echoed(&mut ws, message).await;
    }
    ws.close(None).await.expect("close the WebSocket");
}
