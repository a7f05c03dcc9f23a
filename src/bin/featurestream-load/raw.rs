//! A minimal WebSocket client for the load tester's hot path: one read buffer per session,
//! frames parsed in place, no UTF-8 validation, no copy per frame. Server frames are unmasked
//! (RFC 6455 §5.1); client frames are masked with a zero key, which is legal and needs no XOR.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An open WebSocket.
pub(crate) struct RawSocket {
    stream: TcpStream,
    buffer: BytesMut,
    start: usize,
}

/// One frame, borrowed from the read buffer.
pub(crate) enum Frame<'a> {
    Text(&'a [u8]),
    Close(Option<u16>),
    Other,
}

fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("only ws:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    Ok((authority.to_owned(), path.to_owned()))
}

impl RawSocket {
    /// Connects and upgrades; a refusal is reported as `HTTP error: <status line>`.
    pub(crate) async fn connect(url: &str) -> Result<RawSocket, String> {
        let (authority, path) = split_url(url)?;
        let mut stream = TcpStream::connect(&authority)
            .await
            .map_err(|err| err.to_string())?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|err| err.to_string())?;
        let mut buffer = BytesMut::with_capacity(4096);
        let head_end = loop {
            if let Some(end) = memchr::memmem::find(&buffer, b"\r\n\r\n") {
                break end + 4;
            }
            if buffer.len() > 16 * 1024 {
                return Err("HTTP error: response head too long".into());
            }
            let read = stream
                .read_buf(&mut buffer)
                .await
                .map_err(|err| err.to_string())?;
            if read == 0 {
                return Err("connection closed during the upgrade".into());
            }
        };
        let status_line = String::from_utf8_lossy(
            &buffer[..buffer.iter().position(|b| *b == b'\r').unwrap_or(0)],
        )
        .into_owned();
        if !status_line.contains(" 101 ") {
            return Err(format!("HTTP error: {status_line}"));
        }
        Ok(RawSocket {
            stream,
            buffer,
            start: head_end,
        })
    }

    /// Sends a text frame.
    pub(crate) async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send(0x1, text.as_bytes()).await
    }

    /// Sends a close frame (1000).
    pub(crate) async fn close(&mut self) -> std::io::Result<()> {
        self.send(0x8, &1000u16.to_be_bytes()).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            0..=125 => frame.push(0x80 | payload.len() as u8),
            126..=65_535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await
    }

    /// Bytes of a complete frame at the buffer's start: (header length, payload length).
    fn complete_frame(&self) -> Option<(usize, usize, u8)> {
        let bytes = &self.buffer[self.start..];
        if bytes.len() < 2 {
            return None;
        }
        let opcode = bytes[0] & 0x0F;
        let (header, length) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 if bytes.len() >= 10 => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&bytes[2..10]);
                (10, u64::from_be_bytes(raw) as usize)
            }
            126 | 127 => return None,
            short => (2, short as usize),
        };
        (bytes.len() >= header + length).then_some((header, length, opcode))
    }

    /// The total length of the frame at the buffer's start, once its header is complete.
    fn pending_frame_len(&self) -> Option<usize> {
        let bytes = &self.buffer[self.start..];
        if bytes.len() < 2 {
            return None;
        }
        match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => Some(4 + u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 if bytes.len() >= 10 => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&bytes[2..10]);
                Some(10 + u64::from_be_bytes(raw) as usize)
            }
            126 | 127 => None,
            short => Some(2 + short as usize),
        }
    }

    /// The next frame; `None` when the connection ends. Pings are answered here.
    pub(crate) async fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            if let Some((header, length, opcode)) = self.complete_frame() {
                let payload_start = self.start + header;
                self.start = payload_start + length;
                match opcode {
                    0x1 | 0x0 => {
                        return Some(Frame::Text(
                            &self.buffer[payload_start..payload_start + length],
                        ));
                    }
                    0x8 => {
                        let code = (length >= 2).then(|| {
                            u16::from_be_bytes([
                                self.buffer[payload_start],
                                self.buffer[payload_start + 1],
                            ])
                        });
                        return Some(Frame::Close(code));
                    }
                    0x9 => {
                        let payload = self.buffer[payload_start..payload_start + length].to_vec();
                        if self.send(0xA, &payload).await.is_err() {
                            return None;
                        }
                        continue;
                    }
                    _ => return Some(Frame::Other),
                }
            }
            // Drop consumed frames (O(1)), make room for at least the frame in progress, read.
            let _ = self.buffer.split_to(self.start);
            self.start = 0;
            let wanted = self.pending_frame_len().unwrap_or(0).max(4096);
            if self.buffer.capacity() - self.buffer.len() < wanted.min(256 * 1024) {
                self.buffer.reserve(wanted);
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}
