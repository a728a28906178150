//! The active controller's broker sessions: who heartbeats, who is silent, what to propose.
//!
//! [`BrokerSessions`] is pure (no clock, no I/O: the caller passes `now_ms` from a monotonic
//! clock and the current metadata). It lives on the coordinator shard of the active
//! controller only, and only in memory, as Kafka's `BrokerHeartbeatManager`: it is created
//! when this node becomes the active controller ([`BrokerSessions::new`] gives every
//! registered broker a full session from that moment, so a new controller never fences a
//! broker it has not had the time to hear from) and dropped when leadership is lost.
//!
//! - [`BrokerSessions::on_heartbeat`] records the heartbeat and says which metadata change it
//!   calls for: `RegisterBroker` for a node not registered, a new incarnation (a restart) or a
//!   changed listener or rack; for a new incarnation of a broker registered unfenced under an
//!   incarnation this controller heard from (a restart within its session, Kafka's unclean
//!   shutdown) `FenceBroker` first, so that its partitions move on to a new leader epoch
//!   before it registers again; `FenceBroker` for a broker that is shutting down (Kafka's
//!   controlled shutdown); `UnfenceBroker` for a fenced broker that heartbeats again; nothing
//!   for the usual heartbeat of a live broker, so heartbeats write nothing to the log.
//! - [`BrokerSessions::expired`] gives `FenceBroker` for every unfenced broker silent for
//!   `broker_session_timeout_ms` (Kafka's `broker.session.timeout.ms`). It then starts that
//!   broker's session again, so a fence that did not take (the proposal failed) is proposed
//!   again one timeout later, not on every tick.
//!
//! A new registration is unfenced at once (Kafka registers fenced and unfences once the broker
//! has caught up with the metadata log; here a broker that is behind answers
//! UNKNOWN_TOPIC_OR_PARTITION for the moment it takes to catch up, and clients retry).
//!
//! Bound: one session per registered broker plus one per node heard from within the last
//! session timeout, at most [`SESSIONS_MAX`] in all (heartbeats of further unknown nodes are
//! ignored until older entries expire).

use std::collections::BTreeMap;

use super::BrokerHeartbeat;
use crate::coordinator::metadata::{BrokerRegistration, ClusterMetadata, MetadataCommand};

/// The most broker sessions the controller tracks (registered brokers included).
pub const SESSIONS_MAX: usize = crate::coordinator::metadata::BROKERS_MAX;

/// Last-heard times of the brokers, on the active controller. See the module essay.
#[derive(Debug, Clone)]
pub struct BrokerSessions {
    session_timeout_ms: u64,
    /// When each broker was last heard from (or when its session started).
    last_heard_ms: BTreeMap<i32, u64>,
    /// The incarnation each broker was last heard from under, by this controller (a broker
    /// registered before this controller was elected has none until it heartbeats).
    heard_incarnation: BTreeMap<i32, uuid::Uuid>,
}

/// The registration a heartbeat asks for (fenced when the broker is shutting down).
pub fn registration_of(heartbeat: &BrokerHeartbeat) -> BrokerRegistration {
    BrokerRegistration {
        node_id: heartbeat.node_id,
        incarnation_id: heartbeat.incarnation_id,
        host: heartbeat.host.clone(),
        port: heartbeat.port,
        rack: heartbeat.rack.clone(),
        fenced: heartbeat.shutting_down,
        listeners: heartbeat.listeners.clone(),
    }
}

impl BrokerSessions {
    /// Sessions for a controller elected at `now_ms`: every registered broker gets a full
    /// session from now.
    pub fn new(session_timeout_ms: u64, now_ms: u64, metadata: &ClusterMetadata) -> Self {
        assert!(session_timeout_ms > 0, "a session lasts some time");
        BrokerSessions {
            session_timeout_ms,
            last_heard_ms: metadata.brokers.keys().map(|&id| (id, now_ms)).collect(),
            heard_incarnation: BTreeMap::new(),
        }
    }

