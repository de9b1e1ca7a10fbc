//! The stores' own async runtime. The [`MetadataStore`](super::MetadataStore) and
//! [`BlobStore`](super::BlobStore) traits are synchronous (the registry runs their units off
//! the executor); the PostgreSQL and S3 backends are built on async clients. Their connection
//! tasks and I/O run on this small runtime of their own, and a unit waits for each step with
//! [`wait`], so it works the same from a blocking thread, from `block_in_place`, or inline on a
//! current-thread runtime — none of which it can deadlock, the work running elsewhere.

use std::future::Future;
use std::sync::OnceLock;

/// The runtime: two workers, created on first use and kept for the process's life (a runtime
/// may not be dropped inside another's context).
pub(crate) fn handle() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("gantry-store")
                .enable_all()
                .build()
                .expect("the store runtime starts")
        })
        .handle()
}

/// Run `future` on the calling thread until it completes, inside the store runtime's context
/// (so what it spawns, and its timers and sockets, belong to that runtime, whose workers drive
/// them).
pub(crate) fn wait<F: Future>(future: F) -> F::Output {
    let _context = handle().enter();
    futures::executor::block_on(future)
}

/// Run `future` on the store runtime and wait for its output.
pub(crate) fn run<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match futures::executor::block_on(handle().spawn(future)) {
        Ok(output) => output,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the store runtime stopped: {e}"),
    }
}
