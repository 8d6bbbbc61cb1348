//! io — echo servers under the same load (the io-models demo): our `epoll`, `async` (tokio's
//! current-thread runtime) and `uring` servers beside Python's `socketserver.TCPServer`,
//! `ThreadingTCPServer` and an asyncio streams server (`python/io.py`), in the same run.
//!
//! Every server is its own process on 127.0.0.1 (the Rust ones are `io-models serve`), driven by
//! the same load client, `io_models::client` (one thread, epoll, 127.0.0.1 only): 50 connections
//! × 1,000 round trips of 64 bytes per run, every echoed byte checked. Figures: requests per
//! second (with its spread over the runs), p99 latency, the server's CPU per request (user +
//! system, from `/proc/PID/stat`, in clock ticks; and nanoseconds on a CPU from each thread's
//! `/proc/PID/task/TID/schedstat`, for our servers against each other), and system calls per
//! request, counted by `strace -f -c` attached to the server during a shorter
//! extra run (tracing slows a server down, so no other figure is taken under it).
//!
//! Targets: epoll and async ≥ 4× asyncio's requests/s and ≥ 2.5× ThreadingTCPServer's; server
//! CPU per request ≤ ¼ of asyncio's; io_uring ≤ 0.1 system calls per request (epoll makes 2);
//! the async server's CPU per request (schedstat) ≤ 1.15× our epoll server's, in the same run.
//! The client shares the two cores with the server, which is why requests/s ratios stop near 5×
//! while CPU per request ratios do not.

#[cfg(not(target_os = "linux"))]
pub fn run(_settings: &crate::measure::Settings) -> anyhow::Result<crate::measure::Outcome> {
    anyhow::bail!("the io suite needs Linux (epoll, io_uring, /proc)")
}

