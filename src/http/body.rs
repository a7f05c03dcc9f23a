//! Request bodies, read with a size limit and a deadline: a client that announces a body and
//! sends it slowly (or never) is answered 408 instead of holding its connection.

use std::time::Duration;

use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::error::BodyError;

/// How long the whole body of a request may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the whole body, at most `max_bytes`, within [`BODY_TIMEOUT`].
pub async fn read(mut payload: web::Payload, max_bytes: usize) -> Result<Bytes, BodyError> {
    let collect = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| BodyError::Incomplete)?;
            if body.len() + chunk.len() > max_bytes {
                return Err(BodyError::TooLarge { max_bytes });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(BODY_TIMEOUT, collect)
        .await
        .unwrap_or(Err(BodyError::Timeout))
}
