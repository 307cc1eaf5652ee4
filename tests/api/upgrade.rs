//! The upgrade hand-over: WebSocket handshakes go through the app like any request, and an
//! accepted viewer takes the bare socket over (`src/upgrade.rs`).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{record, spawn_app};

const WAIT: Duration = Duration::from_secs(5);

/// A client text frame (clients must mask theirs).
fn masked_text(text: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let payload = text.as_bytes();
    assert!(payload.len() < 126, "short frames only");
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn handshake(path: &str, port: u16) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads a response head (up to its blank line); returns it and the bytes after it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buffer = Vec::new();
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            return (head, buffer[end + 4..].to_vec());
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before a response head: {buffer:?}"
        );
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Reads server text frames (unmasked, short or 16-bit lengths) until `count` are read.
async fn read_texts(stream: &mut TcpStream, mut buffer: Vec<u8>, count: usize) -> Vec<Value> {
    let mut texts = Vec::new();
    while texts.len() < count {
        let frame = match buffer.as_slice() {
            [op, 126, a, b, rest @ ..]
                if rest.len() >= usize::from(u16::from_be_bytes([*a, *b])) =>
            {
                Some((*op, 4, usize::from(u16::from_be_bytes([*a, *b]))))
            }
            [op, len, rest @ ..] if *len < 126 && rest.len() >= usize::from(*len) => {
                Some((*op, 2, usize::from(*len)))
            }
            _ => None,
        };
        match frame {
            Some((op, header, len)) => {
                let payload: Vec<u8> = buffer.drain(..header + len).skip(header).collect();
                if op == 0x81 {
                    texts.push(serde_json::from_slice(&payload).expect("a JSON text frame"));
                }
            }
            None => {
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                    .await
                    .expect("a frame in time")
                    .expect("read");
                assert!(n > 0, "connection closed after {texts:?}");
                buffer.extend_from_slice(&chunk[..n]);
            }
        }
    }
    texts
}

/// Reads a whole plain answer: the gateway closes the connection after it.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the gateway closes the connection after answering")
        .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

#[actix_web::test]
async fn a_subscribe_frame_sent_in_the_same_packet_as_the_handshake_is_not_lost() {
    let app = spawn_app().await;
    app.ingest(&json!([record(5, "stored before")])).await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let mut bytes = handshake("/ws", app.port).into_bytes();
    bytes.extend(masked_text(r#"{"op":"subscribe","job_id":5}"#));
    stream.write_all(&bytes).await.unwrap();

    let (head, rest) = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let frames = read_texts(&mut stream, rest, 2).await;
    assert_eq!(frames[0]["message"], "stored before");
    assert_eq!(frames[1]["control"], "history_end");

    // The socket is the viewer's now: live records arrive on it.
    app.ingest(&json!([record(5, "live")])).await;
    let frames = read_texts(&mut stream, Vec::new(), 1).await;
    assert_eq!(frames[0]["message"], "live");
    assert_eq!(frames[0]["seq"], 2);
}

#[actix_web::test]
async fn a_websocket_handshake_to_an_ordinary_route_gets_its_ordinary_answer_then_a_close() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    stream
        .write_all(handshake("/healthz", app.port).as_bytes())
        .await
        .unwrap();
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");
}

#[actix_web::test]
async fn a_refused_handshake_gets_its_json_error_and_no_upgrade() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    stream
        .write_all(handshake("/ws/jobs/0", app.port).as_bytes())
        .await
        .unwrap();
    let response = read_to_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let body: Value = serde_json::from_str(body).expect("a JSON body");
    assert!(body["error"].as_str().unwrap().contains("job id"), "{body}");
}
