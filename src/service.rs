//! `Service`: a named stream with its schema and, when simulated, its simulator settings.
//! The default configuration is one simulated point service, `vehicles`.

use crate::feature::{Field, FieldType, GeometryType, Schema};
use crate::geometry::Wkid;

/// Name of the default service, served at `/` in custom mode.
pub const DEFAULT_SERVICE: &str = "vehicles";

/// How a simulated service moves its features.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulatorSettings {
    /// Number of tracks (vehicles).
    pub features: usize,
    /// Ticks per second.
    pub hz: f64,
    /// Seed of the deterministic simulation.
    pub seed: u64,
    /// Positions kept in a polyline service's trail.
    pub trail_vertices: usize,
    /// Routes from a file (WGS84); `None`: the embedded routes.
    pub routes: Option<crate::simulator::NamedRoutes>,
}

impl SimulatorSettings {
    /// The routes the simulator drives, WGS84: from its file, else the embedded ones.
    pub fn routes_wgs84(&self) -> crate::simulator::NamedRoutes {
        match &self.routes {
            Some(routes) => routes.clone(),
            None => crate::simulator::embedded_routes(),
        }
    }
}

impl Default for SimulatorSettings {
    fn default() -> SimulatorSettings {
        SimulatorSettings {
            features: 3000,
            hz: 1.0,
            seed: 42,
            trail_vertices: 8,
            routes: None,
        }
    }
}

/// A stream service.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// URL name (`/arcgis/rest/services/{name}/StreamServer`).
    pub name: String,
    /// `serviceDescription` in the metadata.
    pub description: String,
    /// Fields, ids, geometry type, spatial reference.
    pub schema: Schema,
    /// `None` for a service without a simulator.
    pub simulator: Option<SimulatorSettings>,
    /// A track that has not reported for this long expires (`None`: never).
    pub max_feature_age: Option<std::time::Duration>,
    /// A NATS subject the service also takes observations from (`cluster`).
    pub ingest_subject: Option<IngestSubject>,
}

/// A NATS subject a service takes observations from, and what a publisher can count on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestSubject {
    /// The subject (wildcards allowed).
    pub subject: String,
    /// At most or at least once.
    pub delivery: Delivery,
}

/// How messages on an ingest subject are taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// Core NATS: a message published while no node listens, or dropped by a node that fell
    /// behind, is lost.
    #[default]
    AtMostOnce,
    /// A JetStream stream keeps every message until a node has stored its observations and
    /// acknowledged it; a node that dies first leaves it to another.
    AtLeastOnce,
}

impl Delivery {
    /// Reads `at-most-once` or `at-least-once` (also `atMostOnce`, `atLeastOnce`).
    pub fn parse(text: &str) -> Option<Delivery> {
        match text {
            "at-most-once" | "atMostOnce" => Some(Delivery::AtMostOnce),
            "at-least-once" | "atLeastOnce" => Some(Delivery::AtLeastOnce),
            _ => None,
        }
    }
}

impl From<&str> for IngestSubject {
    /// A subject taken at most once (core NATS).
    fn from(subject: &str) -> IngestSubject {
        IngestSubject {
            subject: subject.to_owned(),
            delivery: Delivery::AtMostOnce,
        }
    }
}

/// The default schema: exercises the whole where grammar (integers, strings, a nullable
/// string, doubles, a boolean, a date).
pub fn vehicles_schema(geometry_type: GeometryType, wkid: Wkid) -> Schema {
    let mut name = Field::new("name", FieldType::String);
    name.length = Some(32);
    let mut route = Field::new("route", FieldType::String);
    route.length = Some(32);
    let mut status = Field::new("status", FieldType::String).nullable();
    status.length = Some(16);
    Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            Field::new("TRACKID", FieldType::Integer),
            name,
            route,
            status,
            Field::new("speed", FieldType::Double),
            Field::new("heading", FieldType::Double),
            Field::new("active", FieldType::Boolean),
            Field::new("observed", FieldType::Date),
        ],
        "OBJECTID",
        "TRACKID",
        geometry_type,
        wkid,
    )
    .expect("the built-in schema is valid")
}

impl Service {
    /// The default simulated `vehicles` service.
    pub fn vehicles(settings: SimulatorSettings) -> Service {
        Service {
            name: DEFAULT_SERVICE.to_owned(),
            description: "Simulated vehicles moving along routes".to_owned(),
            schema: vehicles_schema(GeometryType::Point, Wkid::Wgs84),
            simulator: Some(settings),
            max_feature_age: None,
            ingest_subject: None,
        }
    }
}
