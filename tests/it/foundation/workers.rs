//! `[server] workers`: several single-threaded event loops share the HTTPS listener. Every
//! worker must accept and serve connections, not only the first one. `[server] tls_handshakes`:
//! handshakes on a `SCHED_IDLE` thread beside each worker (the default) or on the worker.

use futures_util::future::join_all;

use crate::kit::{
    gateway::GatewayAddrs, secs, within, BinaryGateway, Echo, GatewayConfig, TestGateway, TestUpstream, SLOW_BODY,
};

/// `sessiongate_connections_accepted_total` per worker label, from the admin listener.
async fn accepted_by_worker(gw: &GatewayAddrs, workers: usize) -> Vec<u64> {
    let text = gw.metrics_text().await;
    (0..workers)
        .map(|w| {
            let label = format!("sessiongate_connections_accepted_total{{worker=\"{w}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&label))
                .map_or(0, |v| v.trim().parse().expect("counter value"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_accepts_and_serves_connections() {
    const WORKERS: usize = 3;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).server("workers", WORKERS.to_string())).await;

    // Batches of concurrent new connections (a fresh client each), until the
    // kernel has handed some to every worker. Which worker wins a connection
    // is a race, so the bound is generous; a worker that never accepts fails.
    let mut sent = 0;
    let mut accepted = vec![0; WORKERS];
    for batch in 0..100 {
        let requests = (0..8).map(|i| {
            let client = gw.client();
            let url = gw.url(&format!("/batch/{batch}/{i}"));
            async move {
                let response = client.get(url).send().await.expect("request through a worker");
                assert_eq!(response.status(), 200);
                Echo::from_response(response).await
            }
        });
        let echoes = within(secs(10), "a batch of new connections", join_all(requests)).await;
        for (i, echo) in echoes.iter().enumerate() {
            assert_eq!(echo.path(), format!("/batch/{batch}/{i}"));
        }
        sent += echoes.len();
        accepted = accepted_by_worker(&gw, WORKERS).await;
        if accepted.iter().all(|&n| n > 0) {
            break;
        }
    }
    assert!(
        accepted.iter().all(|&n| n > 0),
        "a worker never accepted a connection: {accepted:?}"
    );
    assert_eq!(accepted.iter().sum::<u64>(), sent as u64, "one connection per client");
    assert_eq!(
        upstream.request_count(),
        sent,
        "every request reached the upstream once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_on_every_worker_finish() {
    const WORKERS: usize = 2;
    let upstream = TestUpstream::start().await;
    let mut gw =
        BinaryGateway::start(GatewayConfig::proxy_all_to(&upstream).server("workers", WORKERS.to_string())).await;

    // Slow responses in flight (headers now, body after 1.5 s), each on a
    // connection of its own, until every worker holds at least one.
    let mut in_flight = Vec::new();
    for _ in 0..20 {
        let batch = (0..4).map(|_| gw.client().get(gw.url("/slow-body/1500")).send());
        for response in within(secs(5), "slow response headers", join_all(batch)).await {
            let response = response.expect("slow request");
            assert_eq!(response.status(), 200);
            in_flight.push(response);
        }
        if accepted_by_worker(&gw, WORKERS).await.iter().all(|&n| n > 0) {
            break;
        }
    }
    let accepted = accepted_by_worker(&gw, WORKERS).await;
    assert!(
        accepted.iter().all(|&n| n > 0),
        "not every worker holds a request: {accepted:?}"
    );
    gw.signal("TERM");

    let bodies = within(
        secs(10),
        "the in-flight bodies",
        join_all(in_flight.into_iter().map(|r| r.bytes())),
    )
    .await;
    for body in bodies {
        assert_eq!(&body.expect("in-flight body completes after SIGTERM")[..], SLOW_BODY);
    }
    let status = gw.wait_exit(secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
}

/// Scheduling policy (`/proc/PID/task/*/stat` field 41) of each thread of `gw`, by name.
fn thread_policies(gw: &BinaryGateway) -> Vec<(String, i32)> {
    gw.thread_files("stat")
        .into_iter()
        .filter_map(|stat| {
            let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_owned();
            let rest = stat.rsplit(") ").next()?;
            Some((name, rest.split_whitespace().nth(41 - 3)?.parse().ok()?))
        })
        .collect()
}

const SCHED_IDLE: i32 = 5;

/// `sessiongate_tls_handshakes_total`: (on the worker, on its background thread).
async fn handshakes_by_thread(gw: &GatewayAddrs) -> (u64, u64) {
    let text = gw.metrics_text().await;
    let count = |thread: &str| {
        let label = format!("sessiongate_tls_handshakes_total{{thread=\"{thread}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&label))
            .map_or(0, |v| v.trim().parse().expect("counter value"))
    };
    (count("worker"), count("background"))
}

/// One request through `client`, which keeps its connection.
async fn get(gw: &GatewayAddrs, client: &reqwest::Client, path: &str) {
    let response = within(secs(10), "request", client.get(gw.url(path)).send())
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(Echo::from_response(response).await.path(), path);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_move_to_a_sched_idle_thread_while_kept_alive_connections_wait() {
    let upstream = TestUpstream::start().await;
    let gw = BinaryGateway::start(GatewayConfig::proxy_all_to(&upstream).server("workers", "2")).await;
    // Served once, every thread has been spawned; a thread names itself and
    // takes SCHED_IDLE as its first steps, which may lag its spawn a little.
    get(&gw, &gw.client(), "/started").await;
    let idle = |threads: &[(String, i32)], name: &str| threads.iter().any(|(n, p)| n == name && *p == SCHED_IDLE);
    let deadline = std::time::Instant::now() + secs(5);
    let mut threads = thread_policies(&gw);
    while !(idle(&threads, "sg-tls-0") && idle(&threads, "sg-tls-1")) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        threads = thread_policies(&gw);
    }
    for name in ["sg-tls-0", "sg-tls-1"] {
        let policy = threads.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
        assert_eq!(policy, Some(SCHED_IDLE), "{name} in {threads:?}");
    }
    // The workers themselves, which serve the requests, stay normal threads.
    let main = threads.iter().find(|(n, _)| n == "sessiongate").map(|(_, p)| *p);
    assert_eq!(main, Some(0), "{threads:?}");
    assert!(
        threads.iter().any(|(n, p)| n.starts_with("sessiongate-wor") && *p == 0),
        "{threads:?}"
    );

    // With one worker nothing could wait behind the first handshake: it runs
    // on the worker. Two requests, so that the first one is surely over.
    let gw1 = BinaryGateway::start(GatewayConfig::proxy_all_to(&upstream).server("workers", "1")).await;
    // One raw connection: a pooling client could open a second one.
    let mut kept = gw1.raw().await;
    for path in ["/first", "/first-again"] {
        gw1.assert_still_serves(&mut kept, path).await;
    }
    assert_eq!(handshakes_by_thread(&gw1).await, (1, 0));

    // Now a kept-alive connection is open: new handshakes go to the background
    // thread, over HTTP/1.1 and HTTP/2, and the connections are served.
    get(&gw1, &gw1.client(), "/second").await;
    get(&gw1, &gw1.client_h2(), "/third").await;
    assert_eq!(handshakes_by_thread(&gw1).await, (1, 2));
    gw1.assert_still_serves(&mut kept, "/first-once-more").await;
    assert_eq!(accepted_by_worker(&gw1, 1).await, [3]);
    assert_eq!(upstream.request_count(), 6);
}

/// Two workers, `[server] tls_handshakes = mode`.
fn two_workers_with_handshakes(upstream: &TestUpstream, mode: &str) -> GatewayConfig {
    GatewayConfig::proxy_all_to(upstream)
        .server("workers", "2")
        .server_str("tls_handshakes", mode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_handshakes_move_every_connection() {
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(two_workers_with_handshakes(&upstream, "background")).await;
    get(&gw, &gw.client(), "/h1").await;
    get(&gw, &gw.client_h2(), "/h2").await;
    assert_eq!(handshakes_by_thread(&gw).await, (0, 2));
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_handshakes_run_on_the_workers() {
    let upstream = TestUpstream::start().await;
    let gw = BinaryGateway::start(two_workers_with_handshakes(&upstream, "inline")).await;
    let kept = gw.client();
    get(&gw, &kept, "/kept").await;
    get(&gw, &gw.client(), "/h1").await;
    get(&gw, &gw.client_h2(), "/h2").await;
    assert_eq!(handshakes_by_thread(&gw).await, (3, 0));

    let threads = thread_policies(&gw);
    assert!(!threads.iter().any(|(n, _)| n.starts_with("sg-tls")), "{threads:?}");
}
