//! Tokens (seed 003, docs/protocol.md §7): missing -> 401 before the upgrade, invalid, expired or
//! not allowed -> 403; on REST the ArcGIS JSON errors 499 and 498 in a 200 body; an accepted
//! token is handed back in the metadata's `streamUrls[0].token`.

use std::collections::HashMap;

use featurestream::auth::{Auth, parse_static_tokens};
use featurestream::config::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use crate::support::{TestServer, connect, get_json, next_json, try_connect};

const SECRET: &[u8] = b"integration-test secret, 32 bytes!";

fn protected() -> TestServer {
    let mut config = Config::for_tests(5, 20.0);
    let tokens = parse_static_tokens("subscriber-1=vehicles,elsewhere-1=trails").expect("tokens");
    config.auth = Auth::new(tokens, Some(SECRET), None).expect("auth");
    TestServer::start(config)
}

fn jwt(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("jwt")
}

async fn status(server: &TestServer, path: &str) -> u16 {
    match try_connect(&server.ws_url(path)).await {
        Ok(_) => 101,
        Err((status, _)) => status,
    }
}

#[actix_web::test]
async fn subscribe_and_custom_mode_check_the_token_before_the_upgrade() {
    let server = protected();
    let subscribe = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";
    let custom = "/arcgis/ws/services/vehicles/custom";
    for base in [subscribe, custom, "/"] {
        let join = if base.contains('?') { '&' } else { '?' };
        assert_eq!(status(&server, base).await, 401, "{base}");
        assert_eq!(
            status(&server, &format!("{base}{join}token=wrong-token")).await,
            403,
            "{base}"
        );
        assert_eq!(
            status(&server, &format!("{base}{join}token=elsewhere-1")).await,
            403,
            "{base}"
        );
        assert_eq!(
            status(&server, &format!("{base}{join}token=subscriber-1")).await,
            101,
            "{base}"
        );
    }
    let good = jwt(json!({"exp": 4_102_444_800_i64, "services": ["vehicles"]}));
    let expired = jwt(json!({"exp": 1_000_000_000, "services": "*"}));
    assert_eq!(
        status(&server, &format!("{subscribe}&token={good}")).await,
        101
    );
    assert_eq!(
        status(&server, &format!("{subscribe}&token={expired}")).await,
        403
    );
    let mut socket = connect(&server.ws_url(&format!("{subscribe}&token={good}"))).await;
    assert!(next_json(&mut socket).await["attributes"].is_object());
    let (_, body) = try_connect(&server.ws_url(subscribe))
        .await
        .expect_err("refused");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["error"]["code"], 401);
}

#[actix_web::test]
async fn metadata_answers_arcgis_token_errors_and_hands_the_token_to_the_socket() {
    let server = protected();
    let path = "/arcgis/rest/services/vehicles/StreamServer?f=json";
    let (status, missing) = get_json(server.addr, path).await;
    assert_eq!(
        (status, missing["error"]["code"].clone()),
        (200, json!(499))
    );
    let (status, invalid) = get_json(server.addr, &format!("{path}&token=wrong-token")).await;
    assert_eq!(
        (status, invalid["error"]["code"].clone()),
        (200, json!(498))
    );
    let (_, metadata) = get_json(server.addr, &format!("{path}&token=subscriber-1")).await;
    assert_eq!(metadata["streamUrls"][0]["token"], "subscriber-1");
}

#[actix_web::test]
async fn without_configured_tokens_auth_is_off() {
    let server = TestServer::start(Config::for_tests(5, 20.0));
    assert!(
        !Auth::new(HashMap::new(), None, None)
            .expect("auth")
            .is_enabled()
    );
    assert_eq!(
        status(
            &server,
            "/arcgis/ws/services/vehicles/StreamServer/subscribe"
        )
        .await,
        101
    );
    let (_, metadata) = get_json(
        server.addr,
        "/arcgis/rest/services/vehicles/StreamServer?f=json&token=x",
    )
    .await;
    assert!(metadata["streamUrls"][0].get("token").is_none());
}

/// A JWT whose `nbf` is still ahead is refused like an expired one (before: accepted).
#[actix_web::test]
async fn a_jwt_not_valid_yet_is_refused() {
    let server = protected();
    let subscribe = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock")
        .as_secs() as i64;
    let later = jwt(json!({"exp": now + 7200, "nbf": now + 3600, "services": "*"}));
    let already = jwt(json!({"exp": now + 7200, "nbf": now - 60, "services": "*"}));
    assert_eq!(
        status(&server, &format!("{subscribe}&token={later}")).await,
        403
    );
    assert_eq!(
        status(&server, &format!("{subscribe}&token={already}")).await,
        101
    );
}

/// `Authorization: Bearer` (the scheme in any case) works wherever a token does; with auth on
/// the operator endpoints need an admin token, the catalog and health stay open.
#[actix_web::test]
async fn bearer_tokens_are_accepted_everywhere_and_operator_endpoints_need_an_admin() {
    let mut config = Config::for_tests(5, 20.0);
    let tokens = parse_static_tokens("subscriber-1=vehicles,operator-1=*:admin").expect("tokens");
    config.auth = Auth::new(tokens, None, None).expect("auth");
    let server = TestServer::start(config);
    let subscribe = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let value = format!("{scheme} subscriber-1");
        let (status, _) =
            crate::support::raw_upgrade(server.addr, subscribe, &[("Authorization", &value)]).await;
        assert_eq!(status, 101, "{scheme}");
    }
    let (status, _) = crate::support::raw_upgrade(
        server.addr,
        subscribe,
        &[("X-Esri-Authorization", "Bearer subscriber-1")],
    )
    .await;
    assert_eq!(status, 101);
    let (_, _, metadata) = crate::support::http(
        server.addr,
        "GET",
        "/arcgis/rest/services/vehicles/StreamServer?f=json",
        &[("Authorization", "bearer subscriber-1")],
    )
    .await;
    assert!(metadata.contains("streamUrls"), "{metadata}");
    for path in ["/api/stats", "/metrics"] {
        let (status, _, _) = crate::support::http(server.addr, "GET", path, &[]).await;
        assert_eq!(status, 401, "{path}");
        let (status, _, _) = crate::support::http(
            server.addr,
            "GET",
            path,
            &[("Authorization", "Bearer subscriber-1")],
        )
        .await;
        assert_eq!(status, 403, "{path}: not an admin");
        let (status, _, _) = crate::support::http(
            server.addr,
            "GET",
            path,
            &[("Authorization", "bearer operator-1")],
        )
        .await;
        assert_eq!(status, 200, "{path}");
    }
    for path in ["/healthz", "/arcgis/rest/services?f=json"] {
        let (status, _, _) = crate::support::http(server.addr, "GET", path, &[]).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, reply) = crate::support::post_json(
        server.addr,
        "/api/messages",
        &[("authorization", "BEARER operator-1")],
        r#"{"message":"hi"}"#,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
}
