//! Domain model: a service's `Schema` (fields with ArcGIS types, object id and track id fields)
//! and the `Feature` that flows through the broker (attribute values by field index plus a
//! geometry). Knows nothing of JSON, actors or filters.

use std::sync::Arc;

use crate::geometry::{Geometry, Wkid};

/// The ArcGIS field types this server streams (`esriFieldType*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// `esriFieldTypeOID`: the object id, a positive integer.
    ObjectId,
    /// `esriFieldTypeSmallInteger`.
    SmallInteger,
    /// `esriFieldTypeInteger`.
    Integer,
    /// `esriFieldTypeBigInteger`.
    BigInteger,
    /// `esriFieldTypeSingle`.
    Single,
    /// `esriFieldTypeDouble`.
    Double,
    /// `esriFieldTypeString`.
    String,
    /// `esriFieldTypeDate`: epoch milliseconds, UTC.
    Date,
    /// A boolean (GeoEvent's Boolean). ArcGIS has no boolean field type, so the metadata
    /// advertises it as `esriFieldTypeSmallInteger` and values travel as 0 and 1.
    Boolean,
}

/// What a where clause may compare a field with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// Integers and floating point numbers of any width.
    Number,
    /// Text.
    String,
    /// Epoch milliseconds.
    Date,
    /// True or false.
    Boolean,
}

impl FieldType {
    /// The kind of value the field holds.
    pub fn kind(self) -> ValueKind {
        match self {
            FieldType::ObjectId
            | FieldType::SmallInteger
            | FieldType::Integer
            | FieldType::BigInteger
            | FieldType::Single
            | FieldType::Double => ValueKind::Number,
            FieldType::String => ValueKind::String,
            FieldType::Date => ValueKind::Date,
            FieldType::Boolean => ValueKind::Boolean,
        }
    }

    /// The `esriFieldType*` name used in metadata documents.
    pub fn esri_name(self) -> &'static str {
        match self {
            FieldType::ObjectId => "esriFieldTypeOID",
            FieldType::SmallInteger | FieldType::Boolean => "esriFieldTypeSmallInteger",
            FieldType::Integer => "esriFieldTypeInteger",
            FieldType::BigInteger => "esriFieldTypeBigInteger",
            FieldType::Single => "esriFieldTypeSingle",
            FieldType::Double => "esriFieldTypeDouble",
            FieldType::String => "esriFieldTypeString",
            FieldType::Date => "esriFieldTypeDate",
        }
    }

    /// Parses an `esriFieldType*` name, or `esriFieldTypeBoolean` (this server's extension).
    pub fn from_esri_name(name: &str) -> Option<FieldType> {
        Some(match name {
            "esriFieldTypeOID" => FieldType::ObjectId,
            "esriFieldTypeSmallInteger" => FieldType::SmallInteger,
            "esriFieldTypeInteger" => FieldType::Integer,
            "esriFieldTypeBigInteger" => FieldType::BigInteger,
            "esriFieldTypeSingle" => FieldType::Single,
            "esriFieldTypeDouble" => FieldType::Double,
            "esriFieldTypeString" => FieldType::String,
            "esriFieldTypeDate" => FieldType::Date,
            "esriFieldTypeBoolean" => FieldType::Boolean,
            _ => return None,
        })
    }

    /// A short lower-case name for error messages.
    pub fn describe(self) -> &'static str {
        match self.kind() {
            ValueKind::Number => "number",
            ValueKind::String => "string",
            ValueKind::Date => "date",
            ValueKind::Boolean => "boolean",
        }
    }
}

/// One field of a service schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The field name as the service spells it.
    pub name: String,
    /// The ArcGIS type.
    pub field_type: FieldType,
    /// Whether values may be NULL.
    pub nullable: bool,
    /// Maximum length of a string field, advertised in metadata.
    pub length: Option<u32>,
}

impl Field {
    /// A non-nullable field.
    pub fn new(name: &str, field_type: FieldType) -> Field {
        Field {
            name: name.to_owned(),
            field_type,
            nullable: false,
            length: None,
        }
    }

    /// The same field, nullable.
    pub fn nullable(mut self) -> Field {
        self.nullable = true;
        self
    }
}

/// The kind of geometry a service streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryType {
    /// `esriGeometryPoint`.
    Point,
    /// `esriGeometryPolyline`.
    Polyline,
    /// `esriGeometryPolygon`.
    Polygon,
}

impl GeometryType {
    /// The `esriGeometry*` name.
    pub fn esri_name(self) -> &'static str {
        match self {
            GeometryType::Point => "esriGeometryPoint",
            GeometryType::Polyline => "esriGeometryPolyline",
            GeometryType::Polygon => "esriGeometryPolygon",
        }
    }
}

