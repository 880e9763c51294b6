//! A real HTTP origin (hyper, HTTP/1.1) listening inside a namespace, which counts and records
//! the requests it receives. The query string of a request says how to answer:
//! `size=N` (body bytes), `cc=…` (Cache-Control), `status=N`, `etag=…` (answers If-None-Match
//! with 304), `lm=1` (a fixed Last-Modified; answers If-Modified-Since with 304), `vary=…`,
//! `delay=MS` (before the head), `slow=MS` (between each of 16 body pieces), `chunked=1` (no
//! Content-Length), `h=Name:Value` (a response header; repeatable), `nm=bare` (the 304 carries
//! no ETag or Last-Modified) or `nm=other` (the 304 names ETag "other"). [`Origin::set_failing`]
//! makes every answer a 503, [`Origin::set_delay`] delays every answer (a slow origin),
//! [`Origin::stop`] closes it (connections are then refused).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

use crate::topology::Netns;

/// The Last-Modified date of `lm=1` answers.
pub const LAST_MODIFIED: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// One request as the origin saw it. The PoP's health probes (User-Agent
/// [`edge_steer::probe::http::USER_AGENT`]) are answered but not recorded: tests count what
/// clients cause.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
}

/// The running origin; stops when dropped.
pub struct Origin {
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    failing: Arc<AtomicBool>,
    /// Milliseconds every answer waits before its head.
    delay: Arc<AtomicU64>,
    /// Delays for requests from particular addresses, instead of `delay`: distance from them.
    delays_from: Arc<Mutex<HashMap<IpAddr, u64>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Origin {
    /// Listens on `address` inside `netns`.
    pub fn start(netns: &Netns, address: SocketAddr) -> Result<Self> {
        let listener = netns.run_inside(|| TcpListener::bind(address))??;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let delay = Arc::new(AtomicU64::new(0));
        let delays_from: Arc<Mutex<HashMap<IpAddr, u64>>> = Arc::default();
        let (record, fail, slow, far) = (
            seen.clone(),
            failing.clone(),
            delay.clone(),
            delays_from.clone(),
        );
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (record, fail, slow) = (record.clone(), fail.clone(), slow.clone());
                let from = far.lock().unwrap().get(&peer.ip()).copied();
                tokio::spawn(http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |request| {
                        let (record, failing) = (record.clone(), fail.load(Ordering::SeqCst));
                        let delay = Duration::from_millis(
                            from.unwrap_or_else(|| slow.load(Ordering::SeqCst)),
                        );
                        async move {
                            tokio::time::sleep(delay).await;
                            answer(request, record, failing).await
                        }
                    }),
                ));
            }
        });
        Ok(Self {
            address,
            seen,
            failing,
            delay,
            delays_from,
            runtime: Some(runtime),
        })
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests were for `target` (path and query, as received).
    pub fn count(&self, target: &str) -> usize {
        self.seen()
            .iter()
            .filter(|seen| seen.target == target)
            .count()
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Stops listening and closes every connection.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Delays every answer by `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Delays the answers to connections from `source` by `delay` (instead of
    /// [`Origin::set_delay`]'s): the server looks that far from it. Applies to new connections.
    pub fn set_delay_from(&self, source: IpAddr, delay: Duration) {
        self.delays_from
            .lock()
            .unwrap()
            .insert(source, delay.as_millis() as u64);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    request: Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    failing: bool,
) -> Result<Response<Body>, Infallible> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let probe = request
        .headers()
        .get(header::USER_AGENT)
        .is_some_and(|agent| agent == edge_steer::probe::http::USER_AGENT);
    if !probe {
        seen.lock().unwrap().push(Seen {
            method: request.method().to_string(),
            target: target.clone(),
            headers: request.headers().clone(),
        });
    }
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let extra: Vec<(String, String)> = request
        .uri()
        .query()
        .map(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .filter(|(name, _)| name == "h")
                .filter_map(|(_, header)| {
                    let (name, value) = header.split_once(':')?;
                    Some((name.to_string(), value.trim_start().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<u64>().ok());
    if let Some(delay) = number("delay") {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut response = Response::builder();
    if failing {
        return Ok(response
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(full(Bytes::from_static(b"down\n")))
            .unwrap());
    }
    if let Some(cc) = query.get("cc") {
        response = response.header(header::CACHE_CONTROL, cc.as_str());
    }
    if let Some(vary) = query.get("vary") {
        response = response.header(header::VARY, vary.as_str());
    }
    for (name, value) in &extra {
        response = response.header(name.as_str(), value.as_str());
    }
    let mut not_modified = false;
    if let Some(etag) = query.get("etag") {
        let etag = format!("\"{etag}\"");
        not_modified |= request
            .headers()
            .get(header::IF_NONE_MATCH)
            .is_some_and(|value| value.to_str().unwrap_or("").contains(&etag));
        response = response.header(header::ETAG, etag);
    }
    if query.contains_key("lm") {
        not_modified |= request
            .headers()
            .get(header::IF_MODIFIED_SINCE)
            .is_some_and(|value| value == LAST_MODIFIED);
        response = response.header(header::LAST_MODIFIED, LAST_MODIFIED);
    }
    if not_modified {
        if let Some(how) = query.get("nm") {
            // Rebuilt without the validators (or with another ETag).
            let mut bare = Response::builder();
            for (name, value) in response.headers_ref().into_iter().flatten() {
                if name != header::ETAG && name != header::LAST_MODIFIED {
                    bare = bare.header(name, value);
                }
            }
            if how == "other" {
                bare = bare.header(header::ETAG, "\"other\"");
            }
            response = bare;
        }
        return Ok(response
            .status(StatusCode::NOT_MODIFIED)
            .body(full(Bytes::new()))
            .unwrap());
    }
    let status = number("status").unwrap_or(200) as u16;
    let body = Bytes::from(pattern(number("size").unwrap_or(16) as usize));
    response = response
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    let slow = number("slow");
    if slow.is_none() && !query.contains_key("chunked") {
        return Ok(response.body(full(body)).unwrap());
    }
    if !query.contains_key("chunked") {
        response = response.header(header::CONTENT_LENGTH, body.len());
    }
    let pause = Duration::from_millis(slow.unwrap_or(0));
    let piece = body.len().div_ceil(16).max(1);
    let pieces: Vec<Bytes> = (0..body.len())
        .step_by(piece)
        .map(|start| body.slice(start..(start + piece).min(body.len())))
        .collect();
    let stream = futures_util::stream::unfold(pieces.into_iter(), move |mut pieces| async move {
        let piece = pieces.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok::<_, Infallible>(Frame::data(piece)), pieces))
    });
    Ok(response.body(StreamBody::new(stream).boxed()).unwrap())
}

fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes).boxed()
}

/// The body of a `size=N` answer: printable, and different at every offset of a short period,
/// so that a wrong range or a splice shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+"[i % 63])
        .collect()
}

/// A TCP connection from inside `netns`.
pub fn connect(netns: &Netns, address: SocketAddr) -> Result<TcpStream> {
    Ok(netns.run_inside(|| TcpStream::connect_timeout(&address, Duration::from_secs(5)))??)
}
