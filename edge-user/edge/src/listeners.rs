//! The daemon's own listeners, and their part of a reload: the userspace DNS server (`[dns]`:
//! its addresses and TCP limits) and the admin server (`admin.listen`, and the status page's
//! `admin.history_interval`). A reload binds what is new first ([`Listeners::prepare`]): if any of
//! it cannot be bound, the reload is refused and nothing changed. Once the rest of the reload has
//! succeeded, [`Listeners::apply`] swaps the new sockets in and closes the ones no longer listed.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Result;
use edge_config::Config;
use edge_dns::{
    server::{Prepared, Server, ZonesWatch},
    updates::Requests,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::info;

use crate::{
    admin::{self, Controls},
    history::{self, History},
    metrics::Sources,
};

/// The running listeners.
pub struct Listeners {
    pub dns: Server,
    admin: AbortOnDrop,
    admin_listen: SocketAddr,
    controls: Controls,
    _sampler: AbortOnDrop,
}

/// What a reload binds before it changes anything; dropped, it closes again.
pub struct Rebind {
    dns: Prepared,
    /// The admin server's new address, bound; `None` when it stays.
    admin: Option<(SocketAddr, TcpListener)>,
    history_interval: std::time::Duration,
}

impl Listeners {
    /// Binds the admin address and the DNS server's of `config`, and starts serving; the DNS
    /// server hands authenticated updates to `updates`.
    pub async fn start(
        config: &Config,
        sources: Sources,
        zones: &ZonesWatch,
        updates: Requests,
    ) -> Result<Self> {
        let listener = admin::bind(config.admin.listen).await?;
        let history = Arc::new(History::new(config.admin.history_interval));
        let controls = Controls {
            sources: sources.clone(),
            history: history.clone(),
        };
        let dns = Server::start(&config.dns, zones, &sources.dns, Some(updates))?;
        Ok(Self {
            dns,
            admin: AbortOnDrop(tokio::spawn(admin::serve(listener, controls.clone()))),
            admin_listen: config.admin.listen,
            controls,
            _sampler: AbortOnDrop(tokio::spawn(history::sample(history, sources))),
        })
    }

    /// Binds the addresses `config` adds (DNS, admin) without changing what runs.
    pub async fn prepare(&self, config: &Config) -> Result<Rebind> {
        let dns = self.dns.prepare(&config.dns)?;
        let admin = if config.admin.listen == self.admin_listen {
            None
        } else {
            Some((config.admin.listen, admin::bind(config.admin.listen).await?))
        };
        Ok(Rebind {
            dns,
            admin,
            history_interval: config.admin.history_interval,
        })
    }

    /// Serves what `rebind` prepared: new DNS addresses and limits, the admin server on its new
    /// address (the old one closes), the history's new interval.
    pub fn apply(&mut self, rebind: Rebind) {
        self.dns.apply(rebind.dns);
        if let Some((listen, listener)) = rebind.admin {
            self.admin = AbortOnDrop(tokio::spawn(admin::serve(listener, self.controls.clone())));
            info!(from = %self.admin_listen, to = %listen, "admin server moved");
            self.admin_listen = listen;
        }
        self.controls.history.set_interval(rebind.history_interval);
    }
}

/// A task that ends with its owner.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
