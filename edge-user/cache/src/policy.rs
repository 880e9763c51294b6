//! Freshness (RFC 9111): whether a response may be stored, whether a stored one may be reused,
//! and how to revalidate it. The rules are http-cache-semantics', given the response as
//! [`super::fields`] reads it (strict dates, the first Age, case-insensitive directives, a
//! targeted field in place of Cache-Control). This module adds what that crate leaves to the
//! cache: storing any final status with explicit freshness (RFC 9111 §3) and `must-understand`
//! (§5.2.2.3), the 304 that updates the response it validated (§4.3.3), serving stale when the
//! origin fails (§4.2.4) and the RFC 5861 extensions, negative caching of 404/410, whether a
//! client's own directives count, Set-Cookie, and which request headers are kept with a stored
//! response.

use std::time::{Duration, SystemTime};

pub use edge_config::http::RequestDirectives;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header, request, response};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};

use super::fields::{self, Directive};

/// The configured knobs of the rules.
#[derive(Debug, Clone)]
pub struct Rules {
    options: CacheOptions,
    negative_ttl: Duration,
    request_directives: RequestDirectives,
    /// Targeted cache fields (RFC 9213), in order of precedence.
    targets: Vec<HeaderName>,
    /// Whether responses with Set-Cookie are stored (and served with it).
    store_set_cookie: bool,
    /// How stale a response may be served when the origin fails, unless it says otherwise.
    stale_on_error: Duration,
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

/// Statuses http-cache-semantics stores; it refuses any other, even with explicit freshness.
const CRATE_STATUSES: [u16; 14] = [
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// Whether edge knows what `status` means (RFC 9110 §15), for `must-understand`.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
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
            targets: vec![fields::CDN_CACHE_CONTROL],
            store_set_cookie: false,
            stale_on_error: Duration::ZERO,
        }
    }

    /// The targeted cache fields that apply to this cache, first first (RFC 9213 §2.1).
    pub fn with_targets(mut self, targets: Vec<HeaderName>) -> Self {
        self.targets = targets;
        self
    }

    /// Whether responses that set cookies are stored and served with Set-Cookie.
    pub fn with_set_cookie(mut self, store: bool) -> Self {
        self.store_set_cookie = store;
        self
    }

    /// How stale a stored response may be served when the origin fails and the response
    /// neither forbids it nor has `stale-if-error`; zero turns it off.
    pub fn with_stale_on_error(mut self, cap: Duration) -> Self {
        self.stale_on_error = cap;
        self
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
        } else if parts.headers.contains_key(header::CACHE_CONTROL) {
            // Directive names are case-insensitive; http-cache-semantics reads them as written.
            let directives = fields::cache_control(&parts.headers);
            parts.headers.remove(header::CACHE_CONTROL);
            if let Some(value) = fields::format(&directives) {
                parts.headers.insert(header::CACHE_CONTROL, value);
            }
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
        if !self.store_set_cookie && response.headers.contains_key(header::SET_COOKIE) {
            return None;
        }
        let response_view = self.response_view(response)?;
        // Storability is judged on the whole request (credentials count); what is kept is less.
        let judged = CachePolicy::new_options(request, &response_view, now, self.options);
        let has_validator = response.headers.contains_key(header::ETAG)
            || response.headers.contains_key(header::LAST_MODIFIED);
        if !judged.is_storable() || (judged.time_to_live(now).is_zero() && !has_validator) {
            return None;
        }
        let kept = kept_request(request, &response.headers);
        Some(CachePolicy::new_options(
            &kept,
            &response_view,
            now,
            self.options,
        ))
    }

    /// The policy of a stored response after the origin answered its revalidation (`request`)
    /// with 304, given the stored headers as the 304 updated them (`updated`, RFC 9111 §4.3.4)
    /// and the 304's own; `None` when the 304 names a validator other than the stored one, so
    /// that it cannot be about this response. A 304 without validators is about the response
    /// the cache asked about (§4.3.3): only that one was named in the conditions.
    pub fn revalidated(
        &self,
        stored: &HeaderMap,
        status: StatusCode,
        updated: &HeaderMap,
        request: &request::Parts,
        not_modified: &response::Parts,
        now: SystemTime,
    ) -> Option<CachePolicy> {
        if !same_validators(stored, &not_modified.headers) {
            return None;
        }
        let (mut response, ()) = http::Response::new(()).into_parts();
        response.status = status;
        response.headers = updated.clone();
        if let Some(age) = not_modified.headers.get(header::AGE) {
            response.headers.insert(header::AGE, age.clone());
        }
        let view = self
            .response_view(&response)
            .unwrap_or_else(|| clone_parts(&response));
        let request = kept_request(request, updated);
        Some(CachePolicy::new_options(&request, &view, now, self.options))
    }

    /// Seconds a stale response may still be served while it is revalidated in the background,
    /// and when the origin fails; `None` when the response does not allow it. Failing, the
    /// origin is as good as unreachable (RFC 9111 §4.2.4): stale is served up to
    /// `stale-if-error`, else the configured cap, unless the response forbids serving stale.
    pub fn stale_allowance(&self, headers: &HeaderMap) -> (Option<Duration>, Option<Duration>) {
        let mut while_revalidate = None;
        let mut if_error = None;
        for (name, value) in self.governing(headers) {
            let seconds = value.and_then(|v| v.parse().ok()).map(Duration::from_secs);
            match name.as_str() {
                // RFC 9111 §4.2.4: these forbid serving stale at all; s-maxage includes
                // proxy-revalidate for a shared cache (§5.2.2.10).
                "must-revalidate" | "proxy-revalidate" | "no-cache" | "s-maxage" => {
                    return (None, None);
                }
                "stale-while-revalidate" => while_revalidate = seconds,
                "stale-if-error" => if_error = seconds,
                _ => {}
            }
        }
        let on_error = (!self.stale_on_error.is_zero()).then_some(self.stale_on_error);
        (while_revalidate, if_error.or(on_error))
    }

    /// The directives that govern `headers`: a targeted field's, else Cache-Control's.
    fn governing(&self, headers: &HeaderMap) -> Vec<Directive> {
        fields::governing(headers, &self.targets).0
    }

    /// The response as http-cache-semantics is to judge it, or `None` when it must not be
    /// stored whatever it says (`must-understand` with a status edge does not know).
    fn response_view(&self, response: &response::Parts) -> Option<response::Parts> {
        let mut view = clone_parts(response);
        let headers = &mut view.headers;
        let (mut directives, targeted) = fields::governing(&response.headers, &self.targets);
        if targeted {
            // RFC 9213 §2.1: the targeted field replaces Cache-Control and Expires.
            headers.remove(header::EXPIRES);
            headers.remove(header::PRAGMA);
        }
        let has = |directives: &[Directive], name: &str| directives.iter().any(|(n, _)| n == name);
        if has(&directives, "must-understand") {
            // RFC 9111 §5.2.2.3: no-store yields to must-understand for a known status only.
            if !understood(response.status) {
                return None;
            }
            directives.retain(|(name, _)| name != "no-store");
        }
        let explicit = headers.contains_key(header::EXPIRES)
            || ["max-age", "s-maxage"]
                .iter()
                .any(|name| has(&directives, name));
        let negative = matches!(response.status, StatusCode::NOT_FOUND | StatusCode::GONE);
        let negative = negative
            && !explicit
            && !["no-store", "no-cache", "private"]
                .iter()
                .any(|name| has(&directives, name));
        if negative && !self.negative_ttl.is_zero() {
            let max_age = self.negative_ttl.as_secs().max(1).to_string();
            directives.push(("max-age".into(), Some(max_age)));
        }
        headers.remove(header::CACHE_CONTROL);
        if let Some(value) = fields::format(&directives).filter(|_| !directives.is_empty()) {
            headers.insert(header::CACHE_CONTROL, value);
        }
        match fields::first_age(&response.headers) {
            Some(age) => headers.insert(header::AGE, age),
            None => headers.remove(header::AGE),
        };
        // An invalid Expires means already expired (RFC 9111 §5.3); an invalid Date, none.
        let expires: Vec<&HeaderValue> = headers.get_all(header::EXPIRES).iter().collect();
        if !expires.is_empty() {
            let valid = match expires.as_slice() {
                [one] => fields::http_date(one),
                _ => None,
            };
            let value = valid.map_or(HeaderValue::from_static("0"), http_date_value);
            headers.insert(header::EXPIRES, value);
        }
        match headers.get(header::DATE).and_then(fields::http_date) {
            Some(date) => headers.insert(header::DATE, http_date_value(date)),
            None => headers.remove(header::DATE),
        };
        if self.store_set_cookie {
            // http-cache-semantics would not reuse it without `public`; configured, it is.
            headers.remove(header::SET_COOKIE);
        }
        // RFC 9111 §3: any final status may be stored with explicit freshness. The crate
        // knows its list only, so it judges such a response as a 200.
        let status = response.status;
        let final_status = status.as_u16() >= 200
            && status != StatusCode::PARTIAL_CONTENT
            && status != StatusCode::NOT_MODIFIED;
        if final_status && explicit && !CRATE_STATUSES.contains(&status.as_u16()) {
            view.status = StatusCode::OK;
        }
        Some(view)
    }
}

