//! OGC API - Features over the latest state, against the real server: every document, every
//! items parameter and error, paging that stays right while tracks change, and clients nobody
//! here wrote (GDAL's OAPIF driver: `ogrinfo`, `ogr2ogr` to a GeoPackage; OWSLib).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use featurestream::config::Config;
use serde_json::{Value, json};

use crate::support::{TestServer, get_json, http, percent_encode, post_json};

const FEATURES: &str = "/api/services/vehicles/features";
const ITEMS: &str = "/ogc/collections/vehicles/items";

fn ingest_config() -> Config {
    let mut config = Config::for_tests(1, 1.0);
    config.services[0].simulator = None;
    config
}

/// An observation of track `track` at `x`, observed at `observed` ms, going `speed`.
fn observation(track: i64, observed: i64, x: f64, speed: f64) -> Value {
    json!({
        "attributes": {
            "TRACKID": track, "name": format!("bus {track}"), "route": if track % 2 == 0 { "even" } else { "odd" },
            "status": "moving", "speed": speed, "heading": 90, "active": track % 3 != 0, "observed": observed
        },
        "geometry": { "x": x, "y": 34.0 + track as f64 / 10_000.0 }
    })
}

async fn publish(server: &TestServer, body: Vec<Value>) {
    for chunk in body.chunks(500) {
        let (status, report) =
            post_json(server.addr, FEATURES, &[], &json!(chunk).to_string()).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["errors"], json!([]), "{report}");
    }
}

/// A server holding tracks `1..=count`: track n at x = -117 - n/1000, speed n, observed at
/// 1,000,000 + n ms.
async fn server_with(count: i64) -> TestServer {
    let server = TestServer::start(ingest_config());
    publish(
        &server,
        (1..=count)
            .map(|n| observation(n, 1_000_000 + n, -117.0 - n as f64 / 1_000.0, n as f64))
            .collect(),
    )
    .await;
    let mut live = 0;
    for _ in 0..400 {
        live = get_json(server.addr, "/api/stats").await.1["services"]["vehicles"]["tracksLive"]
            .as_i64()
            .unwrap_or(0);
        if live == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(live, count, "the state holds every track");
    server
}

/// The path and query of an absolute link.
fn path_of(href: &str) -> String {
    let rest = href.split_once("://").expect("an absolute link").1;
    rest[rest.find('/').expect("a path")..].to_owned()
}

fn link<'a>(document: &'a Value, rel: &str) -> Option<&'a str> {
    document["links"]
        .as_array()?
        .iter()
        .find(|link| link["rel"] == rel)
        .and_then(|link| link["href"].as_str())
}

fn ids(page: &Value) -> Vec<i64> {
    assert_eq!(page["type"], "FeatureCollection", "{page}");
    page["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|feature| feature["id"].as_i64().unwrap())
        .collect()
}

async fn items(server: &TestServer, query: &str) -> Value {
    let (status, page) = get_json(server.addr, &format!("{ITEMS}?{query}")).await;
    assert_eq!(status, 200, "{query}: {page}");
    page
}

/// Every page from `first` on by the `next` links: the ids, in order.
async fn follow(server: &TestServer, first: &str) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        pages += 1;
        assert!(pages < 1_000, "paging never ends");
        let (status, page) = get_json(server.addr, &path).await;
        assert_eq!(status, 200, "{path}: {page}");
        seen.extend(ids(&page));
        next = link(&page, "next").map(path_of);
    }
    seen
}

async fn refused(server: &TestServer, path: &str, status: u16, naming: &str) {
    let (got, body) = get_json(server.addr, path).await;
    assert_eq!(got, status, "{path}: {body}");
    assert!(body["code"].is_string(), "{path}: {body}");
    let description = body["description"].as_str().unwrap_or_default();
    assert!(description.contains(naming), "{path}: {body}");
}

