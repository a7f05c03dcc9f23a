//! `Config`: every setting, from flags, then `FEATURESTREAM_*` environment variables, then
//! defaults (flags win). The only code that reads the environment. Two stages, as ripgrep
//! does: raw strings from one table (`SETTINGS`, which also drives `--help` and is checked
//! against `.env.example` by a test), then a validated, typed `Config`.

mod services_file;

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{Auth, parse_static_tokens};
use crate::filter::FilterLimits;
use crate::service::{Service, SimulatorSettings};

/// One setting: environment variable, flag, default and meaning.
#[derive(Debug)]
pub struct Setting {
    /// `FEATURESTREAM_*`.
    pub var: &'static str,
    /// `--flag`.
    pub flag: &'static str,
    /// Default, as text (empty: unset).
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// Every setting. `.env.example` lists the same, in this order.
pub const SETTINGS: &[Setting] = &[
    Setting {
        var: "FEATURESTREAM_BIND",
        flag: "bind",
        default: "127.0.0.1",
        help: "Address to listen on",
    },
    Setting {
        var: "FEATURESTREAM_PORT",
        flag: "port",
        default: "8000",
        help: "Port to listen on (0: any free port)",
    },
    Setting {
        var: "FEATURESTREAM_WORKERS",
        flag: "workers",
        default: "0",
        help: "HTTP worker threads (0: one per core)",
    },
    Setting {
        var: "FEATURESTREAM_BACKLOG",
        flag: "backlog",
        default: "4096",
        help: "Connections the kernel holds until they are accepted (capped by net.core.somaxconn)",
    },
    Setting {
        var: "FEATURESTREAM_SEND_BUFFER_BYTES",
        flag: "send-buffer-bytes",
        default: "131072",
        help: "Kernel send buffer asked for each connection: what a client that does not read costs in kernel memory (0: the kernel's own sizing, which grows to megabytes)",
    },
    Setting {
        var: "FEATURESTREAM_REQUEST_TIMEOUT_SECS",
        flag: "request-timeout-secs",
        default: "30",
        help: "Seconds a client has to send its request head (an upgrade included); then 408",
    },
    Setting {
        var: "FEATURESTREAM_SERVICES",
        flag: "services",
        default: "",
        help: "JSON file declaring services (default: one simulated service, vehicles)",
    },
    Setting {
        var: "FEATURESTREAM_SIMULATOR",
        flag: "simulator",
        default: "on",
        help: "Run the simulator of the default service: on or off",
    },
    Setting {
        var: "FEATURESTREAM_FEATURES",
        flag: "features",
        default: "3000",
        help: "Simulated features (vehicles) per service",
    },
    Setting {
        var: "FEATURESTREAM_HZ",
        flag: "hz",
        default: "1",
        help: "Simulator ticks per second",
    },
    Setting {
        var: "FEATURESTREAM_SEED",
        flag: "seed",
        default: "42",
        help: "Simulator seed (same seed, same movement)",
    },
    Setting {
        var: "FEATURESTREAM_QUEUE_BYTES",
        flag: "queue-bytes",
        default: "1048576",
        help: "Outbound bytes queued per session before it is a slow consumer",
    },
    Setting {
        var: "FEATURESTREAM_SLOW_CONSUMER_SECS",
        flag: "slow-consumer-secs",
        default: "10",
        help: "Seconds a session may stay behind before it is closed with 1008",
    },
    Setting {
        var: "FEATURESTREAM_MAX_FRAME_BYTES",
        flag: "max-frame-bytes",
        default: "65536",
        help: "Largest inbound WebSocket frame; larger ones close the session with 1009",
    },
    Setting {
        var: "FEATURESTREAM_COMPRESSION",
        flag: "compression",
        default: "2",
        help: "WebSocket compression (permessage-deflate) for clients that offer it: off, or the deflate level 1 (fastest) to 9 (smallest); each group's frame is compressed once and shared",
    },
    Setting {
        var: "FEATURESTREAM_HEARTBEAT_SECS",
        flag: "heartbeat-secs",
        default: "30",
        help: "Seconds between protocol pings; no answer for two intervals closes the session",
    },
    Setting {
        var: "FEATURESTREAM_HANDSHAKE_REJECT_DELAY_MS",
        flag: "handshake-reject-delay-ms",
        default: "1000",
        help: "Milliseconds before closing a bad custom-mode handshake (slows the SDK's instant reconnects)",
    },
    Setting {
        var: "FEATURESTREAM_MAX_CONNECTIONS",
        flag: "max-connections",
        default: "20000",
        help: "Most sessions at once; past it new sessions are refused",
    },
    Setting {
        var: "FEATURESTREAM_OVER_CAP",
        flag: "over-cap",
        default: "refuse",
        help: "Past the cap: refuse (HTTP 503 + Retry-After, the SDK backs off) or close (accept, then close 1013)",
    },
    Setting {
        var: "FEATURESTREAM_CONNECT_RATE",
        flag: "connect-rate",
        default: "20",
        help: "Connection attempts per second per client IP, burst twice that (0: no limit); over it: HTTP 429",
    },
    Setting {
        var: "FEATURESTREAM_RATE_LIMIT_LOOPBACK",
        flag: "rate-limit-loopback",
        default: "off",
        help: "Apply the per-IP rate limit to loopback clients too (off keeps local load tests unthrottled)",
    },
    Setting {
        var: "FEATURESTREAM_ALLOWED_ORIGINS",
        flag: "allowed-origins",
        default: "",
        help: "Browser origins allowed to connect, comma-separated; * for any; unset: localhost and the same host",
    },
    Setting {
        var: "FEATURESTREAM_ALLOWED_HOSTS",
        flag: "allowed-hosts",
        default: "",
        help: "Host names requests may name, comma-separated; * for any; unset: localhost, 127.0.0.1 and ::1 when bound to loopback (against DNS rebinding), any otherwise",
    },
    Setting {
        var: "FEATURESTREAM_TRUSTED_PROXIES",
        flag: "trusted-proxies",
        default: "",
        help: "Addresses of reverse proxies whose Forwarded / X-Forwarded-* headers are honoured, comma-separated; unset: none",
    },
    Setting {
        var: "FEATURESTREAM_MAX_CONNECTIONS_PER_IP",
        flag: "max-connections-per-ip",
        default: "1024",
        help: "Most open connections from one address (loopback exempt); past it 429 and close (0: no limit)",
    },
    Setting {
        var: "FEATURESTREAM_FILTER_RATE",
        flag: "filter-rate",
        default: "10",
        help: "Filter messages per second per session, burst twice that (0: no limit)",
    },
    Setting {
        var: "FEATURESTREAM_MESSAGE_RATE",
        flag: "message-rate",
        default: "50",
        help: "Inbound messages of any kind (frames, pings, SSE filter POSTs) per second per session, burst twice that; past it 1008 (0: no limit)",
    },
    Setting {
        var: "FEATURESTREAM_TOKENS",
        flag: "tokens",
        default: "",
        help: "Static tokens: token=service1|service2[:publisher|:admin], comma-separated (* for every service); publishers may also publish to their services; enables auth",
    },
    Setting {
        var: "FEATURESTREAM_JWT_SECRET",
        flag: "jwt-secret",
        default: "",
        help: "HS256 secret for JWTs (exp required, services claim, role claim publisher or admin); enables auth",
    },
    Setting {
        var: "FEATURESTREAM_JWT_PUBLIC_KEY",
        flag: "jwt-public-key",
        default: "",
        help: "Path to an RS256 public key (PEM) for JWTs; enables auth",
    },
    Setting {
        var: "FEATURESTREAM_MAX_WHERE_BYTES",
        flag: "max-where-bytes",
        default: "16384",
        help: "Longest where clause",
    },
    Setting {
        var: "FEATURESTREAM_MAX_WHERE_DEPTH",
        flag: "max-where-depth",
        default: "64",
        help: "Deepest nesting of parentheses and NOT in a where clause",
    },
    Setting {
        var: "FEATURESTREAM_MAX_IN_ITEMS",
        flag: "max-in-items",
        default: "1000",
        help: "Longest IN list in a where clause",
    },
    Setting {
        var: "FEATURESTREAM_MAX_WHERE_NODES",
        flag: "max-where-nodes",
        default: "512",
        help: "Most conditions one where clause may evaluate per feature, after simplification",
    },
    Setting {
        var: "FEATURESTREAM_MAX_SERVICE_WHERE_NODES",
        flag: "max-service-where-nodes",
        default: "8192",
        help: "Most conditions per feature a service evaluates over all its distinct where clauses; past it a new distinct clause is refused",
    },
    Setting {
        var: "FEATURESTREAM_INGEST_MAX_BODY_BYTES",
        flag: "ingest-max-body-bytes",
        default: "16777216",
        help: "Largest ingest request body (NDJSON: largest line); past it 413",
    },
    Setting {
        var: "FEATURESTREAM_INGEST_MAX_FEATURES",
        flag: "ingest-max-features",
        default: "10000",
        help: "Most features per ingest document (a request body, an NDJSON line, a broadcast message); past it 413 (or an error message)",
    },
    Setting {
        var: "FEATURESTREAM_INGEST_RATE",
        flag: "ingest-rate",
        default: "1000",
        help: "Ingest requests per second per client IP (loopback exempt unless FEATURESTREAM_RATE_LIMIT_LOOPBACK), and messages per second per broadcast connection, burst twice that (0: no limit); over it: HTTP 429, or an error message and the message dropped",
    },
    Setting {
        var: "FEATURESTREAM_QUERY_RATE",
        flag: "query-rate",
        default: "50",
        help: "Feature layer requests (/query, layer metadata) per second per client IP (loopback exempt unless FEATURESTREAM_RATE_LIMIT_LOOPBACK), burst twice that (0: no limit); over it: HTTP 429 with Retry-After. Queries run on a pool of their own, never on a broker",
    },
    Setting {
        var: "FEATURESTREAM_INGEST_COALESCE_MS",
        flag: "ingest-coalesce-ms",
        default: "25",
        help: "Shortest time between two fan-outs of a service: what arrives in between goes out as one batch (0: every publish at once)",
    },
    Setting {
        var: "FEATURESTREAM_MAX_TRACKS",
        flag: "max-tracks",
        default: "1000000",
        help: "Most tracks a service holds; an observation of a new track past it is refused",
    },
    Setting {
        var: "FEATURESTREAM_MAX_STRING_CHARS",
        flag: "max-string-chars",
        default: "4096",
        help: "Most characters of a string attribute whose field declares no length; longer: refused (tooLong)",
    },
    Setting {
        var: "FEATURESTREAM_MAX_TRACK_ID_CHARS",
        flag: "max-track-id-chars",
        default: "256",
        help: "Most characters of a text track id; longer: refused (trackIdTooLong)",
    },
    Setting {
        var: "FEATURESTREAM_MAX_VERTICES",
        flag: "max-vertices",
        default: "10000",
        help: "Most vertices of one polyline or polygon observation; more: refused (tooManyVertices)",
    },
    Setting {
        var: "FEATURESTREAM_MAX_FUTURE_SECS",
        flag: "max-future-secs",
        default: "300",
        help: "How far ahead of the server's clock a start time may be; further: refused (timeInFuture), since it would make every later observation of the track stale",
    },
    Setting {
        var: "FEATURESTREAM_MAX_RECORD_COUNT",
        flag: "max-record-count",
        default: "6000",
        help: "Features per page of the feature layer's /query (maxRecordCount; clients may ask up to 5 times it with maxRecordCountFactor, the ArcGIS SDK asks 3 times: 18,000 a page, 108,000 tracks in its 6 pages)",
    },
    Setting {
        var: "FEATURESTREAM_MAX_FEATURE_AGE_SECS",
        flag: "max-feature-age-secs",
        default: "0",
        help: "Seconds after its last report a track expires and clients get a delete message (0: never); a services file may set maxFeatureAgeSecs per service",
    },
    Setting {
        var: "FEATURESTREAM_STATE_DIR",
        flag: "state-dir",
        default: "",
        help: "Directory where each service's latest state is kept durable: an observation is acknowledged only once it is flushed to stable storage there (one fdatasync per batch), and a restart, even after a crash or a power cut, resumes with exactly what was acknowledged. While it cannot be written (disk full, directory gone) ingest is refused with 507/503 and Retry-After and streaming goes on. Unset: the state lives in memory only and a restart starts empty",
    },
    Setting {
        var: "FEATURESTREAM_STATE_JOURNAL_MAX_BYTES",
        flag: "state-journal-max-bytes",
        default: "67108864",
        help: "Bytes a service's journal may grow to before it is compacted into a checkpoint of the whole state (at least the size of the last checkpoint); bounds the disk used and the time a restart takes to read it",
    },
    Setting {
        var: "FEATURESTREAM_ROUTES",
        flag: "routes",
        default: "",
        help: "Routes of the default service's simulator: an Esri JSON featureSet of polylines or GeoJSON LineStrings (unset: the embedded routes)",
    },
    Setting {
        var: "FEATURESTREAM_NATS_URL",
        flag: "nats-url",
        default: "",
        help: "NATS server(s) with JetStream, comma-separated (nats://host:4222): the node joins every node configured with the same NATS and services, sharing their latest state, ingest and simulator (unset: this node alone)",
    },
    Setting {
        var: "FEATURESTREAM_NATS_REPLICAS",
        flag: "nats-replicas",
        default: "1",
        help: "NATS servers that keep a copy of each service's latest state (1, or 3 with a NATS cluster of three or more)",
    },
    Setting {
        var: "FEATURESTREAM_NATS_CHECKPOINT_SECS",
        flag: "nats-checkpoint-secs",
        default: "30",
        help: "How often one node writes each service's state to the backbone as a checkpoint, so that the log before it can be dropped (a node that starts reads the checkpoint and the log after it)",
    },
    Setting {
        var: "FEATURESTREAM_NODE_NAME",
        flag: "node-name",
        default: "",
        help: "This node's name in logs, leases and /api/stats (unset: host name and port)",
    },
    Setting {
        var: "FEATURESTREAM_INGEST_SUBJECT",
        flag: "ingest-subject",
        default: "",
        help: "NATS subject the default service also takes observations from (any form the HTTP ingest takes; needs FEATURESTREAM_NATS_URL); a services file may set ingestSubject per service",
    },
    Setting {
        var: "FEATURESTREAM_INGEST_DELIVERY",
        flag: "ingest-delivery",
        default: "at-most-once",
        help: "How the ingest subject is taken: at-most-once (core NATS) or at-least-once (a JetStream stream keeps each message until a node has stored its observations); a services file may set ingestDelivery per service",
    },
];

/// Whether `subject` is a NATS subject one can subscribe to: dot-separated tokens without
/// spaces (wildcards `*` and a final `>` allowed).
pub fn check_subject(subject: &str) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    for (position, token) in tokens.iter().enumerate() {
        let wildcard = *token == "*" || (*token == ">" && position == tokens.len() - 1);
        if token.is_empty()
            || token.chars().any(char::is_whitespace)
            || (!wildcard && token.contains(['*', '>']))
        {
            return Err(
                "not a NATS subject (dot-separated tokens, no spaces; wildcards * and a final >)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// A setting that cannot be used. `main` prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        /// The variable (or flag) name.
        var: String,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The services file cannot be read or is invalid.
    #[error("services file {path}: {reason}")]
    Services {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Bad command-line usage, or `--help` / `--version`.
    #[error("{0}")]
    Usage(#[from] clap::Error),
}

/// What to do with a new session past the connection cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverCap {
    /// HTTP 503 with Retry-After before the upgrade (the SDK backs off).
    Refuse,
    /// Accept, then close with 1013 "try again later" (seed 002).
    Close,
}

/// Which browser origins may open sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPolicy {
    /// localhost origins and the server's own host (the default).
    LocalAndSameHost,
    /// Any origin (`*`).
    Any,
    /// Exactly these origins (`https://maps.example.com`).
    List(Vec<String>),
}

/// Admission before the upgrade.
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    /// Most sessions at once.
    pub max_connections: usize,
    /// Past the cap.
    pub over_cap: OverCap,
    /// Attempts per second per IP; `None`: no limit.
    pub connect_rate: Option<f64>,
    /// Whether loopback peers are rate-limited too.
    pub rate_limit_loopback: bool,
    /// Ingest requests per second per IP, messages per second per broadcast connection;
    /// `None`: no limit.
    pub ingest_rate: Option<f64>,
    /// Feature layer requests per second per IP; `None`: no limit.
    pub query_rate: Option<f64>,
    /// Allowed origins.
    pub origins: OriginPolicy,
    /// Host names requests may name (`None`: any).
    pub allowed_hosts: Option<Vec<String>>,
    /// Proxies whose forwarding headers are honoured.
    pub trusted_proxies: Vec<IpAddr>,
    /// Most open connections from one address; `None`: no limit.
    pub max_connections_per_ip: Option<usize>,
    /// Most open connections in all (set from the open-file limit less a reserve, so that
    /// health checks and admin calls from loopback always get a descriptor); `None`: no limit.
    pub max_open_connections: Option<usize>,
}

/// Per-session settings.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Filter messages per second; `None`: no limit.
    pub filter_rate: Option<f64>,
    /// Inbound messages of any kind per second; `None`: no limit.
    pub message_rate: Option<f64>,
    /// Outbound byte bound.
    pub queue_bytes: usize,
    /// Time behind before a slow consumer is closed.
    pub slow_consumer_after: Duration,
    /// Largest inbound frame (a compressed message: inflated).
    pub max_frame_bytes: usize,
    /// What a session that offers permessage-deflate gets (`Off`: plain frames for all).
    pub compression: crate::broker::subscription::Deflate,
    /// Ping interval.
    pub heartbeat_interval: Duration,
    /// Delay before closing a bad custom-mode handshake.
    pub handshake_reject_delay: Duration,
    /// Most conditions per feature a service evaluates over its distinct where clauses.
    pub max_service_where_nodes: usize,
    /// Where-clause limits.
    pub filter_limits: FilterLimits,
}

/// Ingest limits and batching.
#[derive(Clone, Debug)]
pub struct IngestSettings {
    /// Largest request body (NDJSON: largest line).
    pub max_body_bytes: usize,
    /// Most features per document (request body, NDJSON line, broadcast message).
    pub max_features: usize,
    /// Shortest time between two fan-outs of a service.
    pub coalesce: Duration,
    /// Most tracks per service.
    pub max_tracks: usize,
    /// Features per page of the feature layer's `/query`.
    pub max_record_count: usize,
}

/// Where the latest state is saved.
#[derive(Clone, Debug)]
pub struct StateSettings {
    /// The directory (`None`: not saved).
    pub dir: Option<PathBuf>,
    /// Bytes a journal grows to before it is compacted into a checkpoint.
    pub max_journal_bytes: u64,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ingest limits and batching.
    pub ingest: IngestSettings,
    /// Saving the latest state.
    pub state: StateSettings,
    /// Listen address.
    pub bind: IpAddr,
    /// Listen port.
    pub port: u16,
    /// HTTP workers (0: one per core).
    pub workers: usize,
    /// Listen queue length.
    pub backlog: u32,
    /// Kernel send buffer per connection (`None`: the kernel's own sizing).
    pub send_buffer_bytes: Option<usize>,
    /// Time a client has to send its request head.
    pub request_timeout: Duration,
    /// The services.
    pub services: Vec<Service>,
    /// Per-session settings.
    pub session: SessionSettings,
    /// Admission before the upgrade.
    pub admission: AdmissionSettings,
    /// Token checks (off unless configured).
    pub auth: Auth,
    /// The NATS backbone (`None`: this node alone).
    pub cluster: Option<ClusterSettings>,
}

/// How a node joins the others (`cluster`).
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// NATS server URLs, comma-separated.
    pub nats_url: String,
    /// Copies of each service's state among the NATS servers.
    pub replicas: usize,
    /// This node's name.
    pub node_name: String,
    /// How often a service's state is checkpointed into the backbone (the log before the
    /// previous checkpoint is then dropped).
    pub checkpoint_every: std::time::Duration,
}