/// Whether a 304's validators (if any) are those of the stored response: an ETag compared
/// weakly, else Last-Modified as a date. A 304 without them names nothing else.
fn same_validators(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let etag = |headers: &HeaderMap| {
        headers
            .get(header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(|tag| tag.trim().trim_start_matches("W/").to_string())
    };
    if let Some(new) = etag(not_modified) {
        return etag(stored).is_some_and(|old| old == new);
    }
    let modified = |headers: &HeaderMap| headers.get(header::LAST_MODIFIED).map(fields::http_date);
    match (modified(stored), modified(not_modified)) {
        (Some(old), Some(new)) => old == new,
        _ => true,
    }
}

fn http_date_value(date: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(date)).expect("an HTTP-date is a header value")
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

/// Whether a client's request says `only-if-cached` (RFC 9111 §5.2.1.7). Honoured whatever
/// `request_cache_control` says: it can only spare the origin.
pub fn only_if_cached(headers: &HeaderMap) -> bool {
    fields::cache_control(headers)
        .iter()
        .any(|(name, _)| name == "only-if-cached")
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
        let rules = Rules::new(0.0, Duration::ZERO, RequestDirectives::Honour);
        let headers = |value: &'static str| response(200, &[("cache-control", value)]).headers;
        assert_eq!(
            rules.stale_allowance(&headers(
                "max-age=1, stale-while-revalidate=30, stale-if-error=600"
            )),
            (
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(600))
            )
        );
        assert_eq!(rules.stale_allowance(&headers("max-age=1")), (None, None));
        // With a cap configured, a failing origin gets stale up to the cap, unless forbidden.
        let capped = rules.clone().with_stale_on_error(Duration::from_secs(60));
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            capped.stale_allowance(&headers("max-age=1")),
            (None, Some(Duration::from_secs(60)))
        );
        assert_eq!(
            capped.stale_allowance(&headers("max-age=1, stale-if-error=3600")),
            (None, hour)
        );
        for forbidding in [
            "must-revalidate, stale-if-error=600",
            "Must-Revalidate",
            "proxy-revalidate",
            "no-cache",
            "max-age=1, s-maxage=1",
        ] {
            assert_eq!(
                capped.stale_allowance(&headers(forbidding)),
                (None, None),
                "{forbidding}"
            );
        }
    }

    #[test]
    fn any_final_status_with_explicit_freshness() {
        let rules = Rules::new(0.0, Duration::ZERO, RequestDirectives::Honour);
        let now = SystemTime::now();
        let stored = |status: u16, headers: &[(&'static str, &'static str)]| {
            rules.storable(&request(&[]), &response(status, headers), now)
        };
        for status in [299, 400, 499, 500, 502, 503, 504, 599] {
            let policy = stored(status, &[("cache-control", "max-age=60")]).unwrap();
            assert_eq!(
                policy.time_to_live(now),
                Duration::from_secs(60),
                "{status}"
            );
            assert!(stored(status, &[]).is_none(), "{status}");
            assert!(stored(status, &[("etag", "\"1\"")]).is_none(), "{status}");
        }
        assert!(stored(206, &[("cache-control", "max-age=60")]).is_none());
        assert!(stored(304, &[("cache-control", "max-age=60")]).is_none());
        // must-understand: no-store yields for a known status, and nothing is stored otherwise.
        let understood = "max-age=60, no-store, must-understand";
        assert!(stored(200, &[("cache-control", understood)]).is_some());
        assert!(stored(503, &[("cache-control", understood)]).is_some());
        assert!(stored(599, &[("cache-control", understood)]).is_none());
        assert!(stored(200, &[("cache-control", "max-age=60, No-Store")]).is_none());
    }

    #[test]
    fn fields_are_read_strictly() {
        let rules = Rules::new(0.0, Duration::ZERO, RequestDirectives::Honour);
        let now = SystemTime::now();
        let ttl = |headers: &[(&'static str, &'static str)]| {
            rules
                .storable(&request(&[]), &response(200, headers), now)
                .map(|policy| policy.time_to_live(now).as_secs())
        };
        assert_eq!(ttl(&[("cache-control", "MAX-AGE=60")]), Some(60));
        assert_eq!(
            ttl(&[("cache-control", "max-age=60"), ("age", "10, 50")]),
            Some(50)
        );
        let future = "Thu, 01 Jan 2099 00:00:00 GMT";
        assert!(ttl(&[("expires", future)]).unwrap() > 0);
        assert!(ttl(&[("expires", "Thursday, 01-Jan-32 00:00:00 GMT")]).unwrap() > 0);
        assert!(ttl(&[("expires", "Thu Jan  1 00:00:00 2099")]).unwrap() > 0);
        // Double spaces: not a date, so expired, and without a validator not stored.
        assert!(ttl(&[("expires", "Thu, 01 Jan 2099  00:00:00 GMT")]).is_none());
        assert_eq!(
            ttl(&[
                ("expires", "Thu, 01 Jan 2099  00:00:00 GMT"),
                ("etag", "\"1\"")
            ]),
            Some(0)
        );
        // CDN-Cache-Control governs and replaces Cache-Control and Expires.
        assert_eq!(
            ttl(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600")
            ]),
            Some(600)
        );
        assert!(
            ttl(&[
                ("cache-control", "max-age=600"),
                ("expires", future),
                ("cdn-cache-control", "private")
            ])
            .is_none()
        );
        assert_eq!(
            ttl(&[
                ("cache-control", "max-age=600"),
                ("cdn-cache-control", "max-age=\"5\"")
            ]),
            Some(600)
        );
        // Set-Cookie: not stored unless configured, then stored with it.
        let cookie = [("cache-control", "max-age=60"), ("set-cookie", "a=1")];
        assert_eq!(ttl(&cookie), None);
        let storing = rules.clone().with_set_cookie(true);
        let policy = storing
            .storable(&request(&[]), &response(200, &cookie), now)
            .unwrap();
        assert_eq!(policy.time_to_live(now).as_secs(), 60);
    }

    #[test]
    fn a_304_updates_the_response_it_validated() {
        let rules = Rules::new(0.0, Duration::ZERO, RequestDirectives::Honour);
        let now = SystemTime::now();
        let stored = response(200, &[("cache-control", "max-age=0"), ("etag", "\"1\"")]);
        let updated = response(200, &[("cache-control", "max-age=60"), ("etag", "\"1\"")]);
        let policy = |not_modified: &[(&'static str, &'static str)]| {
            rules.revalidated(
                &stored.headers,
                StatusCode::OK,
                &updated.headers,
                &request(&[]),
                &response(304, not_modified),
                now,
            )
        };
        // No validator in the 304: it is about the response the cache asked about.
        let fresh = policy(&[("cache-control", "max-age=60")]).unwrap();
        assert_eq!(fresh.time_to_live(now), Duration::from_secs(60));
        assert!(policy(&[("etag", "W/\"1\"")]).is_some());
        assert!(policy(&[("etag", "\"2\"")]).is_none());
        let aged = policy(&[("age", "20")]).unwrap();
        assert_eq!(aged.time_to_live(now), Duration::from_secs(40));
    }
}
