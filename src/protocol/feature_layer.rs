//! The latest state as an ArcGIS feature layer (docs/protocol.md §10): the FeatureServer and
//! layer documents the SDK and other REST clients read, and `/query` answers in Esri JSON and
//! GeoJSON. Features are written by the stream's own encoder.

use serde_json::{Value, json};

use super::feature_result::{FeatureEncoder, View, write_value};
use super::metadata::{
    CURRENT_VERSION, display_field, drawing_info, fields_json, spatial_reference,
};
use crate::feature::{Feature, FieldValue, Schema};
use crate::filter::OutFields;
use crate::geometry::{Envelope, Wkid};
use crate::service::Service;

/// The one layer's id.
pub const LAYER_ID: u32 = 0;

fn extent_json(extent: Option<Envelope>, wkid: Wkid) -> Value {
    // An empty layer advertises the world in its reference.
    let extent = extent.unwrap_or_else(|| match wkid {
        Wkid::Wgs84 => Envelope::new(-180.0, -90.0, 180.0, 90.0).expect("valid"),
        Wkid::WebMercator(_) => {
            let half = 20_037_508.342_789_244;
            Envelope::new(-half, -half, half, half).expect("valid")
        }
    });
    json!({
        "xmin": extent.xmin(), "ymin": extent.ymin(), "xmax": extent.xmax(), "ymax": extent.ymax(),
        "spatialReference": spatial_reference(wkid),
    })
}

/// `.../FeatureServer?f=json`.
pub fn feature_server(
    service: &Service,
    max_record_count: usize,
    extent: Option<Envelope>,
) -> Value {
    let wkid = service.schema.wkid;
    json!({
        "currentVersion": CURRENT_VERSION,
        "serviceDescription": service.description,
        "hasVersionedData": false,
        "supportsDisconnectedEditing": false,
        "hasStaticData": false,
        "maxRecordCount": max_record_count,
        "supportedQueryFormats": "JSON, geoJSON",
        "capabilities": "Query",
        "description": service.description,
        "copyrightText": "",
        "spatialReference": spatial_reference(wkid),
        "initialExtent": extent_json(extent, wkid),
        "fullExtent": extent_json(extent, wkid),
        "allowGeometryUpdates": false,
        "units": if wkid == Wkid::Wgs84 { "esriDecimalDegrees" } else { "esriMeters" },
        "layers": [{
            "id": LAYER_ID,
            "name": service.name,
            "parentLayerId": -1,
            "defaultVisibility": true,
            "subLayerIds": null,
            "minScale": 0,
            "maxScale": 0,
            "geometryType": service.schema.geometry_type.esri_name(),
        }],
        "tables": [],
    })
}

/// `.../FeatureServer/0?f=json`: what the SDK reads before it queries (type, paging
/// capabilities, maxRecordCount and its factor), and what other clients read too.
pub fn layer(service: &Service, max_record_count: usize, extent: Option<Envelope>) -> Value {
    let schema = &service.schema;
    let wkid = schema.wkid;
    let name_of = |index: usize| schema.fields()[index].name.clone();
    json!({
        "currentVersion": CURRENT_VERSION,
        "id": LAYER_ID,
        "name": service.name,
        "type": "Feature Layer",
        "description": service.description,
        "geometryType": schema.geometry_type.esri_name(),
        "sourceSpatialReference": spatial_reference(wkid),
        "copyrightText": "",
        "parentLayer": null,
        "subLayers": [],
        "minScale": 0,
        "maxScale": 0,
        "defaultVisibility": true,
        "extent": extent_json(extent, wkid),
        "hasAttachments": false,
        "htmlPopupType": "esriServerHTMLPopupTypeNone",
        "displayField": display_field(schema),
        "typeIdField": null,
        "subtypeFieldName": null,
        "subtypeField": null,
        "defaultSubtypeCode": null,
        "fields": fields_json(schema),
        "geometryField": { "name": "Shape", "type": "esriFieldTypeGeometry" },
        "indexes": [],
        "subtypes": [],
        "relationships": [],
        "canModifyLayer": false,
        "canScaleSymbols": false,
        "hasLabels": false,
        "capabilities": "Query",
        "maxRecordCount": max_record_count,
        "standardMaxRecordCount": max_record_count,
        "tileMaxRecordCount": max_record_count,
        "maxRecordCountFactor": 3,
        "supportsStatistics": false,
        "supportsExceedsLimitStatistics": false,
        "supportsAdvancedQueries": true,
        "supportedQueryFormats": "JSON, geoJSON",
        "isDataVersioned": false,
        "ownershipBasedAccessControlForFeatures": { "allowOthersToQuery": true },
        "useStandardizedQueries": true,
        "advancedQueryCapabilities": {
            "useStandardizedQueries": true,
            "supportsStatistics": false,
            "supportsHavingClause": false,
            "supportsOrderBy": true,
            "supportsDistinct": false,
            "supportsCountDistinct": false,
            "supportsPagination": true,
            "supportsPaginationOnAggregatedQueries": false,
            "supportsTrueCurve": false,
            "supportsReturningQueryExtent": false,
            "supportsQueryWithDistance": false,
            "supportsSqlExpression": false,
            "supportsMaxRecordCountFactor": true,
            "supportsReturningGeometryCentroid": false,
            "supportsQueryWithResultType": false,
        },
        "supportsMaxRecordCountFactor": true,
        "supportsReturningGeometryCentroid": false,
        "supportsCoordinatesQuantization": false,
        "supportsPagination": true,
        "supportsOrderBy": true,
        "timeInfo": {
            "startTimeField": schema.start_time_field().map(name_of),
            "endTimeField": null,
            "trackIdField": name_of(schema.track_id_field()),
            "timeReference": null,
        },
        "objectIdField": name_of(schema.object_id_field()),
        "globalIdField": "",
        "spatialReference": spatial_reference(wkid),
        "hasZ": false,
        "hasM": false,
        "allowGeometryUpdates": false,
        "supportsRollbackOnFailureParameter": false,
        "drawingInfo": drawing_info(),
    })
}

