//! What one call may use: [`Limits`] (CPU, wall-clock, memory, tables, instances, output, and
//! the host-side resources a guest can make), [`StoreLimiter`], the `ResourceLimiter` that
//! enforces the memory and table caps for a whole store, and [`HostBudget`], the part of the
//! budget that host tasks outside the store draw on (outbound connections).
//!
//! wasmtime's own `StoreLimits` caps each memory separately; a component holds several core
//! instances, each with its own memory, so the limiter here sums every memory in the store.
//! What a guest makes on the host side — resource-table entries (streams, pollables, HTTP
//! fields, requests, bodies), outbound connections, log lines — is capped as well, so a call's
//! host memory is bounded too (see [`Limits::handles`]).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Per-call limits. [`Limits::default`] is what a connector gets unless its install says
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Time the guest may spend executing, counted in epoch ticks of the runtime.
    #[serde(with = "millis")]
    pub cpu_time: Duration,
    /// Time the whole call may take, host calls (HTTP, sleeps) included.
    #[serde(with = "millis")]
    pub wall_time: Duration,
    /// Sum of all linear memories of the call's store, in bytes.
    pub memory_bytes: u64,
    /// Elements in any one table.
    pub table_elements: u64,
    /// Core and component instances in the store.
    pub instances: u32,
    /// Tables in the store.
    pub tables: u32,
    /// Linear memories in the store.
    pub memories: u32,
    /// Size of the JSON document an operation returns, in bytes.
    pub output_bytes: usize,
    /// Bytes of stderr kept from one call (a guest writing more gets a write error).
    pub stderr_bytes: usize,
    /// Entries in the call's resource table at once: every stream, pollable, HTTP `fields`,
    /// request, response and body the guest holds. Each host-side object is itself bounded (a
    /// `fields` holds at most [`FIELDS_BYTES`], an outgoing body buffers at most
    /// [`BODY_CHUNK_BYTES`] twice), so this caps the host memory a call can hold.
    pub handles: u32,
    /// Outbound HTTP connections open at once.
    pub connections: u32,
    /// Bytes of log messages kept from one call; later lines are dropped and counted.
    pub log_bytes: usize,
}

/// Most bytes one wasi:http `fields` (a header map) may hold.
pub const FIELDS_BYTES: usize = 16 << 10;
/// Largest write to an outgoing wasi:http body; one more such chunk may wait in its buffer.
pub const BODY_CHUNK_BYTES: usize = 16 << 10;

impl Default for Limits {
    fn default() -> Self {
        Self {
            // An integration call waits on the network far more than it computes: a second
            // of CPU (Fastly gives 50 ms, Cloudflare 10 ms to 30 s) is room for transforming
            // a document of the largest output (4 MiB) many times over.
            cpu_time: Duration::from_secs(1),
            wall_time: Duration::from_secs(30),
            memory_bytes: 128 << 20,
            table_elements: 100_000,
            instances: 64,
            tables: 64,
            memories: 16,
            output_bytes: 4 << 20,
            stderr_bytes: 64 << 10,
            handles: 512,
            connections: 6,
            log_bytes: 64 << 10,
        }
    }
}

/// Why a set of limits cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid limits: {0}")]
pub struct InvalidLimits(pub String);

impl Limits {
    /// Check that every limit is usable: nothing zero, and the memory cap within what the
    /// engine can give one memory (`engine_memory_max`).
    pub fn validate(&self, engine_memory_max: u64) -> Result<(), InvalidLimits> {
        let zero = [
            ("cpu_time", self.cpu_time.is_zero()),
            ("wall_time", self.wall_time.is_zero()),
            ("memory_bytes", self.memory_bytes == 0),
            ("table_elements", self.table_elements == 0),
            ("instances", self.instances == 0),
            ("tables", self.tables == 0),
            ("memories", self.memories == 0),
            ("output_bytes", self.output_bytes == 0),
            ("handles", self.handles == 0),
            ("connections", self.connections == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(InvalidLimits(format!("`{name}` must be greater than zero")));
        }
        if self.memory_bytes > engine_memory_max {
            return Err(InvalidLimits(format!(
                "`memory_bytes` is {} but this runtime allows at most {engine_memory_max}",
                self.memory_bytes
            )));
        }
        Ok(())
    }
}

/// A host-side resource a guest can make, each capped per call by [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resource {
    /// Entries in the call's resource table ([`Limits::handles`]).
    Handles,
    /// Outbound HTTP connections open at once ([`Limits::connections`]).
    Connections,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::Handles => "host handles (streams, HTTP fields, requests, ...)",
            Resource::Connections => "outbound connections open at once",
        })
    }
}

