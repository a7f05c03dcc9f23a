//! featurestream: `Config::from_env` -> env_logger -> open-file limit -> `server::start`; logs
//! the URLs to use and shuts down gracefully on SIGINT, SIGTERM or SIGHUP (a second signal
//! exits at once).

use std::process::ExitCode;

use featurestream::config::{Config, ConfigError};
use featurestream::server;

/// mimalloc instead of the C library's allocator: a feature's values, strings and frames are
/// allocated and freed on every worker at hundreds of thousands a second, which glibc's malloc
/// serves with visibly more CPU (its consolidation and bin searches were a tenth of a node's).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let loaded = match Config::from_env() {
        Ok(loaded) => loaded,
        Err(ConfigError::Usage(err)) => err.exit(),
        Err(err) => {
            eprintln!("featurestream: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    // actix-http logs every malformed request at ERROR: a client's mistake (or a scan) is not
    // the server's error, and would flood the log; the client gets its 400 either way.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,actix_http::h1::dispatcher=off"),
    )
    .init();
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    let mut config = loaded.config;
    // Each connection is a socket: raise this process's soft open-file limit to the hard one
    // (commonly 1,024 soft against 500,000 hard), then keep a reserve of descriptors that
    // connections from the network cannot take, so that health checks and admin calls from
    // this machine always get in (`http::gate`).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let limit = limit as usize;
            let reserve = (limit / 100).max(256);
            let open = limit.saturating_sub(reserve).max(1);
            config.admission.max_open_connections = Some(open);
            if config.admission.max_connections > open {
                let level = if config.admission.max_connections > limit {
                    log::Level::Warn
                } else {
                    log::Level::Info
                };
                log::log!(
                    level,
                    "the open-file limit ({limit}, {reserve} kept in reserve) is below the connection cap ({}): sessions are capped at {open}; raise it (ulimit -Hn) or lower FEATURESTREAM_MAX_CONNECTIONS",
                    config.admission.max_connections
                );
                config.admission.max_connections = open;
            }
        }
        Err(err) => log::warn!("cannot raise the open-file limit: {err}"),
    }
    let listener = match server::listen((config.bind, config.port).into(), config.backlog) {
        Ok(listener) => listener,
        Err(err) => {
            log::error!("cannot listen on {}:{}: {err}", config.bind, config.port);
            return ExitCode::from(1);
        }
    };
    let system = actix::System::new();
    let result: std::io::Result<()> = system.block_on(async move {
        let services: Vec<String> = config
            .services
            .iter()
            .map(|service| service.name.clone())
            .collect();
        let running = server::start(config, listener)?;
        log_urls(running.addr, &services);
        let stopper = running.stopper;
        // Listening from now on: a signal that arrives at any point (even while the first
        // one's shutdown is starting) is seen.
        let mut signals = ShutdownSignals::new()?;
        actix_web::rt::spawn(async move {
            signals.next().await;
            log::info!(
                "shutting down: closing every session with 1001 (signal again to exit at once)"
            );
            actix_web::rt::spawn(async move {
                signals.next().await;
                log::warn!("second signal: exiting without waiting for the drain");
                std::process::exit(1);
            });
            stopper.shutdown().await;
        });
        running.server.await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("server failed: {err}");
            ExitCode::from(1)
        }
    }
}

fn log_urls(addr: std::net::SocketAddr, services: &[String]) {
    let host = if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    log::info!("featurestream listening on {addr}");
    log::info!("debug page:  http://{host}/");
    log::info!("catalog:     http://{host}/arcgis/rest/services?f=json");
    for name in services {
        log::info!("metadata:    http://{host}/arcgis/rest/services/{name}/StreamServer?f=json");
        log::info!("subscribe:   ws://{host}/arcgis/ws/services/{name}/StreamServer/subscribe");
        log::info!("custom mode: ws://{host}/arcgis/ws/services/{name}/custom");
    }
    log::info!("custom mode of the default service: ws://{host}/");
}

/// SIGINT, SIGTERM or SIGHUP (a closed terminal, or a supervisor's stop): each ends the
/// server gracefully, with the 1001 close the SDK needs to come back; a second one exits at
/// once. The listeners live from start to exit, so no signal falls between two of them.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn new() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next of them.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}
