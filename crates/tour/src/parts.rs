//! The course in order: seed 004's table of contents (操作系统 → 进程 → 线程 → 池 → 单线程下实现并发
//! → 网络IO模型), each section with the demo parts that are its experiments.

/// One step of the tour: a demo's subcommand under the notes' section it illustrates.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// The section of seed 004's table of contents, numbered as there.
    pub section: &'static str,
    /// The demo crate (and binary).
    pub demo: &'static str,
    /// Its subcommand and the part's own flags.
    pub args: &'static [&'static str],
    /// What the part shows, in a line (the summary's column).
    pub shows: &'static str,
    /// Part of the course's main line; the others run only with `--all`.
    pub core: bool,
}

const fn part(
    section: &'static str,
    demo: &'static str,
    args: &'static [&'static str],
    shows: &'static str,
) -> Part {
    Part { section, demo, args, shows, core: true }
}

/// A part beyond the main line, run with `--all`.
const fn extra(
    section: &'static str,
    demo: &'static str,
    args: &'static [&'static str],
    shows: &'static str,
) -> Part {
    Part { section, demo, args, shows, core: false }
}

/// The tour, in the notes' order: every part of every demo but the Unix daemon's `start`,
/// `status` and `stop` (a daemon outlives its launcher, which a tour must not leave behind).
pub const PARTS: &[Part] = &[
    // 1、操作系统
    part(
        "§1 操作系统: 多道技术 (时间上的复用)",
        "multiprogramming",
        &["run", "--tick-ms", "5"],
        "process-run.py's table, then the same jobs on one CPU, measured from /proc",
    ),
    extra(
        "§1 操作系统: 批处理 vs 多道技术",
        "multiprogramming",
        &["batch", "--tick-ms", "5"],
        "the batch monitor against switching on IO; what switching between CPU jobs costs",
    ),
    part(
        "§1 操作系统: 多道技术 (空间上的复用)",
        "multiprogramming",
        &["space"],
        "one virtual address, a physical frame per process; copy-on-write; a MAP_SHARED page",
    ),
    extra(
        "§1 操作系统: 最核心的优化就是减少IO操作",
        "multiprogramming",
        &["fewer-io"],
        "one write(2) a line against buffered writes, and fsync each line",
    ),
    // 2、进程
    part(
        "§2.1 进程理论: 进程与程序",
        "multiprogramming",
        &["program"],
        "one program file (one exe inode), three processes; the four ways a process starts",
    ),
    part(
        "§2.1 进程理论: 并发与并行, 串行",
        "multiprogramming",
        &["serial-concurrent-parallel", "--work-ms", "50"],
        "the same CPU-bound jobs serial, taking turns on one CPU, and on two CPUs",
    ),
    part(
        "§2.1 进程理论: 一个进程的三种运行状态",
        "multiprogramming",
        &["states"],
        "running, ready (schedstat's wait) and blocked (S, and D), seen in /proc",
    ),
    part(
        "§2.1 进程理论: 不同操作系统开启子进程的区别",
        "fork-vs-spawn",
        &["isolation"],
        "a child's write never reaches the parent; fork: same address, other contents (COW)",
    ),
    part(
        "§2.1 进程理论: 不同操作系统开启子进程的区别",
        "fork-vs-spawn",
        &["inherit"],
        "a run-time value is in a fork child, not in a spawn child",
    ),
    extra(
        "§2.1 进程理论: 不同操作系统开启子进程的区别",
        "fork-vs-spawn",
        &["guard"],
        "without the __main__ guard each spawn child starts another: a chain of PPIDs",
    ),
    extra(
        "§2.1 进程理论: 不同操作系统开启子进程的区别",
        "fork-vs-spawn",
        &["buffer"],
        "a buffered line is written twice after fork, once after a flush",
    ),
    extra(
        "§2.1 进程理论: 不同操作系统开启子进程的区别",
        "fork-vs-spawn",
        &["methods"],
        "fork, spawn, forkserver: what each child finds, what each costs",
    ),
    part(
        "§2.1 进程理论: 一个进程的三种运行状态",
        "zombie-orphan",
        &["states"],
        "R, S, T and Z side by side in /proc",
    ),
    part(
        "§2.2 开启进程的两种方式",
        "process-basics",
        &["two-ways"],
        "a target function and a type with run(): two children",
    ),
    part(
        "§2.2 开启进程的两种方式",
        "process-basics",
        &["pids"],
        "each child's PPID is the demo's PID",
    ),
    part(
        "§2.3 多进程的执行顺序",
        "process-basics",
        &["start-join"],
        "start returns at once, join blocks until the child ends",
    ),
    part(
        "§2.3 多进程的执行顺序",
        "process-basics",
        &["tasks"],
        "start all then join all ≈ the longest task; start-join each ≈ the sum",
    ),
    extra(
        "§2.3 多进程的执行顺序",
        "process-basics",
        &["examples", "4"],
        "seed 001 例子四: where the parent's code ends",
    ),
    extra(
        "§2.3 多进程的执行顺序",
        "process-basics",
        &["send-mail"],
        "the notes' send_mail says \"all sent\" while mails still go out",
    ),
    extra(
        "§2.3 多进程的执行顺序",
        "process-basics",
        &["order"],
        "the children's order differs between rounds",
    ),
    extra(
        "§2.4 进程对象的常用属性",
        "process-basics",
        &["attributes"],
        "name, pid, is_alive, exitcode before and after",
    ),
    part(
        "§2.4 进程对象的常用属性",
        "process-basics",
        &["exits"],
        "exitcode 0, 3, 1, -6, -9, -15: how a process ended",
    ),
    part(
        "§2.5 僵尸进程和孤儿进程",
        "zombie-orphan",
        &["zombie"],
        "STAT Z <defunct> until the parent's waitpid",
    ),
    extra(
        "§2.5 僵尸进程和孤儿进程",
        "zombie-orphan",
        &["cures"],
        "reaping on SIGCHLD; SIGCHLD ignored: no zombie",
    ),
    extra("§2.5 僵尸进程和孤儿进程", "zombie-orphan", &["many"], "N children unreaped: N Z rows"),
    part(
        "§2.5 僵尸进程和孤儿进程",
        "zombie-orphan",
        &["orphan"],
        "an orphan's PPID changes; it stays alive (S)",
    ),
    part(
        "§2.6 守护进程",
        "daemon",
        &["daemonic"],
        "a daemonic child is terminated when its parent exits: end123 never printed",
    ),
    extra(
        "§2.6 守护进程",
        "daemon",
        &["rules"],
        "a daemonic child may not start a Process (os.fork works); the flag is set before start",
    ),
    part(
        "§2.6 守护进程",
        "daemon",
        &["orphan"],
        "a parent killed by SIGKILL: its daemonic child lives on, adopted",
    ),
    extra(
        "§2.6 守护进程",
        "daemon",
        &["pdeathsig"],
        "PR_SET_PDEATHSIG: the child dies with its parent",
    ),
    part(
        "§2.7 互斥锁与信号量",
        "mutex-ticket",
        &["run", "--no-lock"],
        "no lock: every buyer reads 1, OVERSOLD",
    ),
    part("§2.7 互斥锁与信号量", "mutex-ticket", &["run"], "a flock around buy: exactly one sale"),
    part(
        "§2.7 互斥锁与信号量: 互斥锁与join的区别",
        "mutex-ticket",
        &["run", "--join"],
        "join is correct too, but serializes the searches as well",
    ),
    part(
        "§2.7 互斥锁与信号量",
        "mutex-ticket",
        &["crash"],
        "a buyer killed holding the lock: db.json still whole",
    ),
    part(
        "§2.7 互斥锁与信号量: Semaphore信号量",
        "semaphore",
        &["processes"],
        "a semaphore across processes: at most N inside at once",
    ),
    part("§2.8 IPC机制: 队列, 管道", "ipc", &["pipe"], "EOF only when every write end is closed"),
    extra(
        "§2.8 IPC机制: 队列, 管道",
        "ipc",
        &["torn"],
        "a pipe has no lock: readers tear messages",
    ),
    extra("§2.8 IPC机制: 队列, 管道", "ipc", &["duplex"], "Pipe(): a socketpair, both ways"),
    part(
        "§2.8 IPC机制: 队列, 管道",
        "ipc",
        &["shared-memory"],
        "shared memory: every process maps one page, one counter",
    ),
    extra(
        "§2.8 IPC机制: 队列, 管道",
        "ipc",
        &["file"],
        "a file shared by processes: slower, less safe",
    ),
    part(
        "§2.9 进程queue=管道+锁",
        "joinable-queue",
        &["basics"],
        "Queue = pipe + lock: two pipe:[…] and a memfd in /proc/PID/fd",
    ),
    extra(
        "§2.9 进程queue=管道+锁",
        "joinable-queue",
        &["bounded"],
        "Queue(2) full: the producer asleep in put (S)",
    ),
    part(
        "§2.10 生产者消费者模型",
        "joinable-queue",
        &["sentinel"],
        "producers and consumers ended by a sentinel (None)",
    ),
    part(
        "§2.10 生产者消费者模型",
        "joinable-queue",
        &["joinable", "--kill-consumer"],
        "JoinableQueue: a consumer killed holding a bun is reported, not a silent hang",
    ),
    // 3、线程
    extra(
        "§3.1 线程理论: 是什么",
        "threads",
        &["names"],
        "one PID, a tid and a name per thread in /proc/PID/task",
    ),
    part(
        "§3.1 线程理论: 线程vs进程",
        "threads",
        &["shared"],
        "threads share the process's memory; processes do not",
    ),
    extra(
        "§3.1 线程理论: 线程vs进程",
        "threads",
        &["cost"],
        "a thread starts many times cheaper than a fork child (the run says how many)",
    ),
    extra(
        "§3.1 线程理论: 线程vs进程",
        "fork-vs-spawn",
        &["cost"],
        "start+join of threads, fork, spawn and fork-server children, in µs",
    ),
    part(
        "§3.2 开启线程的两种方式",
        "threads",
        &["two-ways"],
        "a function and a type: two named threads in ps -L",
    ),
    part(
        "§3.3 守护线程",
        "threads",
        &["daemon"],
        "a daemon thread ends with the process, not with main's code",
    ),
    part(
        "§3.4 互斥锁与信号量",
        "threads",
        &["race"],
        "load-then-store loses updates; Mutex and fetch_add are exact",
    ),
    extra(
        "§3.4 互斥锁与信号量",
        "threads",
        &["dead-holder"],
        "a lock whose holder ended: free, poisoned, or locked for good",
    ),
    part(
        "§3.4 互斥锁与信号量: 信号量",
        "semaphore",
        &["threads"],
        "Semaphore(3): never more than 3 threads inside",
    ),
    extra(
        "§3.4 互斥锁与信号量: 信号量",
        "semaphore",
        &["bounded"],
        "BoundedSemaphore: one release too many is an error",
    ),
    part(
        "§3.5 GIL vs 互斥锁",
        "gil",
        &["experiment", "--n", "2000000"],
        "two threads counting down: no GIL in Rust; CPython's take about twice one thread's time",
    ),
    part(
        "§3.5 GIL vs 互斥锁",
        "gil",
        &["simulated"],
        "a GIL built in Rust: two threads now take twice one thread's time",
    ),
    extra(
        "§3.5 GIL vs 互斥锁",
        "gil",
        &["convoy"],
        "the convoy effect: an IO thread behind a CPU thread",
    ),
    extra(
        "§3.5 GIL vs 互斥锁",
        "gil",
        &["vs-mutex"],
        "the GIL does not protect your data: a lock still needed",
    ),
    part(
        "§3.7 死锁现象与递归锁",
        "deadlock",
        &["classic"],
        "two scientists, two locks, opposite orders: deadlock found and killed",
    ),
    extra(
        "§3.7 死锁现象与递归锁",
        "deadlock",
        &["self"],
        "one thread locks a std Mutex twice: asleep for ever (S), no detector",
    ),
    part(
        "§3.7 死锁现象与递归锁",
        "deadlock",
        &["rlock"],
        "a reentrant lock: the holder may take it again",
    ),
    part(
        "§3.7 死锁现象与递归锁",
        "deadlock",
        &["philosophers"],
        "five philosophers in a ring: found and killed; then each fix, every meal counted",
    ),
    extra(
        "§3.7 死锁现象与递归锁",
        "deadlock",
        &["processes"],
        "two processes, two file locks in opposite orders: flock sleeps for ever, fcntl says EDEADLK",
    ),
    part(
        "§3.8 线程queue",
        "thread-queue",
        &["orders"],
        "Queue, LifoQueue, PriorityQueue: three orders",
    ),
    extra(
        "§3.8 线程queue",
        "thread-queue",
        &["blocking"],
        "put on a full queue and get on an empty one block, with timeouts",
    ),
    part("§3.8 线程queue", "thread-queue", &["joinable"], "task_done and join between threads"),
    extra(
        "§3.8 线程queue",
        "thread-queue",
        &["shutdown"],
        "shutdown(): consumers' get raises ShutDown",
    ),
    part(
        "§3.9 Event事件",
        "event",
        &["light"],
        "cars wait on the light (Event) and go when it is set",
    ),
    extra(
        "§3.9 Event事件",
        "event",
        &["timeout"],
        "connect and retry: wait(timeout) returns False until the server is ready",
    ),
    extra(
        "§3.9 Event事件",
        "event",
        &["processes"],
        "an Event across processes: one futex word in shared memory",
    ),
    // 4、池
    part("§4 池", "pool", &["apply-async"], "Pool(3): 4 tasks in 3 pids, **** first"),
    extra("§4 池", "pool", &["apply"], "apply: strictly one after another"),
    extra("§4 池", "pool", &["get"], "results in item order; dropping a pool waits for its work"),
    part("§4 池", "pool", &["callback"], "a callback runs in the parent's pool-results thread"),
    extra("§4 池", "pool", &["which-pool"], "CPU- and IO-bound tasks on processes and threads"),
    part(
        "§4 池",
        "pool",
        &["fault"],
        "kill -9 a worker: one error result, a new pid, every other task done",
    ),
    // 5、单线程下实现并发
    part(
        "§5.1 同步调用 异步调用+回调机制",
        "coroutine",
        &["calls"],
        "synchronous vs blocking: two different waits",
    ),
    part(
        "§5.1 同步调用 异步调用+回调机制",
        "coroutine",
        &["callbacks"],
        "asynchronous calls with callbacks: who runs the callback",
    ),
    part(
        "§5.3 单线程下实现并发: 协程",
        "coroutine",
        &["switch"],
        "concurrency = switching + saving state",
    ),
    extra(
        "§5.3 单线程下实现并发: 如何实现协程",
        "coroutine",
        &["three-ways"],
        "three ways to a coroutine, and what a switch costs",
    ),
    part(
        "§5.3 单线程下实现并发: 协程",
        "coroutine",
        &["executor"],
        "ten sleeping tasks on one thread take one sleep",
    ),
    // 6、网络IO模型
    part(
        "§6 网络IO模型",
        "io-models",
        &["explain"],
        "who waits in each phase of a read, model by model",
    ),
    part(
        "§6 网络IO模型",
        "io-models",
        &["compare"],
        "every model driven by the load client: one table",
    ),
    extra(
        "§6 网络IO模型",
        "io-models",
        &["idle"],
        "idle connections: memory, threads, CPU per model",
    ),
];

/// The demos in the order they first appear in the tour.
pub fn demos() -> Vec<&'static str> {
    let mut seen = Vec::new();
    for p in PARTS {
        if !seen.contains(&p.demo) {
            seen.push(p.demo);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    /// The tour and `crates/demos.txt` name the same demos: a new demo crate gets its parts
    /// here, and no part names a crate that is not a demo.
    #[test]
    fn the_tour_covers_every_demo_of_the_list_and_nothing_else() {
        let mut listed = common::demo::demos();
        let mut toured = super::demos();
        listed.sort_unstable();
        toured.sort_unstable();
        assert_eq!(toured, listed);
    }
}
