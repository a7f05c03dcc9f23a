//! `FilterState`: the documented merge of filter updates (ArcGIS subscribe, seed 003). A part
//! absent from an update is unchanged, `null` clears it, `{"filter": null}` clears everything,
//! `{"filter": {}}` changes nothing; an update with any error changes nothing and reports
//! every problem. Pure: `protocol/` decodes JSON into `FilterUpdate` and encodes the reply.

use super::error::FilterError;
use super::out_fields::OutFields;
use super::{FeatureFilter, FilterLimits, GeometryFilter, WhereClause};
use crate::feature::Schema;
use crate::geometry::{EnvelopeInput, SpatialRel, Wkid};

/// One part of an update.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Patch<T> {
    /// The key was absent: keep the current value.
    #[default]
    Keep,
    /// The key was `null` (or, for geometry, an empty object): clear this part.
    Clear,
    /// Replace this part.
    Set(T),
    /// The key was present but could not be decoded; reported, nothing changes.
    Invalid(FilterError),
}

/// An envelope filter as sent: a decoded envelope.
pub type GeometryInput = EnvelopeInput;

/// outFields as sent: a comma list (subscribe URL, filter message) or names (handshake).
#[derive(Clone, Debug, PartialEq)]
pub enum OutFieldsInput {
    /// `"A,B,C"` or `"*"`.
    List(String),
    /// `["A", "B"]`.
    Names(Vec<String>),
}

/// A decoded filter message.
// One is built per filter message, never per feature: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum FilterUpdate {
    /// `{"filter": null}`: clear every part.
    ClearAll,
    /// `{"filter": {...}}`: change the parts present.
    Parts {
        /// `where`.
        where_clause: Patch<String>,
        /// `geometry`.
        geometry: Patch<GeometryInput>,
        /// `spatialRel`.
        spatial_rel: Patch<SpatialRel>,
        /// `outFields`.
        out_fields: Patch<OutFieldsInput>,
    },
}

impl FilterUpdate {
    /// An update that changes nothing (`{"filter": {}}`).
    pub fn unchanged() -> FilterUpdate {
        FilterUpdate::Parts {
            where_clause: Patch::Keep,
            geometry: Patch::Keep,
            spatial_rel: Patch::Keep,
            out_fields: Patch::Keep,
        }
    }
}

/// The filter in force on one connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterState {
    /// Where clause and envelope.
    pub filter: FeatureFilter,
    /// The relation used for the envelope, kept even while no envelope is set.
    pub spatial_rel: SpatialRel,
    /// The attribute selection; `None` is every field.
    pub out_fields: Option<OutFields>,
}

impl FilterState {
    /// Applies an update atomically: on any error nothing changes and every problem is returned.
    pub fn apply(
        &mut self,
        update: FilterUpdate,
        schema: &Schema,
        out_sr: Wkid,
        limits: FilterLimits,
    ) -> Result<(), Vec<FilterError>> {
        let FilterUpdate::Parts {
            where_clause,
            geometry,
            spatial_rel,
            out_fields,
        } = update
        else {
            *self = FilterState::default();
            return Ok(());
        };
        let mut errors = Vec::new();
        let spatial_rel_value = match spatial_rel {
            Patch::Set(relation) => relation,
            Patch::Clear => SpatialRel::default(),
            Patch::Keep => self.spatial_rel,
            Patch::Invalid(err) => {
                errors.push(err);
                self.spatial_rel
            }
        };
        let new_where = match where_clause {
            Patch::Keep => Ok(self.filter.where_clause.clone()),
            Patch::Clear => Ok(None),
            Patch::Set(text) if text.trim().is_empty() => Ok(None),
            Patch::Set(text) => WhereClause::compile(schema, &text, limits).map(Some),
            Patch::Invalid(err) => Err(vec![err]),
        };
        let new_geometry = match geometry {
            Patch::Keep => Ok(self.filter.geometry.clone().map(|mut filter| {
                filter.relation = spatial_rel_value;
                filter
            })),
            Patch::Clear => Ok(None),
            Patch::Set(input) => match input.resolve(out_sr) {
                Ok(envelope) => Ok(Some(GeometryFilter {
                    input,
                    envelope,
                    relation: spatial_rel_value,
                })),
                Err(err) => Err(vec![FilterError::from(err)]),
            },
            Patch::Invalid(err) => Err(vec![err]),
        };
        let new_out_fields = match out_fields {
            Patch::Keep => Ok(self.out_fields.clone()),
            Patch::Clear => Ok(None),
            Patch::Set(OutFieldsInput::List(text)) => {
                OutFields::parse_list(schema, &text).map(Some)
            }
            Patch::Set(OutFieldsInput::Names(names)) => {
                OutFields::parse_names(schema, &names).map(Some)
            }
            Patch::Invalid(err) => Err(vec![err]),
        };
        let (where_clause, geometry, out_fields) = match (new_where, new_geometry, new_out_fields) {
            (Ok(where_clause), Ok(geometry), Ok(out_fields)) if errors.is_empty() => {
                (where_clause, geometry, out_fields)
            }
            (where_result, geometry_result, out_fields_result) => {
                errors.extend(where_result.err().into_iter().flatten());
                errors.extend(geometry_result.err().into_iter().flatten());
                errors.extend(out_fields_result.err().into_iter().flatten());
                return Err(errors);
            }
        };
        let out_fields = out_fields.filter(|fields| *fields != OutFields::All);
        *self = FilterState {
            filter: FeatureFilter {
                where_clause,
                geometry,
            },
            spatial_rel: spatial_rel_value,
            out_fields,
        };
        Ok(())
    }

    /// Whether no part is in force (the reply's `"filter": {}`).
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty() && self.out_fields.is_none()
    }
}
