//! How guests that compute share the machine's cores with everything else.
//!
//! Every epoch tick a running guest yields to the executor (`tokio::task::yield_now`, which
//! puts it at the back of the queue), so a guest cannot hold a worker thread until its CPU
//! deadline. That alone shares a worker fairly between whoever is on it; it does not keep a
//! few guests that spin from being on *every* worker at once, where each well-behaved call
//! waits behind a slice of theirs. So a call that has computed for longer than a short call
//! does ([`SHORT_CALL`]) runs on in *turns*: it needs one of [`Turns`]' slots (by default one
//! fewer than the cores) for every slice it executes, and gives the slot back at the end of
//! the slice and whenever it enters the host (a call waiting on the network holds no slot).
//! Short calls never wait for a turn: at least one core is always theirs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// CPU time after which a call is a long runner and takes turns.
pub const SHORT_CALL: Duration = Duration::from_millis(5);

/// The process-wide slots long runners take turns on.
#[derive(Debug, Clone)]
pub(crate) struct Turns {
    slots: Arc<Semaphore>,
}

/// One call's turn: the slot it holds while it executes a slice, if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct Turn(Arc<TurnSlot>);

#[derive(Debug, Default)]
pub(crate) struct TurnSlot {
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Whether `slot` holds one: checked on every call into the host, so the common case (a
    /// short call, holding none) takes no lock.
    held: AtomicBool,
}

impl Turns {
    /// `slots` long runners may execute at once.
    pub fn new(slots: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
        }
    }

    /// Yield, then wait for a slot and hand it to `turn` for the next slice. The slots are
    /// handed out first come, first served.
    pub fn next(&self, turn: &Turn) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (slots, turn) = (self.slots.clone(), turn.clone());
        Box::pin(async move {
            tokio::task::yield_now().await;
            if let Ok(slot) = slots.acquire_owned().await {
                *turn.0.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(slot);
                turn.0.held.store(true, Ordering::Release);
            }
        })
    }
}

impl Turn {
    /// The slice is over (a tick passed, or the guest called into the host): give the slot
    /// back.
    pub fn end(&self) {
        if self.0.held.swap(false, Ordering::AcqRel) {
            self.0
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
    }
}

/// Make the current thread yield the CPU to others of normal priority (Linux `nice` 10 for
/// this thread only): for work whose latency matters less than that of calls, like compiling.
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on this thread's own id changes nothing but its scheduling weight;
    // gettid cannot fail.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0 {
            tracing::debug!("cannot lower the priority of a compile thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_runners_take_turns_on_the_slots() {
        let turns = Turns::new(1);
        let (a, b) = (Turn::default(), Turn::default());
        turns.next(&a).await;
        // `a` holds the one slot: `b` waits for it until `a`'s slice ends.
        let waiting = tokio::spawn({
            let (turns, b) = (turns.clone(), b.clone());
            async move { turns.next(&b).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        a.end();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("b got the slot")
            .unwrap();
        assert!(b.0.slot.lock().unwrap().is_some());
        b.end();
        assert_eq!(turns.slots.available_permits(), 1);
    }
}
