//! Work a build does on the side while it waits for uv (listing the base's layers, copying
//! its blobs): it must not take the cores uv and its Python need, or it only moves the wait.

/// The `nice` of a build's side threads.
const NICE: i32 = 10;

/// Lowers the calling thread's CPU priority (Linux keeps a priority per thread; a thread may
/// always lower its own). Failing only costs the ordering.
pub(crate) fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), NICE) {
        tracing::debug!("cannot lower a build thread's priority: {e}");
    }
}
