//! REST endpoints: catalog, metadata (every key the SDK needs, streamUrls from Host and
//! X-Forwarded-*), CORS, the debug page, health.

use serde_json::json;

use crate::support::{TestServer, get_json, header, http};

#[actix_web::test]
async fn catalog_lists_the_stream_services() {
    let server = TestServer::simulated(5);
    let (status, catalog) = get_json(server.addr, "/arcgis/rest/services?f=json").await;
    assert_eq!(status, 200);
    assert_eq!(
        catalog["services"],
        json!([{"name": "vehicles", "type": "StreamServer"}])
    );
}

#[actix_web::test]
async fn metadata_has_what_the_sdk_needs_and_stream_urls_follow_the_host() {
    let server = TestServer::simulated(5);
    let path = "/arcgis/rest/services/vehicles/StreamServer?f=json";
    let (status, headers, body) = http(
        server.addr,
        "GET",
        path,
        &[("Origin", "http://example.com")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert!(
        header(&headers, "access-control-allow-origin").is_some(),
        "{headers:?}"
    );
    let metadata: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(metadata["streamUrls"][0]["transport"], "ws");
    assert_eq!(
        metadata["streamUrls"][0]["urls"][0],
        format!(
            "ws://{}/arcgis/ws/services/vehicles/StreamServer",
            server.addr
        )
    );
    assert_eq!(metadata["timeInfo"]["trackIdField"], "TRACKID");
    assert_eq!(metadata["objectIdField"], "OBJECTID");
    assert_eq!(metadata["geometryType"], "esriGeometryPoint");
    assert_eq!(metadata["spatialReference"]["wkid"], 4326);
    let names: Vec<&str> = metadata["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "OBJECTID", "TRACKID", "name", "route", "status", "speed", "heading", "active",
            "observed"
        ]
    );
    assert_eq!(metadata["fields"][0]["type"], "esriFieldTypeOID");
    assert_eq!(metadata["fields"][8]["type"], "esriFieldTypeDate");

    let proxied = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "maps.example.com"),
    ];
    // From a peer that is not a configured proxy, forwarding headers are ignored.
    let (_, _, body) = http(server.addr, "GET", path, &proxied).await;
    let metadata: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        metadata["streamUrls"][0]["urls"][0],
        format!(
            "ws://{}/arcgis/ws/services/vehicles/StreamServer",
            server.addr
        )
    );
    // Behind a trusted proxy (here on 127.0.0.1) they give the host and scheme clients use.
    let mut config = featurestream::config::Config::for_tests(5, 20.0);
    config.admission.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
    config.admission.allowed_hosts = Some(vec!["maps.example.com".into()]);
    let behind_proxy = TestServer::start(config);
    let (_, _, body) = http(behind_proxy.addr, "GET", path, &proxied).await;
    let metadata: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        metadata["streamUrls"][0]["urls"][0],
        "wss://maps.example.com/arcgis/ws/services/vehicles/StreamServer"
    );

    let (status, missing) = get_json(
        server.addr,
        "/arcgis/rest/services/nope/StreamServer?f=json",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], 404);
}

#[actix_web::test]
async fn cors_preflight_is_answered() {
    let server = TestServer::simulated(5);
    let request = [
        ("Origin", "http://example.com"),
        ("Access-Control-Request-Method", "GET"),
        ("Access-Control-Request-Headers", "x-esri-authorization"),
    ];
    let (status, headers, _) = http(
        server.addr,
        "OPTIONS",
        "/arcgis/rest/services/vehicles/StreamServer",
        &request,
    )
    .await;
    assert!((200..300).contains(&status), "{status}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://example.com")
    );
    let methods = header(&headers, "access-control-allow-methods").expect("methods");
    for method in ["GET", "POST", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    assert!(
        header(&headers, "access-control-allow-headers")
            .expect("headers")
            .contains("x-esri-authorization")
    );
}

#[actix_web::test]
async fn debug_page_and_health_are_served() {
    let server = TestServer::simulated(5);
    let (status, headers, body) = http(server.addr, "GET", "/", &[]).await;
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .expect("type")
            .starts_with("text/html")
    );
    assert!(body.contains("<title>featurestream</title>"));
    let (status, health) = get_json(server.addr, "/healthz").await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
}

#[actix_web::test]
async fn metrics_are_served_in_prometheus_text_format() {
    let server = TestServer::simulated(5);
    let _session = crate::support::connect(
        &server.ws_url("/arcgis/ws/services/vehicles/StreamServer/subscribe"),
    )
    .await;
    let _ = crate::support::try_connect(
        &server.ws_url("/arcgis/ws/services/nope/StreamServer/subscribe"),
    )
    .await;
    let (status, headers, body) = http(server.addr, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .expect("type")
            .starts_with("application/openmetrics-text")
    );
    for line in [
        "featurestream_connection_attempts_total{outcome=\"accepted\"} 1",
        "featurestream_connection_attempts_total{outcome=\"unknown_service\"} 1",
        "# TYPE featurestream_features_out counter",
        "featurestream_connections_active 1",
    ] {
        assert!(body.contains(line), "missing {line} in\n{body}");
    }
    assert!(
        body.contains("featurestream_sessions{service=\"vehicles\"}"),
        "{body}"
    );
}

