//! Bodies are streamed, never buffered whole: 50 MiB up and 50 MiB down through the real
//! binary while its peak resident memory stays close to idle.

use bytes::Bytes;
use futures_util::stream;

use crate::kit::{secs, within, BinaryGateway, Echo, GatewayConfig, TestUpstream};

const FIFTY_MIB: u64 = 50 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// How much the gateway's peak RSS may grow over idle while moving 100 MiB.
const MAX_GROWTH_KIB: u64 = 40 * 1024;

static UPLOAD_CHUNK: [u8; CHUNK] = [b'u'; CHUNK];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_stream_both_ways_in_bounded_memory() {
    let upstream = TestUpstream::start().await;
    let gw = BinaryGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;
    let client = gw.client();

    // Warm up, so that pools, TLS state and allocator arenas exist before the baseline.
    let response = client
        .post(gw.url("/warm-up"))
        .body(vec![0u8; CHUNK])
        .send()
        .await
        .expect("warm-up request");
    Echo::from_response(response).await;
    let idle_kib = gw.peak_rss_kib();

    let chunks = (FIFTY_MIB / CHUNK as u64) as usize;
    let body = stream::iter((0..chunks).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&UPLOAD_CHUNK))));
    let response = within(
        secs(60),
        "50 MiB upload",
        client
            .post(gw.url("/upload"))
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    )
    .await
    .expect("upload");
    assert_eq!(Echo::from_response(response).await.body_len(), FIFTY_MIB);

    let mut response = client
        .get(gw.url(&format!("/bytes/{FIFTY_MIB}")))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    let received = within(secs(60), "50 MiB download", async {
        let mut received: u64 = 0;
        while let Some(chunk) = response.chunk().await.expect("download chunk") {
            received += chunk.len() as u64;
        }
        received
    })
    .await;
    assert_eq!(received, FIFTY_MIB);

    let peak_kib = gw.peak_rss_kib();
    assert!(
        peak_kib.saturating_sub(idle_kib) < MAX_GROWTH_KIB,
        "gateway peak RSS grew from {idle_kib} KiB to {peak_kib} KiB moving 100 MiB"
    );
}
