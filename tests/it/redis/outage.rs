//! Redis killed under traffic fails closed: a required route with a valid session answers 503
//! with `Retry-After` (never 200, never 401), logins answer 503, `/readyz` says 503 while
//! `/healthz` stays 200; when Redis is back (with its data) everything recovers by itself,
//! without restarting the gateway.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use reqwest::{Method, StatusCode};
use tokio::task::JoinHandle;

use super::site::{form_request, PASSWORD};
use super::support::{
    assert_retry_after, channel, fetch, redis_missing, single_store, Browser, Instance, RedisServer, SUBSCRIBE_LIMIT,
};
use crate::kit::secs;

/// Short Redis timeouts, so that an outage is noticed quickly; long enough that a loaded
/// machine does not mistake a slow answer for an outage (300 ms flaked at load 8).
const TIMEOUTS: &str = "connect_timeout = \"1s\"\nresponse_timeout = \"1s\"\n";

/// One request of the background traffic.
#[derive(Debug)]
struct Sample {
    sent: Instant,
    answered: Instant,
    status: StatusCode,
    retry_after: bool,
}

/// Requests with one session on a required route, back to back, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Sample>>,
}

impl Traffic {
    fn start(browser: Browser) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let reply = fetch(browser.request(Method::GET, "/app/x")).await;
                samples.push(Sample {
                    sent,
                    answered: Instant::now(),
                    status: reply.status,
                    retry_after: reply.header("retry-after").is_some(),
                });
            }
            samples
        });
        Self { stop, task }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the traffic task panicked")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_and_recovery_keeps_the_sessions() {
    if redis_missing() {
        return;
    }
    let mut redis = RedisServer::start_persistent().await;
    let a = Instance::start("A", &single_store(&redis, TIMEOUTS)).await;
    redis.wait_subscribers(&channel(), 1, SUBSCRIBE_LIMIT).await;

    let mut alice = a.browser();
    alice.login("alice").await;
    let token = alice.expect_token();
    // Cached, so that what follows is not merely a cache miss failing.
    assert_eq!(a.cache(&token).await.user(), Some("alice"));
    // A visitor who has the login form (an anonymous session and its CSRF value).
    let mut visitor = a.browser();
    let (_, csrf) = visitor.login_form(None).await;
    let login_fields = [
        ("username", "alice"),
        ("password", PASSWORD),
        ("csrf", csrf.as_str()),
        ("rd", "/"),
    ];
    assert_eq!(a.admin_status("/readyz").await, StatusCode::OK);

    let traffic = Traffic::start(a.presenting(&token));
    redis.kill();
    let noticed = a.wait_readyz(StatusCode::SERVICE_UNAVAILABLE, secs(5)).await;
    let down_from = Instant::now();
    eprintln!("/readyz said 503 {noticed:?} after Redis was killed");

    for attempt in 1..=3 {
        let reply = a.app(&token).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "a valid session on a required route with Redis down (attempt {attempt}): {}",
            reply.text()
        );
        assert_retry_after(&reply, "required route, Redis down");
    }
    let login = fetch(form_request(
        visitor.request(Method::POST, "/.sessiongate/login"),
        &login_fields,
    ))
    .await;
    assert_eq!(
        login.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a login with Redis down: {}",
        login.text()
    );
    assert_retry_after(&login, "login, Redis down");
    assert!(login.session_cookies().is_empty(), "{:?}", login.set_cookies());
    assert_eq!(
        a.admin_status("/healthz").await,
        StatusCode::OK,
        "/healthz with Redis down"
    );
    assert_eq!(a.admin_status("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!a.gw.has_stopped(), "the gateway stopped");
    let down_until = Instant::now();

    // Redis comes back with its data; the gateway was never restarted.
    redis.start_again().await;
    let recovered = a.wait_readyz(StatusCode::OK, secs(5)).await;
    eprintln!("/readyz said 200 {recovered:?} after Redis was back");
    a.assert_serves(&token, "alice", "the same cookie after Redis is back")
        .await;
    let reply = visitor.post_form("/.sessiongate/login", &login_fields).await;
    assert_eq!(
        reply.status,
        StatusCode::SEE_OTHER,
        "login after Redis is back: {}",
        reply.text()
    );
    let logged_in = visitor.expect_token();
    a.assert_serves(&logged_in, "alice", "a login after Redis is back")
        .await;
    let resubscribed = redis.wait_subscribers(&channel(), 1, secs(3)).await;
    eprintln!("subscribed again {resubscribed:?} after the login");

    let samples = traffic.stop().await;
    for sample in &samples {
        match sample.status {
            // A request held while the gateway reconnects may be answered once Redis is back;
            // one that began and ended while Redis was known to be down may not be served.
            StatusCode::OK => assert!(
                sample.sent < down_from || sample.answered > down_until,
                "200 with Redis down: {sample:?}, Redis down from {down_from:?} to {down_until:?}"
            ),
            StatusCode::SERVICE_UNAVAILABLE => assert!(sample.retry_after, "503 without Retry-After: {sample:?}"),
            other => panic!("the traffic got {other} (only 200 or 503 are right): {sample:?}"),
        }
    }
    let unavailable = samples
        .iter()
        .filter(|s| s.status == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(unavailable > 0, "the traffic never saw the outage: {samples:?}");
    eprintln!("traffic: {} requests, {unavailable} answered 503", samples.len());
}