/// The configuration plus warnings to log once logging is up.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Unknown variables and insecure settings.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads the process's arguments and environment.
    pub fn from_env() -> Result<Loaded, ConfigError> {
        Config::from_sources(std::env::args_os(), std::env::vars_os())
    }

    /// Reads the given arguments (the first is the program name) and variables.
    pub fn from_sources(
        args: impl IntoIterator<Item = OsString>,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Loaded, ConfigError> {
        let matches = command().try_get_matches_from(args)?;
        let mut warnings = Vec::new();
        let mut env = HashMap::new();
        for (name, value) in vars {
            let Some(name) = name
                .to_str()
                .filter(|name| name.starts_with("FEATURESTREAM_"))
            else {
                continue;
            };
            if !SETTINGS.iter().any(|setting| setting.var == name) {
                warnings.push(format!("unknown environment variable {name} is ignored"));
                continue;
            }
            let value = value.into_string().map_err(|value| ConfigError::Invalid {
                var: name.to_owned(),
                value: value.to_string_lossy().into_owned(),
                reason: "not valid UTF-8".to_owned(),
            })?;
            env.insert(name.to_owned(), value);
        }
        let raw = Raw { matches, env };
        let config = raw.validate()?;
        if config.admission.origins == OriginPolicy::Any {
            warnings.push(
                "FEATURESTREAM_ALLOWED_ORIGINS=*: pages from any site may open sessions".to_owned(),
            );
        }
        if !config.bind.is_loopback() && !config.auth.is_enabled() {
            warnings.push(format!(
                "listening on {} without authentication: anyone who can reach this address can subscribe",
                config.bind
            ));
        }
        Ok(Loaded { config, warnings })
    }

    /// A configuration for tests: loopback, port 0, the given simulated features and rate.
    pub fn for_tests(features: usize, hz: f64) -> Config {
        let loaded = Config::from_sources(
            ["featurestream", "--port", "0", "--workers", "2"].map(OsString::from),
            Vec::<(OsString, OsString)>::new(),
        )
        .expect("the defaults are valid");
        let mut config = loaded.config;
        for service in &mut config.services {
            if let Some(simulator) = &mut service.simulator {
                simulator.features = features;
                simulator.hz = hz;
            }
        }
        config
    }
}

