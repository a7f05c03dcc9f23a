//! The documents of OGC API - Features (Part 1 Core with GeoJSON and OpenAPI 3.0, Part 2
//! CRS by reference for EPSG:3857, Part 3 Filtering with CQL2 text): the landing page,
//! conformance, the OpenAPI description of what is served, collections, queryables, and the
//! framing of an items page around features encoded once (`feature_result`). Links are
//! absolute, under the `base` the caller gives (`http://host/ogc`).

use serde_json::{Value, json};

use crate::feature::{FieldType, GeometryType};
use crate::geometry::{Envelope, Wkid};
use crate::service::Service;

/// The conformance classes served, each tested (tests/it/ogc.rs, tests/ogc/).
pub const CONFORMANCE: &[&str] = &[
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
];

/// WGS84 longitude, latitude: the default CRS.
pub const CRS84: &str = "http://www.opengis.net/def/crs/OGC/1.3/CRS84";
/// Web Mercator.
pub const EPSG_3857: &str = "http://www.opengis.net/def/crs/EPSG/0/3857";

/// The name of the geometry queryable (in `S_INTERSECTS`).
pub const GEOMETRY_QUERYABLE: &str = "geometry";

/// GeoJSON.
pub const GEOJSON_TYPE: &str = "application/geo+json";
/// OpenAPI 3.0 in JSON.
pub const OPENAPI_TYPE: &str = "application/vnd.oai.openapi+json;version=3.0";

/// Most features on a page, and the page size when `limit` is not given.
pub const MAX_LIMIT: usize = 10_000;
/// The page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// The CRS a URI names (`CRS84`, `EPSG:4326` read as CRS84 is not: its axes are swapped, so
/// it is not offered), if served.
pub fn crs_of(uri: &str) -> Option<Wkid> {
    match uri.trim() {
        CRS84 | "[OGC:CRS84]" => Some(Wkid::Wgs84),
        EPSG_3857 | "[EPSG:3857]" => Some(Wkid::WebMercator(3857)),
        _ => None,
    }
}

/// The URI of a CRS.
pub fn crs_uri(wkid: Wkid) -> &'static str {
    match wkid {
        Wkid::Wgs84 => CRS84,
        Wkid::WebMercator(_) => EPSG_3857,
    }
}

fn link(href: String, rel: &str, media: &str, title: &str) -> Value {
    json!({ "href": href, "rel": rel, "type": media, "title": title })
}

/// `GET /ogc/`.
pub fn landing(base: &str) -> Value {
    json!({
        "title": "featurestream",
        "description": "The latest observation of every live track of each stream service, as OGC API - Features.",
        "links": [
            link(format!("{base}/"), "self", "application/json", "This document"),
            link(format!("{base}/api"), "service-desc", OPENAPI_TYPE, "The API definition"),
            link(format!("{base}/conformance"), "conformance", "application/json", "Conformance classes"),
            link(format!("{base}/collections"), "data", "application/json", "The collections: one per stream service"),
        ]
    })
}

/// `GET /ogc/conformance`.
pub fn conformance() -> Value {
    json!({ "conformsTo": CONFORMANCE })
}

/// One collection (a stream service); `extent` in CRS84 when any track is live.
pub fn collection(base: &str, service: &Service, extent: Option<Envelope>) -> Value {
    let name = &service.name;
    let bbox = match extent {
        Some(envelope) => {
            let (xmin, ymin) =
                service
                    .schema
                    .wkid
                    .project(Wkid::Wgs84, envelope.xmin(), envelope.ymin());
            let (xmax, ymax) =
                service
                    .schema
                    .wkid
                    .project(Wkid::Wgs84, envelope.xmax(), envelope.ymax());
            json!([[xmin, ymin, xmax, ymax]])
        }
        None => json!([[-180.0, -90.0, 180.0, 90.0]]),
    };
    let mut extent = json!({ "spatial": { "bbox": bbox, "crs": CRS84 } });
    if service.schema.start_time_field().is_some() {
        extent["temporal"] = json!({
            "interval": [[null, null]],
            "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
        });
    }
    json!({
        "id": name,
        "title": name,
        "description": service.description,
        "itemType": "feature",
        "extent": extent,
        "crs": [CRS84, EPSG_3857],
        "storageCrs": crs_uri(service.schema.wkid),
        "links": [
            link(format!("{base}/collections/{name}"), "self", "application/json", "This collection"),
            link(format!("{base}/collections/{name}/items"), "items", GEOJSON_TYPE, "The live tracks"),
            link(
                format!("{base}/collections/{name}/queryables"),
                "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                "application/schema+json",
                "What a filter may test"
            ),
        ]
    })
}

