//! HTTP/1 requests that ask for a protocol upgrade (`Connection: Upgrade`), i.e. WebSocket
//! handshakes. actix-http hands such a request over together with its socket; we run it
//! through the app like any request (same routes, guards, errors and access log), and when
//! a route accepted a WebSocket (a 101 response carrying an [`Accepted`] viewer) we write
//! the 101 ourselves and give the bare socket to the viewer. The connection then keeps none
//! of the HTTP dispatcher's buffers, which is most of what an idle viewer would cost, and
//! frames go from the viewer's task to the kernel with no task or copy in between.
//! Any other answer is written as a plain response, and the connection is closed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use actix_codec::{Encoder, Framed, FramedParts};
use actix_http::body::{BodySize, MessageBody};
use actix_http::h1::{self, Message};
use actix_http::{ConnectionType, Request, Response, StatusCode};
use actix_web::dev::{Service, ServiceResponse};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A WebSocket a route accepted: put in the extensions of its 101 response, it receives the
/// socket once the 101 is written.
pub struct Accepted(Box<dyn FnOnce(TcpStream, BytesMut) -> Connection>);

/// A connection's whole life after its 101.
type Connection = Pin<Box<dyn Future<Output = ()>>>;

impl Accepted {
    /// `run` serves the connection: the socket, and the bytes the peer sent after its
    /// handshake (already read).
    pub fn new<F, Fut>(run: F) -> Accepted
    where
        F: FnOnce(TcpStream, BytesMut) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Accepted(Box::new(move |stream, leftover| {
            Box::pin(run(stream, leftover))
        }))
    }
}

/// Serves one upgrade request with `app`, the same app that serves every other request.
pub async fn serve<S, B>(
    app: Rc<S>,
    (request, framed): (Request, Framed<TcpStream, h1::Codec>),
) -> Result<(), Infallible>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let response = match app.call(request).await {
        Ok(response) => response.into_parts().1.map_into_boxed_body(),
        Err(e) => e.error_response(),
    };
    let mut response: Response<_> = response.into();
    let accepted = response.extensions_mut().remove::<Accepted>();
    let (mut head, body) = response.into_parts();
    let FramedParts {
        io: mut stream,
        mut codec,
        read_buf,
        ..
    } = framed.into_parts();
    // The dispatcher's read buffer is 8 KiB; keep only what the peer sent past its request
    // (usually nothing).
    let leftover = BytesMut::from(&read_buf[..]);
    drop(read_buf);
    let mut out = BytesMut::new();

    if let Some(Accepted(run)) =
        accepted.filter(|_| head.status() == StatusCode::SWITCHING_PROTOCOLS)
    {
        drop(body);
        if codec
            .encode(Message::Item((head, BodySize::None)), &mut out)
            .is_ok()
            && stream.write_all(&out).await.is_ok()
        {
            drop(out);
            run(stream, leftover).await;
        }
        return Ok(());
    }

    // Not upgraded: a plain answer (a refusal, or a route that does not upgrade), then close.
    let body = actix_web::body::to_bytes(body).await.unwrap_or_default();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let written = codec
        .encode(
            Message::Item((head, BodySize::Sized(body.len() as u64))),
            &mut out,
        )
        .and_then(|()| codec.encode(Message::Chunk(Some(body)), &mut out))
        .and_then(|()| codec.encode(Message::Chunk(None), &mut out));
    if written.is_ok() && stream.write_all(&out).await.is_ok() {
        let _ = stream.shutdown().await;
    }
    Ok(())
}
