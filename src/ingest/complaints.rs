//! Why messages from a source were refused, logged at most [`LOG_PER_MINUTE`] lines a minute
//! per service (a flood of bad messages must not become a flood of log lines); every refusal
//! is counted in the service's metrics either way.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{IngestError, Report};

/// At most this many log lines about refused messages per minute and service.
pub const LOG_PER_MINUTE: u32 = 20;

/// The log of one service's refused messages.
pub struct Complaints {
    service: String,
    window: Mutex<(Instant, u32)>,
}

impl Complaints {
    /// Complaints about `service`'s messages.
    pub fn new(service: &str) -> Complaints {
        Complaints {
            service: service.to_owned(),
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Notes what became of a message from `origin` (a subject, a topic, a URL): the problem,
    /// if any, logged unless the minute's lines are spent.
    pub fn note(
        &self,
        origin: &str,
        report: &Report,
        refused: Option<&IngestError>,
    ) -> Option<String> {
        let problem = refused.map(|err| err.to_string()).or_else(|| {
            report.errors.first().map(|first| {
                format!(
                    "{} of {} features rejected, the first (index {}): {}",
                    report.errors.len(),
                    report.received,
                    first.index,
                    first.reason
                )
            })
        });
        if let Some(problem) = &problem {
            let mut window = self
                .window
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if window.0.elapsed() > Duration::from_secs(60) {
                *window = (Instant::now(), 0);
            }
            window.1 += 1;
            if window.1 <= LOG_PER_MINUTE {
                log::warn!("service {}: message from {origin}: {problem}", self.service);
            }
        }
        problem
    }
}
