//! fork-vs-spawn: every claim the demo prints, checked from its `--json` events, the files it
//! wrote and `/proc`.

mod support;

use serde_json::Value;
use support::{Demo, TempDir, ps, run};

const BIN: &str = "fork-vs-spawn";

fn path_arg(dir: &TempDir) -> &str {
    dir.path().to_str().expect("a UTF-8 temp path")
}

/// The event named `name` whose `data.key` equals `value`.
fn find<'a>(events: &[&'a Value], key: &str, value: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["data"][key] == value)
        .copied()
        .unwrap_or_else(|| panic!("no event with {key} = {value:?} among {events:?}"))
}

/// Whether this machine randomises the addresses of a newly executed program (ASLR on, and
/// not switched off for this process with `setarch -R`).
fn addresses_are_randomised() -> bool {
    let system = std::fs::read_to_string("/proc/sys/kernel/randomize_va_space")
        .map(|t| t.trim() != "0")
        .unwrap_or(false);
    const ADDR_NO_RANDOMIZE: u32 = 0x0040000;
    let personality = std::fs::read_to_string("/proc/self/personality")
        .ok()
        .and_then(|t| u32::from_str_radix(t.trim(), 16).ok())
        .unwrap_or(0);
    system && personality & ADDR_NO_RANDOMIZE == 0
}

#[test]
fn does_a_fork_child_write_at_the_parents_address_without_changing_the_parents_value() {
    let dir = TempDir::new("isolation");
    let out = run(BIN, &["isolation", "--json", "--dir", path_arg(&dir)]);
    out.assert_code(0).assert_nothing_left();
    let parent = &out.one("parent-value")["data"];
    assert_eq!(parent["value"], 50);
    let children = out.named("child-value");
    assert_eq!(children.len(), 2, "one fork child and one spawn child");
    let fork = find(&children, "method", "fork");
    let spawn = find(&children, "method", "spawn");
    for child in [fork, spawn] {
        assert_eq!(child["ppid"], out.pid, "each answer comes from a child of the demo");
        assert_ne!(child["pid"], out.pid);
        assert_eq!(child["data"]["reads"], 99, "the child reads back its own write");
    }
    // After fork: the parent's value at the parent's address, then 99 written there.
    assert_eq!(fork["data"]["address"], parent["address"], "same virtual address after fork");
    assert_eq!(fork["data"]["found"], 50, "the fork child found the parent's value");
    // After spawn: the program started afresh, with the compiled-in 0.
    assert_eq!(spawn["data"]["found"], 0, "the spawn child did not have the parent's value");
    if addresses_are_randomised() {
        assert_ne!(spawn["data"]["address"], parent["address"], "ASLR lays a new program out anew");
    }
    // The parent reads its own copy after both children wrote 99: unchanged.
    let summary = out.one("isolation");
    assert_eq!(summary["data"]["after"], 50, "the parent's copy is unchanged");
    assert_eq!(summary["data"]["fork_same_address"], true);
    let position = |e: &Value| out.events.iter().position(|x| x == e).unwrap();
    assert!(position(summary) > position(fork) && position(summary) > position(spawn));
}

#[test]
fn does_ps_show_the_fork_child_with_the_parents_command_line_and_the_spawn_child_with_a_role() {
    let dir = TempDir::new("isolation-ps");
    let out = run(BIN, &["isolation", "--json", "--dir", path_arg(&dir)]);
    out.assert_code(0).assert_nothing_left();
    let table = out.one("processes");
    let rows: Vec<&Value> = table["data"]["rows"].as_array().expect("rows").iter().collect();
    assert_eq!(rows.len(), 3, "parent, fork child and spawn child were all alive: {rows:?}");
    let row = |role: &str| {
        rows.iter().find(|r| r["role"] == role).unwrap_or_else(|| panic!("no {role} in {rows:?}"))
    };
    let (parent, fork, spawn) = (row("parent"), row("fork child"), row("spawn child"));
    assert_eq!(parent["pid"], out.pid);
    for child in [fork, spawn] {
        assert_eq!(child["ppid"], out.pid);
        assert_ne!(child["state"], "Z", "alive when the table was read");
    }
    assert_eq!(fork["cmdline"], parent["cmdline"], "a fork child is a copy: same command line");
    assert_eq!(fork["comm"], "isolated-fork", "its name was set with PR_SET_NAME");
    assert_eq!(spawn["cmdline"], "fork-vs-spawn __role=isolated isolated-spawn");
    assert_eq!(spawn["comm"], "isolated-spawn");
}