/// `GET /ogc/collections`.
pub fn collections(base: &str, collections: Vec<Value>) -> Value {
    json!({
        "links": [link(format!("{base}/collections"), "self", "application/json", "This document")],
        "collections": collections,
        "crs": [CRS84, EPSG_3857],
    })
}

fn json_schema_type(field_type: FieldType) -> Value {
    match field_type {
        FieldType::ObjectId
        | FieldType::SmallInteger
        | FieldType::Integer
        | FieldType::BigInteger => json!({ "type": "integer" }),
        FieldType::Single | FieldType::Double => json!({ "type": "number" }),
        FieldType::String => json!({ "type": "string" }),
        FieldType::Date => json!({ "type": "string", "format": "date-time" }),
        FieldType::Boolean => json!({ "type": "boolean" }),
    }
}

/// `GET /ogc/collections/{name}/queryables`: every field, and the geometry.
pub fn queryables(base: &str, service: &Service) -> Value {
    let schema = &service.schema;
    let mut properties = serde_json::Map::new();
    let geometry_format = match schema.geometry_type {
        GeometryType::Point => "geometry-point",
        GeometryType::Polyline => "geometry-linestring",
        GeometryType::Polygon => "geometry-polygon",
    };
    properties.insert(
        GEOMETRY_QUERYABLE.to_owned(),
        json!({ "format": geometry_format, "x-ogc-role": "primary-geometry" }),
    );
    for field in schema.fields() {
        let mut property = json_schema_type(field.field_type);
        property["title"] = json!(field.name);
        properties.insert(field.name.clone(), property);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{base}/collections/{}/queryables", service.name),
        "type": "object",
        "title": service.name,
        "properties": properties,
        "additionalProperties": false,
    })
}

/// The links and counts of an items page, written around its features' GeoJSON.
pub struct ItemsPage<'a> {
    /// Tracks that match in all.
    pub matched: usize,
    /// The page's features, each a GeoJSON fragment.
    pub fragments: Vec<&'a [u8]>,
    /// `self`, `next`, `prev` and `collection` links.
    pub links: Vec<Value>,
    /// RFC 3339 time of the answer.
    pub time_stamp: String,
}

