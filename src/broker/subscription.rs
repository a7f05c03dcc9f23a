//! `Subscription`: what one session receives (wire mode, view, where clause, envelope), in the
//! form the broker groups and evaluates. Shared by WebSocket and SSE sessions; pure.

use crate::feature::{Feature, Schema};
use crate::filter::{FilterState, OutFields, WhereClause};
use crate::geometry::{Envelope, SpatialRel, Wkid};
use crate::protocol::feature_result::{Format, View};

/// How features are framed for a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireMode {
    /// Custom mode (seed 000): one `featureResult` frame per batch.
    Custom(Deflate),
    /// ArcGIS server mode (seed 003): one feature per frame.
    Server(Deflate),
    /// Server-sent events: one `features` event per batch.
    Sse,
    /// A GeoJSON stream on a WebSocket: one `FeatureCollection` frame per batch.
    GeoJson(Deflate),
    /// A GeoJSON stream on server-sent events: one `features` event holding a
    /// `FeatureCollection` per batch.
    GeoJsonSse,
}

/// Whether a WebSocket session's frames go compressed (permessage-deflate negotiated), and
/// at which level: sessions that differ in it are grouped apart, and each group's frame is
/// compressed once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Deflate {
    /// Plain frames.
    #[default]
    Off,
    /// Frames of data compressed at this level (1-9), each message on its own.
    Level(u32),
}

impl Deflate {
    /// `frames` as this session gets them.
    pub fn apply(self, frames: bytes::Bytes) -> bytes::Bytes {
        match self {
            Deflate::Off => frames,
            Deflate::Level(level) => crate::protocol::deflate::compress_frames(&frames, level),
        }
    }
}

/// Bytes of data frames (live and snapshot) queued to sessions that negotiated compression:
/// as they would have been plain, and as sent (a frame sent to two sessions counts twice).
#[derive(Debug, Default)]
pub struct DeflateBytes {
    plain: std::sync::atomic::AtomicU64,
    wire: std::sync::atomic::AtomicU64,
}

impl DeflateBytes {
    /// Counts one frame queued to one session.
    pub fn add(&self, plain: usize, wire: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.plain.fetch_add(plain as u64, Relaxed);
        self.wire.fetch_add(wire as u64, Relaxed);
    }

    /// (plain, wire) so far.
    pub fn totals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.plain.load(Relaxed), self.wire.load(Relaxed))
    }
}

impl WireMode {
    /// The compression of a WebSocket mode (SSE: none).
    pub fn deflate(self) -> Deflate {
        match self {
            WireMode::Custom(deflate) | WireMode::Server(deflate) | WireMode::GeoJson(deflate) => {
                deflate
            }
            WireMode::Sse | WireMode::GeoJsonSse => Deflate::Off,
        }
    }

    /// How features are written in this mode.
    pub fn format(self) -> Format {
        match self {
            WireMode::Custom(_) | WireMode::Server(_) | WireMode::Sse => Format::Esri,
            WireMode::GeoJson(_) | WireMode::GeoJsonSse => Format::GeoJson,
        }
    }

    /// Whether the mode's frames are server-sent events.
    pub fn is_sse(self) -> bool {
        matches!(self, WireMode::Sse | WireMode::GeoJsonSse)
    }
}

/// Sessions with equal keys receive identical bytes and share one frame per batch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupKey {
    mode: WireMode,
    view: View,
    where_canonical: Option<String>,
    envelope_bits: Option<([u64; 4], SpatialRel)>,
}

/// A session's subscription, ready for the broker.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// Framing.
    pub mode: WireMode,
    /// Projection and attributes.
    pub view: View,
    /// The where clause, if any.
    pub where_clause: Option<WhereClause>,
    /// The envelope in the *service's* reference, and the relation.
    pub envelope: Option<(Envelope, SpatialRel)>,
    /// The grouping key.
    pub key: GroupKey,
}

impl Subscription {
    /// Builds the subscription of a filter state for a connection in `out_sr`. The envelope
    /// is projected from the connection's reference into the service's once, here, so that
    /// features are tested where they are stored.
    pub fn new(mode: WireMode, out_sr: Wkid, state: &FilterState, schema: &Schema) -> Subscription {
        let view = View::in_format(
            mode.format(),
            out_sr,
            state.out_fields.clone().unwrap_or(OutFields::All),
        );
        let where_clause = state.filter.where_clause.clone();
        let envelope = state.filter.geometry.as_ref().map(|geometry| {
            (
                geometry.envelope.project(out_sr, schema.wkid),
                geometry.relation,
            )
        });
        let key = GroupKey {
            mode,
            view: view.clone(),
            where_canonical: where_clause
                .as_ref()
                .map(|clause| clause.canonical().to_owned()),
            envelope_bits: envelope.map(|(envelope, relation)| {
                let bits = [
                    envelope.xmin(),
                    envelope.ymin(),
                    envelope.xmax(),
                    envelope.ymax(),
                ]
                .map(f64::to_bits);
                (bits, relation)
            }),
        };
        Subscription {
            mode,
            view,
            where_clause,
            envelope,
            key,
        }
    }

    /// Whether every feature passes.
    pub fn is_unfiltered(&self) -> bool {
        self.where_clause.is_none() && self.envelope.is_none()
    }

    /// Whether a feature (in the service's reference) passes the filter.
    #[inline]
    pub fn matches(&self, feature: &Feature) -> bool {
        if let Some((envelope, relation)) = &self.envelope
            && !feature.geometry.relates(envelope, *relation)
        {
            return false;
        }
        self.where_clause
            .as_ref()
            .is_none_or(|clause| clause.matches(&feature.attributes))
    }
}