fn command() -> clap::Command {
    let mut command = clap::Command::new("featurestream")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Streams moving map features to ArcGIS StreamLayer, WebSocket and SSE clients");
    for setting in SETTINGS {
        let default = if setting.default.is_empty() {
            "unset"
        } else {
            setting.default
        };
        command = command.arg(
            clap::Arg::new(setting.flag)
                .long(setting.flag)
                .value_name("VALUE")
                .help(format!(
                    "{} [env: {}] [default: {default}]",
                    setting.help, setting.var
                )),
        );
    }
    command
}

struct Raw {
    matches: clap::ArgMatches,
    env: HashMap<String, String>,
}

impl Raw {
    /// The value of a setting and the name to blame if it is wrong.
    fn get(&self, var: &str) -> (String, String) {
        let setting = SETTINGS
            .iter()
            .find(|setting| setting.var == var)
            .expect("every lookup names a setting");
        if let Some(value) = self.matches.get_one::<String>(setting.flag) {
            return (format!("--{}", setting.flag), value.clone());
        }
        match self.env.get(var) {
            Some(value) => (var.to_owned(), value.clone()),
            None => (var.to_owned(), setting.default.to_owned()),
        }
    }

    fn parse<T: std::str::FromStr>(&self, var: &str, expected: &str) -> Result<T, ConfigError> {
        let (name, value) = self.get(var);
        value.trim().parse().map_err(|_| ConfigError::Invalid {
            var: name,
            value,
            reason: format!("expected {expected}"),
        })
    }

