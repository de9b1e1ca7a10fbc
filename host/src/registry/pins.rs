//! The pin table: what a call through an instance, or a run of a flow, runs — its exact
//! digest, its loaded code, its config, secrets and grants — resolved from the store once and
//! then served from memory. It is Gantry's one hot-swap mechanism:
//!
//! - a call takes an `Arc` of its entry when it starts and keeps it to the end, so a change
//!   never reaches a call in flight;
//! - every lifecycle change (a rebind, an overwrite, a state change, a customisation, a grant,
//!   a republish) empties the table when it commits ([`PinTable::invalidate`]), so the next
//!   call resolves anew and sees it — a blocked version is refused from its next call on; the
//!   connectors the entries held stay loaded (within the bounds), so resolving anew, or a
//!   rebind back, does not load them again;
//! - a resolution that read the store before a change committed is never kept: it carries the
//!   generation it started in, and [`PinTable::keep`] drops it if the table moved on.
//!
//! It also keeps the principals of valid tokens, so a request is authenticated without a
//! database round trip (a token change is a lifecycle change: it empties the table too).
//!
//! The table is bounded like the connectors it holds: at most `max` of them (a flow counts
//! each of its steps) and none idle longer than `idle`; past either, the least recently used
//! entries go, and a connector no entry or call holds is unloaded.

use super::{Error, LoadedLimits};
use crate::model::{Digest, Flow, Principal};
use crate::runtime::Connector;
use crate::sandbox::CallContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

/// What a call is made through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Instance { org: String, id: i64 },
    Flow { org: String, id: i64 },
}

/// What one call runs: the exact version's loaded code, and the call's context.
pub(crate) struct Call {
    pub connector: Arc<Connector>,
    pub ctx: CallContext,
}

/// A flow ready to run: its definition, and for each step what it calls or why it cannot.
pub(crate) struct Plan {
    pub flow: Flow,
    pub steps: Vec<Result<Arc<Call>, Error>>,
    /// For each step, its canary while it splits runs, with what its candidate arm calls.
    pub canaries: Vec<Option<CanaryArm>>,
}

/// A step's canary and what its candidate arm calls (or why it cannot).
pub(crate) type CanaryArm = (crate::model::Canary, Result<Arc<Call>, Error>);

/// A resolved target.
#[derive(Clone)]
pub(crate) enum Pinned {
    Call(Arc<Call>),
    Plan(Arc<Plan>),
}

impl Pinned {
    /// The connectors it holds loaded.
    fn connectors(&self) -> Vec<&Arc<Connector>> {
        match self {
            Pinned::Call(call) => vec![&call.connector],
            Pinned::Plan(plan) => plan.steps.iter().flatten().map(|c| &c.connector).collect(),
        }
    }

    /// How many connectors it holds loaded.
    fn weight(&self) -> usize {
        self.connectors().len().max(1)
    }
}

/// A connector an entry held before a change emptied the table: kept loaded (within the
/// bounds) so that a rebind back, or the next resolution, finds it without loading it again.
struct Retained {
    connector: Arc<Connector>,
    used: u64,
}

struct Entry {
    pinned: Pinned,
    weight: usize,
    /// Microseconds since the table's start when it was last used.
    used: AtomicU64,
}

#[derive(Default)]
struct Table {
    generation: u64,
    entries: HashMap<Target, Entry>,
    retained: HashMap<Digest, Retained>,
    /// Connectors held: the entries' weights and the retained ones.
    weight: usize,
    /// Principals of valid tokens, by the token's hash (unknown tokens are not kept: their
    /// number is the caller's choice).
    principals: HashMap<String, Principal>,
    /// Whether the store can tell of other nodes' changes (always, for a store one process
    /// uses): while it cannot, nothing resolved is kept.
    deaf: bool,
}

pub(crate) struct PinTable {
    limits: LoadedLimits,
    started: Instant,
    table: RwLock<Table>,
}

