//! One request's way through the PoP: Host selects the site; GET and HEAD of static paths go
//! through the cache (hit, stale, revalidation, coalesced miss); CONNECT and TRACE are answered
//! here; everything else is handed through to the origin, and unsafe methods invalidate what is
//! stored for their target.

use std::{
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header, request, response,
};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use tracing::warn;

use super::{
    headers::{self, strip_hop_by_hop},
    origin::{OriginClient, OriginError},
    respond::{self, Body, CACHE_STATUS, CacheStatus},
    site::{Site, Sites},
};
use edge_cache::{
    Cache, Lookup,
    flight::{self, Flight, Join, Lead, Partial},
    key::CacheKey,
    policy::{self, Reuse},
    store::{Meta, Object},
};

/// How often a request looks in the cache again after another request's fetch settled (it may
/// have stored a variant this request does not match).
const LOOKUPS: usize = 3;

/// Everything a request needs: the sites, the cache and the origin client.
pub struct Proxy {
    pub sites: Sites,
    pub cache: Arc<Cache>,
    pub origin: OriginClient,
    /// Client headers sent on cache fills besides the allow-list.
    pub forward_request_headers: Vec<http::HeaderName>,
}

/// What a stale object allows when it cannot be revalidated in time.
#[derive(Clone)]
struct Stale {
    object: Arc<Object>,
    revalidation: Box<request::Parts>,
}

/// How a fetch led by this request ended.
enum Led {
    Revalidated(Arc<Object>),
    Streaming(Arc<Partial>),
    /// Not storable: the origin's response, to hand through.
    Pass(response::Parts, Incoming),
    Failed(StatusCode),
}

impl Proxy {
    /// The answer to `request` when it is a fresh hit that needs neither RFC 9111 evaluation
    /// nor waiting (see [`Cache::fresh_hit`]); `None` leaves it to [`Self::handle`]. Answered
    /// here, a hit costs no task state of the whole request path.
    pub fn fresh_hit(&self, request: &Request<Incoming>) -> Option<Response<Body>> {
        let method = request.method();
        if *method != Method::GET && *method != Method::HEAD || !request.body().is_end_stream() {
            return None;
        }
        let (site, key) = self.target(request).ok()?;
        if !site.is_static(key.path()) {
            return None;
        }
        let now = SystemTime::now();
        let object = self.cache.fresh_hit(&key, request.headers(), now)?;
        let body = object.body().ok()?;
        Some(respond::from_object(
            method,
            request.headers(),
            &object,
            body,
            CacheStatus::Hit,
            now,
        ))
    }

    /// The client for `site`'s origins: its own TLS one, or the shared plain one.
    fn client<'a>(&'a self, site: &'a Site) -> &'a OriginClient {
        site.tls_origin.as_ref().unwrap_or(&self.origin)
    }

