//! What a demo shows of itself (named threads, the `ps` view, `/proc/locks`, the timeline),
//! through the crate's public API.

mod named {
    use common::threads::named::{gettid, kernel_name, spawn, spawn_scoped};

    #[test]
    fn a_named_thread_has_its_own_tid_and_the_kernel_keeps_15_bytes_of_its_name() {
        let long = "a-thread-with-a-long-name";
        let (tid, comm) = spawn(long, || {
            let tid = gettid();
            let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
            (tid, comm.trim_end().to_string())
        })
        .unwrap()
        .join()
        .unwrap();
        assert_ne!(tid as u32, std::process::id());
        assert_eq!(comm, kernel_name(long));
        assert_eq!(comm, "a-thread-with-a");
    }

    #[test]
    fn a_scoped_thread_may_borrow_and_is_joined_by_its_scope() {
        let mut counter = 0;
        std::thread::scope(|s| {
            spawn_scoped(s, "borrower", || counter += 1).unwrap();
        });
        assert_eq!(counter, 1);
    }
}

mod locks {
    use common::locks::{FileLock, holders_and_waiters, parse_line};

    #[test]
    fn holders_and_waiters_are_told_apart() {
        let (inode, held) =
            parse_line("1: FLOCK  ADVISORY  WRITE 4182 fe:00:10010635 0 EOF").unwrap();
        assert_eq!(inode, 10010635);
        assert_eq!(
            held,
            FileLock { pid: 4182, kind: "FLOCK".into(), access: "WRITE".into(), waiting: false }
        );
        let (_, waiting) =
            parse_line("1: -> FLOCK  ADVISORY  WRITE 4183 fe:00:10010635 0 EOF").unwrap();
        assert!(waiting.waiting);
        assert_eq!(waiting.pid, 4183);
        let (_, posix) = parse_line("2: POSIX  ADVISORY  READ 77 08:01:42 0 EOF").unwrap();
        assert_eq!((posix.kind.as_str(), posix.access.as_str()), ("POSIX", "READ"));
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn a_lock_this_process_holds_is_listed_as_held() {
        let path = std::env::temp_dir().join(format!("common-locks-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        file.lock().unwrap();
        let (holders, waiters) = holders_and_waiters(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(holders, [std::process::id() as i32]);
        assert!(waiters.is_empty());
    }
}

mod ps {
    use common::ps::{children_of, parse_stat, stat, threads};

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        // A whole line of a zombie, as the kernel writes it (52 fields).
        let line = "4182 (buyer (3) x) Z 4170 4170 4100 34816 4170 4194560 0 0 0 0 0 0 0 0 20 0 1 \
                    0 987654 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 \
                    0 0 0 0 0 3";
        let info = parse_stat(line).unwrap();
        assert_eq!(info.start_ticks, 987654);
        assert_eq!(info.pid, 4182);
        assert_eq!(info.comm, "buyer (3) x");
        assert_eq!(info.state, 'Z');
        assert_eq!((info.ppid, info.pgid, info.sid, info.tty_nr), (4170, 4170, 4100, 34816));
    }

    #[test]
    fn this_process_is_running_and_is_its_parents_child() {
        let me = std::process::id() as i32;
        // The process's own stat shows its main thread, which the test harness may have put
        // to sleep; this thread, the one reading, is certainly running.
        let this_thread = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert_eq!(parse_stat(&this_thread).unwrap().state, 'R');
        let info = stat(me).unwrap();
        assert!(children_of(info.ppid).contains(&me));
    }

    #[test]
    fn a_sleeping_named_thread_is_in_the_thread_table_in_state_s() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = common::threads::named::spawn("ps-sleeper", move || {
            ready_tx.send(common::threads::named::gettid()).unwrap();
            let _ = rx.recv();
        })
        .unwrap();
        let tid = ready_rx.recv().unwrap();
        let me = std::process::id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let row = loop {
            let row = threads(me).into_iter().find(|t| t.tid == tid).expect("the thread's row");
            if row.state == 'S' || std::time::Instant::now() > deadline {
                break row;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        assert_eq!((row.comm.as_str(), row.state), ("ps-sleeper", 'S'));
        assert_eq!(threads(me)[0].tid, me);
        drop(tx);
        handle.join().unwrap();
    }
}

mod timeline {
    use common::timeline::{Record, Style, draw, lanes, parse};
    use serde_json::{Value, json};

    fn rec(t_ms: u64, pid: i32, who: &str, event: &str) -> Record {
        Record {
            t_ms,
            t_us: t_ms * 1000,
            pid,
            ppid: 1,
            who: who.into(),
            tid: 0,
            thread: String::new(),
            event: event.into(),
            data: Value::Null,
        }
    }

    /// Seed 002's four tasks, started together and joined: the parent outlives them all.
    fn four_tasks() -> Vec<Record> {
        let mut r = vec![rec(100, 10, "main", "start_all")];
        for (i, ms) in [500u64, 300, 200, 100].iter().enumerate() {
            let pid = 11 + i as i32;
            r.push(rec(101 + i as u64, pid, &format!("task-{}", i + 1), "running"));
            r.push(rec(101 + i as u64 + ms, pid, &format!("task-{}", i + 1), "done"));
        }
        r.push(rec(610, 10, "main", "joined_all"));
        r
    }

    fn lane_row<'a>(text: &'a str, label: &str) -> &'a str {
        text.lines().find(|l| l.trim_start().starts_with(label)).unwrap()
    }

    #[test]
    fn each_process_gets_one_lane_from_its_first_to_its_last_event() {
        let lanes = lanes(&four_tasks(), false);
        assert_eq!(lanes.len(), 5);
        assert_eq!((lanes[0].who.as_str(), lanes[0].start_ms, lanes[0].end_ms), ("main", 100, 610));
        assert_eq!((lanes[1].pid, lanes[1].start_ms, lanes[1].end_ms), (11, 101, 601));
        assert_eq!(lanes[4].events, 2);
    }

    #[test]
    fn lane_lengths_follow_the_durations_on_one_axis() {
        let text = draw("start all, then join all", &four_tasks(), &Style::new());
        assert!(text.starts_with("start all, then join all (1 column = 10 ms;"));
        // 100..=610 ms fits 60 columns at 10 ms per column; the axis starts on a tick.
        let main = lane_row(&text, "main 10");
        let task1 = lane_row(&text, "task-1 11");
        let task4 = lane_row(&text, "task-4 14");
        let bars =
            |row: &str| -> (usize, usize) { (row.find('|').unwrap(), row.rfind('|').unwrap()) };
        let (m0, m1) = bars(main);
        let (t0, t1) = bars(task1);
        let (f0, f1) = bars(task4);
        assert_eq!(m1 - m0, 51); // 100 ms to 610 ms
        assert_eq!(t1 - t0, 50);
        assert_eq!(f1 - f0, 10);
        assert!(t0 >= m0 && t1 <= m1, "the parent's lane covers its children's:\n{text}");
        assert!(main[m0..=m1].chars().all(|c| c == '|' || c == '='));
        let axis = text.lines().rev().nth(1).unwrap();
        assert_eq!(axis.trim_start().chars().next(), Some('+'));
        assert_eq!(axis.find('+').unwrap(), m0, "the axis starts where the first lane starts");
        let labels = text.lines().last().unwrap();
        assert!(labels.trim_start().starts_with("0.1s      0.2s      0.3s"), "{labels}");
    }

    #[test]
    fn marks_and_spans_are_drawn_on_the_lane_and_a_mark_wins_over_its_end() {
        let mut records = vec![
            rec(0, 7, "producer", "start"),
            rec(20, 7, "producer", "put"),
            rec(30, 7, "producer", "blocked"),
            rec(60, 7, "producer", "unblocked"),
            rec(90, 7, "producer", "blocked"),
            rec(99, 7, "producer", "done"),
        ];
        records[2].data = json!({ "item": 3 });
        let style = Style::new().width(120).mark("put", '*').mark("start", 'S').span_labelled(
            "blocked",
            "unblocked",
            '.',
            "item",
        );
        let text = draw("queue", &records, &style);
        assert!(text.contains("* put") && text.contains(". blocked to unblocked"), "{text}");
        let row = lane_row(&text, "producer 7");
        let lane = &row[row.find('S').unwrap()..];
        // 1 ms per column: put at 20, blocked 30..60 labelled "3", blocked again from 90 to
        // the end of the lane (never unblocked), the last column a bar.
        assert_eq!(&lane[..20], "S===================");
        assert_eq!(&lane[20..21], "*");
        assert_eq!(&lane[30..31], "3");
        assert!(lane[31..=60].chars().all(|c| c == '.'), "{lane}");
        assert!(lane[61..90].chars().all(|c| c == '='), "{lane}");
        assert!(lane[90..99].chars().all(|c| c == '.'), "{lane}");
        assert!(lane.ends_with('|') && lane.len() == 100);
    }

    #[test]
    fn a_single_event_is_a_single_bar_and_nothing_recorded_says_so() {
        let text = draw("one", &[rec(3, 1, "solo", "hello")], &Style::new());
        assert!(lane_row(&text, "solo 1").ends_with(" |"), "{text}");
        assert_eq!(draw("none", &[], &Style::new()), "none: nothing was recorded\n");
    }

    #[test]
    fn a_short_stretch_late_in_a_run_gets_a_fine_scale_and_ticks_on_round_times() {
        let text = draw("late", &[rec(1234, 1, "a", "x"), rec(1300, 2, "b", "y")], &Style::new());
        // 66 ms in 60 columns: 2 ms a column, from 1234 ms; the first tick at 1240 ms.
        assert!(text.starts_with("late (1 column = 2 ms;"), "{text}");
        let row = lane_row(&text, "b 2");
        assert_eq!(row.rfind('|').unwrap() - lane_row(&text, "a 1").find('|').unwrap(), 33);
        let axis = text.lines().rev().nth(1).unwrap().trim_start();
        assert_eq!(axis.find('+'), Some(3), "{text}");
        let labels = text.lines().last().unwrap().trim_start();
        assert!(labels.starts_with("1.24s"), "{text}");
    }

    #[test]
    fn lines_that_are_not_records_are_skipped() {
        let text = "{\"t_ms\":1,\"pid\":2,\"ppid\":1,\"who\":\"a\",\"event\":\"e\",\"data\":{}}\n\
                    half a line\n{\"t_ms\":2,\"pid\":3,\"who\":\"b\",\"event\":\"f\"}\n";
        let records = parse(text);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].who, "b");
    }
}

