//! multiprogramming: process-run.py's table reproduced to the character for programs worked
//! out by hand, and the real kernel's view of the same ideas: CPU busy with and without
//! switching on IO, the states R, S, D and ready, one address and its frames, one program file
//! for several processes. Ticks are kept small (`--tick-ms`), so the whole file runs in seconds.

mod support;

use std::os::unix::fs::MetadataExt;

use serde_json::Value;
use support::{Demo, pid_of, ps, run, run_ok};

const BIN: &str = "multiprogramming";

/// The parts that run real jobs pin them to the same CPU (the last one): two such tests at
/// once would measure each other. They take turns; the table-only tests run beside them.
static ONE_CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cpu_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_CPU.lock().unwrap_or_else(|e| e.into_inner())
}

fn data(event: &Value) -> &Value {
    &event["data"]
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Worked by hand (the same table as `process-run.py -c -p -P c1,i:c2 -L 2`): job 0's IO starts
/// at tick 2 and ends at the start of tick 2 + 2 + 1 = 5, marked *, while job 1 fills 3 and 4.
#[test]
fn predict_only_prints_process_runs_own_table_for_a_program() {
    let out = run(BIN, &["run", "-P", "c1,i:c2", "-L", "2", "-c"]);
    out.assert_code(0).assert_nothing_left();
    let lines: Vec<&str> = out.stdout.lines().map(str::trim_end).collect();
    let start = lines.iter().position(|l| l.starts_with("Time ")).expect("the table's header");
    assert_eq!(
        lines[start..start + 10],
        [
            "Time        PID: 0        PID: 1           CPU           IOs",
            "  1        RUN:cpu         READY             1",
            "  2         RUN:io         READY             1",
            "  3        BLOCKED       RUN:cpu             1             1",
            "  4        BLOCKED       RUN:cpu             1             1",
            "  5*   RUN:io_done          DONE             1",
            "",
            "Stats: Total Time 5",
            "Stats: CPU Busy 5 (100.00%)",
            "Stats: IO Busy  2 (40.00%)",
        ],
        "{}",
        out.stdout
    );
    // -c predicts only: no job was loaded.
    assert!(!out.stdout.contains("loaded as processes"), "{}", out.stdout);
}

/// Worked by hand: under SWITCH_ON_END with IO_RUN_IMMEDIATE spelled the OSTEP way, job 1
/// waits READY through job 0's IO (the CPU idle at ticks 2 and 3), then runs.
#[test]
fn ostep_spellings_are_accepted_and_switch_on_end_idles_through_the_io() {
    let out = run_ok(
        BIN,
        &[
            "run",
            "-P",
            "i:c2",
            "-L",
            "2",
            "-S",
            "SWITCH_ON_END",
            "-I",
            "IO_RUN_IMMEDIATE",
            "-c",
            "-p",
        ],
    );
    let p = data(out.one("prediction"));
    assert_eq!(
        (p["total"].as_u64(), p["cpu_busy"].as_u64(), p["io_busy"].as_u64()),
        (Some(6), Some(4), Some(2))
    );
    let cpu: Vec<bool> = p["rows"].as_array().unwrap().iter().map(|r| r["cpu"] == true).collect();
    assert_eq!(cpu, [true, false, false, true, true, true], "{p}");
}

/// `process-run.py -s 1 -l 3:50,3:50` (the homework's first question) draws job 0 = cpu, io,
/// io and job 1 = three cpu (checked against CPython's random by hand: 0.134, 0.847, 0.763,
/// then 0.255, 0.495, 0.449 against 0.5).
#[test]
fn seed_1_draws_the_homeworks_own_programs() {
    let out = run_ok(BIN, &["run", "-s", "1", "-l", "3:50,3:50", "--predict-only"]);
    assert_eq!(data(out.one("jobs"))["programs"], serde_json::json!(["c1,i,i", "c3"]));
}

/// What is wrong in a job string is refused before anything starts, naming the flag.
#[test]
fn bad_job_strings_exit_2_and_name_the_flag() {
    for (args, flag) in [
        (&["run", "--jobs", "5:101"][..], "--jobs"),
        (&["run", "-P", "c"], "--program"),
        (&["run", "--program", "i3"], "--program"),
        (&["run", "--program", ""], "--program"),
        (&["run", "--jobs", ""], "--jobs"),
        (&["run", "--jobs", "100000:50"], "--jobs"),
        (&["run", "--program", "c100000"], "--program"),
        (&["run", "--tick-ms", "0"], "--tick-ms"),
        (&["run", "--tick-ms", "1001"], "--tick-ms"),
        (&["run", "-P", "c1", "-L", "101"], "--io-length"),
        (&["run", "-P", "c1", "-S", "SWITCH_SOMETIMES"], "--switch"),
        (&["run", "-P", "c100,c100", "--tick-ms", "1000"], "--program"),
        (&["fewer-io", "--dir", "/nonexistent-folder"], "--dir"),
        (&["fewer-io", "--dir", "/proc"], "--dir"),
    ] {
        let out = run(BIN, args);
        out.assert_code(2).assert_nothing_left();
        assert!(out.stderr.contains(flag), "{args:?}: stderr should name {flag}: {}", out.stderr);
    }
    // A run too long is refused too, naming --tick-ms.
    let out = run(BIN, &["run", "-P", "c100:c100", "--tick-ms", "1000"]);
    out.assert_code(2).assert_nothing_left();
    assert!(out.stderr.contains("--tick-ms"), "{}", out.stderr);
}

#[test]
fn every_count_flag_has_a_cap_and_beyond_it_nothing_starts() {
    support::assert_capped(BIN, &["space"], "--processes", 16);
    support::assert_capped(BIN, &["serial-concurrent-parallel"], "--work-ms", 2000);
    support::assert_capped(BIN, &["fewer-io"], "--lines", 100_000);
}

/// The measured CPU busy % of one real run.
fn cpu_busy(args: &[&str]) -> (f64, f64) {
    let out = run_ok(BIN, args);
    let m = data(out.one("measured"));
    let p = data(out.one("prediction"));
    (f64_of(&m["cpu_busy_pct"]), f64_of(&p["cpu_busy_pct"]))
}

/// 多道 against 批处理 on the real kernel: with jobs that mostly wait for IO, switching on IO
/// keeps the one CPU far busier than running the jobs one after the other. A ratio, not an
/// absolute figure.
#[test]
fn cpu_busy_under_on_io_is_well_above_on_end_for_an_io_heavy_mix() {
    let _turn = cpu_turn();
    // Each job computes 2 ticks per IO of 10: under on-end the CPU idles through every IO;
    // under on-io the IOs overlap with the other jobs' work. On a loaded machine the jobs get
    // only a share of the CPU, which lowers both figures and their ratio, but far from 1.
    // As root the jobs run under SCHED_FIFO, so that the machine's other work cannot take their
    // CPU (a shared, loaded CI machine would blur both figures); otherwise the normal policy.
    let mix = "i,i,i:i,i,i:i,i,i";
    let policy = if nix::unistd::geteuid().is_root() { "fifo" } else { "normal" };
    let common = ["run", "-P", mix, "-L", "10", "--tick-ms", "2", "--policy", policy];
    let (on_io, predicted_io) = cpu_busy(&[&common[..], &["--switch", "on-io"]].concat());
    let (on_end, predicted_end) = cpu_busy(&[&common[..], &["--switch", "on-end"]].concat());
    eprintln!(
        "CPU busy: on-io {on_io:.1} % (predicted {predicted_io:.1}), on-end {on_end:.1} % (predicted {predicted_end:.1})"
    );
    assert!(predicted_io > 1.5 * predicted_end);
    assert!(on_io > 1.5 * on_end, "on-io {on_io:.1} % against on-end {on_end:.1} %");
}

/// Under SCHED_FIFO (root) a job runs until it blocks, as process-run.py assumes: job 1, released
/// just after job 0, waits ready through job 0's two CPU ticks (under the normal policy the
/// kernel would share the CPU between them).
#[test]
fn policy_fifo_runs_under_sched_fifo_and_follows_the_prediction() {
    let _turn = cpu_turn();
    if !nix::unistd::geteuid().is_root() {
        let out = run(BIN, &["run", "-P", "c2,i:c3", "--policy", "fifo", "--tick-ms", "2"]);
        out.assert_code(2).assert_nothing_left();
        assert!(out.stderr.contains("--policy fifo"), "{}", out.stderr);
        eprintln!("skipped the SCHED_FIFO run: not root (the refusal was checked instead)");
        return;
    }
    let out =
        run_ok(BIN, &["run", "-P", "c2,i:c3", "-L", "3", "--policy", "fifo", "--tick-ms", "3"]);
    assert_eq!(data(out.one("loaded"))["policy"], "fifo");
    let jobs = data(out.one("measured"))["jobs"].clone();
    let (ran0, ready1) = (f64_of(&jobs[0]["running_ms"]), f64_of(&jobs[1]["ready_ms"]));
    // Job 0 ran 2 CPU ticks, its IO's tick, and its io_done: job 1 waited through the first 3.
    assert!(ready1 >= 0.9 * 3.0 * 3.0, "job 1 ready {ready1} ms while job 0 ran {ran0} ms: {jobs}");
}

/// The states, read from /proc by the test itself while the demo holds them: R, S and D; then
/// the woken job's run-queue wait, which schedstat shows grew before it ran.
#[test]
fn states_shows_r_s_and_d_and_a_woken_job_waits_ready_first() {
    let _turn = cpu_turn();
    let mut demo = Demo::start(BIN, &["states", "--json", "--hold", "3"]);
    let hold = demo.wait_event("hold");
    let seen: Vec<Value> =
        demo.events().iter().filter(|e| e["event"] == "state_seen").cloned().collect();
    let by_state = |s: &str| {
        seen.iter()
            .find(|e| data(e)["state"] == s)
            .map(|e| pid_of(&data(e)["pid"]))
            .unwrap_or_else(|| panic!("no {s} in {seen:?}"))
    };
    let (r, s, d) = (by_state("R"), by_state("S"), by_state("D"));
    assert!(
        data(&hold)["command"]
            .as_str()
            .unwrap()
            .starts_with("ps -o pid,stat,psr,wchan:20,comm -p ")
    );
    // The test's own reading: the computing job is runnable, the IO job asleep, the vfork
    // parent in uninterruptible sleep inside clone().
    assert_eq!(ps::state_of(r), Some('R'));
    assert_eq!(ps::state_of(s), Some('S'));
    assert_eq!(ps::state_of(d), Some('D'));
    assert!(ps::wchan(d).contains("clone"), "wchan of the vfork parent: {:?}", ps::wchan(d));
    let out = demo.finish();
    out.assert_code(0).assert_nothing_left();
    let woken = data(out.one("woken"));
    assert!(
        woken["ready_ns"].as_u64().unwrap() >= 1_000,
        "no run-queue wait after the wake-up: {woken}"
    );
}

/// The woken job's line says "first ready" exactly when the wait it prints is above zero, and
/// "ran at once" otherwise.
#[test]
fn the_woken_jobs_line_follows_its_own_figure() {
    let _turn = cpu_turn();
    let out = run(BIN, &["states"]);
    out.assert_code(0).assert_nothing_left();
    let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    let at = text.find("its IO ended:").unwrap_or_else(|| out.fail("no wake-up line"));
    let line = &text[at..];
    if line.contains("was first ready") {
        let ms = number_after(line, "but not running, for ")
            .unwrap_or_else(|| out.fail("no ready time"));
        assert!(ms > 0.0, "first ready for {ms} ms: {line}");
    } else {
        assert!(line.contains("ran at once"), "neither verdict: {line}");
    }
}

/// One virtual address, a frame per process; after fork one frame until the write, then two;
/// a MAP_SHARED page one frame for both. Frame numbers need root: otherwise the demo says so.
#[test]
fn space_sees_one_address_a_frame_per_process_and_copy_on_write() {
    let out = run_ok(BIN, &["space", "--processes", "3"]);
    let frames = data(out.one("frames"));
    let rows = frames["processes"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["address"] == frames["address"]), "{frames}");
    if frames["readable"] != true {
        eprintln!("skipped the frame checks: /proc/PID/pagemap hides frame numbers from non-root");
        return;
    }
    assert_eq!(frames["distinct"], 3, "{frames}");
    let cow = data(out.one("cow"));
    assert_eq!(
        cow["before"]["parent"], cow["before"]["child"],
        "one frame before the write: {cow}"
    );
    assert_ne!(cow["after"]["parent"], cow["after"]["child"], "two frames after it: {cow}");
    assert_eq!(cow["parent_value"], 42);
    let shared = data(out.one("shared"));
    assert_eq!(shared["after"]["parent"], shared["after"]["child"], "{shared}");
    assert_eq!(shared["parent_reads"], 8);
}