    /// Takes a heartbeat heard at `now_ms` and returns the change it calls for, if any.
    pub fn on_heartbeat(
        &mut self,
        heartbeat: &BrokerHeartbeat,
        now_ms: u64,
        metadata: &ClusterMetadata,
    ) -> Option<MetadataCommand> {
        let node_id = heartbeat.node_id;
        let registered = metadata.brokers.get(&node_id);
        if !self.last_heard_ms.contains_key(&node_id)
            && registered.is_none()
            && self.last_heard_ms.len() >= SESSIONS_MAX
        {
            return None;
        }
        self.last_heard_ms.insert(node_id, now_ms);
        let heard_before = self
            .heard_incarnation
            .insert(node_id, heartbeat.incarnation_id);
        let Some(current) = registered else {
            return (!heartbeat.shutting_down).then(|| MetadataCommand::RegisterBroker {
                registration: registration_of(heartbeat),
            });
        };
        let restarted = current.incarnation_id != heartbeat.incarnation_id;
        // Only a registration this controller heard alive counts as a live session (a
        // single node's bootstrap registration, or one from before this controller, does not:
        // a single node restarting keeps its partitions as before).
        let live_session = heard_before == Some(current.incarnation_id);
        if restarted && live_session && !current.fenced {
            // A restart within the session (Kafka refuses the new registration until the old
            // session is over and treats it as an unclean shutdown): fenced first, so its
            // partitions get a new leader epoch; the next heartbeat registers it again.
            return Some(MetadataCommand::FenceBroker { node_id });
        }
        let moved = restarted
            || current.host != heartbeat.host
            || current.port != heartbeat.port
            || current.rack != heartbeat.rack
            || current.listeners != heartbeat.listeners;
        if moved {
            return Some(MetadataCommand::RegisterBroker {
                registration: registration_of(heartbeat),
            });
        }
        match (current.fenced, heartbeat.shutting_down) {
            (false, true) => Some(MetadataCommand::FenceBroker { node_id }),
            (true, false) => Some(MetadataCommand::UnfenceBroker { node_id }),
            _ => None,
        }
    }

    /// `FenceBroker` for every unfenced registered broker not heard from for the session
    /// timeout at `now_ms`; also forgets unregistered nodes silent that long.
    pub fn expired(&mut self, now_ms: u64, metadata: &ClusterMetadata) -> Vec<MetadataCommand> {
        let timeout = self.session_timeout_ms;
        let mut fence = Vec::new();
        for (&node_id, registration) in &metadata.brokers {
            let last = self.last_heard_ms.entry(node_id).or_insert(now_ms);
            if !registration.fenced && now_ms.saturating_sub(*last) >= timeout {
                fence.push(MetadataCommand::FenceBroker { node_id });
                *last = now_ms;
            }
        }
        self.last_heard_ms.retain(|node_id, last| {
            metadata.brokers.contains_key(node_id) || now_ms.saturating_sub(*last) < timeout
        });
        let tracked = &self.last_heard_ms;
        self.heard_incarnation
            .retain(|node_id, _| tracked.contains_key(node_id));
        fence
    }

