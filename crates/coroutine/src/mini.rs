//! A minimal executor, std only, short enough to read at once: what tokio does, without the
//! speed. A *task* is a future in a box; a *run queue* holds the tasks that may make progress;
//! a *waker* puts its task back on the run queue; a *timer* thread wakes sleeping tasks when
//! their moment comes.
//!
//! ```text
//!  spawn ──► run queue ──► worker thread: poll(task)
//!               ▲                 │ Pending: the task gave its waker to whatever it waits for
//!               │                 │ (the timer); Ready: the task is finished
//!               └──── waker ◄─────┘  (the timer calls wake() at the deadline)
//! ```
//!
//! Polling a task runs it until its next `.await` that is not ready: that is the *switch*; the
//! future itself (a state machine the compiler made from the `async` block) is the *saved
//! state*. One worker thread gives concurrency on one thread; two give parallelism too.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

type BoxedFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One task: its future (taken out while a worker polls it) and the executor it belongs to.
struct Task {
    future: Mutex<Option<BoxedFuture>>,
    shared: Arc<Shared>,
}

/// What the workers, the wakers and the timer share.
struct Shared {
    run_queue: Mutex<VecDeque<Arc<Task>>>,
    work: Condvar,
    /// Tasks spawned and not finished: the executor is done when it reaches 0.
    live: AtomicUsize,
    timer: Timer,
}

impl Wake for Task {
    /// Waking a task puts it back on the run queue, for a worker to poll it again.
    fn wake(self: Arc<Self>) {
        let shared = self.shared.clone();
        shared.run_queue.lock().unwrap_or_else(|e| e.into_inner()).push_back(self);
        shared.work.notify_one();
    }
}

/// A minimal executor: spawn tasks, then [`Executor::run`] them on some worker threads.
pub struct Executor {
    shared: Arc<Shared>,
}

impl Executor {
    pub fn new() -> Executor {
        Executor {
            shared: Arc::new(Shared {
                run_queue: Mutex::new(VecDeque::new()),
                work: Condvar::new(),
                live: AtomicUsize::new(0),
                timer: Timer::default(),
            }),
        }
    }

    /// Adds a task; it runs once [`Executor::run`] is called.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.shared.live.fetch_add(1, Ordering::SeqCst);
        let task = Arc::new(Task {
            future: Mutex::new(Some(Box::pin(future))),
            shared: self.shared.clone(),
        });
        task.wake();
    }

    /// A handle for `sleep` futures: they register with this executor's timer.
    pub fn timer(&self) -> TimerHandle {
        TimerHandle { shared: self.shared.clone() }
    }

    /// Runs every task to its end on `threads` worker threads (1: this thread alone).
    pub fn run(self, threads: usize) {
        let timer = {
            let shared = self.shared.clone();
            common::threads::named::spawn("timer", move || shared.timer.run_until_done())
                .expect("starting the timer thread")
        };
        if threads <= 1 {
            worker(&self.shared);
        } else {
            std::thread::scope(|s| {
                for i in 0..threads {
                    let shared = &self.shared;
                    common::threads::named::spawn_scoped(s, &format!("executor-{i}"), move || {
                        worker(shared)
                    })
                    .expect("starting an executor thread");
                }
            });
        }
        self.shared.timer.stop.store(true, Ordering::SeqCst);
        self.shared.timer.changed.notify_all();
        let _ = timer.join();
    }
}

impl Default for Executor {
    fn default() -> Executor {
        Executor::new()
    }
}

