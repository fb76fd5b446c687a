//! A deliberately dumb HTTP/1.x client over any byte stream.
//!
//! Real clients normalise URLs, fix up headers and refuse to send malformed requests; the
//! attacks we test need exactly those bytes on the wire. `RawConn` writes what it is given and
//! parses responses just enough to assert on them (status line, headers, a body framed by
//! `Content-Length`, chunked encoding or connection close).

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::Echo;

/// One HTTP/1.x connection driven byte by byte.
pub struct RawConn<S> {
    io: BufReader<S>,
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// `HTTP/1.1` or `HTTP/1.0`, as sent.
    pub version: String,
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as an upstream echo; fails the test unless the status is 200.
    pub fn echo(&self) -> Echo {
        assert_eq!(
            self.status,
            200,
            "expected an echo, got {}: {}",
            self.status,
            self.text()
        );
        Echo::from_slice(&self.body)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    /// Writes `bytes` exactly as given and flushes.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        let stream = self.io.get_mut();
        stream.write_all(bytes.as_ref()).await?;
        stream.flush().await
    }

    /// Sends a request and reads one response.
    pub async fn roundtrip(&mut self, request: impl AsRef<[u8]>) -> io::Result<RawResponse> {
        self.send(request).await?;
        self.read_response().await
    }
}

/// Reading needs only the read side, so a `ReadHalf` works too.
impl<S: AsyncRead + Unpin> RawConn<S> {
    /// Wraps an open connection (TCP or TLS), or the read half of one.
    pub fn new(io: S) -> Self {
        Self { io: BufReader::new(io) }
    }

    /// Reads one final response (skipping `100 Continue` and friends, but not `101`).
    pub async fn read_response(&mut self) -> io::Result<RawResponse> {
        loop {
            let response = self.read_one_response().await?;
            if (100..200).contains(&response.status) && response.status != 101 {
                continue;
            }
            return Ok(response);
        }
    }

    /// Reads until the peer closes the connection (or resets it) and returns what came.
    pub async fn read_until_closed(&mut self) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match self.io.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Gives back the connection (any bytes already buffered are lost).
    pub fn into_inner(self) -> S {
        self.io.into_inner()
    }

    /// The underlying connection, for writes that bypass the request helpers.
    pub fn get_mut(&mut self) -> &mut S {
        self.io.get_mut()
    }

    async fn read_one_response(&mut self) -> io::Result<RawResponse> {
        let status_line = self
            .read_line()
            .await?
            .ok_or_else(|| eof("connection closed before a response"))?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self
                .read_line()
                .await?
                .ok_or_else(|| eof("connection closed inside the response head"))?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            version,
            status,
            headers,
            body: Vec::new(),
        };
        response.body = self.read_body(&response).await?;
        Ok(response)
    }

    async fn read_body(&mut self, head: &RawResponse) -> io::Result<Vec<u8>> {
        if matches!(head.status, 100..=199 | 204 | 304) {
            return Ok(Vec::new());
        }
        let chunked = head
            .header_all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return self.read_chunked().await;
        }
        if let Some(length) = head.header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| invalid(format!("bad content-length {length:?}")))?;
            let mut body = vec![0; length];
            self.io.read_exact(&mut body).await?;
            return Ok(body);
        }
        let mut body = Vec::new();
        self.io.read_to_end(&mut body).await?;
        Ok(body)
    }

    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self
                .read_line()
                .await?
                .ok_or_else(|| eof("connection closed inside a chunked body"))?;
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size_hex, 16).map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailer section, ended by an empty line.
                while let Some(line) = self.read_line().await? {
                    if line.is_empty() {
                        break;
                    }
                }
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.io.read_exact(&mut body[start..]).await?;
            self.read_line().await?;
        }
    }

    /// One line without its CRLF; `None` if the connection closed before any byte of it.
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut line = Vec::new();
        if self.io.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(Some(String::from_utf8_lossy(&line).into_owned()))
    }
}

/// `GET {target}` with the given `Host`, HTTP/1.1, keep-alive.
pub fn get_request(target: &str, host: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_owned())
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}
