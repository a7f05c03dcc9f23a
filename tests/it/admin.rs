//! Cookie sessions and server-initiated messages (seed 001, seed 002's broadcast).

use featurestream::auth::{Auth, parse_static_tokens};
use featurestream::config::Config;
use serde_json::json;

use crate::support::{Socket, TestServer, connect_with, header, next_json, post_json};

const SUBSCRIBE: &str = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";

/// The next `{"type":"message"}` frame, skipping features.
async fn next_message(socket: &mut Socket) -> serde_json::Value {
    loop {
        let frame = next_json(socket).await;
        if frame["type"] == "message" {
            return frame;
        }
    }
}

#[actix_web::test]
async fn messages_reach_every_tab_of_one_browser_session_and_broadcasts_reach_everyone() {
    let server = TestServer::simulated(3);
    let (mut fresh, headers) = connect_with(&server.ws_url(SUBSCRIBE), &[]).await;
    let set_cookie = header(&headers, "set-cookie")
        .expect("a session cookie on the 101")
        .to_owned();
    assert!(
        set_cookie.starts_with("featurestream_session="),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let id = set_cookie.split(['=', ';']).nth(1).expect("id").to_owned();
    let cookie = format!("featurestream_session={id}");
    let (mut second_tab, headers) =
        connect_with(&server.ws_url(SUBSCRIBE), &[("Cookie", &cookie)]).await;
    assert!(
        header(&headers, "set-cookie").is_none(),
        "an existing session keeps its cookie"
    );
    let other_cookie = "featurestream_session=0123456789abcdef0123456789abcdef";
    let (mut other, _) = connect_with(&server.ws_url(SUBSCRIBE), &[("Cookie", other_cookie)]).await;

    let (status, reply) = post_json(
        server.addr,
        &format!("/api/sessions/{id}/messages"),
        &[],
        r#"{"text":"hello"}"#,
    )
    .await;
    assert_eq!((status, reply), (200, json!({"delivered": 2})));
    let expected = json!({"type": "message", "message": {"text": "hello"}});
    assert_eq!(next_message(&mut fresh).await, expected);
    assert_eq!(next_message(&mut second_tab).await, expected);

    let (status, reply) = post_json(
        server.addr,
        "/api/messages",
        &[],
        r#"{"message":"maintenance at noon","service":"vehicles"}"#,
    )
    .await;
    assert_eq!((status, reply), (200, json!({"delivered": 3})));
    // The other session's first message is the broadcast: it never got the session message.
    assert_eq!(
        next_message(&mut other).await,
        json!({"type": "message", "message": "maintenance at noon"})
    );

    let (status, _) = post_json(
        server.addr,
        "/api/sessions/ffffffffffffffffffffffffffffffff/messages",
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post_json(
        server.addr,
        "/api/messages",
        &[],
        r#"{"message":1,"service":"nope"}"#,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post_json(server.addr, "/api/messages", &[], "not json").await;
    assert_eq!(status, 400);
}

#[actix_web::test]
async fn the_admin_api_needs_an_admin_token_when_auth_is_on() {
    let mut config = Config::for_tests(3, 20.0);
    config.auth = Auth::new(
        parse_static_tokens("viewer-token=vehicles,admin-token=*:admin").expect("tokens"),
        None,
        None,
    )
    .expect("auth");
    let server = TestServer::start(config);
    let body = r#"{"message":"hi"}"#;
    assert_eq!(
        post_json(server.addr, "/api/messages", &[], body).await.0,
        401
    );
    assert_eq!(
        post_json(
            server.addr,
            "/api/messages",
            &[("Authorization", "Bearer viewer-token")],
            body
        )
        .await
        .0,
        403
    );
    let (status, reply) = post_json(
        server.addr,
        "/api/messages",
        &[("Authorization", "Bearer admin-token")],
        body,
    )
    .await;
    assert_eq!((status, reply), (200, json!({"delivered": 0})));
}

/// A page of another site open in a browser on this machine cannot use the loopback admin
/// API: a cross-site `text/plain` POST is refused (before: delivered to every viewer).
#[actix_web::test]
async fn cross_site_browser_requests_to_the_admin_api_are_refused() {
    let server = TestServer::simulated(3);
    let body = r#"{"message":"hi"}"#;
    let own_origin = format!("http://{}", server.addr);
    for (headers, expected) in [
        (vec![("Origin", "https://evil.example")], 403),
        (vec![("Sec-Fetch-Site", "cross-site")], 403),
        (vec![("Sec-Fetch-Site", "same-site")], 403),
        (vec![("Origin", "null")], 403),
        (
            vec![
                ("Origin", own_origin.as_str()),
                ("Sec-Fetch-Site", "same-origin"),
            ],
            200,
        ),
        (vec![], 200),
    ] {
        let (status, reply) = post_json(server.addr, "/api/messages", &headers, body).await;
        assert_eq!(status, expected, "{headers:?}: {reply}");
        if expected == 403 {
            assert_eq!(
                reply["error"]["message"],
                "Cross-site requests to the admin API are refused"
            );
        }
    }
    // A loopback peer forwarding for someone else is a proxy on this host, not a local admin.
    let (status, reply) = post_json(
        server.addr,
        "/api/messages",
        &[("X-Forwarded-For", "203.0.113.7")],
        body,
    )
    .await;
    assert_eq!(status, 403, "{reply}");
}
