//! Answers from a stored object: conditional requests (304), byte ranges (206, multipart, 416),
//! HEAD, and the `Age` and `x-cache` headers. The body is bytes over the object's mapping; only
//! multipart boundaries are new bytes.

use std::time::SystemTime;

use bytes::Bytes;
use edge_cache::store::Object;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use http_range_header::RangeUnsatisfiableError;

/// Every response body: bytes over a mapping, a file being filled, or an origin's stream.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The header that tells how the cache answered.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache");

/// How a response came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Fresh from the cache.
    Hit,
    /// Fetched from the origin (and stored, when the response allows).
    Miss,
    /// Served stale: while revalidating in the background, or because the origin failed.
    Stale,
    /// Stale, confirmed by the origin with 304, then served from the cache.
    Revalidated,
    /// Not cacheable by configuration or method: handed through to the origin.
    Pass,
}

impl CacheStatus {
    pub fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Revalidated => "revalidated",
            Self::Pass => "pass",
        })
    }
}

/// Headers a 304 repeats from the 200 it stands for (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: [HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short plain-text answer of our own (errors).
pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What the service address allows; CONNECT and TRACE are not among them.
const ALLOW: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE");

/// 405 to CONNECT and TRACE, with Allow (RFC 9110 §15.5.6).
pub fn method_not_allowed() -> Response<Body> {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
    response.headers_mut().insert(header::ALLOW, ALLOW);
    response
}

/// A refusal after which the connection closes: what the client sent next (a body, say) is
/// never read as a request.
pub fn closing(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = plain(status, text);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The stored headers with Age and the cache status.
pub fn head(object: &Object, status: CacheStatus, now: SystemTime) -> HeaderMap {
    let mut headers = object.meta.headers.clone();
    headers.insert(header::AGE, HeaderValue::from(object.age(now).as_secs()));
    headers.insert(CACHE_STATUS, status.value());
    headers
}

/// Whether a request takes the whole stored response as it is: no conditions, no ranges.
fn unconditional(request: &HeaderMap) -> bool {
    [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::RANGE,
    ]
    .iter()
    .all(|name| !request.contains_key(name))
}

/// The answer to an unconditional request for a hit: the object's head, prepared on its first
/// hit with everything but Age, and the whole body.
fn whole_hit(method: &Method, object: &Object, body: Bytes, now: SystemTime) -> Response<Body> {
    let mut headers = object
        .hit_head(|object| {
            let mut headers = head(object, CacheStatus::Hit, now);
            if object.meta.status == StatusCode::OK {
                headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            }
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.body_len));
            headers
        })
        .clone();
    headers.insert(header::AGE, HeaderValue::from(object.age(now).as_secs()));
    let body = if *method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = object.meta.status;
    *response.headers_mut() = headers;
    response
}

