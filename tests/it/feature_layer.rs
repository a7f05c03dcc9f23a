//! The latest state as a feature layer (docs/protocol.md §10), against the real server: the
//! FeatureServer and layer documents, `/query` with each parameter and each error, paging that
//! stays consistent while tracks change, GET and POST, Esri JSON and GeoJSON.

use std::collections::BTreeSet;

use featurestream::config::Config;
use serde_json::{Value, json};

use crate::support::{TestServer, get_json, http, post_json};

const LAYER: &str = "/arcgis/rest/services/vehicles/FeatureServer/0";

fn server_with_tracks(max_record_count: usize) -> TestServer {
    let mut config = Config::for_tests(1, 1.0);
    config.services[0].simulator = None;
    config.ingest.max_record_count = max_record_count;
    TestServer::start(config)
}

fn observation(track: i64, speed: f64, x: f64) -> Value {
    json!({
        "attributes": {"TRACKID": track, "name": format!("bus {track}"), "route": "R1",
                       "status": if track % 2 == 0 { Value::Null } else { json!("moving") },
                       "speed": speed, "heading": 90, "active": true, "observed": 1_000 + track},
        "geometry": {"x": x, "y": 34.05}
    })
}

async fn publish(server: &TestServer, features: Vec<Value>) {
    let (status, answer) = post_json(
        server.addr,
        "/api/services/vehicles/features",
        &[],
        &json!(features).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

async fn query(server: &TestServer, parameters: &str) -> Value {
    let (status, body) = get_json(server.addr, &format!("{LAYER}/query?{parameters}")).await;
    assert_eq!(status, 200);
    body
}

/// The track ids of a query's page, in order.
pub fn tracks(answer: &Value) -> Vec<i64> {
    answer["features"]
        .as_array()
        .unwrap_or_else(|| panic!("features: {answer}"))
        .iter()
        .map(|feature| feature["attributes"]["TRACKID"].as_i64().unwrap())
        .collect()
}

/// Ten tracks, track k at x = -117.0 - k/100 with speed 10 k.
async fn ten_tracks(server: &TestServer) {
    publish(
        server,
        (1..=10)
            .map(|track| observation(track, 10.0 * track as f64, -117.0 - track as f64 / 100.0))
            .collect(),
    )
    .await;
}

#[actix_web::test]
async fn the_documents_say_feature_layer_with_paging_and_the_live_extent() {
    let server = server_with_tracks(6000);
    ten_tracks(&server).await;
    let (_, layer) = get_json(server.addr, &format!("{LAYER}?f=json")).await;
    assert_eq!(layer["type"], "Feature Layer");
    assert_eq!(layer["geometryType"], "esriGeometryPoint");
    assert_eq!(layer["objectIdField"], "OBJECTID");
    assert_eq!(layer["maxRecordCount"], 6000);
    assert_eq!(
        layer["advancedQueryCapabilities"]["supportsPagination"],
        true
    );
    assert_eq!(
        layer["advancedQueryCapabilities"]["supportsMaxRecordCountFactor"],
        true
    );
    assert_eq!(layer["capabilities"], "Query");
    assert_eq!(layer["timeInfo"]["trackIdField"], "TRACKID");
    assert!(
        (layer["extent"]["xmin"].as_f64().unwrap() - (-117.1)).abs() < 1e-9,
        "{}",
        layer["extent"]
    );
    assert!(layer["fields"].as_array().unwrap().len() >= 9);
    let (_, service) = get_json(
        server.addr,
        "/arcgis/rest/services/vehicles/FeatureServer?f=json",
    )
    .await;
    assert_eq!(service["layers"][0]["id"], 0);
    assert_eq!(service["capabilities"], "Query");
    let (_, missing) = get_json(
        server.addr,
        "/arcgis/rest/services/vehicles/FeatureServer/3?f=json",
    )
    .await;
    assert_eq!(missing["error"]["code"], 400);
    let (_, unknown) = get_json(
        server.addr,
        "/arcgis/rest/services/nope/FeatureServer/0?f=json",
    )
    .await;
    assert_eq!(unknown["error"]["code"], 404);
    let (status, headers, _) = http(
        server.addr,
        "OPTIONS",
        &format!("{LAYER}/query"),
        &[
            ("Origin", "http://example.com"),
            ("Access-Control-Request-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(crate::support::header(&headers, "access-control-allow-origin").is_some());
}

#[actix_web::test]
async fn where_out_fields_out_sr_geometry_object_ids_order_count_and_ids() {
    let server = server_with_tracks(6000);
    ten_tracks(&server).await;
    let all = query(&server, "f=json&where=1%3D1&outFields=*").await;
    assert_eq!(tracks(&all).len(), 10);
    assert_eq!(all["exceededTransferLimit"], false);
    assert_eq!(all["objectIdFieldName"], "OBJECTID");
    assert_eq!(all["features"][0]["attributes"]["name"], "bus 1");
    let fast = query(
        &server,
        "where=speed%20%3E%2070&outFields=TRACKID,speed&orderByFields=speed%20DESC",
    )
    .await;
    assert_eq!(tracks(&fast), [10, 9, 8]);
    assert!(
        fast["features"][0]["attributes"].get("name").is_none(),
        "outFields"
    );
    let default_fields = query(&server, "where=TRACKID%3D3").await;
    let attributes = default_fields["features"][0]["attributes"]
        .as_object()
        .unwrap();
    assert!(
        attributes.contains_key("OBJECTID") && !attributes.contains_key("speed"),
        "{attributes:?}"
    );
    let mercator = query(&server, "where=TRACKID%3D1&outSR=102100").await;
    assert!(mercator["features"][0]["geometry"]["x"].as_f64().unwrap() < -1.0e7);
    assert_eq!(mercator["spatialReference"]["latestWkid"], 3857);
    let no_geometry = query(&server, "where=TRACKID%3D1&returnGeometry=false").await;
    assert!(no_geometry["features"][0].get("geometry").is_none());
    // Envelope in the layer's reference, then the same in Web Mercator with inSR.
    let boxed = query(&server, "geometry=-117.055,34,-117.025,34.1&geometryType=esriGeometryEnvelope&spatialRel=esriSpatialRelIntersects&outFields=TRACKID").await;
    assert_eq!(tracks(&boxed), [3, 4, 5]);
    let boxed_mercator = query(&server, "geometry=%7B%22xmin%22%3A-13030503%2C%22ymin%22%3A4028802%2C%22xmax%22%3A-13027164%2C%22ymax%22%3A4042333%7D&inSR=3857&outFields=TRACKID").await;
    assert_eq!(tracks(&boxed_mercator), [3, 4, 5]);
    let ids = query(&server, "where=speed%3C30&returnIdsOnly=true").await;
    let listed: Vec<i64> = ids["objectIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    let by_id = query(
        &server,
        &format!("objectIds={}&outFields=TRACKID", listed[1]),
    )
    .await;
    assert_eq!(tracks(&by_id), [2]);
    let count = query(&server, "where=status%20IS%20NULL&returnCountOnly=true").await;
    assert_eq!(count["count"], 5);
    // POST form, as the SDK sends long queries.
    let (status, body) = post_form(
        &server,
        "where=TRACKID%20IN%20(1%2C2)&outFields=TRACKID&f=json",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(tracks(&serde_json::from_str(&body).unwrap()), [1, 2]);
    // GeoJSON: WGS84 positions, the object id as id.
    let (_, geojson) = get_json(
        server.addr,
        &format!("{LAYER}/query?where=TRACKID%3D2&outFields=*&f=geojson&outSR=3857"),
    )
    .await;
    assert_eq!(geojson["type"], "FeatureCollection");
    let feature = &geojson["features"][0];
    assert_eq!(feature["geometry"]["type"], "Point");
    assert!((feature["geometry"]["coordinates"][0].as_f64().unwrap() - (-117.02)).abs() < 1e-6);
    assert_eq!(feature["properties"]["TRACKID"], 2);
    assert_eq!(feature["id"], feature["properties"]["OBJECTID"]);
}

async fn post_form(server: &TestServer, form: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "POST {LAYER}/query HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        server.addr,
        form.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

#[actix_web::test]
async fn each_bad_parameter_is_an_arcgis_error_naming_it() {
    let server = server_with_tracks(6000);
    ten_tracks(&server).await;
    for (parameters, named) in [
        ("where=nope%20%3E%201", "where:"),
        ("where=speed%20%3E", "where:"),
        ("outFields=speed,nope", "outFields:"),
        ("outSR=2193", "outSR:"),
        ("inSR=abc&geometry=1,2,3,4", "inSR:"),
        ("geometry=1,2,3", "geometry:"),
        (
            "geometry=%7B%22x%22%3A1%2C%22y%22%3A2%7D&geometryType=esriGeometryPoint",
            "geometryType:",
        ),
        ("spatialRel=esriSpatialRelTouches", "spatialRel:"),
        ("objectIds=1,x", "objectIds:"),
        ("orderByFields=nope%20DESC", "orderByFields:"),
        ("orderByFields=speed%20SIDEWAYS", "orderByFields:"),
        ("resultOffset=-1", "resultOffset:"),
        ("resultRecordCount=many", "resultRecordCount:"),
        ("returnGeometry=maybe", "returnGeometry:"),
        ("f=pbf", "f:"),
    ] {
        let answer = query(&server, parameters).await;
        assert_eq!(answer["error"]["code"], 400, "{parameters}: {answer}");
        let details = answer["error"]["details"].to_string();
        assert!(details.contains(named), "{parameters}: {details}");
    }
}

#[actix_web::test]
async fn paging_keeps_its_order_while_tracks_change_between_pages() {
    let server = server_with_tracks(4);
    ten_tracks(&server).await;
    let first = query(
        &server,
        "where=1%3D1&outFields=TRACKID,speed&resultOffset=0&resultRecordCount=4",
    )
    .await;
    assert_eq!(first["exceededTransferLimit"], true);
    let mut seen: Vec<i64> = tracks(&first);
    // Between pages: tracks 1 and 7 report again (new object ids, higher than every other),
    // track 11 is born.
    publish(
        &server,
        vec![
            observation(1, 99.0, -117.01),
            observation(7, 99.0, -117.07),
            observation(11, 5.0, -117.11),
        ],
    )
    .await;
    let second = query(
        &server,
        "where=1%3D1&outFields=TRACKID,speed&resultOffset=4&resultRecordCount=4",
    )
    .await;
    seen.extend(tracks(&second));
    assert_eq!(second["exceededTransferLimit"], true);
    let third = query(
        &server,
        "where=1%3D1&outFields=TRACKID,speed&resultOffset=8&resultRecordCount=4",
    )
    .await;
    seen.extend(tracks(&third));
    assert_eq!(third["exceededTransferLimit"], false);
    let distinct: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "no track twice: {seen:?}");
    assert_eq!(
        distinct,
        (1..=10).collect(),
        "none lost that lived through the paging"
    );
    let seven = third["features"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["features"].as_array().unwrap())
        .find(|feature| feature["attributes"]["TRACKID"] == 7);
    if let Some(seven) = seven {
        assert_eq!(
            seven["attributes"]["speed"], 99,
            "later pages carry the current observation"
        );
    }
    // maxRecordCount caps a page; the factor multiplies it (at most 5).
    let capped = query(&server, "where=1%3D1&resultRecordCount=100").await;
    assert_eq!(tracks(&capped).len(), 4);
    let factor = query(
        &server,
        "where=1%3D1&maxRecordCountFactor=2&resultRecordCount=100",
    )
    .await;
    assert_eq!(tracks(&factor).len(), 8);
}

#[actix_web::test]
async fn a_protected_layer_needs_a_token_in_the_parameters_or_a_bearer_header() {
    let mut config = Config::for_tests(3, 1.0);
    config.auth = featurestream::auth::Auth::new(
        featurestream::auth::parse_static_tokens("layer-reader=vehicles,other-reader=trucks")
            .unwrap(),
        None,
        None,
    )
    .unwrap();
    let server = TestServer::start(config);
    let (_, missing) = get_json(server.addr, &format!("{LAYER}/query?where=1%3D1")).await;
    assert_eq!(missing["error"]["code"], 499);
    let (_, wrong) = get_json(
        server.addr,
        &format!("{LAYER}/query?where=1%3D1&token=other-reader"),
    )
    .await;
    assert_eq!(wrong["error"]["code"], 498);
    let (_, ok) = get_json(
        server.addr,
        &format!("{LAYER}/query?where=1%3D1&token=layer-reader&returnCountOnly=true"),
    )
    .await;
    assert!(ok["count"].is_number(), "{ok}");
    let (status, _, body) = http(
        server.addr,
        "GET",
        &format!("{LAYER}?f=json"),
        &[("Authorization", "Bearer layer-reader")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"Feature Layer\""), "{body}");
}

/// GDAL, a client nobody here wrote: `ogrinfo` reads the layer through its ESRIJSON driver,
/// paging by itself (maxRecordCount 7 here: five pages for 30 tracks), and counts every live
/// track. `scripts/test` installs Debian's gdal-bin.
#[actix_web::test]
async fn gdal_reads_every_live_track_through_its_esrijson_driver_paging_included() {
    let server = server_with_tracks(7);
    publish(
        &server,
        (1..=30)
            .map(|track| observation(track, track as f64, -117.0 - track as f64 / 1000.0))
            .collect(),
    )
    .await;
    let url = format!(
        "ESRIJSON:http://{}{LAYER}/query?where=1%3D1&outFields=*&orderByFields=OBJECTID+ASC&f=json",
        server.addr
    );
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("ogrinfo")
            .args(["-ro", "-al", &url])
            .output(),
    )
    .await
    .expect("ogrinfo finishes")
    .expect("ogrinfo runs (scripts/test installs gdal-bin)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("Feature Count: 30"), "{text}");
    let tracks: BTreeSet<i64> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("TRACKID (Integer) = "))
        .map(|value| value.trim().parse().unwrap())
        .collect();
    assert_eq!(
        tracks,
        (1..=30).collect(),
        "every track once, over the pages"
    );
    assert!(text.contains("POINT (-117.001 34.05)"), "geometry read");
}