/// The part of one call's budget that host tasks outside the store draw on, and which
/// resource, if any, ran out first: a call that exhausts one fails with
/// `CallError::ResourceLimit`, whichever task noticed.
#[derive(Debug)]
pub struct HostBudget {
    /// Connections open now, and how many may be.
    connections: AtomicU32,
    max_connections: u32,
    exhausted: OnceLock<Resource>,
    /// Wakes the call, so it ends as soon as a host task exhausts the budget (even while the
    /// guest waits on something).
    waker: atomic_waker::AtomicWaker,
}

/// One open connection's place in its call's budget, given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<HostBudget>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Release);
    }
}

impl HostBudget {
    pub fn new(limits: &Limits) -> Self {
        Self {
            connections: AtomicU32::new(0),
            max_connections: limits.connections,
            exhausted: OnceLock::new(),
            waker: atomic_waker::AtomicWaker::new(),
        }
    }

    /// A connection slot, held for as long as the connection is open; `None` (and the budget
    /// marked exhausted) when all are taken.
    pub fn connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            });
        match taken {
            Ok(_) => Some(ConnectionSlot(self.clone())),
            Err(_) => {
                self.exhaust(Resource::Connections);
                None
            }
        }
    }

    /// Record that the call ran out of `resource` (the first one recorded is kept).
    pub fn exhaust(&self, resource: Resource) {
        let _ = self.exhausted.set(resource);
        self.waker.wake();
    }

    /// The resource the call ran out of, if any.
    pub fn exhausted(&self) -> Option<Resource> {
        self.exhausted.get().copied()
    }

    /// Resolves once the budget is exhausted.
    pub async fn exhaustion(&self) -> Resource {
        std::future::poll_fn(|cx| {
            if let Some(resource) = self.exhausted() {
                return std::task::Poll::Ready(resource);
            }
            self.waker.register(cx.waker());
            match self.exhausted() {
                Some(resource) => std::task::Poll::Ready(resource),
                None => std::task::Poll::Pending,
            }
        })
        .await
    }
}

/// Enforces [`Limits`] on one store and remembers whether a cap was hit, so that the trap that
/// usually follows a refused `memory.grow` can be reported as what it is.
#[derive(Debug)]
pub struct StoreLimiter {
    limits: Limits,
    memory_used: u64,
    memory_refused: bool,
}

impl StoreLimiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            memory_used: 0,
            memory_refused: false,
        }
    }

    /// The limits this limiter enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes of linear memory the store holds now, over all memories.
    pub fn memory_used(&self) -> u64 {
        self.memory_used
    }

    /// Whether a memory growth was refused because of the cap.
    pub fn memory_refused(&self) -> bool {
        self.memory_refused
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // `current` is 0 when a memory is first created, so the sum covers initial sizes too.
        let growth = desired.saturating_sub(current) as u64;
        let total = self.memory_used.saturating_add(growth);
        if total > self.limits.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Growth was allowed here but failed below (e.g. the pool's per-memory maximum): undo
        // nothing, the guest sees -1 and the cap accounting only over-counts, never under.
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired as u64 <= self.limits.table_elements)
    }

    fn instances(&self) -> usize {
        self.limits.instances as usize
    }

    fn tables(&self) -> usize {
        self.limits.tables as usize
    }

    fn memories(&self) -> usize {
        self.limits.memories as usize
    }
}

/// Durations as whole milliseconds in config files and APIs.
pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memory_cap_sums_all_memories() {
        let mut limiter = StoreLimiter::new(Limits {
            memory_bytes: 10 << 16,
            ..Limits::default()
        });
        // Two memories created with 4 pages each fit; growing the second by 3 more does not.
        assert!(limiter.memory_growing(0, 4 << 16, None).unwrap());
        assert!(limiter.memory_growing(0, 4 << 16, None).unwrap());
        assert!(!limiter.memory_growing(4 << 16, 7 << 16, None).unwrap());
        assert!(limiter.memory_refused());
        assert!(limiter.memory_growing(4 << 16, 6 << 16, None).unwrap());
        assert_eq!(limiter.memory_used(), 10 << 16);
    }

    #[test]
    fn validate_rejects_zero_and_oversized() {
        assert!(Limits::default().validate(u64::MAX).is_ok());
        let zero_cpu = Limits {
            cpu_time: Duration::ZERO,
            ..Limits::default()
        };
        assert!(
            zero_cpu
                .validate(u64::MAX)
                .unwrap_err()
                .0
                .contains("cpu_time")
        );
        assert!(
            Limits::default()
                .validate(1 << 20)
                .unwrap_err()
                .0
                .contains("memory_bytes")
        );
    }

    #[test]
    fn serde_uses_millis_and_defaults() {
        let limits: Limits = serde_json::from_str(r#"{"cpu_time": 250}"#).unwrap();
        assert_eq!(limits.cpu_time, Duration::from_millis(250));
        assert_eq!(limits.wall_time, Limits::default().wall_time);
        assert!(serde_json::from_str::<Limits>(r#"{"cpu": 1}"#).is_err());
    }
}
