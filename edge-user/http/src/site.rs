//! Sites: the hostnames the PoP serves, which of their paths are static (cached), and the origin
//! a request for them goes to.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use edge_config::{
    Config,
    http::{OriginScheme, PathRule},
};
use edge_steer::SelectionsWatch;

use crate::{
    counts::OriginRequests,
    origin::{OriginClient, OriginRoots},
};

#[derive(Debug)]
pub struct Site {
    pub host: String,
    /// The origin pool's name and its members' HTTP addresses, in configured order.
    pool: String,
    origins: Vec<SocketAddr>,
    selections: SelectionsWatch,
    /// `None`: the whole site is static.
    static_paths: Option<Vec<PathRule>>,
    /// Whether the site has a certificate (is served over TLS).
    pub https: bool,
    /// The site's own client when its origins speak TLS; `None`: the proxy's plain one.
    pub tls_origin: Option<OriginClient>,
}

impl Site {
    /// Whether responses for `path` (normalised, without the query) may be cached.
    pub fn is_static(&self, path: &str) -> bool {
        self.static_paths
            .as_ref()
            .is_none_or(|rules| rules.iter().any(|rule| rule.matches(path)))
    }

    /// The origin that misses and pass-through requests go to: the one steering answers the
    /// pool's names with (the least-loaded healthy origin), else the pool's first member.
    pub fn origin(&self) -> SocketAddr {
        let selected = self.selections.borrow().first(&self.pool);
        selected
            .and_then(|ip| self.origins.iter().find(|origin| origin.ip() == ip))
            .copied()
            .unwrap_or(self.origins[0])
    }
}

/// The sites of the `[http]` config, by host.
#[derive(Debug, Default)]
pub struct Sites(HashMap<String, Arc<Site>>);

impl Sites {
    /// Builds the sites of a config that [`Config::parse`] accepted (pools exist and have
    /// members, rules parse); their origins follow `selections`. `https` origins are verified
    /// against `roots`; an error names the site's field and why.
    pub fn from_config(
        config: &Config,
        selections: &SelectionsWatch,
        roots: Option<&OriginRoots>,
        requests: &Arc<OriginRequests>,
    ) -> Result<Self, (String, String)> {
        let Some(http) = &config.http else {
            return Ok(Self::default());
        };
        let mut tls_origins = Vec::with_capacity(http.sites.len());
        for (s, site) in http.sites.iter().enumerate() {
            tls_origins.push(match (site.origin_scheme, roots) {
                (OriginScheme::Https, Some(roots)) => Some(
                    OriginClient::tls(
                        &site.host,
                        roots.clone(),
                        http.origin_connect_timeout,
                        http.origin_read_timeout,
                        requests.clone(),
                    )
                    .map_err(|reason| (format!("http.sites[{s}].host"), reason))?,
                ),
                _ => None,
            });
        }
        Ok(Self(
            http.sites
                .iter()
                .zip(tls_origins)
                .filter_map(|(site, tls_origin)| {
                    let pool = config.pool(&site.pool)?;
                    let origins = pool
                        .members
                        .iter()
                        .map(|member| SocketAddr::new(member.address, member.http_port))
                        .collect();
                    let static_paths = site.static_paths.as_ref().map(|rules| {
                        rules
                            .iter()
                            .filter_map(|rule| PathRule::parse(rule).ok())
                            .collect()
                    });
                    let site = Site {
                        host: site.host.clone(),
                        pool: pool.name.clone(),
                        origins,
                        selections: selections.clone(),
                        static_paths,
                        https: site.certificate.is_some(),
                        tls_origin,
                    };
                    Some((site.host.clone(), Arc::new(site)))
                })
                .collect(),
        ))
    }

    /// The site for a lower-case host without port.
    pub fn get(&self, host: &str) -> Option<&Arc<Site>> {
        self.0.get(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match() {
        assert_eq!(
            PathRule::parse("/assets/"),
            Ok(PathRule::Prefix("/assets/".into()))
        );
        assert_eq!(
            PathRule::parse("*.css"),
            Ok(PathRule::Suffix(".css".into()))
        );
        for bad in ["", "*", "assets/", "*/x", "**.css"] {
            assert!(PathRule::parse(bad).is_err(), "{bad:?}");
        }
        let (_, selections) = tokio::sync::watch::channel(Default::default());
        let site = Site {
            host: "www.example.com".into(),
            pool: "shop".into(),
            origins: vec!["192.0.2.1:80".parse().unwrap()],
            selections,
            static_paths: Some(vec![
                PathRule::parse("/assets/").unwrap(),
                PathRule::parse("*.css").unwrap(),
            ]),
            https: false,
            tls_origin: None,
        };
        assert!(site.is_static("/assets/logo.png"));
        assert!(site.is_static("/theme/main.css"));
        assert!(!site.is_static("/cart"));
        assert!(!site.is_static("/assets"));
        let all = Site {
            static_paths: None,
            ..site
        };
        assert!(all.is_static("/cart"));
    }

    #[test]
    fn origin_follows_the_selection() {
        let mut selections = edge_steer::Selections::default();
        let (sender, receiver) =
            tokio::sync::watch::channel(std::sync::Arc::new(selections.clone()));
        let site = Site {
            host: "www.example.com".into(),
            pool: "shop".into(),
            origins: vec![
                "192.0.2.1:80".parse().unwrap(),
                "192.0.2.2:8080".parse().unwrap(),
            ],
            selections: receiver,
            static_paths: None,
            https: false,
            tls_origin: None,
        };
        assert_eq!(site.origin(), "192.0.2.1:80".parse().unwrap());
        selections
            .addresses
            .insert("shop".into(), vec!["192.0.2.2".parse().unwrap()]);
        sender.send_replace(std::sync::Arc::new(selections));
        assert_eq!(site.origin(), "192.0.2.2:8080".parse().unwrap());
    }
}
