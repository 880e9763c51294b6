//! The mesh as one PoP sees it: every PoP it has heard of, whether it is live, how old its
//! data is, and what it published.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{report::Report, transport::GossipCounters};

/// A member's state as this PoP sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Heard from (the failure detector) and its report is fresh: it counts.
    Live,
    /// Its gossip runs but its report stopped changing (`mesh.stale_after`): left out.
    Stale,
    /// Nothing heard for longer than the failure detector allows: left out.
    Dead,
}

/// One PoP of the mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// Where it gossips.
    pub gossip: SocketAddr,
    pub state: State,
    /// Time since its report last changed, as seen here (this PoP's clock, not the sender's).
    #[serde(with = "millis")]
    pub age: Duration,
    pub report: Report,
}

/// Every member this PoP knows of, itself included, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// This PoP's name.
    pub me: String,
    pub members: Vec<Member>,
    pub counters: GossipCounters,
}

impl View {
    /// The members whose data counts: live, fresh.
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|member| member.state == State::Live)
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.name == name)
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(age: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(age.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}
