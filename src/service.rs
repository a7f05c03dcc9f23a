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
    pub ingest_subject: Option<String>,
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