#[cfg(target_os = "linux")]
pub use linux::run;

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{BufRead, BufReader};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use anyhow::{Context, Result, bail};
    use serde_json::Value;

    use io_models::client::{self, Spec, process_cpu};

    use crate::measure::{Better, Outcome, Row, Settings, median};

    /// Connections and round trips per connection in a measured run.
    const CONNECTIONS: usize = 50;
    const REQUESTS: usize = 1_000;
    const SIZE: usize = 64;
    /// The async server's CPU per request at most this many times our epoll server's.
    const ASYNC_CPU_LIMIT: f64 = 1.15;
    /// [`ASYNC_CPU_LIMIT`] as a ratio (epoll / async: how many times less the async server
    /// spends, at least).
    const ASYNC_CPU_TARGET: f64 = 1.0 / ASYNC_CPU_LIMIT;
    /// Round trips per connection in the run counted by strace.
    const TRACED_REQUESTS: usize = 400;

    /// A server of either side.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Server {
        Epoll,
        Async,
        Uring,
        Serial,
        Threading,
        Asyncio,
    }

    impl Server {
        fn label(self) -> &'static str {
            match self {
                Server::Epoll => "epoll",
                Server::Async => "async",
                Server::Uring => "uring",
                Server::Serial => "socketserver.TCPServer",
                Server::Threading => "ThreadingTCPServer",
                Server::Asyncio => "asyncio streams",
            }
        }

        fn is_python(self) -> bool {
            matches!(self, Server::Serial | Server::Threading | Server::Asyncio)
        }

        fn command(self, io_models: &PathBuf) -> Command {
            let mut c = match self {
                Server::Epoll | Server::Async | Server::Uring => {
                    let mut c = Command::new(io_models);
                    c.args(["--json", "serve", "--stats-ms", "60000", "--max-connections", "1000"]);
                    c.args(["--max-line", "70000", "--model", self.label()]);
                    c
                }
                _ => {
                    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/io.py");
                    let mut c = Command::new("python3");
                    let which = match self {
                        Server::Serial => "tcpserver",
                        Server::Threading => "threading",
                        _ => "asyncio",
                    };
                    c.arg(script).args(["--server", which]);
                    c
                }
            };
            c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            c
        }
    }

    /// One server process, started, its port read from its first line.
    struct Running {
        child: Child,
        pid: i32,
        port: u16,
        /// Python's version, from the script's first line.
        python: Option<String>,
    }

    impl Running {
        fn start(server: Server, io_models: &PathBuf) -> Result<Running> {
            let mut child = server
                .command(io_models)
                .spawn()
                .with_context(|| format!("starting the {} server", server.label()))?;
            let stdout = child.stdout.take().context("the server's stdout")?;
            let mut first = String::new();
            BufReader::new(stdout)
                .read_line(&mut first)
                .context("reading the server's first line")?;
            let value: Value = serde_json::from_str(first.trim()).unwrap_or(Value::Null);
            let port = value["data"]["port"].as_u64().or_else(|| value["port"].as_u64());
            let Some(port) = port else {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let _ = child.wait();
                bail!("the {} server did not say its port: {first:?} {err}", server.label());
            };
            let python = value["python"].as_str().map(String::from);
            Ok(Running { pid: child.id() as i32, child, port: port as u16, python })
        }

        fn stop(mut self) {
            // Neither side's server keeps anything worth a clean end.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The figures of one server in one run.
    #[derive(Debug, Clone, Copy, Default)]
    struct Figures {
        rps: f64,
        p99_us: f64,
        cpu_us: f64,
        /// The user-space part of `cpu_us`: the server's own code, its runtime or interpreter.
        user_us: f64,
        /// Nanoseconds on a CPU per request, from `schedstat` (see [`on_cpu_ns`]); 0 where the
        /// server's threads come and go (Python's ThreadingTCPServer: a thread per client).
        cpu_ns: f64,
    }

    /// Nanoseconds the threads of `pid` have spent on a CPU: the first field of each
    /// `/proc/PID/task/TID/schedstat`, counted by the scheduler in nanoseconds (utime and
    /// stime are 10 ms clock ticks: a few per run for a Rust server). Only threads alive at the
    /// moment count, which is every thread of our servers (one thread each).
    fn on_cpu_ns(pid: i32) -> Option<u64> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let mut total = 0;
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total +=
                text.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        }
        Some(total)
    }

    fn spec(port: u16, requests: usize) -> Spec {
        Spec {
            port,
            connections: CONNECTIONS,
            requests,
            size: SIZE,
            varied: false,
            time_limit: Duration::from_secs(120),
            seed: 1,
            keep_open: false,
        }
    }

    /// Starts `server`, drives it once, reads its CPU, stops it.
    fn measure_once(server: Server, io_models: &PathBuf) -> Result<(Figures, Option<String>)> {
        let running = Running::start(server, io_models)?;
        // Warm up: the runtime, the ring, Python's imports are ready before the clock starts.
        let _ = client::run(&Spec { connections: 1, requests: 10, ..spec(running.port, 1) });
        let (u0, s0) = process_cpu(running.pid).unwrap_or_default();
        let ns0 = on_cpu_ns(running.pid).unwrap_or_default();
        let report = client::run(&spec(running.port, REQUESTS));
        let ns1 = on_cpu_ns(running.pid).unwrap_or_default();
        let (u1, s1) = process_cpu(running.pid).unwrap_or_default();
        let python = running.python.clone();
        running.stop();
        let report = report?;
        if !report.all_good() {
            bail!(
                "{}: {} of {} round trips right ({:?})",
                server.label(),
                report.completed,
                report.expected,
                report.ended.first()
            );
        }
        let per = |d: Duration| d.as_secs_f64() * 1e6 / report.completed.max(1) as f64;
        Ok((
            Figures {
                rps: report.requests_per_sec(),
                p99_us: report.latency.p99_us,
                cpu_us: per((u1 - u0) + (s1 - s0)),
                user_us: per(u1 - u0),
                cpu_ns: ns1.saturating_sub(ns0) as f64 / report.completed.max(1) as f64,
            },
            python,
        ))
    }

    /// System calls per request of `server`, counted by `strace -f -c` during a short run; `None`
    /// without strace (or where it may not attach).
    fn syscalls_per_request(server: Server, io_models: &PathBuf) -> Option<f64> {
        let running = Running::start(server, io_models).ok()?;
        let out = std::env::temp_dir().join(format!("bench-io-strace-{}.txt", std::process::id()));
        let strace = Command::new("strace")
            .args(["-f", "-c", "-q", "-o"])
            .arg(&out)
            .args(["-p", &running.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut strace) = strace else {
            running.stop();
            return None;
        };
        // strace says nothing when it has attached: give it a moment (a benchmark, not a test).
        std::thread::sleep(Duration::from_millis(500));
        let report = client::run(&spec(running.port, TRACED_REQUESTS));
        // SIGINT makes strace detach and write its summary.
        let _ = Command::new("kill").args(["-INT", &strace.id().to_string()]).status();
        let _ = strace.wait();
        running.stop();
        let text = std::fs::read_to_string(&out).ok()?;
        let _ = std::fs::remove_file(&out);
        let report = report.ok()?;
        // The summary's last line: "100.00  0.012345  1  20123  45 total" (errors may be absent).
        let total = text.lines().find(|l| l.trim_end().ends_with("total"))?;
        let fields: Vec<&str> = total.split_whitespace().collect();
        let calls: f64 = fields.get(3)?.parse().ok()?;
        Some(calls / report.completed.max(1) as f64)
    }

    /// The spread of requests/s of our servers over the runs (min / median / max: one bad run
    /// is seen as what it is), and the async server's CPU per request over our epoll server's,
    /// run by run (both measured in the same run, one after the other).
    fn spread(servers: &[Server], figures: &[Vec<Figures>]) -> String {
        let of = |server: Server| servers.iter().position(|&s| s == server).map(|i| &figures[i]);
        let min_med_max = |values: &[f64]| {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(0.0, f64::max);
            (min, median(values), max)
        };
        let mut parts = Vec::new();
        for server in [Server::Epoll, Server::Async, Server::Uring] {
            let Some(runs) = of(server) else { continue };
            let rps: Vec<f64> = runs.iter().map(|f| f.rps / 1e3).collect();
            if rps.is_empty() {
                continue;
            }
            let (min, med, max) = min_med_max(&rps);
            parts.push(format!("{} {min:.0} / {med:.0} / {max:.0} k", server.label()));
        }
        let mut text = format!(
            "requests/s over {} runs, min / median / max: {}",
            figures.first().map_or(0, Vec::len),
            parts.join("; ")
        );
        if let (Some(epoll), Some(async_)) = (of(Server::Epoll), of(Server::Async)) {
            let ratios: Vec<f64> = epoll
                .iter()
                .zip(async_)
                .filter(|(e, _)| e.cpu_ns > 0.0)
                .map(|(e, a)| a.cpu_ns / e.cpu_ns)
                .collect();
            if !ratios.is_empty() {
                let (min, med, max) = min_med_max(&ratios);
                text.push_str(&format!(
                    "; async CPU per request / epoll's, run by run: {min:.2} / {med:.2} / \
                     {max:.2} (target ≤ {ASYNC_CPU_LIMIT})"
                ));
            }
        }
        text
    }

    /// The io-models binary beside this one, rebuilt first when run by cargo (which sets CARGO).
    fn io_models_binary() -> Result<PathBuf> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let dir = exe.parent().context("the bench binary's folder")?;
        if let Some(cargo) = std::env::var_os("CARGO") {
            let mut build = Command::new(cargo);
            build.args(["build", "-q", "-p", "io-models"]);
            if dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build.status().context("cargo build -p io-models")?;
            if !status.success() {
                bail!("cargo build -p io-models failed");
            }
        }
        let path = dir.join("io-models");
        if !path.is_file() {
            bail!(
                "{} not found: build it first (cargo build --release -p io-models)",
                path.display()
            );
        }
        Ok(path)
    }

    pub fn run(settings: &Settings) -> Result<Outcome> {
        let io_models = io_models_binary()?;
        let uring_ok = {
            let probe = Running::start(Server::Uring, &io_models);
            match probe {
                Ok(r) => {
                    r.stop();
                    true
                }
                Err(_) => false,
            }
        };
        let python_ok =
            Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
        let mut servers = vec![Server::Epoll, Server::Async];
        if uring_ok {
            servers.push(Server::Uring);
        }
        if python_ok {
            servers.extend([Server::Serial, Server::Threading, Server::Asyncio]);
        }
        let mut figures: Vec<Vec<Figures>> = vec![Vec::new(); servers.len()];
        let mut python_version = None;
        let mut python_error = None;
        for _ in 0..settings.runs {
            // Each run measures every server once, in turn, so all see the same machine.
            for (i, &server) in servers.iter().enumerate() {
                match measure_once(server, &io_models) {
                    Ok((f, version)) => {
                        figures[i].push(f);
                        if version.is_some() {
                            python_version = version;
                        }
                    }
                    Err(e) if server.is_python() => python_error = Some(format!("{e:#}")),
                    Err(e) => return Err(e),
                }
            }
        }
        let med = |server: Server, pick: fn(&Figures) -> f64| -> Option<f64> {
            let i = servers.iter().position(|&s| s == server)?;
            let values: Vec<f64> = figures[i].iter().map(pick).collect();
            (!values.is_empty()).then(|| median(&values))
        };
        let rps = |s| med(s, |f| f.rps);
        let cpu = |s| med(s, |f| f.cpu_us);
        let p99 = |s| med(s, |f| f.p99_us);
        // User time is read in 10 ms clock ticks, a handful per run for a Rust server: the mean
        // over the runs (all the same size) uses every tick, where a median would keep one run's.
        let user = |server: Server| -> Option<f64> {
            let i = servers.iter().position(|&s| s == server)?;
            let values: Vec<f64> = figures[i].iter().map(|f| f.user_us).collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let calls: Vec<(Server, Option<f64>)> =
            servers.iter().map(|&s| (s, syscalls_per_request(s, &io_models))).collect();
        let calls_of = |s: Server| calls.iter().find(|(x, _)| *x == s).and_then(|(_, c)| *c);

        let mut rows = Vec::new();
        let mut row = |figure: String, unit, better, rust: Option<f64>, python, target| {
            if let Some(rust) = rust {
                rows.push(Row { figure, unit, better, rust, python, target });
            }
        };
        let rust_servers: Vec<Server> =
            servers.iter().copied().filter(|s| !s.is_python()).collect();
        for (peer, target) in [(Server::Asyncio, 4.0), (Server::Threading, 2.5)] {
            for &s in &rust_servers {
                row(
                    format!("{} req/s vs {}", s.label(), peer.label()),
                    "req/s",
                    Better::Higher,
                    rps(s),
                    rps(peer),
                    (s != Server::Uring).then_some(target),
                );
            }
        }
        row(
            "epoll req/s vs serial TCPServer".into(),
            "req/s",
            Better::Higher,
            rps(Server::Epoll),
            rps(Server::Serial),
            None,
        );
        for &s in &rust_servers {
            let target = (s != Server::Uring).then_some(4.0);
            row(
                format!("{} server CPU vs asyncio", s.label()),
                "µs/req",
                Better::Lower,
                cpu(s),
                cpu(Server::Asyncio),
                target,
            );
        }
        for &s in &rust_servers {
            let figure = format!("{} user-space CPU vs asyncio", s.label());
            row(figure, "µs/req", Better::Lower, user(s), user(Server::Asyncio), None);
        }
        row(
            "epoll server CPU vs ThreadingTCPServer".into(),
            "µs/req",
            Better::Lower,
            cpu(Server::Epoll),
            cpu(Server::Threading),
            None,
        );
        for &s in &rust_servers {
            row(
                format!("{} p99 vs asyncio", s.label()),
                "µs",
                Better::Lower,
                p99(s),
                p99(Server::Asyncio),
                None,
            );
        }
        for &s in &rust_servers {
            row(
                format!("{} syscalls vs asyncio", s.label()),
                "calls/req",
                Better::Lower,
                calls_of(s),
                calls_of(Server::Asyncio),
                None,
            );
        }
        // Not a comparison with Python: the python column holds our epoll server's figure.
        row(
            "uring syscalls vs our epoll (python col.)".into(),
            "calls/req",
            Better::Lower,
            calls_of(Server::Uring),
            calls_of(Server::Epoll),
            Some(20.0),
        );

        // The async server's own cost: its CPU per request beside our epoll server's, both from
        // schedstat, in the same run. The target, async ≤ 1.15× epoll's, reads as a ratio
        // (epoll / async) of at least 1 / 1.15.
        let cpu_ns = |s| med(s, |f| f.cpu_ns);
        for s in [Server::Async, Server::Uring] {
            row(
                format!("{} CPU per request (schedstat) vs our epoll (python col.)", s.label()),
                "ns/req",
                Better::Lower,
                cpu_ns(s),
                cpu_ns(Server::Epoll),
                (s == Server::Async).then_some(ASYNC_CPU_TARGET),
            );
        }

        let mut notes = vec![format!(
            "{CONNECTIONS} connections × {REQUESTS} round trips × {SIZE} bytes per run on 127.0.0.1; \
         the load client shares this machine's two cores with the server: requests/s is capped \
         by it (client-bound), so compare CPU per request and system calls per request"
        )];
        notes.push(
            "server CPU per request = user + system (clock ticks of /proc/PID/stat, comparable \
         with Python's); the system part (the kernel's loopback TCP) is the same floor for every \
         server, so the total ratio stays near 3-5x while the user-space part (the runtime's own \
         cost) differs by 10x and more. The schedstat rows count nanoseconds on a CPU (the \
         scheduler's own clock, /proc/PID/task/TID/schedstat), fine enough to tell the async \
         server's runtime from our epoll loop: the async server keeps one idle deadline per \
         connection (a tokio Sleep moved only when it fires after activity), not a \
         tokio::time::timeout armed and disarmed around every read"
                .into(),
        );
        notes.push(
            "system calls counted by strace -f -c in a separate shorter run; the io_uring target \
         (≤ 0.1 calls/request, epoll makes 2) reads as uring ≥ 20× fewer than our epoll"
                .into(),
        );
        notes.push(spread(&servers, &figures));
        if !uring_ok {
            notes.push(
                "uring skipped: io_uring is refused here (io-models serve --model uring says why)"
                    .into(),
            );
        }
        if calls.iter().all(|(_, c)| c.is_none()) {
            notes.push("system calls per request skipped: strace is not available here".into());
        }
        let python = match (python_ok, python_version, python_error) {
            (false, _, _) => Err("python3 not found on PATH".to_string()),
            (true, _, Some(e)) => Err(e),
            (true, Some(v), None) => Ok(v),
            (true, None, None) => Err("python3 io.py printed no version".to_string()),
        };
        Ok(Outcome { rows, python, notes })
    }
}