    /// An on/off setting (also true/false, 1/0, yes/no).
    fn compression(&self) -> Result<crate::broker::subscription::Deflate, ConfigError> {
        use crate::broker::subscription::Deflate;
        let (name, value) = self.get("FEATURESTREAM_COMPRESSION");
        match value.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "no" | "0" => Ok(Deflate::Off),
            level => match level.parse::<u32>() {
                Ok(level @ 1..=9) => Ok(Deflate::Level(level)),
                _ => Err(ConfigError::Invalid {
                    var: name,
                    value,
                    reason: "off, or a deflate level from 1 to 9".into(),
                }),
            },
        }
    }

    fn switch(&self, var: &str) -> Result<bool, ConfigError> {
        let (name, value) = self.get(var);
        match value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok(true),
            "off" | "false" | "0" | "no" => Ok(false),
            _ => Err(ConfigError::Invalid {
                var: name,
                value,
                reason: "expected on or off".into(),
            }),
        }
    }

    fn ranged(&self, var: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        let value: u64 = self.parse(var, &format!("an integer from {min} to {max}"))?;
        if (min..=max).contains(&value) {
            return Ok(value);
        }
        let (name, text) = self.get(var);
        Err(ConfigError::Invalid {
            var: name,
            value: text,
            reason: format!("expected an integer from {min} to {max}"),
        })
    }

    fn validate(&self) -> Result<Config, ConfigError> {
        let bind: IpAddr = self.parse(
            "FEATURESTREAM_BIND",
            "an IP address such as 127.0.0.1 or 0.0.0.0",
        )?;
        let port = self.parse("FEATURESTREAM_PORT", "a port number from 0 to 65535")?;
        let workers = self.ranged("FEATURESTREAM_WORKERS", 0, 256)? as usize;
        let backlog = self.ranged("FEATURESTREAM_BACKLOG", 1, 65_535)? as u32;
        let send_buffer_bytes =
            self.ranged("FEATURESTREAM_SEND_BUFFER_BYTES", 0, 64 << 20)? as usize;
        let request_timeout =
            Duration::from_secs(self.ranged("FEATURESTREAM_REQUEST_TIMEOUT_SECS", 1, 3600)?);
        let hz: f64 = self.parse("FEATURESTREAM_HZ", "a number of ticks per second")?;
        if !(hz > 0.0 && hz <= 1000.0) {
            let (var, value) = self.get("FEATURESTREAM_HZ");
            return Err(ConfigError::Invalid {
                var,
                value,
                reason: "expected a rate above 0 and at most 1000".into(),
            });
        }
        let simulator_settings = SimulatorSettings {
            features: self.ranged("FEATURESTREAM_FEATURES", 1, 1_000_000)? as usize,
            hz,
            seed: self.parse("FEATURESTREAM_SEED", "an unsigned integer")?,
            trail_vertices: SimulatorSettings::default().trail_vertices,
            routes: None,
        };
        let simulator_on = self.switch("FEATURESTREAM_SIMULATOR")?;
        let max_age = self.ranged("FEATURESTREAM_MAX_FEATURE_AGE_SECS", 0, 10 * 365 * 86_400)?;
        let max_feature_age = (max_age > 0).then(|| Duration::from_secs(max_age));
        let (routes_var, routes_path) = self.get("FEATURESTREAM_ROUTES");
        let (_, services_path) = self.get("FEATURESTREAM_SERVICES");
        let (_, nats_url) = self.get("FEATURESTREAM_NATS_URL");
        let (subject_var, ingest_subject) = self.get("FEATURESTREAM_INGEST_SUBJECT");
        let ingest_subject = Some(ingest_subject.trim().to_owned()).filter(|s| !s.is_empty());
        let (delivery_var, delivery) = self.get("FEATURESTREAM_INGEST_DELIVERY");
        let delivery = crate::service::Delivery::parse(delivery.trim()).ok_or_else(|| {
            ConfigError::Invalid {
                var: delivery_var,
                value: delivery.clone(),
                reason: "at-most-once or at-least-once".into(),
            }
        })?;
        if let Some(subject) = &ingest_subject {
            if nats_url.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    var: subject_var,
                    value: subject.clone(),
                    reason: "needs FEATURESTREAM_NATS_URL".into(),
                });
            }
            check_subject(subject).map_err(|reason| ConfigError::Invalid {
                var: subject_var.clone(),
                value: subject.clone(),
                reason,
            })?;
        }
        let services = if services_path.trim().is_empty() {
            let mut service = Service::vehicles(simulator_settings);
            service.max_feature_age = max_feature_age;
            service.ingest_subject =
                ingest_subject.map(|subject| crate::service::IngestSubject { subject, delivery });
            if !simulator_on {
                service.simulator = None;
            }
            if let Some(simulator) = &mut service.simulator
                && !routes_path.trim().is_empty()
            {
                let path = PathBuf::from(routes_path.trim());
                simulator.routes =
                    Some(crate::simulator::load_routes(&path).map_err(|reason| {
                        ConfigError::Invalid {
                            var: routes_var,
                            value: routes_path.clone(),
                            reason,
                        }
                    })?);
            }
            vec![service]
        } else {
            services_file::load(
                PathBuf::from(services_path.trim()).as_path(),
                &simulator_settings,
                max_feature_age,
            )?
        };
        let limits = crate::feature::FeatureLimits {
            max_string_chars: self.ranged("FEATURESTREAM_MAX_STRING_CHARS", 1, 16 << 20)? as u32,
            max_track_id_chars: self.ranged("FEATURESTREAM_MAX_TRACK_ID_CHARS", 1, 1024)? as u32,
            max_vertices: self.ranged("FEATURESTREAM_MAX_VERTICES", 2, 10_000_000)? as usize,
            max_future_ms: self.ranged("FEATURESTREAM_MAX_FUTURE_SECS", 0, 100 * 365 * 86_400)?
                as i64
                * 1000,
        };
        let mut services = services;
        for service in &mut services {
            service.schema.limits = limits;
        }
        let rate = |var: &str| -> Result<Option<f64>, ConfigError> {
            let value: f64 = self.parse(var, "a number per second (0: no limit)")?;
            if !(0.0..=1_000_000.0).contains(&value) {
                let (name, text) = self.get(var);
                return Err(ConfigError::Invalid {
                    var: name,
                    value: text,
                    reason: "expected 0 to 1000000".into(),
                });
            }
            Ok((value > 0.0).then_some(value))
        };
        let (over_cap_var, over_cap) = self.get("FEATURESTREAM_OVER_CAP");
        let over_cap = match over_cap.trim() {
            "refuse" => OverCap::Refuse,
            "close" => OverCap::Close,
            _ => {
                return Err(ConfigError::Invalid {
                    var: over_cap_var,
                    value: over_cap,
                    reason: "expected refuse or close".into(),
                });
            }
        };
        let rate_limit_loopback = self.switch("FEATURESTREAM_RATE_LIMIT_LOOPBACK")?;
        let (_, origins) = self.get("FEATURESTREAM_ALLOWED_ORIGINS");
        let origins = match origins.trim() {
            "" => OriginPolicy::LocalAndSameHost,
            "*" => OriginPolicy::Any,
            list => OriginPolicy::List(
                list.split(',')
                    .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                    .filter(|origin| !origin.is_empty())
                    .collect(),
            ),
        };
        let (tokens_var, tokens_text) = self.get("FEATURESTREAM_TOKENS");
        let tokens = parse_static_tokens(&tokens_text).map_err(|reason| ConfigError::Invalid {
            var: tokens_var,
            value: "(hidden)".to_owned(),
            reason,
        })?;
        let (_, secret) = self.get("FEATURESTREAM_JWT_SECRET");
        let secret = Some(secret.trim().to_owned()).filter(|secret| !secret.is_empty());
        if let Some(secret) = &secret
            && secret.len() < 16
        {
            let (var, _) = self.get("FEATURESTREAM_JWT_SECRET");
            return Err(ConfigError::Invalid {
                var,
                value: "(hidden)".into(),
                reason: "use at least 16 bytes".into(),
            });
        }
        let (key_var, key_path) = self.get("FEATURESTREAM_JWT_PUBLIC_KEY");
        let public_key = match key_path.trim() {
            "" => None,
            path => Some(std::fs::read(path).map_err(|err| ConfigError::Invalid {
                var: key_var.clone(),
                value: path.to_owned(),
                reason: err.to_string(),
            })?),
        };
        let auth = Auth::new(
            tokens,
            secret.as_deref().map(str::as_bytes),
            public_key.as_deref(),
        )
        .map_err(|reason| ConfigError::Invalid {
            var: key_var,
            value: key_path.clone(),
            reason,
        })?;
        let (_, hosts) = self.get("FEATURESTREAM_ALLOWED_HOSTS");
        let allowed_hosts = match hosts.trim() {
            "*" => None,
            "" if bind.is_loopback() => Some(
                ["localhost", "127.0.0.1", "::1"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
            "" => None,
            list => Some(
                list.split(',')
                    .map(|host| host.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                    .filter(|host| !host.is_empty())
                    .collect(),
            ),
        };
        let (proxies_var, proxies) = self.get("FEATURESTREAM_TRUSTED_PROXIES");
        let trusted_proxies = proxies
            .split(',')
            .map(str::trim)
            .filter(|proxy| !proxy.is_empty())
            .map(|proxy| {
                proxy.parse::<IpAddr>().map_err(|_| ConfigError::Invalid {
                    var: proxies_var.clone(),
                    value: proxy.to_owned(),
                    reason: "not an IP address".to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let per_ip = self.ranged("FEATURESTREAM_MAX_CONNECTIONS_PER_IP", 0, 10_000_000)? as usize;
        let admission = AdmissionSettings {
            max_connections: self.ranged("FEATURESTREAM_MAX_CONNECTIONS", 1, 10_000_000)? as usize,
            over_cap,
            connect_rate: rate("FEATURESTREAM_CONNECT_RATE")?,
            ingest_rate: rate("FEATURESTREAM_INGEST_RATE")?,
            query_rate: rate("FEATURESTREAM_QUERY_RATE")?,
            rate_limit_loopback,
            origins,
            allowed_hosts,
            trusted_proxies,
            max_connections_per_ip: (per_ip > 0).then_some(per_ip),
            max_open_connections: None,
        };
        let session = SessionSettings {
            filter_rate: rate("FEATURESTREAM_FILTER_RATE")?,
            message_rate: rate("FEATURESTREAM_MESSAGE_RATE")?,
            queue_bytes: self.ranged("FEATURESTREAM_QUEUE_BYTES", 4096, 1 << 30)? as usize,
            slow_consumer_after: Duration::from_secs(self.ranged(
                "FEATURESTREAM_SLOW_CONSUMER_SECS",
                1,
                3600,
            )?),
            max_frame_bytes: self.ranged("FEATURESTREAM_MAX_FRAME_BYTES", 1024, 16 << 20)? as usize,
            compression: self.compression()?,
            heartbeat_interval: Duration::from_secs(self.ranged(
                "FEATURESTREAM_HEARTBEAT_SECS",
                1,
                3600,
            )?),
            handshake_reject_delay: Duration::from_millis(self.ranged(
                "FEATURESTREAM_HANDSHAKE_REJECT_DELAY_MS",
                0,
                60_000,
            )?),
            filter_limits: FilterLimits {
                max_clause_bytes: self.ranged("FEATURESTREAM_MAX_WHERE_BYTES", 16, 1 << 20)?
                    as usize,
                max_depth: self.ranged("FEATURESTREAM_MAX_WHERE_DEPTH", 1, 1000)? as usize,
                max_in_items: self.ranged("FEATURESTREAM_MAX_IN_ITEMS", 1, 100_000)? as usize,
                max_nodes: self.ranged("FEATURESTREAM_MAX_WHERE_NODES", 1, 100_000)? as usize,
            },
            max_service_where_nodes: self.ranged(
                "FEATURESTREAM_MAX_SERVICE_WHERE_NODES",
                1,
                100_000_000,
            )? as usize,
        };
        let ingest = IngestSettings {
            max_body_bytes: self.ranged("FEATURESTREAM_INGEST_MAX_BODY_BYTES", 1024, 1 << 30)?
                as usize,
            max_features: self.ranged("FEATURESTREAM_INGEST_MAX_FEATURES", 1, 10_000_000)? as usize,
            coalesce: Duration::from_millis(self.ranged(
                "FEATURESTREAM_INGEST_COALESCE_MS",
                0,
                10_000,
            )?),
            max_tracks: self.ranged("FEATURESTREAM_MAX_TRACKS", 1, 100_000_000)? as usize,
            max_record_count: self.ranged("FEATURESTREAM_MAX_RECORD_COUNT", 1, 1_000_000)? as usize,
        };
        let (_, state_dir) = self.get("FEATURESTREAM_STATE_DIR");
        let state = StateSettings {
            dir: Some(state_dir.trim())
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from),
            max_journal_bytes: self.ranged(
                "FEATURESTREAM_STATE_JOURNAL_MAX_BYTES",
                1 << 16,
                1 << 40,
            )?,
        };
        let cluster = match nats_url.trim() {
            "" => None,
            url => {
                crate::cluster::check_servers(url).map_err(|reason| ConfigError::Invalid {
                    var: "FEATURESTREAM_NATS_URL".into(),
                    value: url.to_owned(),
                    reason,
                })?;
                let (_, name) = self.get("FEATURESTREAM_NODE_NAME");
                let node_name = match name.trim() {
                    "" => format!(
                        "{}:{port}",
                        std::fs::read_to_string("/etc/hostname")
                            .map(|host| host.trim().to_owned())
                            .ok()
                            .filter(|host| !host.is_empty())
                            .unwrap_or_else(|| "node".to_owned())
                    ),
                    name => name.to_owned(),
                };
                Some(ClusterSettings {
                    nats_url: url.to_owned(),
                    replicas: self.ranged("FEATURESTREAM_NATS_REPLICAS", 1, 5)? as usize,
                    node_name,
                    checkpoint_every: std::time::Duration::from_secs(self.ranged(
                        "FEATURESTREAM_NATS_CHECKPOINT_SECS",
                        1,
                        86_400,
                    )?),
                })
            }
        };
        if cluster.is_none()
            && let Some(service) = services
                .iter()
                .find(|service| service.ingest_subject.is_some())
        {
            return Err(ConfigError::Invalid {
                var: "FEATURESTREAM_SERVICES".into(),
                value: services_path,
                reason: format!(
                    "service {} takes a NATS subject (ingestSubject), which needs FEATURESTREAM_NATS_URL",
                    service.name
                ),
            });
        }
        Ok(Config {
            cluster,
            ingest,
            state,
            bind,
            port,
            workers,
            backlog,
            send_buffer_bytes: (send_buffer_bytes > 0).then_some(send_buffer_bytes),
            request_timeout,
            services,
            session,
            admission,
            auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let args = std::iter::once("featurestream")
            .chain(args.iter().copied())
            .map(OsString::from);
        let vars = vars
            .iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)));
        Config::from_sources(args, vars.collect::<Vec<_>>())
    }

    #[test]
    fn cluster_settings_are_checked() {
        let loaded = load(
            &["--nats-url", "nats://127.0.0.1:4222, nats://127.0.0.1:4223"],
            &[],
        )
        .expect("a list of servers");
        let cluster = loaded.config.cluster.expect("a cluster");
        assert_eq!(cluster.replicas, 1);
        assert!(!cluster.node_name.is_empty());
        for (args, vars) in [
            (vec!["--nats-url", "not a url"], vec![]),
            (
                vec!["--nats-url", "nats://h:1", "--nats-replicas", "0"],
                vec![],
            ),
            (vec!["--ingest-subject", "a.b"], vec![]),
            (
                vec!["--nats-url", "nats://h:1", "--ingest-subject", "a b"],
                vec![],
            ),
            (
                vec!["--nats-url", "nats://h:1", "--ingest-subject", "a.>.b"],
                vec![],
            ),
            (vec![], vec![("FEATURESTREAM_INGEST_SUBJECT", "x")]),
            (
                vec![
                    "--nats-url",
                    "nats://h:1",
                    "--ingest-subject",
                    "a",
                    "--ingest-delivery",
                    "sometimes",
                ],
                vec![],
            ),
        ] {
            assert!(load(&args, &vars).is_err(), "{args:?} {vars:?}");
        }
        let loaded = load(
            &[
                "--nats-url",
                "nats://h:1",
                "--ingest-subject",
                "sensors.*.>",
            ],
            &[],
        )
        .expect("wildcards");
        assert_eq!(
            loaded.config.services[0].ingest_subject,
            Some("sensors.*.>".into())
        );
        let durable = load(
            &[
                "--nats-url",
                "nats://h:1",
                "--ingest-subject",
                "sensors.>",
                "--ingest-delivery",
                "at-least-once",
            ],
            &[],
        )
        .expect("at least once");
        assert_eq!(
            durable.config.services[0].ingest_subject,
            Some(crate::service::IngestSubject {
                subject: "sensors.>".into(),
                delivery: crate::service::Delivery::AtLeastOnce,
            })
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let loaded = load(&[], &[]).unwrap();
        assert_eq!(loaded.config.bind.to_string(), "127.0.0.1");
        assert_eq!(loaded.config.port, 8000);
        assert_eq!(loaded.config.services.len(), 1);
        let simulator = loaded.config.services[0].simulator.as_ref().unwrap();
        assert_eq!((simulator.features, simulator.hz), (3000, 1.0));
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn flags_win_over_environment() {
        let loaded = load(
            &["--port", "9001"],
            &[("FEATURESTREAM_PORT", "9002"), ("FEATURESTREAM_HZ", "10")],
        )
        .unwrap();
        assert_eq!(loaded.config.port, 9001);
        assert_eq!(
            loaded.config.services[0].simulator.as_ref().unwrap().hz,
            10.0
        );
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        let err = load(&[], &[("FEATURESTREAM_PORT", "eighty")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "FEATURESTREAM_PORT=\"eighty\": expected a port number from 0 to 65535"
        );
        let err = load(&["--hz", "0"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--hz=\"0\": expected a rate above 0 and at most 1000"
        );
        let err = load(&[], &[("FEATURESTREAM_SIMULATOR", "maybe")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "FEATURESTREAM_SIMULATOR=\"maybe\": expected on or off"
        );
        let err = load(&[], &[("FEATURESTREAM_QUEUE_BYTES", "10")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "FEATURESTREAM_QUEUE_BYTES=\"10\": expected an integer from 4096 to 1073741824"
        );
    }

    #[test]
    fn a_bad_routes_file_is_a_start_up_error_naming_the_file_and_the_problem() {
        let err = load(&["--routes", "/nonexistent/routes.geojson"], &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/routes.geojson"), "{text}");
        let path = std::env::temp_dir().join(format!("fs-routes-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"type":"Point","coordinates":[1,2]}"#).unwrap();
        let err = load(&["--routes", path.to_str().unwrap()], &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("Point is not a route") && text.contains("fs-routes-"),
            "{text}"
        );
        std::fs::write(
            &path,
            r#"{"type":"LineString","coordinates":[[-117.2,34.0],[-117.1,34.1]]}"#,
        )
        .unwrap();
        let loaded = load(&["--routes", path.to_str().unwrap()], &[]).unwrap();
        let routes = loaded.config.services[0]
            .simulator
            .as_ref()
            .unwrap()
            .routes
            .clone();
        assert_eq!(routes.map(|routes| routes.len()), Some(1));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn unknown_variables_and_public_binds_warn() {
        let loaded = load(
            &["--bind", "0.0.0.0"],
            &[("FEATURESTREAM_PROT", "1"), ("OTHER", "x")],
        )
        .unwrap();
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("FEATURESTREAM_PROT"));
    }

    #[test]
    fn env_example_lists_every_setting_with_its_default() {
        let example = include_str!("../../.env.example");
        let lines: Vec<&str> = example
            .lines()
            .filter(|line| line.contains('=') && !line.starts_with("# "))
            .collect();
        let listed: Vec<(String, String)> = lines
            .iter()
            .map(|line| {
                let line = line.trim_start_matches('#').trim();
                let (name, value) = line.split_once('=').expect("NAME=value");
                (name.to_owned(), value.to_owned())
            })
            .filter(|(name, _)| name.starts_with("FEATURESTREAM_"))
            .collect();
        let expected: Vec<(String, String)> = SETTINGS
            .iter()
            .map(|setting| (setting.var.to_owned(), setting.default.to_owned()))
            .collect();
        assert_eq!(listed, expected);
        assert!(example.contains("RUST_LOG="));
    }
}