/// One program file, three processes: one exe inode, which is the demo's own program.
#[test]
fn program_sees_one_exe_inode_for_three_pids() {
    let out = run_ok(BIN, &["program"]);
    let program = data(out.one("program"));
    let rows = program["processes"].as_array().unwrap();
    let pids: std::collections::HashSet<i64> =
        rows.iter().map(|r| r["pid"].as_i64().unwrap()).collect();
    assert_eq!(pids.len(), 3);
    assert_eq!(program["distinct_exe"], 1, "{program}");
    let own = std::fs::metadata(support::bin(BIN)).unwrap();
    assert!(rows.iter().all(|r| r["inode"] == own.ino() && r["dev"] == own.dev()), "{program}");
    assert!(!out.named("ancestry").is_empty());
}

#[test]
fn fewer_io_counts_fewer_write_calls_when_buffered() {
    let out = run_ok(BIN, &["fewer-io", "--lines", "400"]);
    let ways = data(out.one("fewer_io"))["ways"].as_array().unwrap().clone();
    let writes = |i: usize| ways[i]["writes"].as_u64().unwrap();
    assert!(writes(0) >= 400, "one write(2) a line: {ways:?}");
    assert!(writes(1) * 10 < writes(0), "buffered: {ways:?}");
    assert!(!data(out.one("filesystem"))["name"].as_str().unwrap().is_empty());
}

