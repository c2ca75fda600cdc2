//! A counting limit whose size can change while slots are held (`concurrent` and `limit` after
//! a config reload): a semaphore cannot shrink below the permits already handed out, this can.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// At most `limit` slots at once; a limit of 0 means no limit.
#[derive(Debug)]
pub(crate) struct Capacity {
    limit: AtomicUsize,
    used: AtomicUsize,
    changed: Notify,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Capacity>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl Capacity {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            let limit = self.limit.load(Ordering::SeqCst);
            if limit != 0 && used >= limit {
                return None;
            }
            match self.used.compare_exchange(used, used + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(Slot(Arc::clone(self))),
                Err(now) => used = now,
            }
        }
    }

    /// Waits for a free slot.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(slot) = self.try_acquire() {
                return slot;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn slots_are_limited_and_freed_on_drop() {
        let c = Capacity::new(2);
        let a = c.try_acquire().expect("first slot");
        let _b = c.try_acquire().expect("second slot");
        assert!(c.try_acquire().is_none());
        drop(a);
        assert!(c.try_acquire().is_some());
    }

    #[tokio::test]
    async fn raising_the_limit_wakes_waiters_and_lowering_it_holds_new_slots_back() {
        let c = Capacity::new(1);
        let held = c.try_acquire().expect("slot");
        let c2 = Arc::clone(&c);
        let waiter = tokio::spawn(async move { c2.acquire().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        c.set_limit(2);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the new limit")
            .expect("task joins");
        c.set_limit(1);
        drop(held);
        assert!(c.try_acquire().is_none(), "still one slot in use with limit 1");
        drop(second);
        assert!(c.try_acquire().is_some());
    }

    #[test]
    fn zero_means_no_limit() {
        let c = Capacity::new(0);
        let slots: Vec<_> = (0..100).map(|_| c.try_acquire()).collect();
        assert!(slots.iter().all(Option::is_some));
    }
}