#[test]
fn does_a_run_time_value_reach_a_fork_child_but_a_spawn_child_only_when_passed() {
    let dir = TempDir::new("inherit");
    let out = run(BIN, &["inherit", "--json", "--dir", path_arg(&dir)]);
    out.assert_code(0).assert_nothing_left();
    let value = out.one("parent-runtime-value")["data"]["value"].clone();
    assert!(value.as_str().is_some_and(|v| v.contains(&out.pid.to_string())));
    let answers = out.named("child-runtime-value");
    assert_eq!(answers.len(), 3);
    let by = |method: &str, passed: bool| {
        answers
            .iter()
            .find(|e| e["data"]["method"] == method && e["data"]["passed"] == passed)
            .unwrap_or_else(|| panic!("no {method} child with passed={passed}: {answers:?}"))
    };
    assert_eq!(by("fork", false)["data"]["found"], value, "a fork child has it");
    assert_eq!(by("spawn", false)["data"]["found"], Value::Null, "a spawn child does not");
    assert_eq!(by("spawn", true)["data"]["found"], value, "unless it is passed");
    for answer in &answers {
        assert_eq!(answer["ppid"], out.pid);
        assert_eq!(answer["data"]["compiled_in"], "compiled into the program");
    }
    assert_eq!(out.one("inherit")["data"]["as_expected"], true);
}

#[test]
fn does_the_unguarded_chain_stop_at_the_cap_with_each_level_a_child_of_the_one_before() {
    for cap in [1, 3] {
        let dir = TempDir::new("guard");
        let cap_text = cap.to_string();
        let out = run(BIN, &["guard", "--json", "--cap", &cap_text, "--dir", path_arg(&dir)]);
        out.assert_code(0).assert_nothing_left();
        let levels = out.named("guard-level");
        assert_eq!(levels.len(), cap + 1, "depth 0 (the demo) to depth {cap}");
        let mut pids = Vec::new();
        for (depth, level) in levels.iter().enumerate() {
            assert_eq!(level["data"]["depth"], depth, "levels report in order of depth");
            let pid = level["pid"].as_i64().unwrap();
            let expected_parent =
                if depth == 0 { None } else { Some(levels[depth - 1]["pid"].as_i64().unwrap()) };
            if let Some(parent) = expected_parent {
                assert_eq!(level["ppid"].as_i64(), Some(parent), "depth {depth}'s parent");
                assert_eq!(level["data"]["ppid"].as_i64(), Some(parent));
            } else {
                assert_eq!(pid, i64::from(out.pid));
            }
            assert!(!pids.contains(&pid), "a new process at every level");
            pids.push(pid);
        }
        let summary = &out.one("guard")["data"];
        assert_eq!(summary["levels"], cap);
        assert_eq!(summary["linked"], true);
        assert_eq!(summary["left"], Value::Array(vec![]), "every level was reaped");
        for pid in &pids[1..] {
            assert!(ps::stat(*pid as i32).is_none_or(|p| p.sid != out.pid), "{pid} is gone");
        }
    }
}

