//! Micro-benchmarks of the verified-request path, piece by piece:
//! cookie parsing, token hashing, the whole session lookup on a cache hit
//! (parse, hash, moka, expiry, binding, touch), the binding check alone, and
//! the identity-header rewrite. `cargo bench --bench hot_path`.

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};
use sessiongate::config::Config;
use sessiongate::metrics::Metrics;
use sessiongate::proxy::{headers, identity};
use sessiongate::session::record::ClientBinding;
use sessiongate::session::store::memory::MemoryStore;
use sessiongate::session::token::SessionToken;
use sessiongate::session::{cookies, Lookup, Sessions};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

fn config(dir: &std::path::Path) -> Config {
    let (cert, key) = sessiongate::tls::write_self_signed(dir, &["localhost".into()]).expect("certificate");
    let text = format!(
        "[tls]\ncert = {cert:?}\nkey = {key:?}\n[store]\nkind = \"memory\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nauth = \"required\"\n"
    );
    Config::parse(&text, &dir.join("bench.toml")).expect("config")
}

/// A browser-like request: our cookie among others, a long User-Agent.
fn request_headers(cookie: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::HOST, HeaderValue::from_static("app.example.test"));
    h.insert(http::header::USER_AGENT, HeaderValue::from_static(UA));
    h.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("text/html,application/xhtml+xml"),
    );
    h.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip, deflate, br"),
    );
    let all = format!("_ga=GA1.1.123456789.1700000000; theme=dark; {cookie}; lang=en");
    h.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&all).expect("cookie header"),
    );
    h
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Arc::new(config(dir.path()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sessions = Arc::new(Sessions::with_store(
        config.clone(),
        Arc::new(Metrics::new()),
        Arc::new(MemoryStore::default()),
    ));
    let ip: IpAddr = [127, 0, 0, 1].into();
    let mut browser = HeaderMap::new();
    browser.insert(http::header::USER_AGENT, HeaderValue::from_static(UA));
    let (token, live) = rt.block_on(sessions.issue(ip, &browser)).expect("issue");
    let pair = sessions.cookie_pair(&token);
    let headers = request_headers(&pair);
    let name = config.session.cookie_name.clone();

    c.bench_function("cookie_parse", |b| {
        b.iter(|| match cookies::find(black_box(&headers), &name) {
            cookies::Presented::One(v) => SessionToken::parse(v).is_some(),
            _ => false,
        })
    });
    c.bench_function("token_hash", |b| b.iter(|| black_box(&token).hash()));
    c.bench_function("session_lookup_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            match sessions.lookup(black_box(&headers), ip).await {
                Ok(Lookup::Valid(live)) => live.is_authenticated(),
                _ => unreachable!("the session must verify"),
            }
        })
    });
    // The same request again on one connection: answered from what the
    // connection remembers (`session::recent`) after the first lookup.
    let recent = sessiongate::session::recent::Recent::default();
    c.bench_function("session_lookup_recalled", |b| {
        b.to_async(&rt).iter(|| async {
            let found = match sessions.recall(&recent, black_box(&headers), ip) {
                Ok(live) => Lookup::Valid(live),
                Err(missed) => match sessions.lookup_recent(&recent, &headers, ip, missed).await {
                    Ok(found) => found,
                    Err(_) => unreachable!("the session must verify"),
                },
            };
            match found {
                Lookup::Valid(live) => live.is_authenticated(),
                _ => unreachable!("the session must verify"),
            }
        })
    });
    let binding = ClientBinding::new(&config.session.binding, ip, &browser);
    c.bench_function("binding_check", |b| {
        b.iter(|| {
            binding
                .check(&config.session.binding, black_box(ip), black_box(&headers))
                .is_ok()
        })
    });
    let owned = identity::OwnedHeaders::new(&config.headers);
    let mut spoofed = headers.clone();
    spoofed.insert(
        HeaderName::from_static("x_forwarded_user"),
        HeaderValue::from_static("mallory"),
    );
    c.bench_function("identity_rewrite", |b| {
        b.iter(|| {
            let mut h = black_box(&spoofed).clone();
            headers::strip(&mut h, |n| headers::is_client_forwarding(n) || owned.collides(n));
            cookies::strip(&mut h, &name);
            identity::apply(&mut h, &config.headers, &live);
            h
        })
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
