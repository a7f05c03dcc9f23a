//! What one node asks of the sessions another holds: server-initiated messages (to a browser
//! session's connections, a service's, everyone's) and SSE filter updates. Both are plain
//! NATS requests. A message goes to every node (`featurestream.control.messages`), each
//! delivers it to its own sessions and answers how many; the asking node sums the answers of
//! every node it knows to be alive (each announces itself every second), waiting at most
//! `GATHER`. An SSE session's handle starts with its node's tag, so a filter
//! update goes straight to that node (`featurestream.control.sse.<tag>`); no node answering
//! means no such session.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::start::Shared;

/// Longest wait for the other nodes' answers to a server-initiated message.
pub const GATHER: Duration = Duration::from_secs(2);

/// How often a node announces itself, and how long it counts as alive after.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
const ALIVE_FOR: Duration = Duration::from_secs(3);

const MESSAGES: &str = "featurestream.control.messages";
const NODES: &str = "featurestream.control.nodes";

fn sse_subject(tag: &str) -> String {
    format!("featurestream.control.sse.{tag}")
}

/// Whom a server-initiated message is for.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Audience {
    /// Every connection of one browser session (cookie id).
    BrowserSession(String),
    /// Every connection to one service.
    Service(String),
    /// Everyone.
    Everyone,
}

/// An SSE filter update's outcome on the node holding the session.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SseAnswer {
    /// `{"filter": .., "error": ..}`.
    pub reply: String,
    /// Refused for the session's filter-message rate.
    pub rate_limited: bool,
}

/// The sessions of this node, as the HTTP layer holds them.
pub trait LocalSessions: Send + Sync {
    /// Delivers a framed message to this node's sessions of `audience`; how many got it.
    fn deliver(&self, audience: &Audience, frame: Bytes) -> usize;
    /// Applies a filter update to this node's SSE session `handle` of `service`.
    fn update_sse_filter(
        &self,
        service: String,
        handle: String,
        body: String,
    ) -> BoxFuture<'static, Option<SseAnswer>>;
}

#[derive(Serialize, Deserialize)]
struct MessageRequest {
    origin: String,
    audience: Audience,
    frame: String,
}

#[derive(Serialize, Deserialize)]
struct FilterRequest {
    service: String,
    handle: String,
    body: String,
}

/// Largest server message taken from another node (the admin API's own body limit).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A server message as sessions receive it (`{"type":"message","message":..}`), rebuilt
/// from one another node sent; `None` for anything else.
pub fn server_message(frame: &str) -> Option<Bytes> {
    if frame.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let serde_json::Value::Object(mut fields) = serde_json::from_str(frame).ok()? else {
        return None;
    };
    if fields.len() != 2 || fields.get("type")?.as_str()? != "message" {
        return None;
    }
    let message = fields.remove("message")?;
    let rebuilt = serde_json::json!({ "type": "message", "message": message });
    Some(Bytes::from(rebuilt.to_string()))
}

/// This node's end of the control channel.
pub struct Control {
    tag: String,
    /// Other nodes by tag, and when each last announced itself.
    peers: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    client: OnceLock<async_nats::Client>,
    sessions: OnceLock<Arc<dyn LocalSessions>>,
}

/// Why a control request found no session.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No node holds it (or its node is gone).
    #[error("no such session on any node")]
    NotFound,
    /// NATS is unreachable.
    #[error("the NATS backbone is unavailable")]
    Unavailable,
}

impl Control {
    /// A control end with a fresh random tag (what this node's SSE handles start with).
    pub fn new() -> Arc<Control> {
        Arc::new(Control {
            tag: format!("{:08x}", rand::random::<u32>()),
            peers: Default::default(),
            client: OnceLock::new(),
            sessions: OnceLock::new(),
        })
    }

    /// The tag of this node's SSE handles.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Where requests from other nodes are served (set once the HTTP layer exists).
    pub fn serve_sessions(&self, sessions: Arc<dyn LocalSessions>) {
        let _ = self.sessions.set(sessions);
    }

    fn peers(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::time::Instant>> {
        self.peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The other nodes alive (announced within the last few seconds).
    pub fn live_peers(&self) -> Vec<String> {
        let mut peers = self.peers();
        peers.retain(|_, seen| seen.elapsed() < ALIVE_FOR);
        peers.keys().cloned().collect()
    }

    pub(super) fn connected(&self, client: async_nats::Client) {
        let _ = self.client.set(client);
    }

    /// Sends a framed message to the other nodes' sessions of `audience`; how many got it.
    pub async fn deliver_elsewhere(&self, audience: Audience, frame: &Bytes) -> usize {
        let Some(client) = self.client.get() else {
            return 0;
        };
        let request = MessageRequest {
            origin: self.tag.clone(),
            audience,
            frame: String::from_utf8_lossy(frame).into_owned(),
        };
        let Ok(payload) = serde_json::to_vec(&request) else {
            return 0;
        };
        let inbox = client.new_inbox();
        let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
            return 0;
        };
        if client
            .publish_with_reply(MESSAGES, inbox, payload.into())
            .await
            .is_err()
        {
            return 0;
        }
        let mut waiting: std::collections::HashSet<String> =
            self.live_peers().into_iter().collect();
        let mut delivered = 0;
        let deadline = tokio::time::Instant::now() + GATHER;
        while !waiting.is_empty() {
            let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers.next()).await else {
                break;
            };
            // `<tag> <delivered>`
            let text = String::from_utf8_lossy(&answer.payload);
            if let Some((tag, count)) = text.split_once(' ') {
                waiting.remove(tag);
                delivered += count.parse::<usize>().unwrap_or(0);
            }
        }
        delivered
    }

