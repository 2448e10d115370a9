//! The watchdog: ends a run at its deadline even when the guest never
//! exits (a tight loop) or sleeps in the kernel (`hlt`, handled by KVM's
//! in-kernel LAPIC).
//!
//! A helper thread waits for the deadline, then sends the vCPU thread a
//! real-time signal whose handler does nothing: the signal makes KVM_RUN
//! return EINTR, and the run loop, which checks the clock on every exit,
//! stops. A signal that lands just before KVM_RUN is entered would be
//! lost, so the helper repeats it every [`KICK_INTERVAL`] until the run
//! loop says it has stopped.

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the helper re-sends the signal after the deadline.
pub const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// The signal used to kick the vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op handler once per process (the default action of a
/// real-time signal would end the process).
fn install_handler() -> Result<(), std::io::Error> {
    static ERRNO: OnceLock<i32> = OnceLock::new();
    let errno = *ERRNO.get_or_init(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
            .err()
            .map_or(0, |e| e.errno())
    });
    match errno {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// Runs `body` on this thread with a watchdog that kicks this thread from
/// `deadline` on until `body` returns.
pub fn with_watchdog<T>(deadline: Instant, body: impl FnOnce() -> T) -> Result<T, std::io::Error> {
    install_handler()?;
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() };
    let done = Mutex::new(false);
    let wake = Condvar::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut stopped = done.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if *stopped {
                    return;
                }
                let now = Instant::now();
                let wait = if now < deadline {
                    deadline - now
                } else {
                    // SAFETY: `target` is the thread running `body`; it
                    // is alive, since it sets `done` (under this lock,
                    // which we hold) before it leaves this scope, and
                    // `scope` joins this thread before returning.
                    unsafe { libc::pthread_kill(target, kick_signal()) };
                    KICK_INTERVAL
                };
                stopped = wake
                    .wait_timeout(stopped, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        });
        let out = body();
        *done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocking_syscall_is_interrupted_at_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(100);
        let r = with_watchdog(deadline, || {
            // pause() returns only when a signal handler ran.
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
            start.elapsed()
        })
        .unwrap();
        assert!(r >= Duration::from_millis(100), "{r:?}");
        assert!(r < Duration::from_secs(5), "{r:?}");
    }

    #[test]
    fn a_quick_body_is_never_kicked() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let start = Instant::now();
        assert_eq!(with_watchdog(deadline, || 7).unwrap(), 7);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