#[actix_web::test]
async fn the_documents_describe_what_is_served() {
    let server = server_with(3).await;
    let (status, landing) = get_json(server.addr, "/ogc/").await;
    assert_eq!(status, 200);
    for rel in ["self", "service-desc", "conformance", "data"] {
        let href = link(&landing, rel).unwrap_or_else(|| panic!("{rel}: {landing}"));
        let (status, _) = get_json(server.addr, &path_of(href)).await;
        assert_eq!(status, 200, "{rel} {href}");
    }
    let conformance = get_json(server.addr, "/ogc/conformance").await.1;
    let classes: BTreeSet<&str> = conformance["conformsTo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|class| class.as_str().unwrap())
        .collect();
    // Each class claimed is the subject of a test in this file.
    assert_eq!(
        classes,
        BTreeSet::from([
            "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
            "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
            "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
            "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
            "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
            "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
            "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
            "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
            "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
            "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
            "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
        ])
    );
    let (status, headers, body) = http(server.addr, "GET", "/ogc/api", &[]).await;
    assert_eq!(status, 200);
    assert!(
        crate::support::header(&headers, "content-type")
            .is_some_and(|value| value.starts_with("application/vnd.oai.openapi+json")),
        "{headers:?}"
    );
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["openapi"], "3.0.3");
    for path in [
        "/",
        "/conformance",
        "/api",
        "/collections",
        "/collections/{collectionId}",
        "/collections/{collectionId}/queryables",
        "/collections/{collectionId}/items",
        "/collections/{collectionId}/items/{featureId}",
        "/collections/vehicles/items",
    ] {
        assert!(api["paths"][path]["get"].is_object(), "{path}");
    }
    let collections = get_json(server.addr, "/ogc/collections").await.1;
    let collection = &collections["collections"][0];
    assert_eq!(collection["id"], "vehicles");
    assert_eq!(collection["itemType"], "feature");
    let bbox = &collection["extent"]["spatial"]["bbox"][0];
    assert!(
        (bbox[0].as_f64().unwrap() - -117.003).abs() < 1e-6,
        "{collection}"
    );
    assert!(
        (bbox[2].as_f64().unwrap() - -117.001).abs() < 1e-6,
        "{collection}"
    );
    assert!(
        collection["crs"]
            .as_array()
            .unwrap()
            .contains(&json!("http://www.opengis.net/def/crs/EPSG/0/3857"))
    );
    let (status, one) = get_json(server.addr, "/ogc/collections/vehicles").await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], "vehicles");
    let queryables = get_json(server.addr, "/ogc/collections/vehicles/queryables")
        .await
        .1;
    assert_eq!(queryables["properties"]["speed"]["type"], "number");
    assert_eq!(queryables["properties"]["observed"]["format"], "date-time");
    assert_eq!(queryables["properties"]["active"]["type"], "boolean");
    assert_eq!(
        queryables["properties"]["geometry"]["format"],
        "geometry-point"
    );
}

