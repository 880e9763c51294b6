//! The daemon's side of dynamic updates: one authenticated update at a time, checked and
//! applied by edge-dns ([`update::prepare`]), written to the zone's journal and on disk, then
//! made visible: the zones (with the steered names as selected) to the userspace server, and the
//! entries it changed, alone, to the maps. The response goes back only then, so a client that
//! gets NOERROR is answered the new records by both paths.

use std::{sync::Arc, time::Instant};

use edge_dataplane::{DataPlane, publish::Publisher};
use edge_dns::{
    journal::Journal,
    update::{self, Refusal},
    updates::Request,
    zone::Zones,
};
use edge_steer::Selections;
use hickory_proto::op::ResponseCode;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// What the daemon loop lends an update.
pub struct Apply<'a> {
    pub zones: &'a mut Zones,
    pub journal: &'a Journal,
    pub selections: &'a Selections,
    pub serving: &'a watch::Sender<Arc<Zones>>,
    pub plane: Option<(&'a mut DataPlane, &'a mut Publisher)>,
}

/// Applies `request` and answers its client.
pub fn apply(request: Request, apply: Apply<'_>) {
    let started = Instant::now();
    let rcode = match update::prepare(apply.zones, &request.apex, &request.message) {
        Err(Refusal { rcode, reason }) => {
            // Prerequisites are the client's questions; the rest is worth an operator's look.
            let prerequisite = matches!(
                rcode,
                ResponseCode::NXDomain
                    | ResponseCode::YXDomain
                    | ResponseCode::NXRRSet
                    | ResponseCode::YXRRSet
            );
            if prerequisite {
                info!(zone = %request.apex, key = %request.key, %rcode, "update not applied: {reason}");
            } else {
                warn!(zone = %request.apex, key = %request.key, %rcode, "update refused: {reason}");
            }
            rcode
        }
        Ok(None) => {
            info!(zone = %request.apex, key = %request.key, "update changes nothing");
            ResponseCode::NoError
        }
        Ok(Some(applied)) => {
            let journaling = Instant::now();
            if let Err(error) = apply.journal.append(&applied.zone, &applied.change) {
                error!(zone = %request.apex, "update not applied: writing its journal failed: {error}");
                let _ = request.reply.send(ResponseCode::ServFail);
                return;
            }
            let journal_micros = journaling.elapsed().as_micros() as u64;
            let serial = applied.zone.soa.serial;
            let names = applied.change.names.len();
            if let Some(zone) = apply
                .zones
                .zones
                .iter_mut()
                .find(|zone| zone.apex == request.apex)
            {
                *zone = applied.zone;
            }
            let steered = Arc::new(apply.zones.with_selections(apply.selections));
            apply.serving.send_replace(steered.clone());
            if let Some((plane, publisher)) = apply.plane {
                publisher.publish_update(plane, &steered, &applied.write, &applied.remove);
            }
            info!(
                zone = %request.apex,
                key = %request.key,
                serial,
                names,
                written = applied.write.len(),
                removed = applied.remove.len(),
                journal_micros,
                micros = started.elapsed().as_micros() as u64,
                "update applied"
            );
            ResponseCode::NoError
        }
    };
    let _ = request.reply.send(rcode);
}
