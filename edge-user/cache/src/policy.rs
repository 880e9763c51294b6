//! Freshness (RFC 9111): whether a response may be stored, whether a stored one may be reused,
//! and how to revalidate it. The rules are http-cache-semantics'; this module adds what that
//! crate leaves to the cache: the RFC 5861 extensions (stale-while-revalidate, stale-if-error),
//! negative caching of 404/410, whether a client's own directives count, and which request
//! headers are kept with a stored response.

use std::time::{Duration, SystemTime};

pub use edge_config::http::RequestDirectives;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request, response};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

/// The configured knobs of the rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    options: CacheOptions,
    negative_ttl: Duration,
    request_directives: RequestDirectives,
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
    pub fn new(
        heuristic_fraction: f32,
        negative_ttl: Duration,
        request_directives: RequestDirectives,
    ) -> Self {
        Self {
            options: CacheOptions {
                shared: true,
                cache_heuristic: heuristic_fraction,
                immutable_min_time_to_live: Duration::ZERO,
                ignore_cargo_cult: false,
            },
            negative_ttl,
            request_directives,
        }
    }

    /// The request as the cache sees it: a GET (HEAD is served from GET responses) for the
    /// normalised target, with the normalised host, and without the client's own conditions and
    /// ranges, which the cache answers itself from the whole stored response, nor its
    /// Cache-Control and Pragma unless they are honoured. `headers` are those the origin may
    /// see ([`crate::http::headers::for_cache_fetch`]).
    pub fn view(&self, uri: http::Uri, host: &str, headers: &HeaderMap) -> request::Parts {
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
        if self.request_directives == RequestDirectives::Ignore {
            parts.headers.remove(header::CACHE_CONTROL);
            parts.headers.remove(header::PRAGMA);
        }
        if let Ok(host) = HeaderValue::from_str(host) {
            parts.headers.insert(header::HOST, host);
        }
        parts
    }

    /// Whether a request with these headers leaves reuse to freshness alone: its directives are
    /// ignored, or it has no Cache-Control or Pragma that could demand revalidation or accept a
    /// stale response (RFC 9111 §5.2.1, §5.4).
    pub fn plain_request(&self, headers: &HeaderMap) -> bool {
        self.request_directives == RequestDirectives::Ignore
            || !headers.contains_key(header::CACHE_CONTROL) && !headers.contains_key(header::PRAGMA)
    }

    /// The policy to store with `response` to `request` (as [`Self::view`] made it), or `None` when
    /// the response must not be stored or could never be reused.
    pub fn storable(
        &self,
        request: &request::Parts,
        response: &response::Parts,
        now: SystemTime,
    ) -> Option<CachePolicy> {
        let response = self.negative(response);
        // Storability is judged on the whole request (credentials count); what is kept is less.
        let judged = CachePolicy::new_options(request, &response, now, self.options);
        let has_validator = response.headers.contains_key(header::ETAG)
            || response.headers.contains_key(header::LAST_MODIFIED);
        if !judged.is_storable() || (judged.time_to_live(now).is_zero() && !has_validator) {
            return None;
        }
        let kept = kept_request(request, &response.headers);
        Some(CachePolicy::new_options(
            &kept,
            &response,
            now,
            self.options,
        ))
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

/// A stored response's age and freshness as lines over time, computed once per object so that a
/// hit parses nothing. Exact from `since` on: after the response was received, its age grows by
/// the time resident in the cache (RFC 9111 §4.2.3) and its freshness lifetime does not change.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    since: SystemTime,
    age: Duration,
    stale_at: SystemTime,
}

impl Clock {
    /// The clock of `policy` from `since`, or `None` when `since` is before the response was
    /// received (the system clock stepped back), where age does not grow linearly.
    pub fn new(policy: &CachePolicy, since: SystemTime) -> Option<Self> {
        let age = policy.age(since);
        let second = Duration::from_secs(1);
        if policy.age(since + second) != age + second {
            return None;
        }
        Some(Self {
            since,
            age,
            stale_at: since + policy.time_to_live(since),
        })
    }