#[test]
fn serial_concurrent_parallel_and_batch_run_and_leave_nothing() {
    let _turn = cpu_turn();
    let out = run_ok(BIN, &["serial-concurrent-parallel", "--work-ms", "20"]);
    let pairs = out.named("pair");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(pairs.len() == 3 || (cpus < 2 && !out.named("parallel_skipped").is_empty()));
    // On one CPU both jobs ran on the same CPU; in parallel on two different ones.
    let cpus_of = |i: usize| data(pairs[i])["cpus"].clone();
    assert_eq!(cpus_of(1)[0], cpus_of(1)[1]);
    if pairs.len() == 3 {
        assert_ne!(cpus_of(2)[0], cpus_of(2)[1]);
    }
    let out = run_ok(BIN, &["batch", "--tick-ms", "2"]);
    assert_eq!(out.named("batch_row").len(), 4);
    out.one("switch_cost");
}

/// Ctrl-C at each part's hold (jobs loaded, states shown, frames mapped, ...) leaves no
/// process behind, whether it reaches the whole group or the demo alone.
#[test]
fn ctrl_c_at_the_hold_leaves_nothing() {
    let _turn = cpu_turn();
    let parts: &[&[&str]] = &[
        &["run", "-P", "c1,i:c2", "--tick-ms", "2"],
        &["batch", "--tick-ms", "2"],
        &["states"],
        &["space", "--processes", "2"],
        &["program"],
        &["serial-concurrent-parallel", "--work-ms", "10"],
        &["fewer-io", "--lines", "50"],
    ];
    for (i, part) in parts.iter().enumerate() {
        Demo::ctrl_c_at_hold(BIN, part, i % 2 == 0);
    }
}

