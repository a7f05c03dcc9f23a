//! The reference session: one unfiltered session that parses every frame fully and keeps the
//! window's features, so that each filtered session's expected count is what its filter
//! allows of what the server published.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::session::{FilterSpec, handshake_for, url_for};
use crate::{Args, Mode, Shared};

/// One feature of the window.
#[derive(Clone, Debug)]
pub(crate) struct ReferenceFeature {
    pub(crate) timestamp: f64,
    pub(crate) attributes: serde_json::Map<String, Value>,
    pub(crate) x: f64,
    pub(crate) y: f64,
}

/// What the reference session saw in the window.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reference {
    pub(crate) features: Vec<ReferenceFeature>,
}

pub(crate) fn spawn(args: Arc<Args>, shared: Arc<Shared>) -> std::thread::JoinHandle<Reference> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(run(&args, &shared))
    })
}

async fn run(args: &Args, shared: &Shared) -> Reference {
    let mut reference = Reference::default();
    let url = url_for(args, &FilterSpec::None);
    let Ok(Ok((mut socket, _))) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    else {
        eprintln!("featurestream-load: the reference session could not connect to {url}");
        return reference;
    };
    if args.mode == Mode::Custom
        && socket
            .send(Message::text(handshake_for(args, &FilterSpec::None)))
            .await
            .is_err()
    {
        return reference;
    }
    let mut stop = shared.stop.clone();
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = socket.close(None).await;
                return reference;
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                    let start = shared.window_start_ms.load(Ordering::Relaxed) as f64;
                    let end = shared.window_end_ms.load(Ordering::Relaxed) as f64;
                    let features = match value.get("features").and_then(Value::as_array) {
                        Some(features) => features.clone(),
                        None if value.get("attributes").is_some() => vec![value],
                        None => continue,
                    };
                    for feature in features {
                        let Some(attributes) = feature.get("attributes").and_then(Value::as_object) else { continue };
                        let Some(timestamp) = attributes.get(&args.timestamp_field).and_then(Value::as_f64) else { continue };
                        if timestamp < start || timestamp > end {
                            continue;
                        }
                        let coordinate = |axis: &str| feature["geometry"][axis].as_f64().unwrap_or(f64::NAN);
                        reference.features.push(ReferenceFeature {
                            timestamp,
                            attributes: attributes.clone(),
                            x: coordinate("x"),
                            y: coordinate("y"),
                        });
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return reference,
            },
        }
    }
}
