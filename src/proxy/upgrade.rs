//! HTTP/1.1 upgrades (WebSocket): once the upstream answers 101, the two
//! upgraded connections are spliced byte for byte. Only a 101 switches modes:
//! any other answer keeps the client connection in HTTP (a known request
//! smuggling trap when proxies forward bytes regardless).

use super::body::{self, Body};
use http::{header, HeaderValue, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Answers the client with the upstream's 101 and splices both sides in a task.
pub fn splice(on_client: OnUpgrade, mut resp: Response<Incoming>) -> Response<Body> {
    let on_upstream = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    super::headers::strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(u) = upgrade {
        parts.headers.insert(header::UPGRADE, u);
    }
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(on_client, on_upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
    Response::from_parts(parts, body::empty())
}
