//! An HTTP/1.1 origin that frames requests itself, as nginx does, and records the exact bytes of
//! every connection: the evidence for request smuggling. A request is read as a head, then a
//! body by Content-Length or chunked. A GET or HEAD is answered as soon as its head is in and
//! its body is read and thrown away after (nginx's static files); other methods are answered
//! once their body is in. So a Content-Length that promises a body nobody sends makes this origin
//! read the next request on the connection as that body, where hyper would close the connection.
//! The answer names what was asked: `<method> <target> host=<Host>\n`, with
//! `Cache-Control: max-age=600`.

use std::{
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
};

use anyhow::Result;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::topology::Netns;

/// One request as the origin framed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    pub method: String,
    pub target: String,
    /// Names lower-cased, in order, repeated as received.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// Every value of `name`.
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, value)| value.as_slice())
            .collect()
    }

    /// The only value of `name`, if it came exactly once, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.values(name)[..] {
            [value] => Some(String::from_utf8_lossy(value).into_owned()),
            _ => None,
        }
    }

    /// The PoP's own health probes, which tests do not count.
    pub fn is_probe(&self) -> bool {
        self.header("user-agent").as_deref() == Some(edge_steer::probe::http::USER_AGENT)
    }
}

/// One connection: every byte received, and what was framed from them.
#[derive(Debug, Clone, Default)]
pub struct RawConnection {
    pub bytes: Vec<u8>,
    pub requests: Vec<RawRequest>,
    /// Why the origin gave up on the connection: unframable bytes, or a request cut short.
    pub error: Option<String>,
}

/// The running origin; stops when dropped.
pub struct RawOrigin {
    pub address: SocketAddr,
    connections: Arc<Mutex<Vec<Arc<Mutex<RawConnection>>>>>,
    /// Every request in the order they were complete, probes left out.
    requests: Arc<Mutex<Vec<RawRequest>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RawOrigin {
    /// Listens on `address` inside `netns`.
    pub fn start(netns: &Netns, address: SocketAddr) -> Result<Self> {
        let listener = netns.run_inside(|| TcpListener::bind(address))??;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let connections: Arc<Mutex<Vec<Arc<Mutex<RawConnection>>>>> = Arc::default();
        let requests: Arc<Mutex<Vec<RawRequest>>> = Arc::default();
        let (all, log) = (connections.clone(), requests.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let connection = Arc::new(Mutex::new(RawConnection::default()));
                all.lock().unwrap().push(connection.clone());
                tokio::spawn(serve(stream, connection, log.clone()));
            }
        });
        Ok(Self {
            address,
            connections,
            requests,
            runtime: Some(runtime),
        })
    }

    /// Every request framed so far, in order, without the PoP's health probes.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Every connection so far.
    pub fn connections(&self) -> Vec<RawConnection> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .map(|connection| connection.lock().unwrap().clone())
            .collect()
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The body of the answer to `request`.
pub fn answer_body(method: &str, target: &str, host: &str) -> String {
    format!("{method} {target} host={host}\n")
}

/// How a request's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

/// Reads, frames, answers and records requests until the connection ends or cannot be framed.
async fn serve(
    mut stream: TcpStream,
    connection: Arc<Mutex<RawConnection>>,
    log: Arc<Mutex<Vec<RawRequest>>>,
) {
    let mut reader = Reader {
        buffer: Vec::new(),
        connection: connection.clone(),
    };
    let error = loop {
        match exchange(&mut stream, &mut reader).await {
            Ok(Some((request, close))) => {
                if !request.is_probe() {
                    log.lock().unwrap().push(request.clone());
                }
                connection.lock().unwrap().requests.push(request);
                if close {
                    break None;
                }
            }
            Ok(None) => break None,
            Err(error) => {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                break Some(error);
            }
        }
    };
    connection.lock().unwrap().error = error;
}

