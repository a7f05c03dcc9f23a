//! `OutFields`: which attributes a session receives. The object id and track id fields are
//! always sent, because the ArcGIS SDK needs them to draw and to track features.

use super::error::FilterError;
use crate::feature::Schema;

/// The attribute selection of a view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OutFields {
    /// `*`: every field.
    All,
    /// Only these fields (schema indexes, ascending, object id and track id included), with
    /// the requested names in the schema's spelling for the filter reply.
    Only {
        /// Field indexes to send, ascending.
        indexes: Vec<usize>,
        /// The requested fields, comma-separated, schema spelling, request order.
        text: String,
    },
}

impl OutFields {
    /// Parses a comma list (`outFields=A, b ,C`, case-insensitive) or `*`.
    ///
    /// ```
    /// use featurestream::feature::{Field, FieldType, GeometryType, Schema};
    /// use featurestream::filter::OutFields;
    /// use featurestream::geometry::Wkid;
    /// let schema = Schema::new(
    ///     vec![Field::new("OBJECTID", FieldType::ObjectId), Field::new("TRACKID", FieldType::Integer),
    ///          Field::new("speed", FieldType::Double), Field::new("name", FieldType::String)],
    ///     "OBJECTID", "TRACKID", GeometryType::Point, Wkid::Wgs84).unwrap();
    /// let fields = OutFields::parse_list(&schema, " SPEED ").unwrap();
    /// assert_eq!(fields, OutFields::Only { indexes: vec![0, 1, 2], text: "speed".into() });
    /// assert_eq!(OutFields::parse_list(&schema, "*").unwrap(), OutFields::All);
    /// ```
    pub fn parse_list(schema: &Schema, text: &str) -> Result<OutFields, Vec<FilterError>> {
        let mut names = Vec::new();
        let mut offset = 0;
        for part in text.split(',') {
            let leading = part.len() - part.trim_start().len();
            names.push((part.trim(), offset + leading));
            offset += part.len() + 1;
        }
        OutFields::resolve(schema, names)
    }

    /// Resolves a list of names (the custom-mode handshake's `outFields: string[]`). Positions
    /// in errors are list indexes.
    pub fn parse_names(schema: &Schema, names: &[String]) -> Result<OutFields, Vec<FilterError>> {
        OutFields::resolve(
            schema,
            names
                .iter()
                .enumerate()
                .map(|(index, name)| (name.trim(), index))
                .collect(),
        )
    }

    fn resolve(schema: &Schema, names: Vec<(&str, usize)>) -> Result<OutFields, Vec<FilterError>> {
        let names: Vec<(&str, usize)> = names
            .into_iter()
            .filter(|(name, _)| !name.is_empty())
            .collect();
        if names.is_empty() || names.iter().any(|(name, _)| *name == "*") {
            return Ok(OutFields::All);
        }
        let mut errors = Vec::new();
        let mut requested: Vec<usize> = Vec::new();
        for (name, position) in names {
            let unquoted = name
                .strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
                .unwrap_or(name);
            match schema.field_index(unquoted) {
                Some(index) if !requested.contains(&index) => requested.push(index),
                Some(_) => {}
                None => errors.push(FilterError::UnknownField {
                    name: unquoted.to_owned(),
                    position,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let text = requested
            .iter()
            .map(|index| schema.fields()[*index].name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut indexes = requested;
        indexes.extend([schema.object_id_field(), schema.track_id_field()]);
        indexes.sort_unstable();
        indexes.dedup();
        if indexes.len() == schema.fields().len() {
            return Ok(OutFields::All);
        }
        Ok(OutFields::Only { indexes, text })
    }

    /// Whether the field at `index` is sent.
    pub fn includes(&self, index: usize) -> bool {
        match self {
            OutFields::All => true,
            OutFields::Only { indexes, .. } => indexes.binary_search(&index).is_ok(),
        }
    }

    /// The text echoed in a filter reply: `*` or the requested names.
    pub fn text(&self) -> &str {
        match self {
            OutFields::All => "*",
            OutFields::Only { text, .. } => text,
        }
    }
}