#[test]
fn is_a_line_buffered_before_fork_written_twice_and_once_when_flushed_first() {
    let dir = TempDir::new("buffer");
    let out = run(BIN, &["buffer", "--json", "--dir", path_arg(&dir)]);
    out.assert_code(0).assert_nothing_left();
    let line = format!("written by parent {} before fork", out.pid);
    for (file, flushed, expected) in
        [("buffer-unflushed.txt", false, 2), ("buffer-flushed.txt", true, 1)]
    {
        let text = std::fs::read_to_string(dir.join(file)).expect("the demo wrote the file");
        let copies = text.lines().filter(|l| *l == line).count();
        assert_eq!(copies, expected, "{file}:\n{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("child ")).count(), 1, "{text}");
        let event = out
            .named("buffer")
            .into_iter()
            .find(|e| e["data"]["flush_before_fork"] == flushed)
            .expect("a buffer event for each case");
        assert_eq!(event["data"]["copies"], expected);
    }
}

#[test]
fn does_cost_report_three_positive_figures() {
    let out = run(BIN, &["cost", "--json", "--count", "5", "--rounds", "2"]);
    out.assert_code(0).assert_nothing_left();
    let cost = &out.one("cost")["data"];
    assert_eq!(cost["count"], 5);
    for key in ["thread_us", "fork_us", "spawn_us"] {
        let us = cost[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {cost}"));
        assert!(us.is_finite() && us > 0.0, "{key} = {us}");
    }
    for kind in ["thread", "fork", "spawn"] {
        assert_eq!(cost["per_round_us"][kind].as_array().map(Vec::len), Some(2));
    }
}

#[test]
fn does_the_tour_run_all_six_parts_and_print_only_json_lines() {
    let out = run(BIN, &["--json", "--count", "3", "--rounds", "1"]);
    out.assert_code(0).assert_nothing_left();
    for line in out.stdout.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| out.fail(&format!("not a JSON line ({e}): {line:?}")));
        for key in ["t_ms", "pid", "ppid", "who", "event", "data"] {
            assert!(event.get(key).is_some(), "{key} missing in {line}");
        }
    }
    assert_eq!(out.named("section").len(), 6);
    for part in ["isolation", "inherit", "guard", "cost", "methods", "replacements"] {
        out.one(part);
    }
    assert_eq!(out.named("buffer").len(), 2);
    let temporary = std::env::temp_dir().join(format!("fork-vs-spawn-{}", out.pid));
    assert!(!temporary.exists(), "the temporary folder {} was removed", temporary.display());
}

#[test]
fn is_a_bad_flag_refused_with_exit_2_and_a_message_naming_it() {
    let cases: [(&[&str], &str); 5] = [
        (&["--bogus"], "--bogus"),
        (&["cost", "--count", "0"], "--count"),
        (&["guard", "--cap", "99"], "--cap"),
        (&["--rounds", "many"], "--rounds"),
        (&["nonsense"], "nonsense"),
    ];
    for (args, named) in cases {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let out = run(BIN, &with_json);
        out.assert_code(2).assert_nothing_left();
        if !out.stderr.contains(named) {
            out.fail(&format!("the message does not name {named:?}"));
        }
        assert!(out.events.is_empty(), "nothing ran");
    }
}

