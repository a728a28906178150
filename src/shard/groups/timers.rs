//! The group timers and offset expiry: [`GroupCoordinator::tick`] (pure, no I/O: sessions,
//! rebalance delays and timeouts), the next deadline for the timer task, and the durable
//! deletion of expired committed offsets (Kafka's `offsets.retention.minutes`). The loops that
//! call them are `Shard::group_timer_loop` and `Shard::group_tick_loop`.

use super::GroupCoordinator;
use crate::coordinator::group::GroupState;
use crate::coordinator::offsets::OffsetKey;

impl GroupCoordinator {
    /// Runs the group timers that are due: sessions, pending member ids, rebalance delays and
    /// timeouts (classic), sessions and revocations (KIP-848). Pure work, no I/O: the changes
    /// are written by the next [`GroupCoordinator::persist_groups`].
    pub fn tick(&self, now_ms: i64) {
        let effects = self.groups.borrow_mut().tick(now_ms);
        self.run(effects);
        self.consumer.borrow_mut().tick(now_ms);
        let offsets = self.offsets.borrow();
        self.groups
            .borrow_mut()
            .remove_empty_groups(|id| offsets.has_group(id));
        self.consumer
            .borrow_mut()
            .remove_empty_groups(|id| offsets.has_group(id));
    }

    /// When, after `now_ms`, [`GroupCoordinator::tick`] next has something to do, if ever.
    pub fn next_deadline_ms(&self, now_ms: i64) -> Option<i64> {
        let classic = self.groups.borrow().next_deadline_ms(now_ms);
        let consumer = self.consumer.borrow().next_deadline_ms(now_ms);
        classic.into_iter().chain(consumer).min()
    }

    /// Brings one group's timers up to `now_ms` (before it is described or deleted), so an
    /// expired member is gone from the answer even if the timer task has not run yet.
    pub(super) fn tick_group(&self, group_id: &str, now_ms: i64) {
        let effects = self.groups.borrow_mut().tick_one(group_id, now_ms);
        self.run(effects);
        self.consumer.borrow_mut().tick(now_ms);
    }

    /// Deletes expired committed offsets (Kafka's `offsets.retention.minutes`), at most every
    /// `offsets.retention.check.interval.ms`; Empty groups left without offsets are then
    /// forgotten by the tick.
    pub async fn maybe_expire_offsets(&self, now_ms: i64) {
        let (retention_ms, interval_ms) = {
            let groups = self.groups.borrow();
            (
                groups.config.offsets_retention_ms,
                groups.config.offsets_retention_check_interval_ms,
            )
        };
        if now_ms - self.last_expiry_check_ms.get() < interval_ms || !self.is_loaded() {
            return;
        }
        self.last_expiry_check_ms.set(now_ms);
        let expired = self.expired_offsets(now_ms, retention_ms);
        if expired.is_empty() {
            return;
        }
        let count = expired.len();
        let changes = expired.into_iter().map(|key| (key, None)).collect();
        match self.write_offsets(changes, now_ms).await {
            Ok(()) => tracing::info!(count, "expired committed offsets deleted"),
            Err(e) => tracing::warn!(error = ?e, "deleting expired offsets failed"),
        }
    }

    /// The committed offsets that expired at `now_ms`, by Kafka's conditions (see
    /// `offsets::Expiry`).
    fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<OffsetKey> {
        use crate::coordinator::offsets::Expiry;
        let groups = self.groups.borrow();
        let consumer = self.consumer.borrow();
        let policy = |id: &str| {
            if let Some(g) = consumer.group(id) {
                return Expiry::Unsubscribed(g.subscribed_topic_names());
            }
            match groups.group(id) {
                None => Expiry::Unsubscribed(Default::default()),
                Some(g) if g.protocol_type.is_none() => Expiry::Unsubscribed(Default::default()),
                Some(g) if g.state == GroupState::Empty => Expiry::All {
                    since_ms: g.state_timestamp_ms,
                },
                Some(g) if g.state == GroupState::Stable => match g.subscribed_topics() {
                    Some(topics) => Expiry::Unsubscribed(topics),
                    None => Expiry::Never,
                },
                Some(_) => Expiry::Never,
            }
        };
        self.offsets.borrow().expired(now_ms, retention_ms, policy)
    }
}
