//! Which headers cross the proxy, in both directions. A request to an origin is built in one
//! order: the client's hop-by-hop headers (the standard ones and those its Connection names) go
//! first, then what may not pass (framing, forwarding claims), and what edge asserts (Host, Via,
//! X-Forwarded-*) is set last, so no client header can remove or forge it. Framing is never a
//! client's: [`super::origin::OriginClient::send`] sets it for the body edge actually sends.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The client headers a cache fill or revalidation sends to the origin: what content
/// negotiation, credentials (which the caching rules judge) and CORS need. Nothing else of the
/// client's reaches an origin whose answer is shared by every client; in particular no framing,
/// no conditions or ranges (the cache answers those itself from the whole object) and no claim
/// about forwarding. Cache-Control and Pragma pass only while the rules honour them
/// ([`crate::cache::policy::Rules::view`] drops them otherwise).
const CACHE_FETCH: [HeaderName; 11] = [
    header::ACCEPT,
    header::ACCEPT_CHARSET,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::AUTHORIZATION,
    header::CACHE_CONTROL,
    header::COOKIE,
    header::ORIGIN,
    header::PRAGMA,
    header::REFERER,
    header::USER_AGENT,
];

/// What edge says about the client and itself: a client's own values are never passed on.
const FORWARDING: [HeaderName; 4] = [
    HeaderName::from_static("forwarded"),
    header::VIA,
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-for"),
];

/// Edge's name in Via (RFC 9110 §7.6.3).
const VIA: HeaderValue = HeaderValue::from_static("1.1 edge");

/// Removes hop-by-hop headers, including those the Connection header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// The client's headers for a cache fill: the allow-list and the configured `extra` names
/// (`[http] forward_request_headers`), less what its Connection names.
pub fn for_cache_fetch(client: &HeaderMap, extra: &[HeaderName]) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    let mut kept = HeaderMap::new();
    for name in CACHE_FETCH.iter().chain(extra) {
        for value in headers.get_all(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The client's headers for a request handed through uncached: every end-to-end header but
/// framing (Content-Length; Transfer-Encoding is hop-by-hop), Host and forwarding claims.
pub fn for_pass(client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::HOST);
    for name in &FORWARDING {
        headers.remove(name);
    }
    let claims: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-forwarded-"))
        .cloned()
        .collect();
    for name in claims {
        headers.remove(name);
    }
    headers
}

/// Sets, last, what edge asserts to the origin: the site's name as Host, itself in Via, and
/// what it knows of the client (its address; plain HTTP; the Host it asked for), replacing
/// whatever the client sent under those names.
pub fn set_edge_headers(headers: &mut HeaderMap, host: &str, client: IpAddr) {
    let Ok(host) = HeaderValue::from_str(host) else {
        return;
    };
    headers.insert(header::VIA, VIA);
    // An address's text is always a valid header value.
    if let Ok(client) = HeaderValue::try_from(client.to_canonical().to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), client);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    headers.insert(header::HOST, host);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn removes_connection_scoped_headers() {
        let mut headers = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/css"),
        ]);
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn cache_fetches_send_only_the_allow_list() {
        let client = map(&[
            ("host", "evil.example"),
            ("content-length", "44"),
            ("transfer-encoding", "chunked"),
            ("x-smuggle", "GET /etc/passwd HTTP/1.1"),
            ("x-forwarded-for", "192.0.2.99"),
            ("range", "bytes=0-1"),
            ("accept-encoding", "gzip"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("connection", "user-agent"),
            ("user-agent", "curl"),
        ]);
        let sent = for_cache_fetch(&client, &[]);
        assert_eq!(sent.len(), 3, "{sent:?}");
        let extra = [HeaderName::from_static("x-smuggle")];
        assert_eq!(for_cache_fetch(&client, &extra).len(), 4);
        assert_eq!(sent["accept-encoding"], "gzip");
        assert_eq!(sent.get_all("cookie").iter().count(), 2);
    }

    #[test]
    fn edge_headers_are_set_after_the_client_ones_go() {
        let client = map(&[
            ("connection", "host, x-forwarded-host, content-length"),
            ("host", "a.example"),
            ("content-length", "5"),
            ("x-forwarded-for", "192.0.2.99"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "1"),
            ("forwarded", "for=192.0.2.99"),
            ("via", "1.1 spoof"),
            ("x-app", "kept"),
        ]);
        let mut sent = for_pass(&client);
        assert_eq!(sent.len(), 1, "{sent:?}");
        set_edge_headers(&mut sent, "a.example", "::ffff:198.18.0.1".parse().unwrap());
        assert_eq!(sent["host"], "a.example");
        assert_eq!(sent["x-forwarded-for"], "198.18.0.1");
        assert_eq!(sent["x-forwarded-host"], "a.example");
        assert_eq!(sent["x-forwarded-proto"], "http");
        assert_eq!(sent["via"], "1.1 edge");
        assert_eq!(sent["x-app"], "kept");
        assert_eq!(sent.len(), 6);
    }
}