    /// The age at `now`, or `None` before `since`.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        Some(self.age + now.duration_since(self.since).ok()?)
    }

    /// Whether the response is fresh at `now` (RFC 9111 §4.2), or `None` before `since`.
    pub fn is_fresh(&self, now: SystemTime) -> Option<bool> {
        (now >= self.since).then(|| now < self.stale_at)
    }
}

/// How `policy` can serve `request` (as [`Rules::view`] made it) at `now`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&'static str, &'static str)]) -> response::Parts {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            parts.headers.append(*name, HeaderValue::from_static(value));
        }
        parts
    }

    fn request(headers: &[(&'static str, &'static str)]) -> request::Parts {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        Rules::new(0.0, Duration::ZERO, RequestDirectives::Honour).view(
            "/a?b".parse().unwrap(),
            "h.example",
            &map,
        )
    }

    #[test]
    fn what_is_stored() {
        let rules = Rules::new(0.0, Duration::from_secs(10), RequestDirectives::Honour);
        let now = SystemTime::now();
        let stored =
            |status, headers| rules.storable(&request(&[]), &response(status, headers), now);
        assert!(stored(200, &[("cache-control", "max-age=60")]).is_some());
        assert!(stored(200, &[("cache-control", "no-store, max-age=60")]).is_none());
        assert!(stored(200, &[("cache-control", "private, max-age=60")]).is_none());
        // No freshness and no validator: it could never be reused.
        assert!(stored(200, &[]).is_none());
        // No freshness but a validator: stored, always revalidated.
        let etag = stored(200, &[("etag", "\"1\"")]).unwrap();
        assert!(matches!(
            reuse(&etag, &request(&[]), now),
            Reuse::Stale { .. }
        ));
        // 404 without explicit freshness: fresh for the negative TTL only.
        let missing = stored(404, &[]).unwrap();
        assert_eq!(missing.time_to_live(now), Duration::from_secs(10));
        let explicit = stored(404, &[("cache-control", "max-age=100")]).unwrap();
        assert_eq!(explicit.time_to_live(now), Duration::from_secs(100));
        let off = Rules::new(0.0, Duration::ZERO, RequestDirectives::Honour);
        assert!(
            off.storable(&request(&[]), &response(404, &[]), now)
                .is_none()
        );
        // Credentials make a response private unless it says otherwise.
        let authorized = request(&[("authorization", "Basic eDp5")]);
        let plain = response(200, &[("cache-control", "max-age=60")]);
        assert!(rules.storable(&authorized, &plain, now).is_none());
        let public = response(200, &[("cache-control", "public, max-age=60")]);
        assert!(rules.storable(&authorized, &public, now).is_some());
    }

    #[test]
    fn heuristic_freshness_only_when_configured() {
        let now = SystemTime::now();
        let modified = response(200, &[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]);
        let strict = Rules::new(0.0, Duration::ZERO, RequestDirectives::Honour)
            .storable(&request(&[]), &modified, now)
            .unwrap();
        assert!(strict.time_to_live(now).is_zero());
        let heuristic = Rules::new(0.1, Duration::ZERO, RequestDirectives::Honour)
            .storable(&request(&[]), &modified, now)
            .unwrap();
        assert!(!heuristic.time_to_live(now).is_zero());
    }

    #[test]
    fn requests_and_variants() {
        let rules = Rules::new(0.0, Duration::ZERO, RequestDirectives::Honour);
        let now = SystemTime::now();
        let gzip = request(&[("accept-encoding", "gzip"), ("cookie", "secret")]);
        let varied = response(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
        );
        let policy = rules.storable(&gzip, &varied, now).unwrap();
        assert!(matches!(reuse(&policy, &gzip, now), Reuse::Fresh));
        let br = request(&[("accept-encoding", "br")]);
        assert!(matches!(reuse(&policy, &br, now), Reuse::Mismatch));
        let no_cache = request(&[("accept-encoding", "gzip"), ("cache-control", "no-cache")]);
        assert!(matches!(
            reuse(&policy, &no_cache, now),
            Reuse::Stale { .. }
        ));
        // Ignored (the default), a client's directives never reach the rules.
        let ignoring = Rules::new(0.0, Duration::ZERO, RequestDirectives::Ignore);
        let ignored = ignoring.view("/a?b".parse().unwrap(), "h.example", &no_cache.headers);
        assert!(!ignored.headers.contains_key("cache-control"));
        assert!(matches!(reuse(&policy, &ignored, now), Reuse::Fresh));
        assert!(ignoring.plain_request(&no_cache.headers));
        // The client's own conditions and ranges never reach the stored request.
        let conditional = request(&[("if-none-match", "\"x\""), ("range", "bytes=0-1")]);
        assert!(!conditional.headers.contains_key("if-none-match"));
        assert!(!conditional.headers.contains_key("range"));
        assert_eq!(conditional.headers["host"], "h.example");
        // Only Host and the varied headers are kept on disk.
        let kept = serde_json::to_string(&policy).unwrap();
        assert!(!kept.contains("secret"), "{kept}");
    }

    #[test]
    fn the_clock_agrees_with_the_rules() {
        let rules = Rules::new(0.1, Duration::from_secs(10), RequestDirectives::Honour);
        let stored = SystemTime::now();
        let date = httpdate::fmt_http_date(stored - Duration::from_secs(5));
        let date: &'static str = Box::leak(date.into_boxed_str());
        let responses = [
            response(200, &[("cache-control", "max-age=60")]),
            response(200, &[("cache-control", "max-age=60"), ("age", "50")]),
            response(200, &[("cache-control", "s-maxage=3, max-age=600")]),
            response(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("age", "100"),
                    ("etag", "\"1\""),
                ],
            ),
            response(200, &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]),
            response(200, &[("date", date), ("expires", date), ("etag", "\"1\"")]),
            response(
                200,
                &[("cache-control", "no-cache, max-age=60"), ("etag", "\"1\"")],
            ),
            response(
                200,
                &[
                    ("date", date),
                    ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
                ],
            ),
            response(404, &[]),
        ];
        for response in &responses {
            let policy = rules.storable(&request(&[]), response, stored).unwrap();
            let since = stored + Duration::from_millis(1500);
            let clock = Clock::new(&policy, since).unwrap();
            let ttl = policy.time_to_live(since).as_secs();
            for later in [0, 1, ttl.saturating_sub(1), ttl, ttl + 1, 86_400 * 400] {
                let now = since + Duration::from_secs(later);
                let fresh = matches!(reuse(&policy, &request(&[]), now), Reuse::Fresh);
                assert_eq!(
                    clock.is_fresh(now),
                    Some(fresh),
                    "{response:?} at +{later}s"
                );
                assert_eq!(clock.age(now), Some(policy.age(now)));
            }
            assert_eq!(clock.is_fresh(since - Duration::from_secs(1)), None);
            // Before the response arrived (a clock stepped back), age is not a line.
            assert!(Clock::new(&policy, stored - Duration::from_secs(2)).is_none());
        }
        assert!(rules.plain_request(&HeaderMap::new()));
        for name in ["cache-control", "pragma"] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("no-cache"));
            assert!(!rules.plain_request(&headers));
        }
    }

    #[test]
    fn stale_allowances() {
        let headers = |value: &'static str| response(200, &[("cache-control", value)]).headers;
        assert_eq!(
            stale_allowance(&headers(
                "max-age=1, stale-while-revalidate=30, stale-if-error=600"
            )),
            (
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(600))
            )
        );
        assert_eq!(stale_allowance(&headers("max-age=1")), (None, None));
        assert_eq!(
            stale_allowance(&headers("must-revalidate, stale-if-error=600")),
            (None, None)
        );
    }
}