    /// How many sessions are tracked (for the bound's test and metrics).
    pub fn len(&self) -> usize {
        self.last_heard_ms.len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.last_heard_ms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const TIMEOUT_MS: u64 = 9_000;

    fn heartbeat(node_id: i32, incarnation: u128) -> BrokerHeartbeat {
        BrokerHeartbeat {
            node_id,
            incarnation_id: Uuid::from_u128(incarnation),
            host: "127.0.0.1".into(),
            port: 9092 + node_id,
            rack: None,
            shutting_down: false,
            listeners: Vec::new(),
        }
    }

    /// Applies what the sessions propose, as the controller would.
    fn apply(metadata: &mut ClusterMetadata, command: Option<MetadataCommand>) {
        if let Some(command) = command {
            *metadata = metadata.apply(&command).unwrap();
        }
    }

    #[test]
    fn a_changed_listener_list_registers_again() {
        let mut metadata = ClusterMetadata::default();
        let mut sessions = BrokerSessions::new(TIMEOUT_MS, 0, &metadata);
        let first = sessions.on_heartbeat(&heartbeat(1, 1), 10, &metadata);
        apply(&mut metadata, first);
        let mut more = heartbeat(1, 1);
        more.listeners = vec![crate::coordinator::metadata::ListenerEndpoint {
            name: "SASL_SSL".into(),
            host: "public".into(),
            port: 9093,
        }];
        let again = sessions.on_heartbeat(&more, 20, &metadata);
        assert!(
            matches!(&again, Some(MetadataCommand::RegisterBroker { registration }) if registration.listeners == more.listeners)
        );
        apply(&mut metadata, again);
        assert_eq!(metadata.brokers[&1].listeners, more.listeners);
        assert!(sessions.on_heartbeat(&more, 30, &metadata).is_none());
    }

    #[test]
    fn a_new_broker_registers_once_and_then_heartbeats_write_nothing() {
        let mut metadata = ClusterMetadata::default();
        let mut sessions = BrokerSessions::new(TIMEOUT_MS, 0, &metadata);
        let first = sessions.on_heartbeat(&heartbeat(1, 1), 10, &metadata);
        assert!(
            matches!(&first, Some(MetadataCommand::RegisterBroker { registration }) if registration.node_id == 1 && !registration.fenced)
        );
        apply(&mut metadata, first);
        assert!(sessions
            .on_heartbeat(&heartbeat(1, 1), 2_000, &metadata)
            .is_none());
        assert!(sessions.expired(10_000, &metadata).is_empty());
    }

    #[test]
    fn a_restart_or_a_moved_listener_registers_again() {
        let mut metadata = ClusterMetadata::default();
        let mut sessions = BrokerSessions::new(TIMEOUT_MS, 0, &metadata);
        let register = sessions.on_heartbeat(&heartbeat(1, 1), 0, &metadata);
        apply(&mut metadata, register);
        let fenced = sessions.on_heartbeat(&heartbeat(1, 2), 1, &metadata);
        assert!(matches!(
            fenced,
            Some(MetadataCommand::FenceBroker { node_id: 1 })
        ));
        apply(&mut metadata, fenced);
        let restarted = sessions.on_heartbeat(&heartbeat(1, 2), 1, &metadata);
        assert!(
            matches!(&restarted, Some(MetadataCommand::RegisterBroker { registration }) if registration.incarnation_id == Uuid::from_u128(2))
        );
        apply(&mut metadata, restarted);
        let mut moved = heartbeat(1, 2);
        moved.port = 19_999;
        assert!(matches!(
            sessions.on_heartbeat(&moved, 2, &metadata),
            Some(MetadataCommand::RegisterBroker { .. })
        ));
        let mut racked = heartbeat(1, 2);
        racked.rack = Some("r1".into());
        assert!(matches!(
            sessions.on_heartbeat(&racked, 3, &metadata),
            Some(MetadataCommand::RegisterBroker { .. })
        ));
    }

    /// A silent broker is fenced after the session timeout (once, not on every tick); its
    /// next heartbeat unfences it.
    /// A broker restarted within its session (a new incarnation while registered unfenced) is
    /// fenced first, as Kafka's unclean-shutdown handling, so its partitions change leader
    /// epoch (the restarted process must not lead at the epoch of the one that died); its
    /// next heartbeat registers it again and gives it back the partitions left leaderless.
    #[test]
    fn a_restart_within_the_session_is_fenced_first_so_leader_epochs_move() {
        let mut metadata = ClusterMetadata::default();
        let mut sessions = BrokerSessions::new(TIMEOUT_MS, 0, &metadata);
        let register = sessions.on_heartbeat(&heartbeat(1, 1), 0, &metadata);
        apply(&mut metadata, register);
        metadata = metadata
            .apply(&MetadataCommand::CreateTopic {
                name: "t".into(),
                partitions: 1,
                configs: Default::default(),
                replication_factor: 1,
                assignments: None,
            })
            .unwrap();
        let before = metadata.partition("t", 0).unwrap().clone();
        assert_eq!(before.leader, 1);
        let first = sessions.on_heartbeat(&heartbeat(1, 2), 100, &metadata);
        assert!(
            matches!(first, Some(MetadataCommand::FenceBroker { node_id: 1 })),
            "{first:?}"
        );
        apply(&mut metadata, first);
        let again = sessions.on_heartbeat(&heartbeat(1, 2), 400, &metadata);
        assert!(
            matches!(&again, Some(MetadataCommand::RegisterBroker { registration }) if registration.incarnation_id == Uuid::from_u128(2) && !registration.fenced),
            "{again:?}"
        );
        apply(&mut metadata, again);
        let after = metadata.partition("t", 0).unwrap();
        assert_eq!(after.leader, 1, "led by the restarted broker again");
        assert!(
            after.leader_epoch > before.leader_epoch,
            "{before:?} -> {after:?}"
        );
        assert!(sessions
            .on_heartbeat(&heartbeat(1, 2), 700, &metadata)
            .is_none());
        // A registration this controller never heard alive (a single node's bootstrap one, or
        // one from before this controller) is replaced at once, as before.
        let mut fresh = BrokerSessions::new(TIMEOUT_MS, 800, &metadata);
        let replaced = fresh.on_heartbeat(&heartbeat(1, 3), 900, &metadata);
        assert!(
            matches!(&replaced, Some(MetadataCommand::RegisterBroker { registration }) if registration.incarnation_id == Uuid::from_u128(3)),
            "{replaced:?}"
        );
    }

    #[test]
    fn silence_fences_and_a_heartbeat_unfences() {
        let mut metadata = ClusterMetadata::default();
        let mut sessions = BrokerSessions::new(TIMEOUT_MS, 0, &metadata);
        for node in [1, 2] {
            let register = sessions.on_heartbeat(&heartbeat(node, 1), 0, &metadata);
            apply(&mut metadata, register);
        }
        assert!(sessions
            .on_heartbeat(&heartbeat(2, 1), 5_000, &metadata)
            .is_none());
        assert!(sessions.expired(TIMEOUT_MS - 1, &metadata).is_empty());
        let fenced = sessions.expired(TIMEOUT_MS, &metadata);
        assert_eq!(fenced.len(), 1);
        assert!(matches!(
            fenced[0],
            MetadataCommand::FenceBroker { node_id: 1 }
        ));
        // The fence is in flight: the next ticks do not propose it again.
        assert!(sessions.expired(TIMEOUT_MS + 100, &metadata).is_empty());
        for command in fenced {
            metadata = metadata.apply(&command).unwrap();
        }
        assert!(metadata.brokers[&1].fenced);
        // Broker 2 went silent too; broker 1, fenced, is not fenced again.
        let later = sessions.expired(5_000 + TIMEOUT_MS, &metadata);
        assert!(matches!(
            later.as_slice(),
            [MetadataCommand::FenceBroker { node_id: 2 }]
        ));
        let back = sessions.on_heartbeat(&heartbeat(1, 1), 20_000, &metadata);
        assert!(matches!(
            back,
            Some(MetadataCommand::UnfenceBroker { node_id: 1 })
        ));
        apply(&mut metadata, back);
        assert!(!metadata.brokers[&1].fenced);
    }

    #[test]
    fn a_broker_shutting_down_is_fenced_once() {
        let mut metadata = ClusterMetadata::default();
        let mut sessions = BrokerSessions::new(TIMEOUT_MS, 0, &metadata);
        let register = sessions.on_heartbeat(&heartbeat(1, 1), 0, &metadata);
        apply(&mut metadata, register);
        let mut leaving = heartbeat(1, 1);
        leaving.shutting_down = true;
        let fence = sessions.on_heartbeat(&leaving, 1, &metadata);
        assert!(matches!(
            fence,
            Some(MetadataCommand::FenceBroker { node_id: 1 })
        ));
        apply(&mut metadata, fence);
        assert!(sessions.on_heartbeat(&leaving, 2, &metadata).is_none());
        // An unknown node that is shutting down is not registered.
        let mut stranger = heartbeat(5, 1);
        stranger.shutting_down = true;
        assert!(sessions.on_heartbeat(&stranger, 3, &metadata).is_none());
    }

    /// A new controller gives every registered broker a full session from its election, even
    /// one last heard long before.
    #[test]
    fn a_new_controller_gives_every_broker_a_full_session() {
        let mut metadata = ClusterMetadata::default();
        let mut old = BrokerSessions::new(TIMEOUT_MS, 0, &metadata);
        let register = old.on_heartbeat(&heartbeat(1, 1), 0, &metadata);
        apply(&mut metadata, register);
        let elected_ms = 100_000;
        let mut sessions = BrokerSessions::new(TIMEOUT_MS, elected_ms, &metadata);
        assert!(sessions
            .expired(elected_ms + TIMEOUT_MS - 1, &metadata)
            .is_empty());
        assert_eq!(
            sessions.expired(elected_ms + TIMEOUT_MS, &metadata).len(),
            1
        );
    }

    #[test]
    fn sessions_are_bounded_and_forgotten() {
        let metadata = ClusterMetadata::default();
        let mut sessions = BrokerSessions::new(TIMEOUT_MS, 0, &metadata);
        for node in 0..(SESSIONS_MAX as i32 + 10) {
            let _ = sessions.on_heartbeat(&heartbeat(node, 1), 0, &metadata);
        }
        assert_eq!(sessions.len(), SESSIONS_MAX);
        assert!(sessions.expired(TIMEOUT_MS, &metadata).is_empty());
        assert!(
            sessions.is_empty(),
            "unregistered silent nodes are forgotten"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random heartbeats (restarts, shutdowns) and silences of 4 brokers, with topics
        /// created between them: every change the sessions propose is accepted by the
        /// metadata when applied at once, the metadata keeps its invariants, and a broker that
        /// heartbeats (not shutting down) ends unfenced while one silent for a timeout ends
        /// fenced.
        #[test]
        fn proposals_are_accepted_and_fencing_follows_heartbeats(
            steps in proptest::collection::vec(
                (0..4i32, 0..3u128, 0..6u8, 0..4_000u64),
                1..80,
            )
        ) {
            let mut metadata = ClusterMetadata::default();
            let mut sessions = BrokerSessions::new(TIMEOUT_MS, 0, &metadata);
            let mut now = 0u64;
            let mut topics = 0;
            for (node, incarnation, action, wait_ms) in steps {
                now += wait_ms;
                let mut proposed = Vec::new();
                match action {
                    0..=3 => {
                        let mut hb = heartbeat(node, incarnation);
                        hb.shutting_down = action == 3;
                        proposed.extend(sessions.on_heartbeat(&hb, now, &metadata));
                    }
                    4 => {
                        topics += 1;
                        let create = MetadataCommand::CreateTopic {
                            name: format!("t{topics}"),
                            partitions: 3,
                            configs: Default::default(),
                            replication_factor: 1,
                            assignments: None,
                        };
                        // Refused when every broker is fenced; that is fine here.
                        if let Ok(next) = metadata.apply(&create) {
                            metadata = next;
                        }
                    }
                    _ => proposed.extend(sessions.expired(now, &metadata)),
                }
                for command in proposed {
                    let next = metadata.apply(&command);
                    proptest::prop_assert!(next.is_ok(), "{:?} refused: {:?}", command, next);
                    let next = next.unwrap();
                    proptest::prop_assert!(next.check_transition_from(&metadata).is_ok());
                    metadata = next;
                    // A restart within the session is fenced first: the broker's next
                    // heartbeat registers it again.
                    if action <= 2 && matches!(command, MetadataCommand::FenceBroker { .. }) {
                        let hb = heartbeat(node, incarnation);
                        if let Some(again) = sessions.on_heartbeat(&hb, now, &metadata) {
                            let next = metadata.apply(&again);
                            proptest::prop_assert!(next.is_ok(), "{:?} refused: {:?}", again, next);
                            metadata = next.unwrap();
                        }
                    }
                }
                if action <= 2 {
                    proptest::prop_assert!(!metadata.brokers[&node].fenced);
                }
                if action == 3 {
                    proptest::prop_assert!(metadata.brokers.get(&node).is_none_or(|b| b.fenced));
                }
            }
            now += TIMEOUT_MS;
            for command in sessions.expired(now, &metadata) {
                metadata = metadata.apply(&command).unwrap();
            }
            proptest::prop_assert!(metadata.brokers.values().all(|b| b.fenced));
            for topic in metadata.topics.values() {
                proptest::prop_assert!(topic.assignment.iter().all(|a| a.leader == -1));
            }
        }
    }
}
