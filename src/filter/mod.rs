//! The per-session filter engine: ArcGIS where clauses, the envelope filter and outFields,
//! compiled once against a service `Schema` and evaluated per feature without allocating.
//! Plain Rust: no actix, no serde_json (`protocol/` maps these types to and from the wire).
//!
//! Decisions where the ArcGIS documents are silent, taken as a careful SQL engine would:
//! - keywords and field names are case-insensitive; string comparison is byte-wise and so
//!   case-sensitive (seed 003); `_` in LIKE matches one Unicode scalar value;
//! - an empty or all-blank where clause means "no where filter" (as ArcGIS treats `where=`);
//! - numbers are compared as f64 (exact for integers up to 2^53), integers with integers exactly;
//! - an envelope without `spatialReference` is in the connection's reference (seed 003);
//! - an IN list is a set: its canonical form is sorted and de-duplicated.

mod ast;
mod compile;
pub mod cql2;
pub(crate) mod date;
mod error;
mod eval;
mod ledger;
mod lexer;
mod out_fields;
mod parser;
mod simplify;
mod state;

pub use ast::{FieldRef, InItems, InList, LikePattern, LikeToken, Literal, Operand, Predicate};
pub use date::{format_rfc3339, parse_rfc3339};
pub use error::FilterError;
pub use eval::Truth;
pub use ledger::{WhereLedger, WherePermit};
pub use lexer::CompareOp;
pub use out_fields::OutFields;
pub use state::{FilterState, FilterUpdate, GeometryInput, OutFieldsInput, Patch};

use crate::feature::{Feature, Schema};
use crate::geometry::{Envelope, EnvelopeInput, SpatialRel, Wkid};

/// Limits that keep a hostile clause from costing more than a clear error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterLimits {
    /// Longest where clause, bytes (default 16 KiB).
    pub max_clause_bytes: usize,
    /// Deepest nesting of parentheses and NOTs (default 64).
    pub max_depth: usize,
    /// Longest IN list (default 1,000).
    pub max_in_items: usize,
    /// Most predicates a clause may evaluate per feature, after simplification (default
    /// 512): bounds what one clause costs the broker.
    pub max_nodes: usize,
}

impl Default for FilterLimits {
    fn default() -> FilterLimits {
        FilterLimits {
            max_clause_bytes: 16 * 1024,
            max_depth: 64,
            max_in_items: 1000,
            max_nodes: 512,
        }
    }
}

/// A compiled where clause with the text the client sent and its canonical form.
#[derive(Clone, Debug, PartialEq)]
pub struct WhereClause {
    text: String,
    predicate: Predicate,
    canonical: String,
}

impl WhereClause {
    /// Parses and type-checks a clause; returns every problem found.
    ///
    /// ```
    /// use featurestream::feature::{Field, FieldType, GeometryType, Schema};
    /// use featurestream::filter::{FilterLimits, WhereClause};
    /// use featurestream::geometry::Wkid;
    /// let schema = Schema::new(
    ///     vec![Field::new("OBJECTID", FieldType::ObjectId), Field::new("speed", FieldType::Double)],
    ///     "OBJECTID", "OBJECTID", GeometryType::Point, Wkid::Wgs84,
    /// ).unwrap();
    /// let clause = WhereClause::compile(&schema, "SPEED>10.0", FilterLimits::default()).unwrap();
    /// assert_eq!(clause.canonical(), "speed > 10");
    /// let errors = WhereClause::compile(&schema, "nope = 1", FilterLimits::default()).unwrap_err();
    /// assert_eq!(errors[0].to_string(), "The field \"nope\" does not exist in this Stream Service's schema.");
    /// ```
    pub fn compile(
        schema: &Schema,
        text: &str,
        limits: FilterLimits,
    ) -> Result<WhereClause, Vec<FilterError>> {
        if text.len() > limits.max_clause_bytes {
            return Err(vec![FilterError::ClauseTooLong {
                length_bytes: text.len(),
                max_bytes: limits.max_clause_bytes,
            }]);
        }
        let tokens = lexer::tokenize(text).map_err(|err| vec![err])?;
        let syntax = parser::Parser::new(&tokens, limits.max_depth, limits.max_in_items)
            .parse_clause()
            .map_err(|err| vec![err])?;
        let predicate = compile::Compiler::new(schema).compile(syntax)?.simplified();
        let nodes = predicate.node_count();
        if nodes > limits.max_nodes {
            return Err(vec![FilterError::TooComplex {
                nodes,
                max_nodes: limits.max_nodes,
            }]);
        }
        let canonical = predicate.to_string();
        Ok(WhereClause {
            text: text.to_owned(),
            predicate,
            canonical,
        })
    }