#[actix_web::test]
async fn items_page_by_track_id_and_stay_right_while_tracks_change() {
    let server = server_with(250).await;
    let first = items(&server, "limit=100").await;
    assert_eq!(first["numberMatched"], 250);
    assert_eq!(first["numberReturned"], 100);
    assert_eq!(ids(&first), (1..=100).collect::<Vec<_>>());
    let feature = &first["features"][0];
    assert_eq!(feature["geometry"]["type"], "Point");
    assert_eq!(feature["properties"]["name"], "bus 1");
    assert_eq!(
        feature["properties"]["observed"],
        "1970-01-01T00:16:40.001Z"
    );
    assert!(link(&first, "prev").is_none());
    let second_path = path_of(link(&first, "next").expect("a next link"));
    // Between pages: track 150 leaves, 260 arrives, 120 moves. Paging by key: every track that
    // lived through the paging appears once, the one that left does not.
    let (status, _, _) = http(
        server.addr,
        "DELETE",
        "/api/services/vehicles/tracks/150",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    publish(
        &server,
        vec![
            observation(260, 2_000_000, -117.5, 1.0),
            observation(120, 2_000_000, -117.6, 1.0),
        ],
    )
    .await;
    let mut rest = Vec::new();
    for _ in 0..400 {
        rest = follow(&server, &second_path).await;
        if rest.contains(&260) && !rest.contains(&150) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut expected: Vec<i64> = (101..=250).filter(|id| *id != 150).collect();
    expected.push(260);
    assert_eq!(rest, expected);
    // prev goes back.
    let second = get_json(server.addr, &second_path).await.1;
    let prev = get_json(server.addr, &path_of(link(&second, "prev").unwrap()))
        .await
        .1;
    assert_eq!(ids(&prev), (1..=100).collect::<Vec<_>>());
    // The limit: past the most, the most; below 1 or not a number, refused.
    let big = items(&server, "limit=1000000").await;
    assert_eq!(big["numberReturned"], 250);
    for bad in ["limit=0", "limit=-1", "limit=ten"] {
        refused(&server, &format!("{ITEMS}?{bad}"), 400, "limit").await;
    }
    // One track by its id.
    let (status, one) = get_json(server.addr, "/ogc/collections/vehicles/items/120").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["type"], "Feature");
    assert_eq!(one["id"], 120);
    assert_eq!(one["geometry"]["coordinates"][0], -117.6);
    assert!(link(&one, "collection").is_some());
    refused(&server, "/ogc/collections/vehicles/items/150", 404, "150").await;
    refused(&server, "/ogc/collections/vehicles/items/nope", 404, "nope").await;
    refused(&server, "/ogc/collections/nothing/items", 404, "nothing").await;
    refused(&server, "/ogc/collections/nothing", 404, "nothing").await;
}

#[actix_web::test]
async fn every_items_parameter_filters_and_every_error_names_its_parameter() {
    let server = server_with(40).await;
    // bbox in CRS84: tracks 11..=20 lie in x -117.020..-117.011.
    let page = items(&server, "bbox=-117.0205,33,-117.0105,35").await;
    assert_eq!(ids(&page), (11..=20).collect::<Vec<_>>());
    assert_eq!(page["numberMatched"], 10);
    let six = items(&server, "bbox=-117.0205,33,0,-117.0105,35,100").await;
    assert_eq!(ids(&six), (11..=20).collect::<Vec<_>>());
    // bbox in EPSG:3857, answer in EPSG:3857 (Part 2).
    let (xmin, _) = mercator(-117.0205, 34.0);
    let (xmax, _) = mercator(-117.0105, 34.0);
    let (_, ymin) = mercator(0.0, 33.0);
    let (_, ymax) = mercator(0.0, 35.0);
    let crs = percent_encode("http://www.opengis.net/def/crs/EPSG/0/3857");
    let (status, headers, body) = http(
        server.addr,
        "GET",
        &format!("{ITEMS}?bbox={xmin},{ymin},{xmax},{ymax}&bbox-crs={crs}&crs={crs}"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        crate::support::header(&headers, "content-crs"),
        Some("<http://www.opengis.net/def/crs/EPSG/0/3857>")
    );
    let mercator_page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ids(&mercator_page), (11..=20).collect::<Vec<_>>());
    let x = mercator_page["features"][0]["geometry"]["coordinates"][0]
        .as_f64()
        .unwrap();
    assert!((x - mercator(-117.011, 34.0).0).abs() < 0.01, "{x}");
    // datetime on the start-time field: tracks observed at 1,000,000 + n ms.
    let at = |ms: i64| featurestream::filter::format_rfc3339(ms);
    let instant = items(&server, &format!("datetime={}", at(1_000_007))).await;
    assert_eq!(ids(&instant), [7]);
    let interval = items(
        &server,
        &format!("datetime={}/{}", at(1_000_005), at(1_000_008)),
    )
    .await;
    assert_eq!(ids(&interval), [5, 6, 7, 8]);
    let open_start = items(&server, &format!("datetime=../{}", at(1_000_003))).await;
    assert_eq!(ids(&open_start), [1, 2, 3]);
    let open_end = items(&server, &format!("datetime={}/..", at(1_000_038))).await;
    assert_eq!(ids(&open_end), [38, 39, 40]);
    // Property equality (queryables as query parameters).
    let even = items(&server, "route=even&limit=5").await;
    assert_eq!(ids(&even), [2, 4, 6, 8, 10]);
    assert_eq!(even["numberMatched"], 20);
    let inactive = items(&server, "active=false&route=odd").await;
    assert_eq!(ids(&inactive), [3, 9, 15, 21, 27, 33, 39]);
    // CQL2 text: comparisons, logic, LIKE, BETWEEN, IN, TIMESTAMP, S_INTERSECTS.
    for (filter, expected) in [
        ("speed > 37", vec![38, 39, 40]),
        ("speed >= 2 AND speed < 4", vec![2, 3]),
        ("speed BETWEEN 5 AND 6 OR name = 'bus 40'", vec![5, 6, 40]),
        ("TRACKID IN (4, 8, 99)", vec![4, 8]),
        ("name LIKE 'bus 3_' AND NOT active", vec![30, 33, 36, 39]),
        (
            "observed < TIMESTAMP('1970-01-01T00:16:40.003Z')",
            vec![1, 2],
        ),
        (
            "S_INTERSECTS(geometry, BBOX(-117.0205,33,-117.0105,35)) AND speed > 18",
            vec![19, 20],
        ),
        ("\"speed\" = 12.0 AND route = 'even'", vec![12]),
    ] {
        let page = items(
            &server,
            &format!("filter-lang=cql2-text&filter={}", percent_encode(filter)),
        )
        .await;
        assert_eq!(ids(&page), expected, "{filter}");
    }
    // Parameters combine with AND.
    let combined = items(
        &server,
        &format!(
            "bbox=-117.0205,33,-117.0105,35&route=odd&filter={}",
            percent_encode("speed < 15")
        ),
    )
    .await;
    assert_eq!(ids(&combined), [11, 13]);
    // Errors: 400 with an OGC exception naming the parameter.
    for (query, naming) in [
        ("bbox=1,2,3", "bbox"),
        ("bbox=10,0,5,1", "antimeridian"),
        ("bbox=0,5,1,1", "miny"),
        ("bbox-crs=EPSG:4326&bbox=0,0,1,1", "bbox-crs"),
        ("crs=http://www.opengis.net/def/crs/EPSG/0/4326", "crs"),
        ("datetime=yesterday", "datetime"),
        ("datetime=../..x", "datetime"),
        ("datetime=..", "datetime"),
        (
            "datetime=2026-12-07T00:00:00Z/2026-12-06T00:00:00Z",
            "ends before it starts",
        ),
        ("filter-lang=cql2-json&filter=%7B%7D", "filter-lang"),
        ("filter=speed%20%3E", "filter"),
        ("filter=nosuch%20%3D%201", "nosuch"),
        ("filter=CASEI(name)%20%3D%20'a'", "CASEI"),
        (
            "filter=S_WITHIN(geometry%2CBBOX(0%2C0%2C1%2C1))",
            "S_WITHIN",
        ),
        ("filter=speed%20%2B%201%20%3E%202", "arithmetic"),
        ("speed=fast", "speed"),
        ("active=maybe", "active"),
        ("observed=today", "observed"),
        ("colour=red", "colour"),
        ("after=x", "after"),
        ("after=1&before=5", "before"),
        ("f=html", "f"),
    ] {
        refused(&server, &format!("{ITEMS}?{query}"), 400, naming).await;
    }
}

fn mercator(lon: f64, lat: f64) -> (f64, f64) {
    featurestream::geometry::Wkid::Wgs84.project(
        featurestream::geometry::Wkid::WebMercator(3857),
        lon,
        lat,
    )
}

#[actix_web::test]
async fn ogc_requests_need_a_token_like_every_endpoint_and_answer_cors() {
    let mut config = ingest_config();
    config.auth = featurestream::auth::Auth::new(
        featurestream::auth::parse_static_tokens("reader-token=vehicles").unwrap(),
        None,
        None,
    )
    .unwrap();
    let server = TestServer::start(config);
    refused(&server, ITEMS, 401, "").await;
    refused(&server, &format!("{ITEMS}?token=wrong"), 403, "").await;
    let (status, page) = get_json(server.addr, &format!("{ITEMS}?token=reader-token")).await;
    assert_eq!(status, 200, "{page}");
    // The collections list shows what the request may read.
    let anonymous = get_json(server.addr, "/ogc/collections").await.1;
    assert_eq!(anonymous["collections"], json!([]));
    let (_, headers, _) = http(
        server.addr,
        "GET",
        "/ogc/collections",
        &[
            ("Authorization", "Bearer reader-token"),
            ("Origin", "https://maps.example"),
        ],
    )
    .await;
    assert!(
        crate::support::header(&headers, "access-control-allow-origin").is_some(),
        "{headers:?}"
    );
    let readable = get_json(server.addr, "/ogc/collections?token=reader-token")
        .await
        .1;
    assert_eq!(readable["collections"][0]["id"], "vehicles");
}

/// Runs a program to the end, bounded; its standard output.
fn run(program: &str, args: &[&str]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{program} (scripts/test installs it): {err}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{program} {args:?} did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `ogrinfo` in a blocking thread (the server runs on this test's thread).
async fn run_blocking(program: &'static str, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &args)
    })
    .await
    .expect("the program ran")
}

#[actix_web::test]
async fn gdal_reads_every_live_track_once_through_its_oapif_driver() {
    let server = server_with(137).await;
    let source = format!("OAPIF:http://{}/ogc/", server.addr);
    // The whole layer, paged (GDAL asks 10 at a time and follows the next links).
    let listing = run_blocking(
        "ogrinfo",
        vec![
            "-ro".into(),
            "-al".into(),
            "-q".into(),
            source.clone(),
            "vehicles".into(),
        ],
    )
    .await;
    let tracks: Vec<i64> = listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("TRACKID (Integer) = "))
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(tracks, (1..=137).collect::<Vec<_>>(), "{listing}");
    // -where (sent as a filter) and -spat (sent as bbox).
    let filtered = run_blocking(
        "ogrinfo",
        vec![
            "-ro".into(),
            "-al".into(),
            "-q".into(),
            source.clone(),
            "vehicles".into(),
            "-where".into(),
            "speed > 100 AND route = 'odd'".into(),
            "-spat".into(),
            "-117.1305".into(),
            "33".into(),
            "-117.1195".into(),
            "35".into(),
        ],
    )
    .await;
    let tracks: Vec<i64> = filtered
        .lines()
        .filter_map(|line| line.trim().strip_prefix("TRACKID (Integer) = "))
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(tracks, [121, 123, 125, 127, 129], "{filtered}");
    // ogr2ogr to a GeoPackage, read back.
    let dir = std::env::temp_dir().join(format!(
        "featurestream-ogc-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let gpkg = dir.join("vehicles.gpkg").display().to_string();
    run_blocking(
        "ogr2ogr",
        vec![
            "-f".into(),
            "GPKG".into(),
            gpkg.clone(),
            source,
            "vehicles".into(),
        ],
    )
    .await;
    let summary = run_blocking(
        "ogrinfo",
        vec!["-ro".into(), "-so".into(), gpkg, "vehicles".into()],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(summary.contains("Feature Count: 137"), "{summary}");
    assert!(summary.contains("Geometry: Point"), "{summary}");
}

#[actix_web::test]
async fn owslib_lists_the_collection_and_pages_its_items() {
    let server = server_with(30).await;
    let script = r#"
import json, sys
from owslib.ogcapi.features import Features
api = Features(sys.argv[1])
collections = [c["id"] for c in api.collections()["collections"]]
page = api.collection_items("vehicles", bbox=[-117.0155, 33, -117.0045, 35], limit=5)
everything = api.collection_items("vehicles", limit=100)
print(json.dumps({
    "collections": collections,
    "page": [f["id"] for f in page["features"]],
    "matched": page["numberMatched"],
    "all": len(everything["features"]),
}))
"#;
    let output = run_blocking(
        "python3",
        vec![
            "-c".into(),
            script.into(),
            format!("http://{}/ogc/", server.addr),
        ],
    )
    .await;
    let answer: Value = serde_json::from_str(output.trim()).expect(&output);
    assert_eq!(answer["collections"], json!(["vehicles"]));
    assert_eq!(answer["page"], json!([5, 6, 7, 8, 9]));
    assert_eq!(answer["matched"], 11);
    assert_eq!(answer["all"], 30);
}

#[actix_web::test]
async fn qgis_loads_the_layer_through_its_oapif_provider_and_counts_every_track() {
    let server = server_with(57).await;
    // Debian's python3-qgis is built for Debian's Python; headless; the process leaves with
    // os._exit once it printed (QGIS's exit can crash after the work is done).
    let script = r#"
import sys
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
layer = QgsVectorLayer(f"url='{sys.argv[1]}' typename='vehicles'", "vehicles", "OAPIF")
valid = layer.isValid()
ids = sorted(int(f["TRACKID"]) for f in layer.getFeatures()) if valid else []
import json, os
print(json.dumps({"valid": valid, "ids": ids}), flush=True)
os._exit(0)
"#;
    let output = tokio::task::spawn_blocking({
        let url = format!("http://{}/ogc/", server.addr);
        move || {
            // Qt wants a runtime directory of the user's own (mode 0700).
            let runtime = std::env::temp_dir().join(format!(
                "featurestream-qgis-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&runtime).unwrap();
            std::fs::set_permissions(
                &runtime,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .unwrap();
            // A clean environment: cargo's (LD_LIBRARY_PATH into target/) crashes QGIS.
            let child = Command::new("/usr/bin/python3")
                .args(["-c", script, &url])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("QT_QPA_PLATFORM", "offscreen")
                .env("XDG_RUNTIME_DIR", &runtime)
                .env("HOME", &runtime)
                .output()
                .expect("Debian's python3 with python3-qgis (scripts/test installs it)");
            let _ = std::fs::remove_dir_all(&runtime);
            let stdout = String::from_utf8_lossy(&child.stdout).into_owned();
            assert!(
                child.status.success(),
                "{:?}: {}\n{stdout}",
                child.status,
                String::from_utf8_lossy(&child.stderr)
            );
            stdout
        }
    })
    .await
    .expect("QGIS ran");
    let line = output
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no answer from QGIS: {output}"));
    let answer: Value = serde_json::from_str(line).unwrap();
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(
        answer["ids"],
        json!((1..=57).collect::<Vec<_>>()),
        "{answer}"
    );
}
