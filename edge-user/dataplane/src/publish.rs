//! Keeping the data plane's maps in step with the zones the daemon serves. A publish that fails
//! (a kernel error, a map another program filled) never stops the daemon or the data plane: the
//! maps keep answering what they hold, the failure is logged and counted, and the latest zones
//! are published again after a backoff that doubles up to [`MAX_BACKOFF`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use edge_common::Services;
use tokio::time::Instant;
use tracing::{error, info};

use edge_dns::{
    fast_path::{self, Entry},
    zone::Zones,
};

use crate::{
    DataPlane,
    maps::{Capacity, Publication},
};

/// The first retry of a failed publish comes this long after it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Retries of a publish that keeps failing come at most this far apart.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Publishes zones to the maps of one data plane and retries the ones that failed.
pub struct Publisher {
    /// The service addresses, written with every publish.
    services: Services,
    /// Publishes that failed since the daemon started.
    failures: u64,
    retry: Option<Retry>,
    backoff: Duration,
}

/// A failed publish, due again at `at`.
struct Retry {
    zones: Arc<Zones>,
    at: Instant,
}

impl Publisher {
    /// A publisher for a daemon that answers on `listen`.
    pub fn new(listen: &[SocketAddr]) -> Self {
        Self {
            services: fast_path::services(listen),
            failures: 0,
            retry: None,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Answers on `listen` from the next publish on (a reload of `dns.listen`).
    pub fn set_listen(&mut self, listen: &[SocketAddr]) {
        self.services = fast_path::services(listen);
    }

    /// Writes the fast path's view of `zones` to the maps: the service addresses, then the
    /// answers. A failure is counted and returned; nothing is retried (see [`Self::publish`]).
    pub fn try_publish(&mut self, plane: &mut DataPlane, zones: &Zones) -> Result<()> {
        self.try_publish_built(plane, zones, None)
    }

    /// As [`Self::try_publish`], with the entries of `zones`' static names built already
    /// ([`fast_path::static_entries`], as a load builds them to size the maps): only the
    /// steered names' entries are built here.
    pub fn try_publish_loaded(
        &mut self,
        plane: &mut DataPlane,
        zones: &Zones,
        static_entries: Vec<Entry>,
    ) -> Result<()> {
        self.try_publish_built(plane, zones, Some(static_entries))
    }

    fn try_publish_built(
        &mut self,
        plane: &mut DataPlane,
        zones: &Zones,
        static_entries: Option<Vec<Entry>>,
    ) -> Result<()> {
        match write(plane, &self.services, zones, static_entries) {
            Ok(()) => {
                self.retry = None;
                self.backoff = FIRST_BACKOFF;
                Ok(())
            }
            Err(error) => {
                self.failures += 1;
                Err(error)
            }
        }
    }

    /// As [`Self::try_publish`]; a failure is logged and `zones` published again after the
    /// backoff, unless another publish comes first.
    pub fn publish(&mut self, plane: &mut DataPlane, zones: &Arc<Zones>) {
        if let Err(error) = self.try_publish(plane, zones) {
            self.schedule_retry(zones, &error);
        }
    }

    /// Logs a failed publish of `zones` and publishes them again after the backoff.
    fn schedule_retry(&mut self, zones: &Arc<Zones>, error: &anyhow::Error) {
        let at = Instant::now() + self.backoff;
        error!(
            failures = self.failures,
            retry_in = ?self.backoff,
            "publishing answers failed; the data plane keeps answering what it holds: {error:#}"
        );
        self.retry = Some(Retry {
            zones: zones.clone(),
            at,
        });
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// A steering round: as [`Self::publish`], but when the steered names all hold selection
    /// slots already, only their answers are written (the selection map and the generation
    /// flip), without building or comparing the entries of every other name.
    pub fn publish_steering(&mut self, plane: &mut DataPlane, zones: &Arc<Zones>) {
        if self.retry.is_none() {
            match fast_path::steered_entries(zones)
                .map_err(anyhow::Error::from)
                .and_then(|steered| plane.answers.publish_selections(&steered))
            {
                Ok(Some(Publication {
                    steered_written,
                    flipped,
                    ..
                })) => {
                    info!(steered_written, flipped, "steered answers published");
                    return;
                }
                Ok(None) => {}
                Err(error) => {
                    self.failures += 1;
                    self.schedule_retry(zones, &error);
                    return;
                }
            }
        }
        self.publish(plane, zones);
    }

    /// A dynamic update of `zones` (as they are now): writes the entries it changed (`write`)
    /// and removes those it ended (`remove`), nothing else. If that fails, or an earlier publish
    /// is still to be retried, the whole of `zones` is published (and retried until it is).
    pub fn publish_update(
        &mut self,
        plane: &mut DataPlane,
        zones: &Arc<Zones>,
        write: &[Entry],
        remove: &[Entry],
    ) {
        if self.retry.is_none() {
            match plane.answers.patch(write, remove) {
                Ok(changes) => {
                    info!(
                        written = changes.written,
                        removed = changes.removed,
                        unchanged = changes.unchanged,
                        overflowed = changes.overflowed,
                        "updated answers published"
                    );
                    return;
                }
                Err(error) => {
                    self.failures += 1;
                    error!("publishing an update's answers failed, publishing all: {error:#}");
                }
            }
        }
        self.publish(plane, zones);
    }

    /// Publishes that failed since the daemon started.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Waits until a failed publish is due again; never returns while none is pending.
    pub async fn retry_due(&self) {
        match &self.retry {
            Some(retry) => tokio::time::sleep_until(retry.at).await,
            None => std::future::pending().await,
        }
    }

    /// Publishes again the zones whose publish failed last.
    pub fn retry(&mut self, plane: &mut DataPlane) {
        if let Some(retry) = self.retry.take() {
            self.publish(plane, &retry.zones);
        }
    }
}

/// Refuses zones that need `needed` ([`Capacity::needed`]) if the maps of `plane` cannot hold
/// their answers; the reason names the config field and both numbers.
pub fn check_fits(plane: &DataPlane, needed: &Capacity) -> Result<()> {
    let held = plane.answers.capacity()?;
    if let Some((field, needed, held)) = needed.shortfall(&held) {
        anyhow::bail!("{field}: the zones need {needed} entries, the map holds {held}");
    }
    Ok(())
}

fn write(
    plane: &mut DataPlane,
    services: &Services,
    zones: &Zones,
    static_entries: Option<Vec<Entry>>,
) -> Result<()> {
    let started = std::time::Instant::now();
    plane.services.replace(services)?;
    let entries = match static_entries {
        Some(mut entries) => {
            entries.extend(fast_path::steered_entries(zones).context("building answers")?);
            entries
        }
        None => fast_path::entries(zones).context("building answers")?,
    };
    let Publication {
        answers,
        steered_written,
        flipped,
    } = plane.answers.publish(&entries)?;
    info!(
        names = entries.len(),
        written = answers.written,
        removed = answers.removed,
        unchanged = answers.unchanged,
        overflowed = answers.overflowed,
        steered_written,
        flipped,
        elapsed = ?started.elapsed(),
        "answers published"
    );
    Ok(())
}