    /// The clause as the client wrote it (echoed in filter replies).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The canonical, fully parenthesised clause (the broker's grouping key).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The compiled predicate.
    pub fn predicate(&self) -> &Predicate {
        &self.predicate
    }

    /// Whether a feature with these attributes is selected (SQL: only TRUE selects).
    #[inline]
    pub fn matches(&self, attributes: &[crate::feature::FieldValue]) -> bool {
        self.predicate.evaluate(attributes) == Truth::True
    }
}

/// An envelope filter: the envelope in the connection's reference and the relation.
#[derive(Clone, Debug, PartialEq)]
pub struct GeometryFilter {
    /// As the client sent it (echoed in filter replies).
    pub input: EnvelopeInput,
    /// Projected into the connection's reference.
    pub envelope: Envelope,
    /// The relation to test.
    pub relation: SpatialRel,
}

/// The part of a subscription that selects features: where clause and envelope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureFilter {
    /// The where clause, if any.
    pub where_clause: Option<WhereClause>,
    /// The envelope filter, if any.
    pub geometry: Option<GeometryFilter>,
}

impl FeatureFilter {
    /// Compiles a where clause and an envelope together, reporting every problem of both.
    ///
    /// ```
    /// use featurestream::feature::{Field, FieldType, GeometryType, Schema};
    /// use featurestream::filter::{FeatureFilter, FilterLimits};
    /// use featurestream::geometry::{EnvelopeInput, SpatialRel, Wkid};
    /// let schema = Schema::new(vec![Field::new("OBJECTID", FieldType::ObjectId)],
    ///     "OBJECTID", "OBJECTID", GeometryType::Point, Wkid::Wgs84).unwrap();
    /// let bad = EnvelopeInput { corners: [1.0, 0.0, 0.0, 1.0], wkid: None };
    /// let errors = FeatureFilter::compile(&schema, Some("x = 1"), Some(&bad), SpatialRel::Intersects,
    ///     Wkid::Wgs84, FilterLimits::default()).unwrap_err();
    /// assert_eq!(errors.len(), 2);
    /// ```
    pub fn compile(
        schema: &Schema,
        where_text: Option<&str>,
        envelope: Option<&EnvelopeInput>,
        relation: SpatialRel,
        out_sr: Wkid,
        limits: FilterLimits,
    ) -> Result<FeatureFilter, Vec<FilterError>> {
        let mut errors = Vec::new();
        let where_clause = match where_text.filter(|text| !text.trim().is_empty()) {
            Some(text) => WhereClause::compile(schema, text, limits)
                .map_err(|found| errors.extend(found))
                .ok(),
            None => None,
        };
        let geometry = match envelope {
            Some(input) => match input.resolve(out_sr) {
                Ok(envelope) => Some(GeometryFilter {
                    input: input.clone(),
                    envelope,
                    relation,
                }),
                Err(err) => {
                    errors.push(err.into());
                    None
                }
            },
            None => None,
        };
        if errors.is_empty() {
            Ok(FeatureFilter {
                where_clause,
                geometry,
            })
        } else {
            Err(errors)
        }
    }

    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.where_clause.is_none() && self.geometry.is_none()
    }

    /// Whether the feature passes. `geometry` must already be in the connection's reference.
    #[inline]
    pub fn matches(
        &self,
        feature: &Feature,
        geometry_in_out_sr: &crate::geometry::Geometry,
    ) -> bool {
        if let Some(filter) = &self.geometry
            && !geometry_in_out_sr.relates(&filter.envelope, filter.relation)
        {
            return false;
        }
        self.where_clause
            .as_ref()
            .is_none_or(|clause| clause.matches(&feature.attributes))
    }
}

#[cfg(test)]
mod tests;
