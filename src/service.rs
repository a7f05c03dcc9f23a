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
    /// An outside feed the service takes observations from (`feeds`): MQTT topics, or a
    /// GTFS-Realtime feed it polls.
    pub feed: Option<Feed>,
}

/// An outside feed of observations.
#[derive(Clone, Debug, PartialEq)]
pub enum Feed {
    /// Topics on an MQTT broker.
    Mqtt(MqttFeed),
    /// A GTFS-Realtime VehiclePositions feed, polled over HTTP.
    GtfsRealtime(GtfsRealtimeFeed),
}

impl Feed {
    /// `mqtt` or `gtfsRealtime`, as metrics and `/readyz` name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Feed::Mqtt(_) => "mqtt",
            Feed::GtfsRealtime(_) => "gtfsRealtime",
        }
    }
}

/// The MQTT protocol version a feed connects with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (every broker).
    #[default]
    V311,
    /// MQTT 5 (a QoS 1 session is kept a week while no node is connected).
    V5,
}

/// MQTT topics a service subscribes to.
#[derive(Clone, Debug, PartialEq)]
pub struct MqttFeed {
    /// The protocol version.
    pub version: MqttVersion,
    /// Broker host.
    pub host: String,
    /// Broker port (1883, 8883 with TLS).
    pub port: u16,
    /// TLS (`mqtts://`), checked against the system's root certificates or `ca_file`.
    pub tls: bool,
    /// PEM certificates of the CAs the broker's certificate is checked against (a private
    /// CA), instead of the system's.
    pub ca_file: Option<String>,
    /// Credentials, if the broker wants them.
    pub username: Option<String>,
    /// The password (from the URL or the services file; never logged).
    pub password: Option<String>,
    /// Topic filters, wildcards allowed.
    pub topics: Vec<String>,
    /// 0 (at most once) or 1 (at least once: a message is acknowledged to the broker only
    /// once its observations are recorded, and durable with a state directory).
    pub qos: u8,
    /// The client id; with QoS 1 the broker keeps the session under it while no node is
    /// connected (every node of a cluster uses the same one, one at a time).
    pub client_id: String,
    /// How the flat form (`{"id":..,"lat":..,"lon":..}`) is read.
    pub flat: crate::ingest::FlatFields,
}

impl MqttFeed {
    /// `mqtt[s]://host:port`, without credentials: what logs and metrics show.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// Reads `mqtt://[user[:password]@]host[:port]` (or `mqtts://`).
    pub fn parse_url(url: &str) -> Result<MqttAddress, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!(
                "{url:?} is not mqtt://host[:port] or mqtts://host[:port]"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, rest),
        };
        let (username, password) = match credentials {
            None => (None, None),
            Some(credentials) => match credentials.split_once(':') {
                Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
                None => (Some(credentials.to_owned()), None),
            },
        };
        let default_port = if tls { 8883 } else { 1883 };
        let port_of = |text: &str| {
            text.parse::<u16>()
                .map_err(|_| format!("{url:?}: the port is not a number"))
        };
        let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: an IPv6 address is not closed by ']'"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => port_of(port)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{url:?}: unexpected text after the host")),
            };
            (host.to_owned(), port)
        } else {
            match address.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), port_of(port)?),
                None => (address.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(MqttAddress {
            tls,
            host,
            port,
            username,
            password,
        })
    }
}

/// What an MQTT URL says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttAddress {
    /// `mqtts://`.
    pub tls: bool,
    /// The host.
    pub host: String,
    /// The port (1883, 8883 with TLS, when not given).
    pub port: u16,
    /// The user, if given.
    pub username: Option<String>,
    /// The password, if given.
    pub password: Option<String>,
}

/// A GTFS-Realtime feed polled over HTTP.
#[derive(Clone, Debug, PartialEq)]
pub struct GtfsRealtimeFeed {
    /// The VehiclePositions feed's URL (http or https).
    pub url: String,
    /// Time between polls.
    pub interval: std::time::Duration,
    /// Longest a poll may take.
    pub timeout: std::time::Duration,
    /// Headers sent with each poll (an API key, say; values never logged).
    pub headers: Vec<(String, String)>,
}

/// The ready-made schema of a GTFS-Realtime service: a track per vehicle, its trip, route,
/// status, occupancy, bearing and speed, the feed's timestamp as the start time.
pub fn gtfs_realtime_schema() -> Schema {
    let text = |name: &str, length: u32| {
        let mut field = Field::new(name, FieldType::String).nullable();
        field.length = Some(length);
        field
    };
    let mut vehicle = Field::new("vehicle_id", FieldType::String);
    vehicle.length = Some(128);
    Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            vehicle,
            text("label", 128),
            text("license_plate", 64),
            text("trip_id", 128),
            text("route_id", 128),
            Field::new("direction_id", FieldType::Integer).nullable(),
            text("start_date", 8),
            text("stop_id", 128),
            Field::new("current_stop_sequence", FieldType::Integer).nullable(),
            text("current_status", 16),
            text("occupancy_status", 32),
            Field::new("bearing", FieldType::Double).nullable(),
            Field::new("speed", FieldType::Double).nullable(),
            Field::new("timestamp", FieldType::Date),
        ],
        "OBJECTID",
        "vehicle_id",
        GeometryType::Point,
        Wkid::Wgs84,
    )
    .expect("the GTFS-Realtime schema is valid")
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
            feed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_read_as_brokers_write_them() {
        let full = MqttFeed::parse_url("mqtts://fleet:p%40ss:w@broker.example:8884").unwrap();
        assert_eq!(
            full,
            MqttAddress {
                tls: true,
                host: "broker.example".into(),
                port: 8884,
                username: Some("fleet".into()),
                password: Some("p%40ss:w".into()),
            }
        );
        let plain = MqttFeed::parse_url("mqtt://127.0.0.1").unwrap();
        assert_eq!((plain.tls, plain.port, plain.username), (false, 1883, None));
        assert_eq!(MqttFeed::parse_url("mqtts://[::1]").unwrap().port, 8883);
        assert_eq!(
            MqttFeed::parse_url("mqtt://[::1]:1999").unwrap().host,
            "::1"
        );
        for bad in ["http://x", "mqtt://", "mqtt://host:port", "mqtt://user@"] {
            assert!(MqttFeed::parse_url(bad).is_err(), "{bad}");
        }
    }
}