#[test]
fn does_ctrl_c_during_hold_stop_the_fork_and_spawn_children_and_exit_130() {
    for to_group in [true, false] {
        let dir = TempDir::new("hold");
        let mut demo =
            Demo::start(BIN, &["isolation", "--json", "--hold", "60", "--dir", path_arg(&dir)]);
        let hold = demo.wait_event("hold");
        let pids: Vec<i32> = hold["data"]["pids"]
            .as_array()
            .expect("pids")
            .iter()
            .map(|p| p.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(pids.len(), 3, "the demo, its fork child and its spawn child");
        for pid in &pids[1..] {
            let info = ps::stat(*pid).expect("the child is alive during the hold");
            assert_eq!(info.ppid, demo.pid());
            // It answered and then sleeps until released (in sigwait).
            support::wait_until("the child sleeps, waiting to be released", || {
                ps::state_of(*pid) == Some('S')
            });
        }
        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
        assert_eq!(out.one("interrupted")["data"]["children"], 2);
    }
}

#[test]
fn does_ctrl_c_during_the_unguarded_chains_hold_stop_every_level_and_exit_130() {
    for to_group in [true, false] {
        let dir = TempDir::new("guard-hold");
        let mut demo = Demo::start(
            BIN,
            &["guard", "--json", "--cap", "3", "--hold", "60", "--dir", path_arg(&dir)],
        );
        let hold = demo.wait_event("hold");
        assert_eq!(hold["who"], "unguarded-3", "the deepest level holds");
        let chain: Vec<i32> = hold["data"]["pids"]
            .as_array()
            .expect("pids")
            .iter()
            .map(|p| p.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(chain.len(), 4);
        assert_eq!(chain[0], demo.pid());
        for pair in chain.windows(2) {
            assert_eq!(ps::stat(pair[1]).map(|p| p.ppid), Some(pair[0]), "a chain of parents");
        }
        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
    }
}

// What the demo says about Python, checked against the real python3 where one is installed.

/// Runs `python3 <script>` (written into `dir`) with a deadline; `None` without python3.
fn python3(dir: &TempDir, script: &str, unbuffered: bool) -> Option<(i32, String, String)> {
    let found = std::process::Command::new("python3").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        eprintln!("python3 is not installed: the Python side of this claim is not checked");
        return None;
    }
    std::fs::write(dir.join("script.py"), script).expect("writing the script");
    let out = std::fs::File::create(dir.join("stdout")).expect("stdout file");
    let err = std::fs::File::create(dir.join("stderr")).expect("stderr file");
    let mut command = std::process::Command::new("python3");
    command.arg("script.py").current_dir(dir.path()).stdout(out).stderr(err);
    if unbuffered {
        command.env("PYTHONUNBUFFERED", "1");
    } else {
        command.env_remove("PYTHONUNBUFFERED");
    }
    let mut child = command.spawn().expect("starting python3");
    let deadline = std::time::Instant::now() + support::DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for python3") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 {script:?} did not end in time");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    Some((status.code().unwrap_or(-1), read("stdout"), read("stderr")))
}

#[test]
fn does_cpython_refuse_to_start_a_process_from_an_unguarded_spawn_child() {
    let dir = TempDir::new("python-guard");
    let script = "import multiprocessing as mp\n\
                  def f():\n    pass\n\
                  p = mp.get_context('spawn').Process(target=f)\n\
                  p.start()\n\
                  p.join()\n\
                  print('exitcode', p.exitcode)\n";
    let Some((code, stdout, stderr)) = python3(&dir, script, true) else { return };
    assert_eq!(code, 0, "the parent goes on\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "exitcode 1", "the child died at its own start(), the chain stops");
    let words = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(
            "RuntimeError: An attempt has been made to start a new process before the current \
             process has finished its bootstrapping phase"
        ),
        "{stderr}"
    );
}

#[test]
fn is_a_python_print_before_os_fork_written_twice_into_a_file_and_once_when_flushed() {
    for (flush, expected) in [(false, 2), (true, 1)] {
        let dir = TempDir::new("python-buffer");
        let script = format!(
            "import os, sys\nprint('before fork')\n{}pid = os.fork()\n\
             if pid:\n    os.waitpid(pid, 0)\n",
            if flush { "sys.stdout.flush()\n" } else { "" }
        );
        let Some((code, stdout, stderr)) = python3(&dir, &script, false) else { return };
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.lines().filter(|l| *l == "before fork").count(), expected, "{stdout}");
    }
}

/// Whatever child is killed (SIGKILL, at a random moment of any part), does the demo still end
/// within a bound, reap everyone, and, when it exits 1, say which child was lost?
#[test]
fn a_child_killed_at_any_moment_never_makes_the_demo_hang() {
    let parts: &[&[&str]] =
        &[&["isolation"], &["inherit"], &["guard"], &["buffer"], &["cost", "--count", "20"]];
    let ms = std::time::Duration::from_millis;
    support::kill_random_children(BIN, parts, 2, ms(40), ms(20_000), 14);
}

