//! The admin listener: health check and Prometheus metrics, separate from the proxy.

use crate::kit::{client::plain_client, closed_port, Echo, GatewayConfig, RouteSpec, TestGateway, TestUpstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_200() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    let response = plain_client()
        .get(gw.admin_url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_does_not_proxy() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream)).await;

    let response = plain_client()
        .get(gw.admin_url("/some/app/page"))
        .send()
        .await
        .expect("GET on the admin listener");
    assert_ne!(response.status(), 200);
    assert_eq!(upstream.request_count(), 0, "admin listener proxied a request");
}

/// Lines of a Prometheus text exposition that start with `metric` and contain every label.
fn samples<'a>(text: &'a str, metric: &str, labels: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|line| line.starts_with(metric))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_status_class() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(
        GatewayConfig::new()
            .route(RouteSpec::new("/", upstream.url()))
            .route(RouteSpec::new("/dead/", format!("http://127.0.0.1:{}", closed_port()))),
    )
    .await;
    let client = gw.client();
    for _ in 0..3 {
        let response = client.get(gw.url("/ok")).send().await.expect("request");
        Echo::from_response(response).await;
    }
    let response = client.get(gw.url("/dead/x")).send().await.expect("request");
    assert_eq!(response.status(), 502);

    let response = plain_client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("metrics text");

    for (metric, labels) in [
        ("sessiongate_requests_total", &[r#"route="/""#, r#"status="2xx""#][..]),
        (
            "sessiongate_requests_total",
            &[r#"route="/dead/""#, r#"status="5xx""#][..],
        ),
        ("sessiongate_request_duration_seconds_bucket", &[r#"route="/""#][..]),
        ("sessiongate_upstream_errors_total", &[r#"kind="connect""#][..]),
        ("sessiongate_open_connections", &[][..]),
    ] {
        assert!(
            !samples(&text, metric, labels).is_empty(),
            "no {metric} sample with {labels:?} in:\n{text}"
        );
    }
    // Summed, in case the gateway adds further labels (method, ...).
    let ok_count: f64 = samples(
        &text,
        "sessiongate_requests_total",
        &[r#"route="/""#, r#"status="2xx""#],
    )
    .iter()
    .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    .sum();
    assert_eq!(ok_count, 3.0, "2xx count for route / in:\n{text}");
}