/// Whatever child is killed (a job, the device, a state's child, a space process), the demo
/// ends within a bound, says which child it lost, and leaves nothing behind.
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let _turn = cpu_turn();
    let parts: &[&[&str]] = &[
        &["run", "-P", "c2,i,c2:c4", "--tick-ms", "5"],
        &["states"],
        &["space", "--processes", "2"],
        &["program"],
        &["serial-concurrent-parallel", "--work-ms", "30"],
    ];
    let ms = std::time::Duration::from_millis;
    support::kill_random_children(BIN, parts, 1, ms(40), ms(20_000), 26);
}

/// Are the guesses judged against the run? The program file count is the kernel's, and the
/// woken job's state is schedstat's.
#[test]
fn guesses_are_judged_against_this_runs_figures() {
    let right = support::answer_of(BIN, &["program"], "exe-inodes", "1");
    assert_eq!((&right["data"]["actual"], &right["data"]["right"]), (&1.into(), &true.into()));
    let _turn = cpu_turn();
    let wrong = support::answer_of(BIN, &["states"], "woken-state", "running");
    assert_eq!(
        (&wrong["data"]["actual"], &wrong["data"]["right"]),
        (&"ready".into(), &false.into())
    );
}

/// The number printed right after `label` in `text` (`about 82 %` gives 82).
fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The CPU's busy figure from /proc/stat (whole 10 ms ticks) against the jobs' own (schedstat):
/// the line says the coarse figure is too coarse exactly when it came out below the jobs'.
#[test]
fn the_cpu_busy_line_follows_its_own_figures() {
    let _turn = cpu_turn();
    for args in [
        &["run", "-P", "c1,i:c2", "--tick-ms", "2"][..],
        &["run", "-P", "c3:c3", "--tick-ms", "20"],
    ] {
        let out = run(BIN, args);
        out.assert_code(0).assert_nothing_left();
        // People's lines are wrapped: one space between words, then the sentence alone.
        let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        let at = text.find("was busy about").unwrap_or_else(|| out.fail("no CPU busy line"));
        let line = &text[at..];
        let line = &line[..line.find("multiprogramming]").unwrap_or(line.len())];
        let all =
            number_after(line, "was busy about ").unwrap_or_else(|| out.fail("no CPU figure"));
        let jobs = number_after(line, "the jobs ").unwrap_or_else(|| out.fail("no jobs figure"));
        let says_coarse = line.contains("too coarse");
        // Rounding keeps the order of two figures, but may make unequal figures print equal.
        if all < jobs {
            assert!(says_coarse, "{all} % < {jobs} % and no word of it: {line}");
        } else if all > jobs {
            assert!(!says_coarse, "{all} % > {jobs} % but called too coarse: {line}");
        }
    }
}