impl PinTable {
    pub fn new(limits: LoadedLimits) -> Self {
        Self {
            limits,
            started: Instant::now(),
            table: RwLock::new(Table::default()),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// What `target` resolves to, if resolved since the last change; counts as a use.
    pub fn get(&self, target: &Target) -> Option<Pinned> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let entry = table.entries.get(target)?;
        entry.used.store(self.now(), Ordering::Relaxed);
        Some(entry.pinned.clone())
    }

    /// The generation a resolution starts in: read it before reading the store.
    pub fn generation(&self) -> u64 {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
    }

    /// Keep what `target` resolved to in `generation`, unless a change committed since. Drops
    /// what has been idle too long, then the least recently used past the bound.
    pub fn keep(&self, target: Target, pinned: Pinned, generation: u64) {
        let now = self.now();
        let idle = self.limits.idle.as_micros() as u64;
        let max = self.limits.max.max(1);
        let mut evicted = Vec::new();
        let mut retired = Vec::new();
        {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            if table.generation != generation || table.deaf {
                return;
            }
            let weight = pinned.weight();
            let entry = Entry {
                pinned,
                weight,
                used: AtomicU64::new(now),
            };
            let target_key = target.clone();
            if let Some(old) = table.entries.insert(target, entry) {
                table.weight -= old.weight;
                evicted.push(old);
            }
            table.weight += weight;
            // What the new entry holds is no longer retained apart.
            let held: Vec<Digest> = table.entries[&target_key]
                .pinned
                .connectors()
                .iter()
                .map(|c| *c.digest())
                .collect();
            for digest in held {
                if let Some(old) = table.retained.remove(&digest) {
                    table.weight -= 1;
                    retired.push(old.connector);
                }
            }
            let stale: Vec<Target> = table
                .entries
                .iter()
                .filter(|(_, e)| now.saturating_sub(e.used.load(Ordering::Relaxed)) > idle)
                .map(|(t, _)| t.clone())
                .collect();
            for target in stale {
                evicted.extend(table.remove(&target));
            }
            let stale: Vec<Digest> = table
                .retained
                .iter()
                .filter(|(_, r)| now.saturating_sub(r.used) > idle)
                .map(|(d, _)| *d)
                .collect();
            for digest in stale {
                retired.extend(table.unretain(&digest));
            }
            // Past the bound, the least recently used goes first, entry or retained.
            while table.weight > max && table.entries.len() + table.retained.len() > 1 {
                let entry = table
                    .entries
                    .iter()
                    .map(|(t, e)| (e.used.load(Ordering::Relaxed), t))
                    .min_by_key(|(used, _)| *used)
                    .map(|(used, t)| (used, t.clone()));
                let kept = table
                    .retained
                    .iter()
                    .map(|(d, r)| (r.used, *d))
                    .min_by_key(|(used, _)| *used);
                match (entry, kept) {
                    (Some((e, _)), Some((r, digest))) if r <= e => {
                        retired.extend(table.unretain(&digest))
                    }
                    (Some((_, target)), _) => evicted.extend(table.remove(&target)),
                    (None, Some((_, digest))) => retired.extend(table.unretain(&digest)),
                    (None, None) => break,
                }
            }
        }
        // Unloading a connector unmaps its code: done after the lock is released.
        drop(evicted);
        drop(retired);
    }

    /// What the store heard of other nodes: a change empties the table as a change here does;
    /// while it cannot hear, nothing is kept.
    pub fn heard(&self, watch: crate::store::Watch) {
        self.table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .deaf = watch == crate::store::Watch::Lost;
        self.invalidate();
    }

    /// Forget everything resolved: a lifecycle change committed. The connectors the entries
    /// held stay loaded (retained, within the bounds) for the resolutions to come.
    pub fn invalidate(&self) {
        let old = {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            table.generation += 1;
            table.principals.clear();
            let old = std::mem::take(&mut table.entries);
            for entry in old.values() {
                let used = entry.used.load(Ordering::Relaxed);
                for connector in entry.pinned.connectors() {
                    let retained = table
                        .retained
                        .entry(*connector.digest())
                        .or_insert(Retained {
                            connector: connector.clone(),
                            used,
                        });
                    retained.used = retained.used.max(used);
                }
            }
            table.weight = table.retained.len();
            old
        };
        drop(old);
    }

    /// The principal of the token with `hash`, if resolved since the last change.
    pub fn principal(&self, hash: &str) -> Option<Principal> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table.principals.get(hash).cloned()
    }

    /// Keep the principal of the token with `hash`, resolved in `generation`.
    pub fn keep_principal(&self, hash: String, principal: Principal, generation: u64) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if table.generation == generation && !table.deaf {
            table.principals.insert(hash, principal);
        }
    }
}

impl Table {
    fn remove(&mut self, target: &Target) -> Option<Entry> {
        let entry = self.entries.remove(target)?;
        self.weight -= entry.weight;
        Some(entry)
    }

    fn unretain(&mut self, digest: &Digest) -> Option<Arc<Connector>> {
        let retained = self.retained.remove(digest)?;
        self.weight -= 1;
        Some(retained.connector)
    }
}
