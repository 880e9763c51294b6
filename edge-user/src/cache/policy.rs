//! Freshness (RFC 9111): whether a response may be stored, whether a stored one may be reused,
//! and how to revalidate it. The rules are http-cache-semantics'; this module adds what that
//! crate leaves to the cache: the RFC 5861 extensions (stale-while-revalidate, stale-if-error),
//! negative caching of 404/410, and which request headers are kept with a stored response.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request, response};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

/// The configured knobs of the rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    options: CacheOptions,
    negative_ttl: Duration,
}

/// What a stored response can do for a request.
pub enum Reuse {
    Fresh,
    /// Stale: send `revalidation` (conditional where validators exist) to the origin.
    Stale {
        revalidation: Box<request::Parts>,
    },
    /// Stored for another variant (Vary) or unusable for this request.
    Mismatch,
}

impl Rules {
    pub fn new(heuristic_fraction: f32, negative_ttl: Duration) -> Self {
        Self {
            options: CacheOptions {
                shared: true,
                cache_heuristic: heuristic_fraction,
                immutable_min_time_to_live: Duration::ZERO,
                ignore_cargo_cult: false,
            },
            negative_ttl,
        }
    }

    /// The policy to store with `response` to `request` (as [`view`] made it), or `None` when
    /// the response must not be stored or could never be reused.
    pub fn storable(
        &self,
        request: &request::Parts,
        response: &response::Parts,
        now: SystemTime,
    ) -> Option<CachePolicy> {
        let request = kept_request(request, &response.headers);
        let policy =
            CachePolicy::new_options(&request, &self.negative(response), now, self.options);
        let has_validator = response.headers.contains_key(header::ETAG)
            || response.headers.contains_key(header::LAST_MODIFIED);
        (policy.is_storable() && (!policy.time_to_live(now).is_zero() || has_validator))
            .then_some(policy)
    }

    /// The policy after the origin answered a revalidation with 304, or `None` when the 304
    /// does not match the stored response (whose headers are `stored_headers`).
    pub fn revalidated(
        &self,
        stored: &CachePolicy,
        stored_headers: &HeaderMap,
        request: &request::Parts,
        response: &response::Parts,
        now: SystemTime,
    ) -> Option<CachePolicy> {
        let request = kept_request(request, stored_headers);
        match stored.after_response(&request, response, now) {
            AfterResponse::NotModified(policy, _) => Some(policy),
            AfterResponse::Modified(..) => None,
        }
    }

    /// A 404 or 410 without explicit freshness is reused for `negative_ttl`.
    fn negative(&self, response: &response::Parts) -> response::Parts {
        let mut response = clone_parts(response);
        let negative = matches!(response.status, StatusCode::NOT_FOUND | StatusCode::GONE);
        let explicit = response.headers.contains_key(header::EXPIRES)
            || directives(&response.headers).any(|(name, _)| {
                matches!(
                    name.as_str(),
                    "max-age" | "s-maxage" | "no-store" | "no-cache" | "private"
                )
            });
        if negative && !explicit && !self.negative_ttl.is_zero() {
            let max_age = format!("max-age={}", self.negative_ttl.as_secs().max(1));
            response.headers.append(
                header::CACHE_CONTROL,
                HeaderValue::from_str(&max_age).unwrap(),
            );
        }
        response
    }
}

/// How `policy` can serve `request` (as [`view`] made it) at `now`.
pub fn reuse(policy: &CachePolicy, request: &request::Parts, now: SystemTime) -> Reuse {
    match policy.before_request(request, now) {
        BeforeRequest::Fresh(_) => Reuse::Fresh,
        BeforeRequest::Stale {
            request,
            matches: true,
        } => Reuse::Stale {
            revalidation: Box::new(request),
        },
        BeforeRequest::Stale { matches: false, .. } => Reuse::Mismatch,
    }
}

/// The request as the cache sees it: a GET (HEAD is served from GET responses) for the
/// normalised target, with the normalised host, and without the client's own conditions and
/// ranges, which the cache answers itself from the whole stored response.
pub fn view(uri: http::Uri, host: &str, headers: &HeaderMap) -> request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = uri;
    parts.headers = headers.clone();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        parts.headers.remove(name);
    }
    if let Ok(host) = HeaderValue::from_str(host) {
        parts.headers.insert(header::HOST, host);
    }
    parts
}

/// Seconds a stale response may still be served while it is revalidated in the background,
/// and when the origin fails; `None` when the response does not allow it.
pub fn stale_allowance(headers: &HeaderMap) -> (Option<Duration>, Option<Duration>) {
    let mut while_revalidate = None;
    let mut if_error = None;
    for (name, value) in directives(headers) {
        let seconds = value.and_then(|v| v.parse().ok()).map(Duration::from_secs);
        match name.as_str() {
            // RFC 9111 §4.2.4: these forbid serving stale at all.
            "must-revalidate" | "proxy-revalidate" | "no-cache" => return (None, None),
            "stale-while-revalidate" => while_revalidate = seconds,
            "stale-if-error" => if_error = seconds,
            _ => {}
        }
    }
    (while_revalidate, if_error)
}

/// Cache-Control directives, names lower-cased, values unquoted.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|directive| {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name, Some(value.trim().trim_matches('"').to_string())),
                None => (directive, None),
            };
            let name = name.trim().to_ascii_lowercase();
            (!name.is_empty()).then_some((name, value))
        })
}

/// Only the headers the rules need later are kept on disk: Host, and those the response varies
/// on. Cookies and credentials of the client that caused the store are not.
fn kept_request(request: &request::Parts, response: &HeaderMap) -> request::Parts {
    let (mut kept, ()) = http::Request::new(()).into_parts();
    kept.method = request.method.clone();
    kept.uri = request.uri.clone();
    for name in std::iter::once("host").chain(vary_names(response)) {
        let Ok(name) = header::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
            continue;
        };
        for value in request.headers.get_all(&name) {
            kept.headers.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The header names in `Vary`, lower-cased.
pub fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

fn clone_parts(response: &response::Parts) -> response::Parts {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = response.status;
    parts.version = response.version;
    parts.headers = response.headers.clone();
    parts
}