/// Why a schema cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SchemaError {
    /// A field name that is not a letter or `_` followed by letters, digits and `_` (at most
    /// 64), as ArcGIS requires.
    #[error(
        "field name \"{0}\" is not valid: a letter or _ first, then letters, digits and _, at most 64"
    )]
    InvalidName(String),
    /// Two fields whose names differ only in case (ArcGIS names are case-insensitive).
    #[error("field \"{0}\" is declared twice (names are case-insensitive)")]
    DuplicateField(String),
    /// The named object id or track id field is not in the field list.
    #[error("{role} field \"{name}\" is not one of the fields")]
    MissingField {
        /// `objectIdField` or `trackIdField`.
        role: &'static str,
        /// The name given.
        name: String,
    },
    /// The object id field must be of type `esriFieldTypeOID`.
    #[error("objectIdField \"{0}\" must have type esriFieldTypeOID")]
    ObjectIdNotOid(String),
}

/// A service schema: its fields in order, which are the object id and the track id.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    fields: Vec<Field>,
    object_id_field: usize,
    track_id_field: usize,
    start_time_field: Option<usize>,
    /// The geometry type of every feature.
    pub geometry_type: GeometryType,
    /// The spatial reference features are stored in.
    pub wkid: Wkid,
    /// Bounds on one observation (ingest refuses past them).
    pub limits: FeatureLimits,
}

/// Bounds on one observation, whatever its source: what one feature may cost in memory for
/// every copy the server keeps and sends, and how far ahead its time may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureLimits {
    /// Characters of a string field that declares no `length` of its own.
    pub max_string_chars: u32,
    /// Characters of a text track id (a track id also names the track's NATS subject).
    pub max_track_id_chars: u32,
    /// Vertices of a polyline's or polygon's geometry, all parts together.
    pub max_vertices: usize,
    /// How far a start time may lie ahead of the server's clock (ms): one further ahead would
    /// make every later observation of its track stale.
    pub max_future_ms: i64,
}

impl Default for FeatureLimits {
    fn default() -> FeatureLimits {
        FeatureLimits {
            max_string_chars: 4096,
            max_track_id_chars: 256,
            max_vertices: 10_000,
            max_future_ms: 300_000,
        }
    }
}

/// Whether a name is a valid field or service name by ArcGIS's rules: a letter or `_` first,
/// then letters, digits and `_`, at most 64 characters (so that it is safe in SQL, URLs,
/// subjects and pages without quoting).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_')
        && name.len() <= 64
}

impl Schema {
    /// Builds a schema, checking that names are unique and the id fields exist.
    pub fn new(
        fields: Vec<Field>,
        object_id_field: &str,
        track_id_field: &str,
        geometry_type: GeometryType,
        wkid: Wkid,
    ) -> Result<Schema, SchemaError> {
        for (index, field) in fields.iter().enumerate() {
            if !is_valid_name(&field.name) {
                return Err(SchemaError::InvalidName(
                    field.name.chars().take(80).collect(),
                ));
            }
            if fields[..index]
                .iter()
                .any(|other| other.name.eq_ignore_ascii_case(&field.name))
            {
                return Err(SchemaError::DuplicateField(field.name.clone()));
            }
        }
        let find = |role: &'static str, name: &str| {
            fields
                .iter()
                .position(|field| field.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| SchemaError::MissingField {
                    role,
                    name: name.to_owned(),
                })
        };
        let object_id_field = find("objectIdField", object_id_field)?;
        let track_id_field = find("trackIdField", track_id_field)?;
        if fields[object_id_field].field_type != FieldType::ObjectId {
            return Err(SchemaError::ObjectIdNotOid(
                fields[object_id_field].name.clone(),
            ));
        }
        let start_time_field = fields
            .iter()
            .position(|field| field.field_type == FieldType::Date);
        Ok(Schema {
            fields,
            object_id_field,
            track_id_field,
            start_time_field,
            geometry_type,
            wkid,
            limits: FeatureLimits::default(),
        })
    }

    /// All fields in schema order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Finds a field by name, case-insensitively (ArcGIS SQL).
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|field| field.name.eq_ignore_ascii_case(name))
    }

    /// Index of the object id field.
    pub fn object_id_field(&self) -> usize {
        self.object_id_field
    }

    /// Index of the start-time field (`timeInfo.startTimeField`): the first date field, if
    /// any. It orders a track's observations.
    pub fn start_time_field(&self) -> Option<usize> {
        self.start_time_field
    }

    /// Index of the track id field.
    pub fn track_id_field(&self) -> usize {
        self.track_id_field
    }
}

/// One attribute value. Strings are shared so that a batch can be cloned cheaply.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// SQL NULL.
    Null,
    /// Any integer field, including the object id.
    Integer(i64),
    /// Single or double.
    Double(f64),
    /// Text.
    String(Arc<str>),
    /// Epoch milliseconds, UTC.
    Date(i64),
    /// True or false.
    Boolean(bool),
}

/// One observation: attribute values in schema order and a geometry in the schema's reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    /// Values by field index; `attributes.len() == schema.fields().len()`.
    pub attributes: Vec<FieldValue>,
    /// The shape, in the schema's spatial reference.
    pub geometry: Geometry,
}