mod trace {
    use common::sampler::Sample;
    use common::timeline::Record;
    use common::trace::{Model, Outputs};
    use serde_json::{Value, json};

    fn rec(t_us: u64, pid: i32, tid: i32, event: &str, data: Value) -> Record {
        Record {
            t_ms: t_us / 1000,
            t_us,
            pid,
            ppid: 1,
            who: format!("buyer-{pid}"),
            tid,
            thread: "main".into(),
            event: event.into(),
            data,
        }
    }

    fn sample(t_us: u64, pid: i32, state: char, run_ns: u64, wait_ns: u64) -> Sample {
        Sample { t_us, pid, tid: pid, comm: format!("buyer-{pid}"), state, cpu: 0, run_ns, wait_ns }
    }

    #[test]
    fn samples_become_slices_and_r_is_split_into_running_and_ready() {
        let samples = [
            sample(0, 5, 'R', 0, 0),
            sample(2000, 5, 'R', 1_500_000, 100),
            sample(4000, 5, 'R', 1_500_100, 1_900_000),
            sample(6000, 5, 'S', 1_500_200, 1_900_000),
            sample(8000, 5, 'Z', 1_500_200, 1_900_000),
        ];
        let model = Model::build(&[], &samples, 2000);
        let states: Vec<(&str, u64, u64)> =
            model.states.iter().map(|s| (s.state.name, s.start_us, s.end_us)).collect();
        assert_eq!(
            states,
            [("running", 0, 4000), ("ready", 4000, 6000), ("S", 6000, 8000), ("Z", 8000, 8001)]
        );
    }

