//! WebSocket connections over actix's HTTP/1 upgrade, written for fan-out: frames a viewer's
//! task writes are encoded straight into one outgoing buffer, and the connection hands the
//! whole buffer to the socket at once, so a burst of frames costs one write, not one each.
//! The buffer is bounded: past `HIGH_WATER` bytes the writer waits for the peer to read, and a
//! peer that does not read within the caller's time limit is reported as too slow.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{CloseReason, Codec, Frame, Message, ProtocolError};
use actix_web::body::MessageBody;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::{Stream, StreamExt};
use tokio::sync::Notify;

/// Bytes waiting for the socket past which writers wait.
const HIGH_WATER: usize = 64 * 1024;

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The peer went away.
    Closed,
    /// The peer did not read for the given time.
    TooSlow,
}

/// State shared by the writer and the response body (both live on one worker thread).
#[derive(Default)]
struct Outbox {
    /// Encoded frames not yet handed to the socket.
    buffer: BytesMut,
    /// The response body waiting for frames.
    body_waker: Option<Waker>,
    /// Set by the writer after a close frame: the body ends once drained.
    finished: bool,
    /// Set when the body is dropped (the connection is gone).
    gone: bool,
}

/// The sending half of a connection.
pub struct WsWriter {
    outbox: Rc<RefCell<Outbox>>,
    /// Woken when the body drains the buffer.
    drained: Rc<Notify>,
    codec: Codec,
}

/// The response body: hands whatever is buffered to actix in one chunk.
struct WsBody {
    outbox: Rc<RefCell<Outbox>>,
    drained: Rc<Notify>,
}

impl Stream for WsBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut outbox = self.outbox.borrow_mut();
        if !outbox.buffer.is_empty() {
            let chunk = outbox.buffer.split().freeze();
            drop(outbox);
            self.drained.notify_waiters();
            return Poll::Ready(Some(Ok(chunk)));
        }
        if outbox.finished {
            return Poll::Ready(None);
        }
        outbox.body_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for WsBody {
    fn drop(&mut self) {
        self.outbox.borrow_mut().gone = true;
        self.drained.notify_waiters();
    }
}

impl WsWriter {
    /// Encodes one message into the buffer, waiting (up to `patience`) for room first.
    pub async fn send(&mut self, message: Message, patience: Duration) -> Result<(), WriteError> {
        loop {
            let waiting = {
                let outbox = self.outbox.borrow();
                if outbox.gone || outbox.finished {
                    return Err(WriteError::Closed);
                }
                outbox.buffer.len() >= HIGH_WATER
            };
            if !waiting {
                break;
            }
            let drained = self.drained.notified();
            if tokio::time::timeout(patience, drained).await.is_err() {
                return Err(WriteError::TooSlow);
            }
        }
        let mut outbox = self.outbox.borrow_mut();
        let is_close = matches!(message, Message::Close(_));
        self.codec
            .encode(message, &mut outbox.buffer)
            .map_err(|_| WriteError::Closed)?;
        if is_close {
            outbox.finished = true;
        }
        if let Some(waker) = outbox.body_waker.take() {
            waker.wake();
        }
        Ok(())
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

    /// Sends a close frame; the connection ends once it is written.
    pub async fn close(mut self, reason: Option<CloseReason>, patience: Duration) {
        let _ = self.send(Message::Close(reason), patience).await;
    }
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

/// The receiving half of a connection.
pub struct WsReader {
    payload: web::Payload,
    buffer: BytesMut,
    codec: Codec,
}

impl WsReader {
    /// The next frame from the peer; `None` when the connection ended.
    pub async fn next(&mut self) -> Option<Result<Incoming, ProtocolError>> {
        loop {
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(frame)) => {
                    return Some(Ok(match frame {
                        Frame::Text(bytes) => Incoming::Text(bytes),
                        Frame::Ping(bytes) => Incoming::Ping(bytes),
                        Frame::Close(_) => Incoming::Close,
                        Frame::Binary(_) | Frame::Pong(_) | Frame::Continuation(_) => {
                            Incoming::Other
                        }
                    }))
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            match self.payload.next().await? {
                Ok(chunk) => self.buffer.extend_from_slice(&chunk),
                Err(_) => return None,
            }
        }
    }
}

/// Answers a WebSocket handshake: the 101 response to return, and the two halves of the
/// connection for the viewer's task. `max_frame` caps frames from the peer.
pub fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    max_frame: usize,
) -> Result<(HttpResponse, WsWriter, WsReader), String> {
    let mut response = actix_http::ws::handshake(req.head()).map_err(|e| e.to_string())?;
    // Subprotocols are not negotiated: the stream is JSON text frames.
    let outbox = Rc::new(RefCell::new(Outbox::default()));
    let drained = Rc::new(Notify::new());
    let body = WsBody {
        outbox: outbox.clone(),
        drained: drained.clone(),
    };
    let writer = WsWriter {
        outbox,
        drained,
        codec: Codec::new(),
    };
    let reader = WsReader {
        payload,
        buffer: BytesMut::new(),
        codec: Codec::new().max_size(max_frame),
    };
    let response = response
        .message_body(actix_web::body::BodyStream::new(body).boxed())
        .map_err(|e| e.to_string())?;
    Ok((response.into(), writer, reader))
}
