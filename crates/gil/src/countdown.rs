//! countdown — seed 001's experiment (`while n > 0: n -= 1`) and the clocks that time it.

use std::hint::black_box;
use std::time::Duration;

/// Seed 001's `decrement(n)`: counts `n` down to 0 and returns how many decrements it made.
/// `black_box` hides `n` from the optimizer at every turn, so the loop really runs `n` times
/// (without it the compiler would replace the loop by `n = 0`).
#[inline(never)] // one machine code for every caller, so that the runs compare like with like
pub fn countdown(n: u64) -> u64 {
    let mut left = n;
    while black_box(left) > 0 {
        left -= 1;
    }
    n - left
}

/// The same countdown run as "bytecodes" under a simulated GIL: every decrement is followed by
/// a switch point (CPython checks at the loop's backward jump), where the GIL may change hands.
#[inline(never)]
pub fn countdown_under_gil(interp: &mut crate::sim::Interp<'_>, n: u64) -> u64 {
    let mut left = n;
    while black_box(left) > 0 {
        left -= 1;
        interp.tick();
    }
    n - left
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`): nanosecond resolution,
/// where `/proc/.../stat` counts in ticks of 10 ms.
pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time the whole process has used, every thread added up (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // Safety: clock_gettime writes one timespec into the one it is given.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system) of every child this process has reaped (`getrusage(RUSAGE_CHILDREN)`).
pub fn children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // Safety: getrusage fills the rusage it is given; it is read only when that succeeded.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Milliseconds of a duration, as a float for tables and events.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_countdown_makes_every_decrement_and_costs_cpu_time() {
        let before = thread_cpu();
        assert_eq!(countdown(2_000_000), 2_000_000);
        assert!(thread_cpu() > before);
        assert_eq!(countdown(0), 0);
    }
}
