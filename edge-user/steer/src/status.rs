//! What `edge status` shows: per pool its answer and where it came from, per member its health
//! and measurements, and the mesh: its members, their state and the age of their data.

use std::{fmt, net::IpAddr};

use edge_config::PoolKind;
use serde::{Deserialize, Serialize};

use edge_mesh::{
    choose::{Quorum, origin_health},
    transport::GossipCounters,
    view::{self, View},
};

use crate::{
    health::State,
    pool::{Pool, Source},
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pools: Vec<PoolStatus>,
    /// Absent without `[mesh]`.
    pub mesh: Option<MeshStatus>,
}

/// The mesh as this PoP sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshStatus {
    /// This PoP's name.
    pub me: String,
    pub members: Vec<MeshMemberStatus>,
    pub counters: GossipCounters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshMemberStatus {
    pub name: String,
    pub gossip: std::net::SocketAddr,
    /// `live`, `stale` or `dead`.
    pub state: view::State,
    /// Time since its report last changed, as seen here.
    pub age_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    /// `origin` or `pop`.
    pub kind: String,
    /// The addresses steered names answer with; empty: SERVFAIL.
    pub selection: Vec<IpAddr>,
    pub ttl: u32,
    /// Probe rounds so far (the first one included).
    pub rounds: u64,
    /// Selections that differed from the previous one (the first one included).
    pub changes: u64,
    /// The score terms the selection used: names of the weights, or `http (fallback)` when no
    /// weighted figure was there.
    pub terms: Vec<String>,
    /// `local`, or the mesh rule the selection came from.
    pub source: String,
    pub members: Vec<MemberStatus>,
}

/// A member's state; times in milliseconds and loads in percent, smoothed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    pub address: IpAddr,
    /// `unchecked`, `up` or `down`.
    pub state: String,
    pub drained: bool,
    /// A probe result against the state was seen: it may change soon.
    pub changing: bool,
    /// Lower is better; absent when the member is not a candidate.
    pub score: Option<f64>,
    /// The score's mean deviation (how much it swings); with it a challenger must beat the
    /// current member by `steering.deviations` of these besides the margin.
    pub deviation: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub http_ms: Option<f64>,
    pub ftp_ms: Option<f64>,
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub load: Option<f64>,
    pub connections: Option<u64>,
    pub error: Option<String>,
    /// With a mesh, origins only: how the live PoPs that probe it vote.
    pub quorum: Option<Quorum>,
}

