//! The body type every response (and upstream request) of the gateway
//! carries. Bodies streamed from the other side pass through unboxed (the
//! common case: no allocation, no dynamic dispatch per request); the
//! gateway's own small bodies and size-limited request bodies are boxed.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Marks a response the gateway answered itself after reading the
/// request's body to its end (a login form). Without it, a locally answered
/// HTTP/1 request with a body closes the connection, since its unread bytes
/// must never be parsed as the next request; with it, the connection stays
/// open for the request that follows (the browser's redirect after login).
#[derive(Clone, Copy, Debug)]
pub struct BodyRead;

/// The most of an unread request body [`drain_briefly`] reads.
const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// How long [`drain_briefly`] waits for it.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// HTTP/2: reads and discards a small request body that the gateway
/// answered without reading (a 403, a 401, a 413), before the answer goes
/// out. Dropped unread, the body makes hyper follow the answer with
/// `RST_STREAM(NO_ERROR)` while the client may still be sending it, which
/// RFC 9113 section 8.1 allows and browsers handle, but some clients (curl
/// 7.88) then discard the answer. A body declared larger than
/// [`DRAIN_MAX_BYTES`], or not all there within [`DRAIN_WAIT`], is left
/// to that reset: nobody waits on an upload that will be refused.
pub async fn drain_briefly(body: Incoming) {
    if http_body::Body::size_hint(&body).lower() > DRAIN_MAX_BYTES {
        return;
    }
    let read = async move {
        let mut body = body;
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DRAIN_MAX_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_WAIT, read).await;
}

/// A streamed body from hyper, or anything else, boxed.
pub enum Body {
    Stream(Incoming),
    Boxed(BoxBody<Bytes, BoxError>),
}

impl Body {
    pub fn boxed<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static,
    {
        Body::Boxed(BoxBody::new(body))
    }
}

impl From<Incoming> for Body {
    fn from(b: Incoming) -> Body {
        Body::Stream(b)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Stream(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Stream(b) => b.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Stream(b) => b.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Body::boxed(Full::new(data.into()).map_err(|never| match never {}))
}

pub fn empty() -> Body {
    Body::boxed(Empty::new().map_err(|never| match never {}))
}

/// Where a request body starts on its way upstream: wraps it so that its
/// connection stays busy until the body has been sent (or abandoned), even
/// when the upstream answered, and the response ended, before the upload
/// did. Otherwise the rest of the upload would look like the next request's
/// head, or like idleness.
pub type UploadHook<'a> = &'a (dyn Fn(Body) -> Body + Sync);

/// A body and a guard dropped together, when the body is done with.
pub struct Uploading<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> Uploading<B, G> {
    pub fn new(body: B, guard: G) -> Self {
        Uploading { body, _guard: guard }
    }
}

impl<B: http_body::Body + Unpin, G: Unpin> http_body::Body for Uploading<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
