//! The admin endpoint, on its own address (loopback by default, never the service address):
//! `POST /purge?url=<URL>` removes every stored variant of a URL. `edge purge` is its client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{Body, respond};
use crate::cache::{Cache, key::CacheKey};

pub fn handle(cache: &Cache, request: &Request<Incoming>) -> Response<Body> {
    if request.uri().path() != "/purge" {
        return respond::plain(
            StatusCode::NOT_FOUND,
            "unknown admin path; try POST /purge?url=URL",
        );
    }
    if request.method() != Method::POST {
        return respond::plain(StatusCode::METHOD_NOT_ALLOWED, "purge with POST");
    }
    let url = request.uri().query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "url")
            .map(|(_, url)| url.into_owned())
    });
    let Some(url) = url else {
        return respond::plain(StatusCode::BAD_REQUEST, "missing ?url=");
    };
    match CacheKey::parse_url(&url) {
        Ok(key) => {
            let purged = cache.purge(&key);
            tracing::info!(%key, purged, "purge");
            respond::plain(
                StatusCode::OK,
                &format!("purged {purged} object(s) for {key}"),
            )
        }
        Err(error) => respond::plain(StatusCode::BAD_REQUEST, &format!("{url}: {error}")),
    }
}

/// Where a local client reaches a daemon listening on `listen`: loopback for a wildcard.
pub fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// Asks the daemon listening on `admin` to purge `url`; returns its answer.
pub async fn purge(admin: SocketAddr, url: &str) -> Result<String> {
    let admin = reachable(admin);
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("url", url)
        .finish();
    let request = Request::post(format!("http://{admin}/purge?{query}"))
        .body(Empty::<Bytes>::new())
        .context("building the purge request")?;
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let response = client
        .request(request)
        .await
        .with_context(|| format!("asking the daemon at {admin} (is `edge run` up?)"))?;
    let status = response.status();
    let text = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    Ok(text)
}
