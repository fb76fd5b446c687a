//! The demo upstream behind `sessiongate demo`: a legacy-style app that knows
//! nothing about sessions. It shows the identity headers it receives and keeps
//! a small cart in the session-data header, the way Apache mod_session's
//! `SessionHeader` works: the gateway sends `X-Session-Data`, the app answers
//! with `X-Session-Data-Set` to replace it.

use crate::auth::pages::escape;
use crate::proxy::body::{self, Body};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::net::TcpListener;

const SHOWN: [&str; 6] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-session-id",
    "x-session-data",
    "x-forwarded-for",
];

/// Serves the demo app on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(|req| async move { Ok::<_, Infallible>(app(req).await) });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn app(req: Request<Incoming>) -> Response<Body> {
    let cart = cart_of(req.headers());
    match (req.method().clone(), req.uri().path()) {
        (Method::POST, "/cart/add") => {
            let form = Limited::new(req.into_body(), 4096)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let item = form_urlencoded::parse(&form)
                .find(|(k, _)| k == "item")
                .map(|(_, v)| {
                    v.chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
                        .take(40)
                        .collect::<String>()
                })
                .unwrap_or_default();
            let mut items = cart;
            if !item.trim().is_empty() {
                items.push(item.trim().to_string());
            }
            let mut resp = see_other("/");
            if let Ok(v) = HeaderValue::from_str(&items.join("|")) {
                resp.headers_mut().insert("x-session-data-set", v);
            }
            resp
        }
        (Method::POST, "/cart/clear") => {
            let mut resp = see_other("/");
            resp.headers_mut()
                .insert("x-session-data-set", HeaderValue::from_static(""));
            resp
        }
        (_, path) => page(path, req.headers(), &cart),
    }
}

fn cart_of(headers: &HeaderMap) -> Vec<String> {
    headers
        .get("x-session-data")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split('|').filter(|i| !i.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

fn see_other(to: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    resp
}

fn page(path: &str, headers: &HeaderMap, cart: &[String]) -> Response<Body> {
    let user = headers.get("x-forwarded-user").and_then(|v| v.to_str().ok());
    let rows: String = SHOWN
        .iter()
        .map(|name| {
            let v = headers.get(*name).and_then(|v| v.to_str().ok()).unwrap_or("(not sent)");
            format!("<tr><th>{name}</th><td><code>{}</code></td></tr>", escape(v))
        })
        .collect();
    let items: String = cart.iter().map(|i| format!("<li>{}</li>", escape(i))).collect();
    let who = match user {
        Some(u) => format!(
            "Signed in as <b>{}</b>. <form method=\"post\" action=\"/.sessiongate/logout\" style=\"display:inline\"><button>Sign out</button></form> <form method=\"post\" action=\"/.sessiongate/logout\" style=\"display:inline\"><input type=\"hidden\" name=\"everywhere\" value=\"1\"><button>Sign out everywhere</button></form>",
            escape(u)
        ),
        None => "Anonymous visitor. <a href=\"/.sessiongate/login?rd=/\">Sign in</a> (demo / demo)".to_string(),
    };
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sessiongate demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}th{{text-align:left;padding-right:1rem}}code{{word-break:break-all}}</style></head>
<body><h1>Legacy app behind sessiongate</h1>
<p>{who}</p>
<p>Path: <code>{path}</code> · <a href="/">home (optional auth)</a> · <a href="/private">/private (login required)</a> · <a href="/admins">/admins (group "admins")</a> · <a href="/.sessiongate/session">/.sessiongate/session</a></p>
<h2>Headers this app received</h2><table>{rows}</table>
<h2>Cart (kept in the session, survives login)</h2><ul>{items}</ul>
<form method="post" action="/cart/add"><input name="item" placeholder="item" required> <button>Add to cart</button></form>
<form method="post" action="/cart/clear"><button>Empty cart</button></form>
</body></html>
"#,
        path = escape(path),
    );
    let mut resp = Response::new(body::full(html));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}