/// A worker: take a task from the run queue, poll it, until no task is left alive.
fn worker(shared: &Arc<Shared>) {
    loop {
        let task = {
            let mut queue = shared.run_queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(task) = queue.pop_front() {
                    break task;
                }
                if shared.live.load(Ordering::SeqCst) == 0 {
                    return;
                }
                queue = shared.work.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        // The future stays locked while it is polled: a wake-up that comes meanwhile puts the
        // task on the run queue again, and the worker that takes it waits here, then polls it
        // once more (a spurious poll, which every future must allow) or finds it finished.
        let mut slot = task.future.lock().unwrap_or_else(|e| e.into_inner());
        let Some(future) = slot.as_mut() else { continue };
        let waker = Waker::from(task.clone());
        // The switch: the task runs until it must wait, then hands the thread back.
        match future.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Pending => {}
            Poll::Ready(()) => {
                *slot = None;
                if shared.live.fetch_sub(1, Ordering::SeqCst) == 1 {
                    // The last task: wake the other workers so that they see it and leave.
                    let _guard = shared.run_queue.lock().unwrap_or_else(|e| e.into_inner());
                    shared.work.notify_all();
                }
            }
        }
    }
}

/// Deadlines and the wakers waiting for them, kept by one timer thread.
#[derive(Default)]
struct Timer {
    heap: Mutex<BinaryHeap<Reverse<(Instant, u64)>>>,
    wakers: Mutex<Vec<(u64, Waker)>>,
    next_id: AtomicUsize,
    changed: Condvar,
    stop: AtomicBool,
}

impl Timer {
    fn add(&self, deadline: Instant, waker: Waker) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) as u64;
        self.wakers.lock().unwrap_or_else(|e| e.into_inner()).push((id, waker));
        self.heap.lock().unwrap_or_else(|e| e.into_inner()).push(Reverse((deadline, id)));
        self.changed.notify_one();
    }

    /// Sleeps until the earliest deadline, wakes its task, and so on, until told to stop.
    fn run_until_done(&self) {
        let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            match heap.peek().copied() {
                Some(Reverse((deadline, id))) if deadline <= now => {
                    heap.pop();
                    let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(i) = wakers.iter().position(|(w, _)| *w == id) {
                        wakers.swap_remove(i).1.wake();
                    }
                }
                Some(Reverse((deadline, _))) => {
                    heap = self
                        .changed
                        .wait_timeout(heap, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    heap = self
                        .changed
                        .wait_timeout(heap, Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
}

/// Makes `sleep` futures for one executor.
#[derive(Clone)]
pub struct TimerHandle {
    shared: Arc<Shared>,
}

impl TimerHandle {
    /// A future that is ready `duration` from its first poll: the task waits without holding
    /// its thread (the timer wakes it).
    pub fn sleep(&self, duration: Duration) -> Sleep {
        Sleep { shared: self.shared.clone(), duration, deadline: None }
    }
}

/// See [`TimerHandle::sleep`].
pub struct Sleep {
    shared: Arc<Shared>,
    duration: Duration,
    deadline: Option<Instant>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let duration = self.duration;
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + duration);
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        self.shared.timer.add(deadline, cx.waker().clone());
        Poll::Pending
    }
}

/// A future that gives the thread up once: the task goes to the back of the run queue.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// See [`yield_now`].
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_sleeping_tasks_on_one_thread_take_about_one_sleep_not_ten() {
        let executor = Executor::new();
        let timer = executor.timer();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..10 {
            let (timer, done) = (timer.clone(), done.clone());
            executor.spawn(async move {
                timer.sleep(Duration::from_millis(200)).await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let began = Instant::now();
        executor.run(1);
        assert_eq!(done.load(Ordering::SeqCst), 10);
        // The sum would be 2 s; a generous bound, below half of it.
        assert!(began.elapsed() < Duration::from_secs(1), "{:?}", began.elapsed());
    }

    #[test]
    fn yielding_tasks_take_turns() {
        let executor = Executor::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        for name in ["a", "b"] {
            let order = order.clone();
            executor.spawn(async move {
                for i in 0..3 {
                    order.lock().unwrap().push(format!("{name}{i}"));
                    yield_now().await;
                }
            });
        }
        executor.run(1);
        assert_eq!(*order.lock().unwrap(), ["a0", "b0", "a1", "b1", "a2", "b2"]);
    }
}
