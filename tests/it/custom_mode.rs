//! Custom mode (seed 000, docs/protocol.md §4): handshake and echo, featureResult frames, handshake
//! filters, refused handshake filters, bad handshakes, plain `ping`.

use featurestream::config::Config;
use serde_json::{Value, json};
use std::time::Duration;

use crate::support::{TestServer, connect, expect_close, next_json, next_reply, next_text, send};

fn handshake(wkid: u32) -> String {
    json!({"filter": null, "format": "json", "spatialReference": {"wkid": wkid}}).to_string()
}

#[actix_web::test]
async fn handshake_echoes_the_wkid_as_sent_then_feature_results_flow() {
    let server = TestServer::simulated(20);
    for wkid in [4326, 3857, 102100] {
        let mut socket = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
        send(&mut socket, &handshake(wkid)).await;
        let echo = next_json(&mut socket).await;
        assert_eq!(
            echo,
            json!({"format": "json", "spatialReference": {"wkid": wkid}, "filter": null, "outFields": null})
        );
        let frame = next_json(&mut socket).await;
        assert_eq!(frame["type"], "featureResult");
        let features = frame["features"].as_array().expect("features");
        assert_eq!(features.len(), 20, "one feature per vehicle per tick");
        let x = features[0]["geometry"]["x"].as_f64().expect("x");
        if wkid == 4326 {
            assert!((-118.0..-117.0).contains(&x), "{x}");
        } else {
            assert!(
                (-13_200_000.0..-12_900_000.0).contains(&x),
                "{x} is Web Mercator metres"
            );
        }
    }
}

#[actix_web::test]
async fn root_path_serves_custom_mode_of_the_default_service() {
    let server = TestServer::simulated(5);
    let mut socket = connect(&server.ws_url("/")).await;
    send(&mut socket, &handshake(4326)).await;
    assert_eq!(
        next_json(&mut socket).await["spatialReference"]["wkid"],
        4326
    );
    assert_eq!(next_json(&mut socket).await["type"], "featureResult");
}

#[actix_web::test]
async fn handshake_filter_and_out_fields_are_honoured() {
    let server = TestServer::simulated(40);
    let mut socket = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
    let sent = json!({
        "filter": {"where": "speed > 60"},
        "format": "json",
        "spatialReference": {"wkid": 4326},
        "outFields": ["speed"],
    });
    send(&mut socket, &sent.to_string()).await;
    let echo = next_json(&mut socket).await;
    assert_eq!(echo["filter"], json!({"where": "speed > 60"}));
    assert_eq!(echo["outFields"], json!(["speed"]));
    let mut seen = 0;
    for _ in 0..5 {
        let frame = next_json(&mut socket).await;
        for feature in frame["features"].as_array().expect("features") {
            let attributes = feature["attributes"].as_object().expect("attributes");
            let mut keys: Vec<&str> = attributes.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["OBJECTID", "TRACKID", "speed"]);
            assert!(
                attributes["speed"].as_f64().expect("speed") > 60.0,
                "{feature}"
            );
            seen += 1;
        }
    }
    assert!(seen > 0);
}

#[actix_web::test]
async fn bad_handshakes_close_with_4400_naming_the_problem() {
    let mut config = Config::for_tests(5, 20.0);
    config.session.handshake_reject_delay = Duration::from_millis(50);
    let server = TestServer::start(config);
    let cases = [
        ("not json".to_owned(), "handshake is not JSON".to_owned()),
        (json!({"format": "pbf"}).to_string(), "unsupported handshake format \"pbf\"; only \"json\" is supported".to_owned()),
        (
            json!({"format": "json", "spatialReference": {"wkid": 2193}}).to_string(),
            "Unsupported spatial reference wkid 2193; supported wkids: 4326, 3857, 102100, 102113, 900913.".to_owned(),
        ),
    ];
    for (text, reason) in cases {
        let mut socket = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
        send(&mut socket, &text).await;
        assert_eq!(expect_close(&mut socket).await, (4400, reason), "{text}");
    }
}

/// SDK 5.1.25 sends the layer's definitionExpression in every handshake and reconnects at
/// once after a close: a refused handshake filter keeps the session (docs/protocol.md §4.1).
#[actix_web::test]
async fn a_refused_handshake_filter_keeps_the_session_with_an_echo_a_reply_and_the_stream() {
    let server = TestServer::simulated(5);
    for (filter, out_fields) in [
        (json!({"where": "no_such_field_xyz > 1"}), Value::Null),
        (json!({"where": "speed > 1"}), json!(["no_such_field"])),
    ] {
        let mut socket = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
        let mut sent =
            json!({"filter": filter, "format": "json", "spatialReference": {"wkid": 102100}});
        if !out_fields.is_null() {
            sent["outFields"] = out_fields;
        }
        send(&mut socket, &sent.to_string()).await;
        assert_eq!(
            next_json(&mut socket).await,
            json!({"format": "json", "spatialReference": {"wkid": 102100}, "filter": null, "outFields": null}),
            "the echo says that no filter is in force"
        );
        let reply = next_json(&mut socket).await;
        assert_eq!(reply["filter"], json!({}), "{reply}");
        let error = reply["error"][0]
            .as_str()
            .expect("an error naming the problem");
        assert!(error.contains("no_such_field"), "{error}");
        for _ in 0..3 {
            let frame = next_json(&mut socket).await;
            assert_eq!(frame["type"], "featureResult");
            assert_eq!(
                frame["features"].as_array().map(Vec::len),
                Some(5),
                "unfiltered"
            );
        }
    }
    let (_, stats) = crate::support::get_json(server.addr, "/api/stats").await;
    assert_eq!(stats["closes"], json!({}), "no session was closed");
    assert_eq!(stats["filterErrors"], 2);
}

#[actix_web::test]
async fn unknown_custom_service_is_refused_before_the_upgrade() {
    let server = TestServer::simulated(5);
    let refusal =
        crate::support::try_connect(&server.ws_url("/arcgis/ws/services/nope/custom")).await;
    let (status, body) = refusal.expect_err("refused");
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["error"]["code"], 404);
}

#[actix_web::test]
async fn plain_clients_sending_ping_get_pong() {
    let server = TestServer::simulated(5);
    let mut socket = connect(&server.ws_url("/")).await;
    send(&mut socket, "ping").await;
    assert_eq!(next_text(&mut socket).await, "pong");
}

#[actix_web::test]
async fn filter_messages_after_the_handshake_are_answered() {
    let server = TestServer::simulated(20);
    let mut socket = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
    send(&mut socket, &handshake(4326)).await;
    next_json(&mut socket).await;
    send(&mut socket, r#"{"filter":{"where":"speed < 30"}}"#).await;
    let (reply, _) = next_reply(&mut socket).await;
    assert_eq!(
        reply,
        json!({"filter": {"where": "speed < 30"}, "error": null})
    );
    for _ in 0..3 {
        let frame = next_json(&mut socket).await;
        for feature in frame["features"].as_array().expect("features") {
            assert!(feature["attributes"]["speed"].as_f64().expect("speed") < 30.0);
        }
    }
}
