//! Refusals spend the task's tokio budget.
//!
//! A refusal (an open breaker, a full bulkhead) answers without awaiting
//! anything, so a task that loops over refused calls would never give its
//! worker back: the tasks holding the bulkhead's slots would not run, the
//! slots would not come back, and the breaker's probes would be refused in
//! turn. tokio's own primitives avoid this by spending a unit of the task's
//! budget per operation and yielding when it runs out; refusals do the
//! same. Outside a tokio runtime the budget is unlimited.

use std::task::{ready, Context, Poll};

/// Ready once the task may go on; pending (with a wake-up scheduled) when
/// it has used its budget and should yield to the runtime's other tasks.
///
/// Out of line and cold: inlined, the budget's thread-local access made
/// the futures' healthy paths (which never refuse) about 45 instructions
/// longer, by changing what the compiler inlined around it.
#[cold]
#[inline(never)]
pub(crate) fn poll_refusal(cx: &mut Context<'_>) -> Poll<()> {
    let progress = ready!(tokio::task::coop::poll_proceed(cx));
    progress.made_progress();
    // Its drop would now restore nothing, in a call tokio does not inline.
    std::mem::forget(progress);
    Poll::Ready(())
}