    /// Answers `request` from `client`.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        client: IpAddr,
    ) -> Response<Body> {
        let method = request.method().clone();
        if method == Method::CONNECT || method == Method::TRACE {
            // A tunnel out of the PoP, or the client's headers echoed back: neither is a CDN's.
            return respond::method_not_allowed();
        }
        let (site, key) = match self.target(&request) {
            Ok(target) => target,
            Err((status, reason)) => return respond::plain(status, &reason),
        };
        if (method == Method::GET || method == Method::HEAD) && site.is_static(key.path()) {
            if !request.body().is_end_stream() {
                // The answer is shared by every client, so the body could not reach the origin;
                // refused rather than read and thrown away. Closing leaves it unread.
                return respond::closing(
                    StatusCode::BAD_REQUEST,
                    "a request for cached content takes no body",
                );
            }
            let (parts, _) = request.into_parts();
            return self
                .cached(&site, &key, &method, &parts.headers, client)
                .await;
        }
        let unsafe_method = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let response = self.pass(&site, &key, request, client).await;
        // RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target.
        if unsafe_method && (response.status().is_success() || response.status().is_redirection()) {
            self.cache.purge(&key);
        }
        response
    }

    /// The site and cache key `request` addresses, or the status and reason of the refusal.
    fn target(
        &self,
        request: &Request<Incoming>,
    ) -> Result<(Arc<Site>, CacheKey), (StatusCode, String)> {
        let refuse = |status, reason: &str| Err((status, reason.to_string()));
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return refuse(StatusCode::BAD_REQUEST, "more than one Host");
        }
        let host = match host.map(HeaderValue::to_str) {
            Some(Err(_)) => return refuse(StatusCode::BAD_REQUEST, "malformed Host"),
            Some(Ok(host)) => Some(host),
            None => None,
        };
        let key = match CacheKey::from_request(host, request.uri()) {
            Ok(key) => key,
            Err(error) => return refuse(StatusCode::BAD_REQUEST, &error.to_string()),
        };
        match self.sites.get(key.host()) {
            Some(site) => Ok((site.clone(), key)),
            None => refuse(StatusCode::MISDIRECTED_REQUEST, "no such site here"),
        }
    }

    /// Hands a request through to the origin, uncached, with its body.
    async fn pass(
        &self,
        site: &Site,
        key: &CacheKey,
        request: Request<Incoming>,
        client: IpAddr,
    ) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        parts.uri = key.uri();
        parts.headers = headers::for_pass(&parts.headers);
        headers::set_edge_headers(&mut parts.headers, key.host(), client);
        let body = body.map_err(std::io::Error::other).boxed_unsync();
        match self.client(site).send(site.origin(), parts, body).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                self.handed_through(parts, body, CacheStatus::Pass)
            }
            Err(error) => origin_failed(error.status()),
        }
    }

    /// Answers a GET or HEAD of static content. The origin, when asked, gets the view: the
    /// request as the cache makes it from the allow-listed client headers, with edge's own.
    async fn cached(
        self: &Arc<Self>,
        site: &Arc<Site>,
        key: &CacheKey,
        method: &Method,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Response<Body> {
        let mut view = self.cache.rules.view(
            key.uri(),
            key.host(),
            &headers::for_cache_fetch(headers, &self.forward_request_headers),
        );
        headers::set_edge_headers(&mut view.headers, key.host(), client);
        let only_if_cached = policy::only_if_cached(headers);
        for _ in 0..LOOKUPS {
            let now = SystemTime::now();
            let stale = match self.cache.lookup(key, &view, now) {
                Lookup::Fresh(object) => match object.body() {
                    Ok(body) => {
                        return respond::from_object(
                            method,
                            headers,
                            &object,
                            body,
                            CacheStatus::Hit,
                            now,
                        );
                    }
                    Err(error) => {
                        warn!(%key, %error, "stored object unreadable; fetching again");
                        self.cache.remove(&object);
                        None
                    }
                },
                Lookup::Stale(object, revalidation) => {
                    let (while_revalidate, _) =
                        self.cache.rules.stale_allowance(&object.meta.headers);
                    let stale = Stale {
                        object,
                        revalidation,
                    };
                    if within(while_revalidate, &stale.object, now)
                        && let Ok(body) = stale.object.body()
                    {
                        self.revalidate_in_background(site, key, &view, &stale);
                        return respond::from_object(
                            method,
                            headers,
                            &stale.object,
                            body,
                            CacheStatus::Stale,
                            now,
                        );
                    }
                    Some(stale)
                }
                Lookup::Miss => None,
            };
            if only_if_cached {
                // RFC 9111 §5.2.1.7: nothing usable is stored, and the origin is not asked.
                return respond::plain(StatusCode::GATEWAY_TIMEOUT, "only-if-cached: not stored");
            }
            let led = match self.cache.flights.join(key) {
                Join::Lead(lead) => self.lead(lead, site, key, &view, stale.clone()).await,
                // A joined request takes the response only if it may reuse it (RFC 9111 §4):
                // one that is stale on arrival (no-cache, no freshness) answers its own
                // request alone.
                Join::Follow(flight) => match flight::settled(flight).await {
                    Flight::Streaming(partial)
                        if matches!(
                            policy::reuse(&partial.meta.policy, &view, SystemTime::now()),
                            Reuse::Fresh
                        ) =>
                    {
                        Led::Streaming(partial)
                    }
                    Flight::Stored | Flight::Pending => continue,
                    Flight::Streaming(_) | Flight::Pass => break,
                    Flight::Failed(status) => Led::Failed(status),
                },
            };
            return match led {
                Led::Revalidated(object) => match object.body() {
                    Ok(body) => respond::from_object(
                        method,
                        headers,
                        &object,
                        body,
                        CacheStatus::Revalidated,
                        now,
                    ),
                    Err(_) => origin_failed(StatusCode::BAD_GATEWAY),
                },
                Led::Streaming(partial) => self.stream(method, headers, partial).await,
                Led::Pass(parts, body) => {
                    let mut response = self.handed_through(parts, body, CacheStatus::Miss);
                    if *method == Method::HEAD {
                        *response.body_mut() = respond::full(Bytes::new());
                    }
                    response
                }
                Led::Failed(status) => match stale {
                    Some(stale) if self.serves_on_error(&stale.object, now) => {
                        match stale.object.body() {
                            Ok(body) => {
                                self.cache
                                    .counters
                                    .stale_on_error
                                    .fetch_add(1, Ordering::Relaxed);
                                respond::from_object(
                                    method,
                                    headers,
                                    &stale.object,
                                    body,
                                    CacheStatus::Stale,
                                    now,
                                )
                            }
                            Err(_) => origin_failed(status),
                        }
                    }
                    _ => origin_failed(status),
                },
            };
        }
        // Not coalescable (not storable, or another Vary variant): fetch alone.
        let mut parts = view;
        parts.method = method.clone();
        match self
            .client(site)
            .send(site.origin(), parts, respond::full(Bytes::new()))
            .await
        {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                self.handed_through(parts, body, CacheStatus::Miss)
            }
            Err(error) => origin_failed(error.status()),
        }
    }

    /// Fetches for `key` on behalf of every request that joins the flight: a revalidation when
    /// `stale` is set, else a plain GET.
    async fn lead(
        self: &Arc<Self>,
        lead: Lead,
        site: &Site,
        key: &CacheKey,
        view: &request::Parts,
        stale: Option<Stale>,
    ) -> Led {
        let parts = match &stale {
            Some(stale) => clone_request(&stale.revalidation),
            None => clone_request(view),
        };
        let sent = clone_request(&parts);
        let response = match self
            .client(site)
            .send(site.origin(), parts, respond::full(Bytes::new()))
            .await
        {
            Ok(response) => response,
            Err(error) => return failed(lead, error),
        };
        let mut now = SystemTime::now();
        let (mut parts, mut body) = response.into_parts();
        if let Some(stale) = &stale {
            if parts.status == StatusCode::NOT_MODIFIED {
                match self.refreshed(stale, &sent, &parts, now).await {
                    Some(object) => {
                        lead.land(Flight::Stored);
                        return Led::Revalidated(object);
                    }
                    // A 304 naming another validator says nothing of the stored response:
                    // ask again, without conditions.
                    None => {
                        let response = match self
                            .client(site)
                            .send(
                                site.origin(),
                                clone_request(view),
                                respond::full(Bytes::new()),
                            )
                            .await
                        {
                            Ok(response) => response,
                            Err(error) => return failed(lead, error),
                        };
                        now = SystemTime::now();
                        (parts, body) = response.into_parts();
                    }
                }
            } else if parts.status.is_server_error() && self.serves_on_error(&stale.object, now) {
                lead.land(Flight::Failed(parts.status));
                return Led::Failed(parts.status);
            }
        }
        let too_large =
            content_length(&parts.headers).is_some_and(|len| len > self.cache.max_object_size);
        let Some(policy) = self
            .cache
            .rules
            .storable(view, &parts, now)
            .filter(|_| !too_large)
        else {
            lead.land(Flight::Pass);
            return Led::Pass(parts, body);
        };
        let id = key.object_id(policy::vary_names(&parts.headers), &view.headers);
        let writer = match self.cache.writer(id) {
            Ok(writer) => writer,
            Err(error) => {
                warn!(%key, %error, "cannot write to the cache; passing through");
                lead.land(Flight::Pass);
                return Led::Pass(parts, body);
            }
        };
        let length = content_length(&parts.headers);
        let meta = Meta {
            id: String::new(),
            key: key.clone(),
            status: parts.status,
            headers: stored_headers(&parts.headers),
            fresh_until: now + policy.time_to_live(now),
            policy,
        };
        let body = self.origin.body(body);
        Led::Streaming(flight::fill(
            self.cache.clone(),
            lead,
            writer,
            meta,
            length,
            body,
        ))
    }

    /// The origin answered a revalidation with 304: store the updated head (the body stays
    /// as it is) and answer from it; `None` when the 304 is about another response.
    async fn refreshed(
        &self,
        stale: &Stale,
        sent: &request::Parts,
        response: &response::Parts,
        now: SystemTime,
    ) -> Option<Arc<Object>> {
        let stored = &stale.object.meta;
        let mut meta = stored.clone();
        merge_not_modified(&mut meta.headers, &response.headers);
        let Some(policy) = self.cache.rules.revalidated(
            &stored.headers,
            stored.status,
            &meta.headers,
            sent,
            response,
            now,
        ) else {
            warn!(key = %stored.key, "304 names another validator; fetching again");
            return None;
        };
        meta.fresh_until = now + policy.time_to_live(now);
        meta.policy = policy;
        match self.cache.refresh(stale.object.clone(), meta).await {
            Ok(object) => Some(object),
            Err(error) => {
                // The origin confirmed the body: it is served, and revalidated again next time.
                warn!(key = %stored.key, %error, "cannot store the revalidated response");
                Some(stale.object.clone())
            }
        }
    }

    /// stale-while-revalidate: the first request to see the object stale revalidates it while
    /// it and the others are served stale.
    fn revalidate_in_background(
        self: &Arc<Self>,
        site: &Arc<Site>,
        key: &CacheKey,
        view: &request::Parts,
        stale: &Stale,
    ) {
        let Join::Lead(lead) = self.cache.flights.join(key) else {
            return;
        };
        let (proxy, site, key, view, stale) = (
            self.clone(),
            site.clone(),
            key.clone(),
            clone_request(view),
            stale.clone(),
        );
        tokio::spawn(async move {
            proxy.lead(lead, &site, &key, &view, Some(stale)).await;
        });
    }

    /// Answers from a response being stored. Conditional and range requests wait for the
    /// whole object and are answered from it; the others (and those whose object was not
    /// stored after all) stream the whole body as it arrives.
    async fn stream(
        &self,
        method: &Method,
        headers: &HeaderMap,
        partial: Arc<Partial>,
    ) -> Response<Body> {
        let conditional = [
            header::RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ]
        .iter()
        .any(|name| headers.contains_key(name));
        let now = SystemTime::now();
        if conditional && let Some(object) = partial.complete().await {
            return match object.body() {
                Ok(body) => {
                    respond::from_object(method, headers, &object, body, CacheStatus::Miss, now)
                }
                Err(_) => origin_failed(StatusCode::BAD_GATEWAY),
            };
        }
        let mut response_headers = partial.meta.headers.clone();
        response_headers.insert(
            header::AGE,
            HeaderValue::from(partial.meta.policy.age(now).as_secs()),
        );
        response_headers.insert(CACHE_STATUS, CacheStatus::Miss.value());
        if let Some(length) = partial.content_length {
            response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        let status = partial.meta.status;
        let body = if *method == Method::HEAD {
            respond::full(Bytes::new())
        } else {
            StreamBody::new(partial.body().map_ok(Frame::data)).boxed_unsync()
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = response_headers;
        response
    }

    /// Whether `object` may be served stale because the origin failed.
    fn serves_on_error(&self, object: &Object, now: SystemTime) -> bool {
        let (_, if_error) = self.cache.rules.stale_allowance(&object.meta.headers);
        within(if_error, object, now)
    }

    /// An origin response handed to the client as it arrives.
    fn handed_through(
        &self,
        mut parts: response::Parts,
        body: Incoming,
        status: CacheStatus,
    ) -> Response<Body> {
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(CACHE_STATUS, status.value());
        let body = StreamBody::new(self.origin.body(body).map_ok(Frame::data)).boxed_unsync();
        Response::from_parts(parts, body)
    }
}

fn failed(lead: Lead, error: OriginError) -> Led {
    lead.land(Flight::Failed(error.status()));
    Led::Failed(error.status())
}

fn origin_failed(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("origin failed");
    respond::plain(status, reason)
}

/// Whether `object` is stale by no more than `allowance`.
fn within(allowance: Option<Duration>, object: &Object, now: SystemTime) -> bool {
    let staleness = now
        .duration_since(object.meta.fresh_until)
        .unwrap_or_default();
    allowance.is_some_and(|allowance| staleness <= allowance)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The origin's headers as they are stored: end to end, and without Age, which is computed
/// when served.
fn stored_headers(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AGE);
    headers
}

/// RFC 9111 §4.3.4: a 304's headers replace the stored ones, except those describing the body.
fn merge_not_modified(stored: &mut HeaderMap, fresh: &HeaderMap) {
    let mut fresh = stored_headers(fresh);
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
    ] {
        fresh.remove(name);
    }
    for name in fresh.keys() {
        stored.remove(name);
    }
    for (name, value) in &fresh {
        stored.append(name.clone(), value.clone());
    }
}

fn clone_request(parts: &request::Parts) -> request::Parts {
    let (mut clone, ()) = Request::new(()).into_parts();
    clone.method = parts.method.clone();
    clone.uri = parts.uri.clone();
    clone.headers = parts.headers.clone();
    clone
}