/// Does each start method give its child what it promises: fork the parent's memory and every
/// descriptor, spawn and forkserver only the passed descriptor; and is a forkserver child the
/// fork server's (not the demo's), with one thread, like the others?
#[test]
fn do_fork_spawn_and_forkserver_children_find_what_each_method_promises() {
    let out = run(BIN, &["methods", "--json", "--count", "3", "--replacements", "3"]);
    out.assert_code(0).assert_nothing_left();
    let methods = &out.one("methods")["data"];
    assert_eq!(methods["as_expected"], true, "{methods}");
    let server = methods["server"].as_i64().expect("a fork server was started");
    let children = methods["children"].as_array().expect("children");
    let by = |m: &str| children.iter().find(|c| c["method"] == m).expect("each method");
    assert_eq!(by("forkserver")["ppid"], server);
    assert_eq!(by("fork")["ppid"], out.pid);
    assert_eq!(by("spawn")["ppid"], out.pid);
    assert_eq!(by("fork")["has_value"], true);
    for m in ["spawn", "forkserver"] {
        assert_eq!(by(m)["has_value"], false, "{m}");
        assert_eq!(by(m)["unpassed_fd"], false, "{m}");
    }
    for m in ["fork", "spawn", "forkserver"] {
        assert_eq!(by(m)["passed_fd"], true, "{m}");
        assert_eq!(by(m)["threads"], 1, "{m}");
    }
    assert!(
        by("forkserver")["cmdline"].as_str().is_some_and(|c| c.contains("__role=__forkserver"))
    );
}

/// Replacing a fork pool's workers (every task retires its worker) while two other threads
/// make queues: does every replacement come from the fork server and answer, round after
/// round, within the demo's bound (it reports a block after 10 s per task)?
#[test]
fn do_replacement_workers_never_block_while_other_threads_make_queues() {
    for _ in 0..3 {
        let demo =
            Demo::start(BIN, &["methods", "--json", "--count", "2", "--replacements", "120"]);
        let out = demo.finish_within(std::time::Duration::from_secs(60));
        out.assert_code(0).assert_nothing_left();
        let r = &out.one("replacements")["data"];
        assert_eq!(r["done"], 120, "{r}");
        assert_eq!(r["blocked_at"], Value::Null, "{r}");
        assert_eq!(r["forked_here"], 2, "only the first two workers are forked by the demo: {r}");
        assert_eq!(r["from_server"], 118, "{r}");
        assert!(r["queues_made"].as_u64().is_some_and(|n| n > 0), "{r}");
    }
}

/// Ctrl-C while the fork server's workers come and go: are the server and all its children
/// stopped and reaped, and does the demo exit 130?
#[test]
fn does_ctrl_c_during_the_replacements_stop_the_fork_server_and_its_children() {
    for to_group in [true, false] {
        let mut demo = Demo::start(BIN, &["methods", "--json", "--replacements", "500"]);
        let server = demo.wait_event("methods")["data"]["server"].as_i64().expect("server");
        assert_eq!(ps::stat(server as i32).map(|i| i.ppid), Some(demo.pid()));
        let out = demo.interrupt(to_group);
        out.assert_code(130).assert_nothing_left();
    }
}

/// Can a typo in a count start a flood of children? No: every count flag has a cap, given in
/// --help, and beyond it the demo exits 2 before anything starts.
#[test]
fn every_count_flag_has_a_cap_and_beyond_it_nothing_starts() {
    for (part, flag, cap) in
        [("guard", "--cap", 8), ("cost", "--count", 1000), ("cost", "--rounds", 20)]
    {
        support::assert_capped(BIN, &[part], flag, cap);
    }
}

#[test]
fn is_a_guess_of_the_unguarded_chains_length_judged_against_the_levels_that_answered() {
    let dir = TempDir::new("guard-predict");
    let args = ["guard", "--cap", "2", "--dir", path_arg(&dir)];
    // The chain stops at --cap.
    support::judged_both_ways(BIN, &args, "chain", "3", 2);
    // The buffered line: the run's own count, whatever it was, is judged right.
    let copies = support::answer_of(BIN, &["buffer", "--dir", path_arg(&dir)], "copies", "0");
    assert_eq!(copies["data"]["right"], false, "{copies}");
    let seen = copies["data"]["actual"].to_string();
    let again = support::answer_of(BIN, &["buffer", "--dir", path_arg(&dir)], "copies", &seen);
    assert_eq!(again["data"]["right"], true, "{again}");
}