    #[test]
    fn a_span_left_open_ends_with_its_thread_and_marks_pair_by_name() {
        let records = [
            rec(10, 7, 7, "phase", json!({"ph": "B", "name": "task running"})),
            rec(20, 7, 7, "phase", json!({"ph": "B", "name": "critical section"})),
            rec(30, 7, 7, "phase", json!({"ph": "E", "name": "critical section"})),
            rec(90, 7, 7, "busy", json!({})),
        ];
        let model = Model::build(&records, &[], 2000);
        let spans: Vec<(&str, u64, u64, bool)> =
            model.spans.iter().map(|s| (s.name.as_str(), s.start_us, s.end_us, s.closed)).collect();
        assert_eq!(spans, [("task running", 10, 90, false), ("critical section", 20, 30, true)]);
    }

    #[test]
    fn a_put_flows_to_the_first_got_of_the_same_item() {
        let records = [
            rec(10, 7, 7, "put", json!({"item": 1, "qsize": 1})),
            rec(11, 7, 7, "put", json!({"item": 2, "qsize": 2})),
            rec(50, 8, 8, "got", json!({"item": 2, "qsize": 1})),
            rec(60, 8, 8, "got", json!({"item": 1, "qsize": 0})),
        ];
        let model = Model::build(&records, &[], 2000);
        let flows: Vec<(u64, u64)> = model.flows.iter().map(|f| (f.from.2, f.to.2)).collect();
        assert_eq!(flows, [(11, 50), (10, 60)]);
        let sizes: Vec<f64> = model.counters.iter().map(|c| c.value).collect();
        assert_eq!(sizes, [1.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn real_message_ids_pair_each_put_with_its_get_and_replace_the_guess() {
        let records = [
            rec(10, 7, 7, "queue_put", json!({"msg": 5})),
            rec(11, 7, 7, "put", json!({"item": 1})),
            rec(12, 7, 7, "queue_put", json!({"msg": 6})),
            rec(13, 7, 7, "put", json!({"item": 1})),
            rec(50, 8, 8, "queue_got", json!({"msg": 6})),
            rec(51, 8, 8, "got", json!({"item": 1})),
            rec(60, 9, 9, "queue_got", json!({"msg": 5})),
            rec(61, 9, 9, "got", json!({"item": 1})),
            rec(70, 7, 7, "task_submitted", json!({"pool": 3, "job": 0})),
            rec(90, 7, 8, "task_result", json!({"pool": 3, "job": 0})),
        ];
        let model = Model::build(&records, &[], 2000);
        let flows: Vec<(&str, Value, u64, u64)> =
            model.flows.iter().map(|f| (f.name, f.key.clone(), f.from.2, f.to.2)).collect();
        assert_eq!(
            flows,
            [
                ("message", json!({"msg": 6}), 12, 50),
                ("message", json!({"msg": 5}), 10, 60),
                ("result", json!({"pool": 3, "job": 0}), 70, 90),
            ]
        );
        // The recorded ends are drawn as their arrows, not as instants of their own.
        let ends = ["queue_put", "queue_got", "task_submitted", "task_result"];
        assert!(model.instants.iter().all(|i| !ends.contains(&i.name.as_str())));
    }

    #[test]
    fn bad_output_paths_are_refused_naming_the_flag() {
        let dir = std::env::temp_dir();
        let svg = Outputs { trace: None, svg: Some(dir.clone()) };
        let e = svg.check().unwrap_err().to_string();
        assert!(e.starts_with("--svg ") && e.contains("directory"), "{e}");
        let missing = dir.join("no-such-dir-for-a-trace").join("t.json");
        let trace = Outputs { trace: Some(missing), svg: None };
        let e = trace.check().unwrap_err().to_string();
        assert!(e.starts_with("--trace ") && e.contains("does not exist"), "{e}");
    }
}

mod sampler {
    use std::time::{Duration, Instant};

    use common::ps::{children_of, state_of};
    use common::sampler::Sampler;

    #[test]
    fn a_grandchild_is_found_through_children_and_last_seen_as_a_zombie() {
        // sh starts a short sleep in the background, then becomes a long sleep (exec), which
        // never reaps it: the grandchild ends and stays a zombie under its parent. (A child of
        // the test process itself could be reaped by another test's waitpid(-1).)
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.05 & exec sleep 30"])
            .spawn()
            .unwrap();
        let parent = child.id() as i32;
        let sampler =
            Sampler::start(std::process::id() as i32, Duration::from_millis(2), None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let grandchild = loop {
            let zombie = children_of(parent).into_iter().find(|pid| state_of(*pid) == Some('Z'));
            if let Some(pid) = zombie {
                break pid;
            }
            assert!(Instant::now() < deadline, "no zombie grandchild appeared");
            std::thread::sleep(Duration::from_millis(5));
        };
        // `stop` reads every task once more before it returns: the last sample is the Z.
        let samples = sampler.stop();
        let _ = child.kill();
        let _ = child.wait();
        let states: Vec<char> =
            samples.iter().filter(|s| s.pid == grandchild).map(|s| s.state).collect();
        assert_eq!(states.last(), Some(&'Z'), "{states:?}");
        assert!(samples.iter().any(|s| s.pid == parent && s.state == 'S'));
        assert!(samples.iter().all(|s| s.comm != "sampler"), "the sampler samples itself");
        assert!(samples.windows(2).all(|w| w[0].t_us <= w[1].t_us));
    }
}

mod cli {
    use clap::Parser;
    use common::cli::{CommonArgs, number_in};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn parse(args: &[&str]) -> Result<CommonArgs, String> {
        let args = std::iter::once("demo").chain(args.iter().copied());
        Cli::try_parse_from(args).map(|cli| cli.common).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_numbers_are_refused_with_the_value_in_the_message() {
        let refused = parse(&["--hold=-1"]).unwrap_err();
        assert!(refused.contains("\"-1\" is not a number of seconds from 0 to 3600"), "{refused}");
        assert!(parse(&["--hold", "nan"]).is_err());
        assert!(parse(&["--speed", "0"]).is_err());
        assert_eq!(parse(&["--speed", "2.5"]).unwrap().speed, 2.5);
        assert_eq!(number_in(0.0..=60.0, "seconds")("60"), Ok(60.0));
    }
}

mod report {
    use std::os::fd::AsRawFd;

    use serde_json::{Value, json};

    /// The one test of this binary that records: nothing else appends to its file.
    #[test]
    fn a_recorded_event_is_one_json_object_on_one_line() {
        let path = std::env::temp_dir().join(format!("common-report-{}", std::process::id()));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        common::report::record_to(Some(file.as_raw_fd()));
        common::report::record_only("bought", json!({"before": 1, "after": 0}));
        common::report::record_to(None);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "{text:?}");
        let line: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((line["event"].as_str(), &line["data"]["after"]), (Some("bought"), &json!(0)));
        assert_eq!(line["pid"], std::process::id());
        assert_eq!(line["tid"], common::threads::named::gettid());
    }
}