impl ItemsPage<'_> {
    /// The page's FeatureCollection.
    pub fn encode(&self) -> Vec<u8> {
        let features: usize = self
            .fragments
            .iter()
            .map(|fragment| fragment.len() + 1)
            .sum();
        let mut out = Vec::with_capacity(features + 512);
        out.extend_from_slice(br#"{"type":"FeatureCollection","timeStamp":"#);
        serde_json::to_writer(&mut out, &self.time_stamp).expect("writing to a Vec");
        out.extend_from_slice(br#","numberMatched":"#);
        out.extend_from_slice(self.matched.to_string().as_bytes());
        out.extend_from_slice(br#","numberReturned":"#);
        out.extend_from_slice(self.fragments.len().to_string().as_bytes());
        out.extend_from_slice(br#","links":"#);
        serde_json::to_writer(&mut out, &self.links).expect("writing to a Vec");
        out.extend_from_slice(br#","features":["#);
        for (index, fragment) in self.fragments.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(fragment);
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// An items link.
pub fn items_link(href: String, rel: &str, title: &str) -> Value {
    link(href, rel, GEOJSON_TYPE, title)
}

/// A single feature's document: its GeoJSON with `links` added.
pub fn feature_document(fragment: &[u8], links: Vec<Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(fragment.len() + 256);
    // The fragment is an object: `{"type":"Feature",...}`; the links go in before its end.
    out.extend_from_slice(&fragment[..fragment.len() - 1]);
    out.extend_from_slice(br#","links":"#);
    serde_json::to_writer(&mut out, &links).expect("writing to a Vec");
    out.push(b'}');
    out
}

/// An exception (`{"code", "description"}`, OGC API - Common).
pub fn exception(code: &str, description: &str) -> Value {
    json!({ "code": code, "description": description })
}

/// The OpenAPI 3.0 document of what `/ogc` serves for `services`.
pub fn openapi(base: &str, services: &[&Service]) -> Value {
    let collection_ids: Vec<&str> = services
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    let json_response = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": { "type": "object" } } } });
    let geojson_response = |description: &str| json!({ "description": description, "content": { (GEOJSON_TYPE): { "schema": { "type": "object" } } } });
    let exception_response = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/exception" } } } });
    let parameter = |name: &str, description: &str, schema: Value| json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema, "style": "form", "explode": false });
    let collection_id = json!({ "name": "collectionId", "in": "path", "required": true,
        "description": "The stream service.", "schema": { "type": "string", "enum": collection_ids } });
    let items = |path_parameter: Option<Value>, properties: &[&crate::feature::Field]| {
        let mut parameters: Vec<Value> = path_parameter.into_iter().collect();
        parameters.extend([
            parameter("limit", "Most features on a page.",
                json!({ "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT })),
            parameter("bbox", "Features that intersect this box: minx,miny,maxx,maxy (or six numbers), in bbox-crs.",
                json!({ "type": "array", "minItems": 4, "maxItems": 6, "items": { "type": "number" } })),
            parameter("bbox-crs", "The CRS of bbox.", json!({ "type": "string", "format": "uri", "enum": [CRS84, EPSG_3857], "default": CRS84 })),
            parameter("crs", "The CRS of the answer's coordinates.", json!({ "type": "string", "format": "uri", "enum": [CRS84, EPSG_3857], "default": CRS84 })),
            parameter("datetime", "An instant or interval (start/end, either end '..') on the start-time field, RFC 3339.", json!({ "type": "string" })),
            parameter("filter", "A CQL2 text filter.", json!({ "type": "string" })),
            parameter("filter-lang", "The filter's language (cql-text: the draft that GDAL before 3.9 sends).",
                json!({ "type": "string", "enum": ["cql2-text", "cql-text"], "default": "cql2-text" })),
            parameter("filter-crs", "The CRS of the filter's geometries.", json!({ "type": "string", "format": "uri", "enum": [CRS84, EPSG_3857], "default": CRS84 })),
            parameter("after", "Tracks after this track id (the next link's).", json!({ "type": "string" })),
            parameter("before", "Tracks before this track id (the prev link's).", json!({ "type": "string" })),
        ]);
        for field in properties {
            let mut schema = json_schema_type(field.field_type);
            schema["title"] = json!(field.name);
            parameters.push(parameter(
                &field.name,
                "Features whose property equals this value.",
                schema,
            ));
        }
        json!({ "get": {
            "summary": "The live tracks, the latest observation of each",
            "operationId": "getFeatures",
            "parameters": parameters,
            "responses": {
                "200": geojson_response("A page of features, in track id order"),
                "400": exception_response("A parameter is not valid"),
                "404": exception_response("No such collection")
            } } })
    };
    let mut document = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "featurestream OGC API - Features",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The latest observation of every live track of each stream service.",
            "license": { "name": "see the project" }
        },
        "servers": [{ "url": base }],
        "paths": {
            "/": { "get": { "summary": "Landing page", "operationId": "getLandingPage",
                "responses": { "200": json_response("The landing page") } } },
            "/conformance": { "get": { "summary": "Conformance classes", "operationId": "getConformance",
                "responses": { "200": json_response("The conformance classes") } } },
            "/api": { "get": { "summary": "This document", "operationId": "getApi",
                "responses": { "200": { "description": "The OpenAPI document",
                    "content": { (OPENAPI_TYPE): { "schema": { "type": "object" } } } } } } },
            "/collections": { "get": { "summary": "The collections", "operationId": "getCollections",
                "responses": { "200": json_response("The collections") } } },
            "/collections/{collectionId}": { "get": { "summary": "A collection", "operationId": "describeCollection",
                "parameters": [collection_id],
                "responses": { "200": json_response("The collection"), "404": exception_response("No such collection") } } },
            "/collections/{collectionId}/queryables": { "get": { "summary": "What a filter may test",
                "operationId": "getQueryables", "parameters": [collection_id],
                "responses": { "200": { "description": "The queryables",
                    "content": { "application/schema+json": { "schema": { "type": "object" } } } },
                    "404": exception_response("No such collection") } } },
            "/collections/{collectionId}/items/{featureId}": { "get": {
                "summary": "The latest observation of one track",
                "operationId": "getFeature",
                "parameters": [
                    collection_id,
                    { "name": "featureId", "in": "path", "required": true, "description": "The track id.", "schema": { "type": "string" } },
                    parameter("crs", "The CRS of the answer's coordinates.", json!({ "type": "string", "format": "uri", "enum": [CRS84, EPSG_3857], "default": CRS84 })),
                ],
                "responses": {
                    "200": geojson_response("The feature"),
                    "404": exception_response("No such track live")
                } } }
        },
        "components": { "schemas": { "exception": {
            "type": "object", "required": ["code"],
            "properties": { "code": { "type": "string" }, "description": { "type": "string" } }
        } } }
    });
    // Each collection's items with its properties as parameters (GDAL filters on them), and
    // the generic path.
    let paths = document["paths"]
        .as_object_mut()
        .expect("paths is an object");
    paths.insert(
        "/collections/{collectionId}/items".to_owned(),
        items(Some(collection_id.clone()), &[]),
    );
    for service in services {
        let fields: Vec<&crate::feature::Field> = service.schema.fields().iter().collect();
        let mut path = items(None, &fields);
        path["get"]["operationId"] = json!(format!("getFeatures.{}", service.name));
        paths.insert(format!("/collections/{}/items", service.name), path);
    }
    document
}