#[actix_web::test]
async fn a_services_file_declares_more_services_with_their_schemas() {
    let directory =
        std::env::temp_dir().join(format!("featurestream-services-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("services.json");
    std::fs::write(
        &path,
        r#"{"services": [
            {"name": "trails", "geometryType": "esriGeometryPolyline", "simulator": {"features": 4, "hz": 20, "trailVertices": 3}},
            {"name": "sensors", "trackIdField": "SENSOR", "simulator": {"features": 2, "hz": 20},
             "fields": [{"name": "OBJECTID", "type": "esriFieldTypeOID"}, {"name": "SENSOR", "type": "esriFieldTypeInteger"},
                        {"name": "reading", "type": "esriFieldTypeDouble", "nullable": true}, {"name": "observed", "type": "esriFieldTypeDate"}]}
        ]}"#,
    )
    .expect("write services file");
    let args = [
        "featurestream",
        "--port",
        "0",
        "--services",
        path.to_str().expect("utf-8 path"),
    ]
    .map(std::ffi::OsString::from);
    let loaded =
        featurestream::config::Config::from_sources(args, Vec::new()).expect("valid services file");
    let server = TestServer::start(loaded.config);
    let (_, catalog) = get_json(server.addr, "/arcgis/rest/services?f=json").await;
    assert_eq!(
        catalog["services"],
        json!([{"name": "sensors", "type": "StreamServer"}, {"name": "trails", "type": "StreamServer"}])
    );
    let (_, metadata) = get_json(
        server.addr,
        "/arcgis/rest/services/sensors/StreamServer?f=json",
    )
    .await;
    assert_eq!(metadata["timeInfo"]["trackIdField"], "SENSOR");
    let (_, trails) = get_json(
        server.addr,
        "/arcgis/rest/services/trails/StreamServer?f=json",
    )
    .await;
    assert_eq!(trails["geometryType"], "esriGeometryPolyline");
    let mut socket = crate::support::connect(
        &server.ws_url("/arcgis/ws/services/trails/StreamServer/subscribe?outSR=102100"),
    )
    .await;
    let feature = crate::support::next_json(&mut socket).await;
    assert!(
        feature["geometry"]["paths"][0]
            .as_array()
            .expect("a path")
            .len()
            >= 2,
        "{feature}"
    );
    let mut sensors = crate::support::connect(
        &server
            .ws_url("/arcgis/ws/services/sensors/StreamServer/subscribe?where=reading%20%3E%200"),
    )
    .await;
    assert!(crate::support::next_json(&mut sensors).await["attributes"]["SENSOR"].is_i64());
    std::fs::write(&path, r#"{"services": [{"name": "bad name!"}]}"#).expect("write");
    let args = [
        "featurestream",
        "--services",
        path.to_str().expect("utf-8 path"),
    ]
    .map(std::ffi::OsString::from);
    let err = featurestream::config::Config::from_sources(args, Vec::new()).expect_err("invalid");
    assert!(
        err.to_string()
            .contains("service name \"bad name!\" must be letters, digits"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&directory);
}

/// The simulator's routes for the debug page: GeoJSON LineStrings in WGS84; 404 (JSON) for an
/// unknown service and for a service without a simulator.
#[actix_web::test]
async fn a_simulated_service_lists_its_routes() {
    let server = TestServer::simulated(3);
    let (status, routes) = get_json(server.addr, "/api/services/vehicles/routes").await;
    assert_eq!(status, 200, "{routes}");
    assert_eq!(routes["type"], "FeatureCollection");
    let lines = routes["features"].as_array().expect("features");
    assert!(!lines.is_empty());
    for line in lines {
        assert_eq!(line["geometry"]["type"], "LineString", "{line}");
        assert!(line["properties"]["name"].is_string(), "{line}");
        for vertex in line["geometry"]["coordinates"].as_array().unwrap() {
            let (x, y) = (vertex[0].as_f64().unwrap(), vertex[1].as_f64().unwrap());
            assert!(
                (-180.0..=180.0).contains(&x) && (-90.0..=90.0).contains(&y),
                "{vertex}"
            );
        }
    }
    let (status, body) = get_json(server.addr, "/api/services/nope/routes").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!(404)),
        "{body}"
    );
    let mut config = featurestream::config::Config::for_tests(1, 1.0);
    config.services[0].simulator = None;
    let quiet = TestServer::start(config);
    let (status, body) = get_json(quiet.addr, "/api/services/vehicles/routes").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not simulated"),
        "{body}"
    );
}