/// The answer to a GET or HEAD with `request` headers from `object`, whose body is `body`.
pub fn from_object(
    method: &Method,
    request: &HeaderMap,
    object: &Object,
    body: Bytes,
    status: CacheStatus,
    now: SystemTime,
) -> Response<Body> {
    if status == CacheStatus::Hit && unconditional(request) {
        return whole_hit(method, object, body, now);
    }
    let mut headers = head(object, status, now);
    let ok = object.meta.status == StatusCode::OK;
    if ok && not_modified(request, &headers) {
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        for name in NOT_MODIFIED_HEADERS
            .iter()
            .chain([&header::AGE, &CACHE_STATUS])
        {
            for value in headers.get_all(name) {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
        return response;
    }
    let mut response_status = object.meta.status;
    let mut parts = vec![body.clone()];
    let mut length = body.len() as u64;
    if ok {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(range) = request.get(header::RANGE)
            && *method == Method::GET
            && if_range_holds(request, &headers)
        {
            match ranges(range, body.len() as u64) {
                Ranges::Ignore => {}
                Ranges::Unsatisfiable => {
                    let mut response = Response::new(full(Bytes::new()));
                    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                    let range = format!("bytes */{}", body.len());
                    let headers = response.headers_mut();
                    headers.insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&range).unwrap(),
                    );
                    headers.insert(CACHE_STATUS, status.value());
                    return response;
                }
                Ranges::Some(ranges) => {
                    response_status = StatusCode::PARTIAL_CONTENT;
                    (parts, length) = partial(&mut headers, &body, &ranges, object);
                }
            }
        }
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let body = if *method == Method::HEAD {
        full(Bytes::new())
    } else if parts.len() == 1 {
        full(parts.pop().unwrap_or_default())
    } else {
        let frames = parts
            .into_iter()
            .map(|part| Ok(hyper::body::Frame::data(part)));
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    };
    let mut response = Response::new(body);
    *response.status_mut() = response_status;
    *response.headers_mut() = headers;
    response
}

/// The body parts and total length of a 206 for `ranges`, with its headers set.
fn partial(
    headers: &mut HeaderMap,
    body: &Bytes,
    ranges: &[std::ops::RangeInclusive<u64>],
    object: &Object,
) -> (Vec<Bytes>, u64) {
    let total = body.len();
    let slice = |range: &std::ops::RangeInclusive<u64>| {
        body.slice(*range.start() as usize..=*range.end() as usize)
    };
    if let [range] = ranges {
        let content_range = format!("bytes {}-{}/{total}", range.start(), range.end());
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&content_range).unwrap(),
        );
        let part = slice(range);
        let length = part.len() as u64;
        return (vec![part], length);
    }
    let boundary = object.id.to_hex();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| format!("Content-Type: {value}\r\n"))
        .unwrap_or_default();
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for range in ranges {
        parts.push(Bytes::from(format!(
            "\r\n--{boundary}\r\n{content_type}Content-Range: bytes {}-{}/{total}\r\n\r\n",
            range.start(),
            range.end()
        )));
        parts.push(slice(range));
    }
    parts.push(Bytes::from(format!("\r\n--{boundary}--\r\n")));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}")).unwrap(),
    );
    let length = parts.iter().map(|part| part.len() as u64).sum();
    (parts, length)
}

enum Ranges {
    /// Not a range request we honour: answer with the whole body.
    Ignore,
    Unsatisfiable,
    Some(Vec<std::ops::RangeInclusive<u64>>),
}

fn ranges(value: &HeaderValue, len: u64) -> Ranges {
    let Ok(value) = value.to_str() else {
        return Ranges::Ignore;
    };
    let parsed = match http_range_header::parse_range_header(value) {
        Ok(parsed) => parsed.validate(len),
        Err(error) => Err(error),
    };
    match parsed {
        Ok(ranges) if ranges.is_empty() => Ranges::Ignore,
        Ok(ranges) => Ranges::Some(ranges),
        Err(RangeUnsatisfiableError::Invalid(_)) => Ranges::Ignore,
        Err(_) => Ranges::Unsatisfiable,
    }
}

/// RFC 9110 §13.1.2 and §13.1.3: If-None-Match (weak comparison) takes precedence over
/// If-Modified-Since.
fn not_modified(request: &HeaderMap, response: &HeaderMap) -> bool {
    if let Some(if_none_match) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = response.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return if_none_match.as_bytes() == b"*";
        };
        return if_none_match
            .to_str()
            .map(|list| {
                list.split(',').map(str::trim).any(|tag| {
                    tag == "*" || tag.trim_start_matches("W/") == etag.trim_start_matches("W/")
                })
            })
            .unwrap_or(false);
    }
    let since = request.get(header::IF_MODIFIED_SINCE).and_then(date);
    let modified = response.get(header::LAST_MODIFIED).and_then(date);
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// RFC 9110 §13.1.5: a Range applies only if If-Range (if any) still names this representation:
/// the same strong ETag, or exactly its Last-Modified date.
fn if_range_holds(request: &HeaderMap, response: &HeaderMap) -> bool {
    let Some(if_range) = request.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(if_range) = if_range.to_str() else {
        return false;
    };
    if if_range.starts_with('"') || if_range.starts_with("W/") {
        let etag = response.get(header::ETAG).and_then(|v| v.to_str().ok());
        return !if_range.starts_with("W/") && etag == Some(if_range);
    }
    let modified = response.get(header::LAST_MODIFIED).and_then(date);
    modified.is_some() && httpdate::parse_http_date(if_range).ok() == modified
}

fn date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}
