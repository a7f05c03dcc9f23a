//! REST documents: the catalog (`/arcgis/rest/services?f=json`), a stream service's metadata
//! (`.../StreamServer?f=json`, every key the ArcGIS SDK needs, docs/protocol.md §2.2) and the
//! ArcGIS JSON error body.

use serde_json::{Value, json};

use crate::feature::FieldType;
use crate::service::Service;

/// The `currentVersion` advertised, as ArcGIS Enterprise 11.3.
pub const CURRENT_VERSION: f64 = 11.3;

/// The catalog of stream services.
pub fn catalog<'a>(services: impl Iterator<Item = &'a Service>) -> Value {
    let services: Vec<Value> = services
        .map(|service| json!({ "name": service.name, "type": "StreamServer" }))
        .collect();
    json!({ "currentVersion": CURRENT_VERSION, "folders": [], "services": services })
}

/// A `spatialReference` object: the wkid as configured, and 3857 as the latest of 102100.
pub fn spatial_reference(wkid: crate::geometry::Wkid) -> Value {
    let wkid = wkid.number();
    json!({ "wkid": wkid, "latestWkid": if wkid == 102100 { 3857 } else { wkid } })
}

/// The field clients label features with: the first string field, else the object id.
pub fn display_field(schema: &crate::feature::Schema) -> String {
    schema
        .fields()
        .iter()
        .find(|field| field.field_type == FieldType::String)
        .map_or_else(
            || schema.fields()[schema.object_id_field()].name.clone(),
            |field| field.name.clone(),
        )
}

/// The default renderer of stream and feature layer documents.
pub fn drawing_info() -> Value {
    json!({
        "renderer": {
            "type": "simple",
            "symbol": {
                "type": "esriSMS", "style": "esriSMSCircle", "color": [0, 112, 255, 255], "size": 6,
                "outline": { "color": [255, 255, 255, 255], "width": 1 }
            }
        }
    })
}

/// The `fields` array of a schema, as stream and feature layer metadata list them.
pub fn fields_json(schema: &crate::feature::Schema) -> Vec<Value> {
    schema
        .fields()
        .iter()
        .map(|field| {
            let mut value = json!({
                "name": field.name,
                "type": field.field_type.esri_name(),
                "alias": field.name,
                "nullable": field.nullable,
            });
            if let Some(length) = field.length {
                value["length"] = json!(length);
            } else if field.field_type == FieldType::Date {
                value["length"] = json!(8);
            }
            value
        })
        .collect()
}

/// A service's metadata. `stream_url` is the WebSocket base the SDK appends `/subscribe` to.
pub fn stream_server(
    service: &Service,
    stream_url: &str,
    token: Option<&str>,
    archive: &Archive,
) -> Value {
    let schema = &service.schema;
    let fields = fields_json(schema);
    let mut stream_urls = json!({ "transport": "ws", "urls": [stream_url] });
    if let Some(token) = token {
        stream_urls["token"] = json!(token);
    }
    let start_time_field = schema
        .start_time_field()
        .map(|index| schema.fields()[index].name.clone());
    json!({
        "currentVersion": CURRENT_VERSION,
        "serviceDescription": service.description,
        "description": service.description,
        "copyrightText": "",
        "capabilities": "broadcast,subscribe",
        "streamUrls": [stream_urls],
        "geometryType": schema.geometry_type.esri_name(),
        "spatialReference": spatial_reference(schema.wkid),
        "objectIdField": schema.fields()[schema.object_id_field()].name,
        "displayField": display_field(schema),
        "timeInfo": {
            "trackIdField": schema.fields()[schema.track_id_field()].name,
            "startTimeField": start_time_field,
            "endTimeField": null,
        },
        "fields": fields,
        "drawingInfo": drawing_info(),
        "keepLatestArchive": {
            "featuresUrl": archive.features_url,
            "maximumFeatureAge": service.max_feature_age.map_or(0, |age| age.as_secs()),
            "updateInterval": archive.update_interval_ms,
        },
        "relatedFeatures": null,
    })
}

/// Where a stream service's latest state is served as a feature layer (docs/protocol.md
/// §2.3, §10).
pub struct Archive {
    /// `.../FeatureServer/0` of the service, as the client reached the server.
    pub features_url: String,
    /// How often the archive changes, in milliseconds (the coalescing interval: it follows
    /// every fan-out).
    pub update_interval_ms: u64,
}

/// The ArcGIS REST error body `{"error": {"code", "message", "details"}}`.
pub fn error_body(code: u16, message: &str, details: &[String]) -> Value {
    json!({ "error": { "code": code, "message": message, "details": details } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::SimulatorSettings;

    #[test]
    fn metadata_has_every_key_the_sdk_needs() {
        let service = Service::vehicles(SimulatorSettings::default());
        let archive = Archive {
            features_url: "http://h/arcgis/rest/services/vehicles/FeatureServer/0".into(),
            update_interval_ms: 25,
        };
        let document = stream_server(
            &service,
            "ws://h/arcgis/ws/services/vehicles/StreamServer",
            None,
            &archive,
        );
        assert_eq!(
            document["keepLatestArchive"]["featuresUrl"],
            "http://h/arcgis/rest/services/vehicles/FeatureServer/0"
        );
        assert_eq!(document["keepLatestArchive"]["maximumFeatureAge"], 0);
        for key in [
            "streamUrls",
            "timeInfo",
            "fields",
            "objectIdField",
            "geometryType",
            "spatialReference",
        ] {
            assert!(!document[key].is_null(), "{key}");
        }
        assert_eq!(document["timeInfo"]["trackIdField"], "TRACKID");
        assert_eq!(
            document["streamUrls"][0]["urls"][0],
            "ws://h/arcgis/ws/services/vehicles/StreamServer"
        );
        assert!(document["streamUrls"][0].get("token").is_none());
        assert_eq!(
            stream_server(&service, "ws://x", Some("T"), &archive)["streamUrls"][0]["token"],
            "T"
        );
        let active = document["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|field| field["name"] == "active")
            .unwrap();
        assert_eq!(active["type"], "esriFieldTypeSmallInteger");
    }
}