    /// Applies an SSE filter update on the node whose tag starts `handle`.
    pub async fn update_sse_filter_elsewhere(
        &self,
        service: &str,
        handle: &str,
        body: String,
    ) -> Result<SseAnswer, ControlError> {
        let Some((tag, _)) = handle.split_once('-') else {
            return Err(ControlError::NotFound);
        };
        if tag == self.tag || tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ControlError::NotFound);
        }
        let client = self.client.get().ok_or(ControlError::Unavailable)?;
        let request = FilterRequest {
            service: service.to_owned(),
            handle: handle.to_owned(),
            body,
        };
        let payload = serde_json::to_vec(&request).map_err(|_| ControlError::NotFound)?;
        match client.request(sse_subject(tag), payload.into()).await {
            Ok(answer) => serde_json::from_slice::<Option<SseAnswer>>(&answer.payload)
                .ok()
                .flatten()
                .ok_or(ControlError::NotFound),
            Err(err) if err.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                Err(ControlError::NotFound)
            }
            Err(_) => Err(ControlError::Unavailable),
        }
    }
}

/// Answers the other nodes' requests for this node's sessions, while connected.
pub(super) async fn serve(shared: Arc<Shared>, control: Arc<Control>) {
    control.connected(shared.client.clone());
    let (Ok(mut messages), Ok(mut filters), Ok(mut nodes)) = (
        shared.client.subscribe(MESSAGES).await,
        shared.client.subscribe(sse_subject(&control.tag)).await,
        shared.client.subscribe(NODES).await,
    ) else {
        log::error!("NATS: cannot subscribe to the control subjects");
        return;
    };
    let mut announce = tokio::time::interval(ANNOUNCE_EVERY);
    loop {
        tokio::select! {
            _ = announce.tick() => {
                let _ = shared.client.publish(NODES, control.tag.clone().into()).await;
            }
            Some(message) = nodes.next() => {
                let tag = String::from_utf8_lossy(&message.payload).into_owned();
                if tag != control.tag {
                    control.peers().insert(tag, std::time::Instant::now());
                }
            }
            Some(message) = messages.next() => {
                let Ok(request) = serde_json::from_slice::<MessageRequest>(&message.payload) else {
                    log::warn!("NATS control: a message that is not a control request (skipped)");
                    continue;
                };
                if request.origin == control.tag {
                    continue;
                }
                // Anyone who may publish on the subject could send any text to every session:
                // only a server message, rebuilt here, reaches one.
                let Some(frame) = server_message(&request.frame) else {
                    log::warn!("NATS control: a message from {:?} is not a server message (skipped)", request.origin.chars().take(40).collect::<String>());
                    continue;
                };
                let delivered = control
                    .sessions
                    .get()
                    .map_or(0, |sessions| sessions.deliver(&request.audience, frame));
                if let Some(reply) = message.reply {
                    let answer = format!("{} {delivered}", control.tag);
                    let _ = shared.client.publish(reply, answer.into()).await;
                }
            }
            Some(message) = filters.next() => {
                let Some(reply) = message.reply else { continue };
                let answer = match (
                    serde_json::from_slice::<FilterRequest>(&message.payload),
                    control.sessions.get(),
                ) {
                    (Ok(request), Some(sessions)) => {
                        sessions
                            .update_sse_filter(request.service, request.handle, request.body)
                            .await
                    }
                    _ => None,
                };
                let body = serde_json::to_vec(&answer).unwrap_or_else(|_| b"null".to_vec());
                let _ = shared.client.publish(reply, body.into()).await;
            }
            else => return,
        }
    }
}

#[cfg(test)]
mod validation_tests {
    use super::server_message;

    #[test]
    fn only_server_messages_reach_sessions() {
        assert_eq!(
            server_message(r#"{"type":"message","message":{"text":"hi"}}"#).as_deref(),
            Some(&br#"{"type":"message","message":{"text":"hi"}}"#[..])
        );
        for forged in [
            "hello",
            r#"{"type":"featureResult","features":[]}"#,
            r#"{"type":"message"}"#,
            r#"{"type":"message","message":1,"features":[]}"#,
            r#"[{"type":"message","message":1}]"#,
        ] {
            assert_eq!(server_message(forged), None, "{forged}");
        }
        let huge = format!(
            r#"{{"type":"message","message":"{}"}}"#,
            "x".repeat(300_000)
        );
        assert_eq!(server_message(&huge), None);
    }
}