/// `batch`'s switching cost: "no cost could be seen" exactly when the interleaved pair was no
/// slower, or had no more involuntary switches, than the serial pair, by the figures it prints.
#[test]
fn the_switch_cost_line_follows_its_own_figures() {
    let _turn = cpu_turn();
    let out = run(BIN, &["batch", "--tick-ms", "2"]);
    out.assert_code(0).assert_nothing_left();
    let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    let at = text.find("that never block").unwrap_or_else(|| out.fail("no switch cost line"));
    let line = &text[at..];
    let figure = |label: &str| number_after(line, label).unwrap_or_else(|| out.fail(label));
    let (serial_ms, serial_sw) = (figure("one after the other "), figure("ms ("));
    let interleaved_ms = figure("interleaved by the kernel ");
    let rest = &line[line.find("interleaved by the kernel").unwrap()..];
    let interleaved_sw = number_after(rest, "ms (").unwrap_or_else(|| out.fail("switches"));
    let no_cost = line.contains("No cost could be seen");
    // One decimal printed: equal printed figures may hide a difference either way.
    if interleaved_ms < serial_ms || interleaved_sw < serial_sw {
        assert!(no_cost, "{line}");
    } else if interleaved_ms > serial_ms && interleaved_sw > serial_sw {
        assert!(!no_cost, "{line}");
    }
}

/// `serial-concurrent-parallel`'s summary: "no sooner" when the interleaved pair took about
/// serial's wall time, "at once" when the parallel pair took well under it, by its printed ratios.
#[test]
fn the_pair_summary_follows_its_own_ratios() {
    let _turn = cpu_turn();
    let out = run(BIN, &["serial-concurrent-parallel", "--work-ms", "20"]);
    out.assert_code(0).assert_nothing_left();
    let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    let at = text.find("concurrent took").unwrap_or_else(|| out.fail("no summary"));
    let line = &text[at..];
    let concurrent = number_after(line, "concurrent took ").unwrap_or_else(|| out.fail("ratio"));
    // Two decimals printed: a ratio within 0.01 of a bound may fall either side.
    if (0.86..=1.14).contains(&concurrent) {
        assert!(line.contains("no sooner"), "{line}");
    } else if !(0.84..=1.16).contains(&concurrent) {
        assert!(!line.contains("no sooner"), "{line}");
    }
    if let Some(parallel) = number_after(line, "parallel (并行) took ") {
        if parallel < 0.74 {
            assert!(line.contains("ran the two jobs at once"), "{line}");
        } else if parallel > 0.76 {
            assert!(!line.contains("at once"), "{line}");
        }
    }
}

/// `--speed` is a flag every demo shares, but this one has no sleeps of the notes to scale:
/// it says so rather than take the flag in silence, and says nothing when it is not given.
#[test]
fn speed_is_said_to_change_nothing_here() {
    let out = run_ok(BIN, &["run", "-P", "c1", "-c", "--json", "--speed", "2"]);
    assert_eq!(out.one("speed_ignored")["data"]["speed"], 2.0, "{}", out.stdout);
    let out = run_ok(BIN, &["run", "-P", "c1", "-c", "--json"]);
    assert!(out.named("speed_ignored").is_empty(), "{}", out.stdout);
}
