//! The kit's mock OpenID Connect provider on its own, driven with reqwest alone: if it is
//! wrong, every OIDC test of the gateway is wrong with it.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{jwk::JwkSet, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::kit::idp::{Tamper, TestIdp};

const CALLBACK: &str = "https://localhost:1/.sessiongate/oidc/callback";

/// A code verifier of 43 unreserved characters, different for each `seed`.
fn verifier(seed: char) -> String {
    std::iter::repeat_n(seed, 43).collect()
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// The authorize URL a gateway would redirect the browser to.
fn authorize_url(idp: &TestIdp, state: &str, nonce: &str, verifier: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", idp.client_id())
        .append_pair("redirect_uri", CALLBACK)
        .append_pair("scope", "openid profile email")
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &s256(verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("{}/authorize?{query}", idp.issuer())
}

/// The query parameters of a callback `Location`, after checking it goes to [`CALLBACK`].
fn callback_params(location: &str) -> Vec<(String, String)> {
    let (base, query) = location.split_once('?').expect("a query on the callback");
    assert_eq!(base, CALLBACK, "{location}");
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A form body (reqwest's `form` is a feature this crate does not enable).
fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Approves a fresh authorization and returns its code.
async fn code_for(idp: &TestIdp, nonce: &str, verifier: &str) -> String {
    let location = idp.approve(&authorize_url(idp, "st-1", nonce, verifier)).await;
    let params = callback_params(&location);
    assert_eq!(param(&params, "state"), Some("st-1"), "{location}");
    param(&params, "code").expect("a code").to_owned()
}

/// Exchanges `code` at the token endpoint with `client_secret_basic`.
async fn exchange(idp: &TestIdp, code: &str, verifier: &str) -> (u16, Value) {
    let response = idp
        .client()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(idp.client_id(), Some(idp.client_secret()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
        ]))
        .send()
        .await
        .expect("POST /token");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON token response"))
}

/// Verifies `id_token` as a relying party would: ES256 only, the key its kid names in the
/// JWKS, `aud` and `iss` checked. The claims, or why it was refused.
async fn verify(idp: &TestIdp, id_token: &str) -> Result<Value, String> {
    let jwks: JwkSet = serde_json::from_value(get_json(idp, "/jwks").await).expect("a JWK set");
    let header = jsonwebtoken::decode_header(id_token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or(format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).expect("a key from the JWK");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[idp.client_id()]);
    validation.set_issuer(&[idp.issuer()]);
    match jsonwebtoken::decode::<Value>(id_token, &key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(format!("{:?}", e.kind())),
    }
}

async fn get_json(idp: &TestIdp, path: &str) -> Value {
    let response = idp
        .client()
        .get(format!("{}{path}", idp.issuer()))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn discovery_names_the_endpoints_and_the_jwks_the_key() {
    let idp = TestIdp::start().await;
    let issuer = idp.issuer();
    assert!(
        issuer.starts_with("https://localhost:") && !issuer.ends_with('/'),
        "{issuer}"
    );

    let discovery = get_json(&idp, "/.well-known/openid-configuration").await;
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["authorization_endpoint"], format!("{issuer}/authorize"));
    assert_eq!(discovery["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(discovery["jwks_uri"], format!("{issuer}/jwks"));
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(idp.discovery_fetches(), 1);

    let jwks = get_json(&idp, "/jwks").await;
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(idp.jwks_fetches(), 1);
    assert_eq!(idp.discovery_fetches(), 1);
}

#[tokio::test]
async fn an_approved_code_buys_one_id_token_that_verifies_against_the_jwks() {
    let idp = TestIdp::start().await;
    let v = verifier('a');
    let code = code_for(&idp, "n-0", &v).await;

    let (status, body) = exchange(&idp, &code, &v).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let id_token = body["id_token"].as_str().expect("id_token");

    let kid = jsonwebtoken::decode_header(id_token).expect("header").kid.expect("kid");
    let claims = verify(&idp, id_token).await.expect("a valid ID token");
    assert_eq!(claims["nonce"], "n-0");
    assert_eq!(claims["sub"], "u-1001");
    assert_eq!(claims["groups"], serde_json::json!(["staff"]));

    let (status, body) = exchange(&idp, &code, &v).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &Value::from("invalid_grant")),
        "reuse: {body}"
    );

    let requests = idp.token_requests();
    assert_eq!(requests.len(), 2);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("sessiongate-test:test-secret")
    );
    assert_eq!(requests[0].authorization.as_deref(), Some(expected.as_str()));
    assert_eq!(requests[0].field("code_verifier"), Some(v.as_str()));

    // After a rotation the new key signs and both are published.
    idp.rotate_key();
    let v = verifier('b');
    let (status, body) = exchange(&idp, &code_for(&idp, "n-1", &v).await, &v).await;
    assert_eq!(status, 200, "{body}");
    let new_kid = jsonwebtoken::decode_header(body["id_token"].as_str().expect("id_token"))
        .expect("header")
        .kid
        .expect("kid");
    assert_ne!(new_kid, kid);
    let jwks: JwkSet = serde_json::from_value(get_json(&idp, "/jwks").await).expect("a JWK set");
    assert!(jwks.find(&kid).is_some() && jwks.find(&new_kid).is_some());
}

#[tokio::test]
async fn wrong_verifiers_unknown_clients_denials_and_each_tamper_are_refused() {
    let idp = TestIdp::start().await;

    let v = verifier('c');
    let code = code_for(&idp, "n-2", &v).await;
    let (status, body) = exchange(&idp, &code, &verifier('d')).await;
    assert_eq!((status, &body["error"]), (400, &Value::from("invalid_grant")), "{body}");
    // The failed attempt spent the code.
    let (status, _) = exchange(&idp, &code, &v).await;
    assert_eq!(status, 400);

    // client_secret_post with the wrong secret.
    let code = code_for(&idp, "n-3", &v).await;
    let response = idp
        .client()
        .post(format!("{}/token", idp.issuer()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", v.as_str()),
            ("client_id", idp.client_id()),
            ("client_secret", "not-the-secret"),
        ]))
        .send()
        .await
        .expect("POST /token");
    assert_eq!(response.status(), 401);
    assert_eq!(idp.token_requests().len(), 3, "refused requests are recorded too");

    // A malformed authorize request is a 400, never a redirect.
    let response = idp
        .client()
        .get(authorize_url(&idp, "st", "n", &v).replace("scope=openid", "scope=profile"))
        .send()
        .await
        .expect("GET /authorize");
    assert_eq!(response.status(), 400);
    assert!(response.text().await.expect("body").contains("openid"));

    // Each tamper breaks exactly the check it is named after.
    let cases = [
        (Tamper::WrongAudience, "InvalidAudience"),
        (Tamper::WrongIssuer, "InvalidIssuer"),
        (Tamper::Expired, "ExpiredSignature"),
        (Tamper::UnknownKey, "kid unknown-kid not in the JWKS"),
        (Tamper::HmacAlg, "InvalidAlgorithm"),
    ];
    for (tamper, refusal) in cases {
        idp.set_tamper(tamper);
        let (status, body) = exchange(&idp, &code_for(&idp, "n-5", &v).await, &v).await;
        assert_eq!(status, 200, "{tamper:?}: {body}");
        let verified = verify(&idp, body["id_token"].as_str().expect("id_token")).await;
        assert_eq!(verified.err().as_deref(), Some(refusal), "{tamper:?}");
    }
    idp.set_tamper(Tamper::WrongNonce);
    let (_, body) = exchange(&idp, &code_for(&idp, "n-6", &v).await, &v).await;
    let claims = verify(&idp, body["id_token"].as_str().expect("id_token")).await;
    assert_eq!(claims.expect("otherwise valid")["nonce"], "not-the-nonce");
    idp.set_tamper(Tamper::TokenError);
    let (status, body) = exchange(&idp, &code_for(&idp, "n-7", &v).await, &v).await;
    assert_eq!((status, body), (400, serde_json::json!({ "error": "invalid_grant" })));

    idp.set_tamper(Tamper::Deny);
    let location = idp.approve(&authorize_url(&idp, "st/&=", "n-4", &v)).await;
    let params = callback_params(&location);
    assert_eq!(param(&params, "error"), Some("access_denied"), "{location}");
    assert_eq!(param(&params, "state"), Some("st/&="), "{location}");
    assert_eq!(param(&params, "code"), None, "{location}");
}
