//! WebSocket connections that own their TCP socket once the handshake is done (see
//! `upgrade`): no framework buffer or task sits between a viewer and the kernel.
//!
//! Written for fan-out and for many idle viewers: frames are encoded into one outgoing
//! buffer and handed to the socket in one write when the viewer has nothing more to send
//! (`WsWriter::flush`), so a burst of frames costs one syscall, not one each; both buffers
//! are released when empty, so an idle connection holds no buffer at all. The outgoing
//! buffer is bounded: past `HIGH_WATER` bytes a writer waits for the peer to read, and a
//! peer that does not read within the caller's time limit is reported as too slow.

use std::io;
use std::time::Duration;

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{CloseReason, Codec, Frame, Message, ProtocolError};
use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bytes waiting for the socket past which writers wait.
const HIGH_WATER: usize = 64 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4 * 1024;

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The peer went away.
    Closed,
    /// The peer did not read for the given time.
    TooSlow,
}

/// What a viewer sent.
#[derive(Debug)]
pub enum Incoming {
    Text(Bytes),
    Ping(Bytes),
    /// Any frame proves the peer alive; pongs and binary frames carry nothing else for us.
    Other,
    Close,
}

/// An accepted WebSocket connection (the 101 response already written).
pub struct WsConnection {
    stream: TcpStream,
    /// Bytes read from the peer and not yet decoded into frames.
    inbound: BytesMut,
    /// Frames encoded and not yet written.
    outbound: BytesMut,
    /// Decodes the peer's (masked) frames, capped at the largest frame a peer may send.
    decoder: Codec,
    /// Encodes our (unmasked) frames.
    encoder: Codec,
}

impl WsConnection {
    /// `leftover` is whatever the peer sent after its handshake request, already read.
    pub fn new(stream: TcpStream, leftover: BytesMut, max_frame: usize) -> WsConnection {
        WsConnection {
            stream,
            inbound: leftover,
            outbound: BytesMut::new(),
            decoder: Codec::new().max_size(max_frame),
            encoder: Codec::new(),
        }
    }

    /// The two halves, usable at the same time (e.g. in one `select!`).
    pub fn split(&mut self) -> (WsReader<'_>, WsWriter<'_>) {
        (
            WsReader {
                stream: &self.stream,
                buffer: &mut self.inbound,
                codec: &mut self.decoder,
            },
            WsWriter {
                stream: &self.stream,
                buffer: &mut self.outbound,
                codec: &mut self.encoder,
            },
        )
    }

    /// Sends a close frame, writes what is queued, ends our side of the connection and
    /// waits (up to `patience`) for the peer to end its side, discarding what it sends.
    pub async fn close(mut self, reason: Option<CloseReason>, patience: Duration) {
        let _ = tokio::time::timeout(patience, async {
            let (_, mut writer) = self.split();
            if writer.send(Message::Close(reason), patience).await.is_err()
                || writer.flush().await.is_err()
                || self.stream.shutdown().await.is_err()
            {
                return;
            }
            let (mut reader, _) = self.split();
            while let Some(Ok(_)) = reader.next().await {}
        })
        .await;
    }
}

/// Frees an empty buffer: an idle connection keeps none (a burst allocates one again, which
/// costs far less than the write it goes with).
fn release(buffer: &mut BytesMut) {
    if buffer.is_empty() && buffer.capacity() > 0 {
        *buffer = BytesMut::new();
    }
}

/// Reads what the socket has (up to `READ_CHUNK` bytes) onto `buffer`, through the stack:
/// `buffer` grows only by what arrived, so a spurious wake-up allocates nothing.
fn read_some(stream: &TcpStream, buffer: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = stream.try_read(&mut chunk)?;
    buffer.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The receiving half of a connection.
pub struct WsReader<'a> {
    stream: &'a TcpStream,
    buffer: &'a mut BytesMut,
    codec: &'a mut Codec,
}

impl WsReader<'_> {
    /// The next frame from the peer; `None` when the connection ended. Cancel-safe: bytes
    /// read before a cancellation stay buffered for the next call.
    pub async fn next(&mut self) -> Option<Result<Incoming, ProtocolError>> {
        loop {
            if !self.buffer.is_empty() {
                match self.codec.decode(self.buffer) {
                    Ok(Some(frame)) => {
                        release(self.buffer);
                        return Some(Ok(match frame {
                            Frame::Text(bytes) => Incoming::Text(bytes),
                            Frame::Ping(bytes) => Incoming::Ping(bytes),
                            Frame::Close(_) => Incoming::Close,
                            Frame::Binary(_) | Frame::Pong(_) | Frame::Continuation(_) => {
                                Incoming::Other
                            }
                        }));
                    }
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            // Wait without a buffer: an idle viewer holds none. (`poll_read_ready` keeps one
            // waker slot; `readable()` would join and leave a waiter list on every select.)
            std::future::poll_fn(|cx| self.stream.poll_read_ready(cx))
                .await
                .ok()?;
            match read_some(self.stream, self.buffer) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    }
}

/// The sending half of a connection.
pub struct WsWriter<'a> {
    stream: &'a TcpStream,
    buffer: &'a mut BytesMut,
    codec: &'a mut Codec,
}

impl WsWriter<'_> {
    /// Queues one message; first writes what is queued (waiting up to `patience` for the
    /// peer to read) when the queue is full.
    pub async fn send(&mut self, message: Message, patience: Duration) -> Result<(), WriteError> {
        if self.buffer.len() >= HIGH_WATER {
            // Boxed: rare, and a timer inline would grow every idle viewer's task.
            Box::pin(tokio::time::timeout(patience, self.flush()))
                .await
                .map_err(|_| WriteError::TooSlow)??;
        }
        self.codec
            .encode(message, self.buffer)
            .map_err(|_| WriteError::Closed)
    }

    pub async fn text(&mut self, text: ByteString, patience: Duration) -> Result<(), WriteError> {
        self.send(Message::Text(text), patience).await
    }

    pub async fn ping(&mut self, patience: Duration) -> Result<(), WriteError> {
        self.send(Message::Ping(Bytes::new()), patience).await
    }

    pub async fn pong(&mut self, payload: Bytes, patience: Duration) -> Result<(), WriteError> {
        self.send(Message::Pong(payload), patience).await
    }

    /// Whether frames are queued.
    pub fn pending(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Writes everything queued. Cancel-safe: what was written is dropped from the queue.
    pub async fn flush(&mut self) -> Result<(), WriteError> {
        while !self.buffer.is_empty() {
            std::future::poll_fn(|cx| self.stream.poll_write_ready(cx))
                .await
                .map_err(|_| WriteError::Closed)?;
            match self.stream.try_write(self.buffer) {
                Ok(0) => return Err(WriteError::Closed),
                Ok(n) => self.buffer.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(WriteError::Closed),
            }
        }
        release(self.buffer);
        Ok(())
    }
}
