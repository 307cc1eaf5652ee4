//! A minimal HTTP/1.1 client on one keep-alive connection (for `POST /api/v1/logs`).

use std::io::Write;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{find, HttpTarget};

pub struct HttpConn {
    target: HttpTarget,
    token: Option<String>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpConn {
    /// `token` is sent as `Authorization: Bearer …`.
    pub fn new(target: &HttpTarget, token: Option<&str>) -> HttpConn {
        HttpConn {
            target: target.clone(),
            token: token.map(str::to_string),
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// `POST {prefix}{path}`; reconnects as needed. An error means no usable answer.
    pub async fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Result<Response> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.target.addr)
                .await
                .with_context(|| format!("connecting to {}", self.target.addr))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let result = self.exchange(path, content_type, body).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, path: &str, content_type: &str, body: &[u8]) -> Result<Response> {
        let mut req = Vec::with_capacity(body.len() + 256);
        write!(
            req,
            "POST {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nUser-Agent: loadgen\r\n",
            self.target.prefix,
            self.target.host_header,
            body.len()
        )?;
        if let Some(t) = &self.token {
            write!(req, "Authorization: Bearer {t}\r\n")?;
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(&req).await?;

        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > 64 * 1024 {
                bail!("response headers too long");
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let start = head_end + 4;
        let body = if chunked {
            read_chunked(stream, &mut self.buf, start).await?
        } else if let Some(len) = length {
            while self.buf.len() < start + len {
                read_more(stream, &mut self.buf).await?;
            }
            self.buf[start..start + len].to_vec()
        } else {
            // No length: the body runs to the end of the connection.
            close = true;
            while stream.read_buf(&mut self.buf).await? > 0 {}
            self.buf[start..].to_vec()
        };
        if close {
            self.stream = None;
        }
        Ok(Response { status, body })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    buf.reserve(16 * 1024);
    if stream.read_buf(buf).await? == 0 {
        bail!("connection closed by the server");
    }
    Ok(())
}

async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut pos: usize,
) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = String::from_utf8_lossy(&buf[pos..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(&buf[pos..], b"\r\n") {
                        break pos + i;
                    }
                    read_more(stream, buf).await?;
                };
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Ok(body);
                }
            }
        }
        while buf.len() < pos + size + 2 {
            read_more(stream, buf).await?;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}