/// A `/query` page in Esri JSON: fields of the view, features written by the stream's encoder.
pub fn query_json(
    schema: &Schema,
    out_sr: Wkid,
    out_fields: &OutFields,
    features: &[Feature],
    exceeded: bool,
    return_geometry: bool,
) -> Vec<u8> {
    let view = View::new(out_sr, out_fields.clone());
    let encoder = FeatureEncoder::new(schema, &view);
    let fields: Vec<Value> = fields_json(schema)
        .into_iter()
        .enumerate()
        .filter(|(index, _)| out_fields.includes(*index))
        .map(|(_, field)| field)
        .collect();
    let head = json!({
        "objectIdFieldName": schema.fields()[schema.object_id_field()].name,
        "uniqueIdField": { "name": schema.fields()[schema.object_id_field()].name, "isSystemMaintained": true },
        "globalIdFieldName": "",
        "geometryType": schema.geometry_type.esri_name(),
        "spatialReference": spatial_reference(out_sr),
        "fields": fields,
        "exceededTransferLimit": exceeded,
    });
    let mut out = serde_json::to_vec(&head).expect("a value serialises");
    out.pop();
    out.extend_from_slice(br#","features":["#);
    out.reserve(features.len() * 200);
    for (index, feature) in features.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        if return_geometry {
            encoder.encode_feature(feature, &mut out);
        } else {
            encoder.encode_attributes_only(feature, &mut out);
        }
    }
    out.extend_from_slice(b"]}");
    out
}

/// A `/query` page as a GeoJSON FeatureCollection (WGS84, RFC 7946; `id` is the object id).
pub fn query_geojson(
    schema: &Schema,
    out_fields: &OutFields,
    features: &[Feature],
    exceeded: bool,
    return_geometry: bool,
) -> Vec<u8> {
    let keys: Vec<(usize, Vec<u8>)> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(index, _)| out_fields.includes(*index))
        .map(|(index, field)| {
            let mut key = serde_json::to_vec(&field.name).expect("a string serialises");
            key.push(b':');
            (index, key)
        })
        .collect();
    // Geometry as the GeoJSON streams write it (RFC 7946, WGS84).
    let geometry = crate::protocol::feature_result::FeatureEncoder::new(
        schema,
        &crate::protocol::feature_result::View::in_format(
            crate::protocol::feature_result::Format::GeoJson,
            Wkid::Wgs84,
            OutFields::All,
        ),
    );
    let mut out = Vec::with_capacity(features.len() * 220 + 64);
    out.extend_from_slice(br#"{"type":"FeatureCollection","features":["#);
    for (position, feature) in features.iter().enumerate() {
        if position > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"type":"Feature","id":"#);
        write_value(
            &mut out,
            &feature.attributes[schema.object_id_field()],
            crate::feature::FieldType::ObjectId,
        );
        out.extend_from_slice(br#","geometry":"#);
        if return_geometry {
            geometry.write_geojson_geometry(&mut out, &feature.geometry);
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(br#","properties":{"#);
        for (index, (field, key)) in keys.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            let value = feature.attributes.get(*field).unwrap_or(&FieldValue::Null);
            write_value(&mut out, value, schema.fields()[*field].field_type);
        }
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"]");
    if exceeded {
        out.extend_from_slice(br#","exceededTransferLimit":true"#);
    }
    out.push(b'}');
    out
}
