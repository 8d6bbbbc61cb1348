//! The models by name, and who waits in each phase for each.

/// One echo server per IO model (Stevens' five, and the ways to serve many clients).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// One connection at a time: accept, then recv/send until it leaves (阻塞IO)
    Blocking,
    /// A thread per connection (socketserver's ThreadingTCPServer)
    Threads,
    /// A process per connection (socketserver's ForkingTCPServer), children reaped
    Fork,
    /// O_NONBLOCK sockets in a busy loop: EAGAIN counted, a CPU burnt (非阻塞IO)
    Nonblocking,
    /// Readiness multiplexing with select(2), capped at FD_SETSIZE (多路复用)
    Select,
    /// Readiness multiplexing with poll(2)
    Poll,
    /// Readiness multiplexing with epoll(7)
    Epoll,
    /// Signal-driven IO: O_ASYNC, F_SETOWN_EX, SIGIO (Stevens' fifth model)
    Signal,
    /// tokio's current-thread runtime: coroutines serving sockets
    Async,
    /// io_uring: the kernel does both phases and hands back completions (异步IO)
    Uring,
}

impl Model {
    pub const ALL: [Model; 10] = [
        Model::Blocking,
        Model::Threads,
        Model::Fork,
        Model::Nonblocking,
        Model::Select,
        Model::Poll,
        Model::Epoll,
        Model::Signal,
        Model::Async,
        Model::Uring,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Model::Blocking => "blocking",
            Model::Threads => "threads",
            Model::Fork => "fork",
            Model::Nonblocking => "nonblocking",
            Model::Select => "select",
            Model::Poll => "poll",
            Model::Epoll => "epoll",
            Model::Signal => "signal",
            Model::Async => "async",
            Model::Uring => "uring",
        }
    }

    /// Who waits in phase 1 (the data becoming ready) and in phase 2 (the copy to the process).
    pub fn phases(self) -> (&'static str, &'static str) {
        match self {
            Model::Blocking | Model::Threads | Model::Fork => {
                ("the process, blocked in recv", "the process, blocked in recv")
            }
            Model::Nonblocking => ("the process, spinning on EAGAIN", "the process, in recv"),
            Model::Select | Model::Poll | Model::Epoll => {
                ("the process, in the wait, for all sockets", "the process, in recv")
            }
            Model::Signal => ("nobody: the kernel sends SIGIO", "the process, in recv"),
            Model::Async => ("the runtime, in epoll_wait, for every task", "the task, in read"),
            Model::Uring => ("the kernel", "the kernel: the process gets a completion"),
        }
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