impl Status {
    pub fn of(pools: &[Pool], mesh: Option<&View>) -> Self {
        Self {
            mesh: mesh.map(|view| MeshStatus {
                me: view.me.clone(),
                members: view
                    .members
                    .iter()
                    .map(|member| MeshMemberStatus {
                        name: member.name.clone(),
                        gossip: member.gossip,
                        state: member.state,
                        age_ms: member.age.as_millis() as u64,
                    })
                    .collect(),
                counters: view.counters,
            }),
            pools: pools
                .iter()
                .map(|pool| PoolStatus {
                    name: pool.config.name.clone(),
                    kind: match pool.config.kind {
                        PoolKind::Origin => "origin",
                        PoolKind::Pop => "pop",
                    }
                    .into(),
                    selection: pool.selection.clone(),
                    ttl: pool.ttl,
                    rounds: pool.rounds,
                    changes: pool.changes,
                    terms: pool.terms.iter().map(ToString::to_string).collect(),
                    source: match &pool.source {
                        Source::Local => "local".to_string(),
                        Source::Agreed { pops, reference } => format!(
                            "mesh: agreed over {pops} PoPs, reference {}",
                            reference.as_deref().unwrap_or("none")
                        ),
                        Source::Best { pops } => {
                            format!("mesh: best from here over {pops} PoPs")
                        }
                    },
                    members: pool
                        .members
                        .iter()
                        .map(|member| MemberStatus {
                            name: member.name.clone(),
                            address: member.address,
                            state: match member.health.state {
                                State::Unchecked => "unchecked",
                                State::Up => "up",
                                State::Down => "down",
                            }
                            .into(),
                            drained: member.health.drained,
                            changing: member.health.is_changing(),
                            score: member.score.map(|(score, _)| score),
                            deviation: member.score.map(|(_, deviation)| deviation),
                            rtt_ms: member.smoothed.rtt_ms.get(),
                            http_ms: member.smoothed.http_ms.get(),
                            ftp_ms: member.smoothed.ftp_ms.get(),
                            cpu: member.smoothed.cpu.get(),
                            memory: member.smoothed.memory.get(),
                            load: member.smoothed.load.get(),
                            connections: member.smoothed.connections,
                            error: member.error.clone(),
                            quorum: mesh
                                .filter(|_| pool.config.kind == PoolKind::Origin)
                                .map(|view| origin_health(view, &pool.config.name, &member.name)),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolStatus> {
        self.pools.iter().find(|pool| pool.name == name)
    }
}

/// A table for people: one block per pool, one row per member.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.1}"));
        for pool in &self.pools {
            let selection: Vec<String> = pool.selection.iter().map(ToString::to_string).collect();
            let selection = if selection.is_empty() {
                "SERVFAIL".to_string()
            } else {
                selection.join(", ")
            };
            writeln!(
                f,
                "pool {} ({}): answer {selection}, ttl {}, {} changes in {} rounds, ranked by {}",
                pool.name,
                pool.kind,
                pool.ttl,
                pool.changes,
                pool.rounds,
                if pool.terms.is_empty() {
                    "-".to_string()
                } else {
                    pool.terms.join(" + ")
                }
            )?;
            if pool.source != "local" {
                writeln!(f, "  from {}", pool.source)?;
            }
            writeln!(
                f,
                "  {:<12} {:<26} {:<14} {:>8} {:>6} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>5}  error",
                "member",
                "address",
                "state",
                "score",
                "±dev",
                "rtt",
                "http",
                "ftp",
                "cpu%",
                "mem%",
                "load%",
                "conns"
            )?;
            for member in &pool.members {
                let mut state = member.state.clone();
                if member.drained {
                    state += ",drained";
                }
                if member.changing {
                    state += ",changing";
                }
                writeln!(
                    f,
                    "  {:<12} {:<26} {:<14} {:>8} {:>6} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>5}  {}",
                    member.name,
                    member.address,
                    state,
                    number(member.score),
                    number(member.deviation),
                    number(member.rtt_ms),
                    number(member.http_ms),
                    number(member.ftp_ms),
                    number(member.cpu),
                    number(member.memory),
                    number(member.load),
                    member
                        .connections
                        .map_or("-".to_string(), |count| count.to_string()),
                    member.error.as_deref().unwrap_or("")
                )?;
            }
        }
        if let Some(mesh) = &self.mesh {
            let live = mesh
                .members
                .iter()
                .filter(|member| member.state == view::State::Live)
                .count();
            let counters = &mesh.counters;
            writeln!(
                f,
                "mesh (this PoP: {}): {live} of {} live; gossip dropped: {} bad MAC, {} stale, {} replayed, {} other cluster",
                mesh.me,
                mesh.members.len(),
                counters.bad_mac,
                counters.stale,
                counters.replayed,
                counters.wrong_cluster
            )?;
            writeln!(
                f,
                "  {:<12} {:<26} {:<6} {:>9}",
                "member", "gossip", "state", "data age"
            )?;
            for member in &mesh.members {
                let state = match member.state {
                    view::State::Live => "live",
                    view::State::Stale => "stale",
                    view::State::Dead => "dead",
                };
                writeln!(
                    f,
                    "  {:<12} {:<26} {:<6} {:>7}ms",
                    member.name, member.gossip, state, member.age_ms
                )?;
            }
        }
        Ok(())
    }
}