/// One request: its head, the answer, its body. `None` when the connection ends between
/// requests; the request and whether it asked to close otherwise.
async fn exchange(
    stream: &mut TcpStream,
    reader: &mut Reader,
) -> Result<Option<(RawRequest, bool)>, String> {
    let Some((mut request, head_len)) = reader.head(stream).await? else {
        return Ok(None);
    };
    reader.buffer.drain(..head_len);
    let framing = framing(&request)?;
    let close = request.values("connection").iter().any(|value| {
        String::from_utf8_lossy(value)
            .to_ascii_lowercase()
            .contains("close")
    });
    let early = request.method == "GET" || request.method == "HEAD";
    if early {
        answer(stream, &request).await?;
    }
    request.body = match framing {
        Framing::Length(len) => reader.exactly(stream, len).await?,
        Framing::Chunked => reader.chunked(stream).await?,
    };
    if !early {
        answer(stream, &request).await?;
    }
    Ok(Some((request, close)))
}

/// The body's framing, refusing what nginx refuses: a Transfer-Encoding other than `chunked`,
/// both headers, several differing lengths or one that is not a number.
fn framing(request: &RawRequest) -> Result<Framing, String> {
    let encodings = request.values("transfer-encoding");
    let lengths = request.values("content-length");
    if !encodings.is_empty() {
        if !lengths.is_empty() {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        if encodings != [b"chunked"] {
            return Err(format!("Transfer-Encoding {encodings:?}"));
        }
        return Ok(Framing::Chunked);
    }
    let mut length = None;
    for value in lengths {
        let parsed = std::str::from_utf8(value)
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse::<usize>().ok())
            .ok_or_else(|| format!("Content-Length {:?}", String::from_utf8_lossy(value)))?;
        if length.is_some_and(|length| length != parsed) {
            return Err("differing Content-Lengths".into());
        }
        length = Some(parsed);
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

async fn answer(stream: &mut TcpStream, request: &RawRequest) -> Result<(), String> {
    let host = request.header("host").unwrap_or_default();
    let body = answer_body(&request.method, &request.target, &host);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=600\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if request.method != "HEAD" {
        response.push_str(&body);
    }
    stream
        .write_all(response.as_bytes())
        .await
        .map_err(|error| error.to_string())
}

/// The bytes received and not yet framed, and the record they go to.
struct Reader {
    buffer: Vec<u8>,
    connection: Arc<Mutex<RawConnection>>,
}

impl Reader {
    /// Reads more; false at the end of the connection.
    async fn more(&mut self, stream: &mut TcpStream) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                self.connection
                    .lock()
                    .unwrap()
                    .bytes
                    .extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A request head and its length, or `None` at the end of the connection.
    async fn head(
        &mut self,
        stream: &mut TcpStream,
    ) -> Result<Option<(RawRequest, usize)>, String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(&self.buffer) {
                Ok(httparse::Status::Complete(len)) => {
                    let request = RawRequest {
                        method: parsed.method.unwrap_or_default().to_string(),
                        target: parsed.path.unwrap_or_default().to_string(),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                            .collect(),
                        body: Vec::new(),
                    };
                    return Ok(Some((request, len)));
                }
                Ok(httparse::Status::Partial) => {
                    if !self.more(stream).await {
                        return if self.buffer.is_empty() {
                            Ok(None)
                        } else {
                            Err("connection ended within a request head".into())
                        };
                    }
                }
                Err(error) => return Err(format!("unparsable head: {error}")),
            }
        }
    }

    async fn exactly(&mut self, stream: &mut TcpStream, len: usize) -> Result<Vec<u8>, String> {
        while self.buffer.len() < len {
            if !self.more(stream).await {
                return Err(format!(
                    "body cut short: {} of {len} bytes",
                    self.buffer.len()
                ));
            }
        }
        Ok(self.buffer.drain(..len).collect())
    }

    async fn line(&mut self, stream: &mut TcpStream) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line = self.buffer.drain(..end + 2).take(end).collect();
                return Ok(line);
            }
            if !self.more(stream).await {
                return Err("connection ended within a chunked body".into());
            }
        }
    }

    async fn chunked(&mut self, stream: &mut TcpStream) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.line(stream).await?;
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .filter(|text| !text.is_empty() && text.len() <= 8)
                .and_then(|text| usize::from_str_radix(text, 16).ok())
                .ok_or_else(|| format!("chunk size {:?}", String::from_utf8_lossy(&line)))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line(stream).await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exactly(stream, size).await?);
            if !self.line(stream).await?.is_empty() {
                return Err("chunk not followed by CRLF".into());
            }
        }
    }
}
