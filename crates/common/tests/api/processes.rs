//! `common::process` and `common::startcost`, through the crate's public API.

mod process {
    use anyhow::Result;
    use common::process::{Process, Role, exitcode_name};
    use serde_json::Value;

    #[test]
    fn exit_codes_are_named_as_python_prints_them() {
        assert_eq!(exitcode_name(Some(0)), "0");
        assert_eq!(exitcode_name(Some(3)), "3");
        assert_eq!(exitcode_name(Some(-9)), "-SIGKILL");
        assert_eq!(exitcode_name(Some(-15)), "-SIGTERM");
        assert_eq!(exitcode_name(None), "None");
    }

    #[test]
    fn a_new_process_displays_as_initial_and_refuses_join() {
        fn noop(_: Value) -> Result<()> {
            Ok(())
        }
        static NOOP: Role = Role::new("noop", noop);
        let mut p = Process::new("worker-1", &NOOP, ());
        assert_eq!(p.to_string(), "<Process worker-1 initial>");
        assert!(!p.is_alive());
        assert!(p.join().is_err());
        p.set_daemon(true).unwrap();
        assert_eq!(p.to_string(), "<Process worker-1 initial daemon>");
    }

    #[test]
    fn a_child_killed_just_before_a_step_fails_is_blamed_for_it() {
        use common::processes::lost::blame_dead_child;
        use nix::sys::signal::{Signal, kill};
        // The child is killed as soon as it exists, so what a fork child of this multi-threaded
        // runner could do wrong never happens.
        let mut child = Process::from_fn("doomed", || {
            loop {
                std::thread::park();
            }
        });
        child.start().unwrap();
        let pid = child.pid().unwrap();
        kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        // At once: the kernel has most likely not finished the child yet, as when a step reads
        // a dying child's /proc files and fails.
        let step: Result<()> = Err(anyhow::anyhow!("/proc/{pid}/exe: No such file or directory"));
        let error = blame_dead_child(step, &mut [&mut child], "looks").unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains(&format!("doomed (pid {pid}) was killed by SIGKILL")), "{text}");
        assert!(text.contains("/proc/"), "the step's own error is kept as context: {text}");
    }
}

mod startcost {
    use common::startcost::{Starter, median, start_join_round};

    #[test]
    fn the_median_ignores_one_slow_round() {
        assert_eq!(median(&[5.0, 1.0, 900.0]), 5.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn a_thread_round_gives_a_positive_figure() {
        // Threads only: forking inside the multi-threaded test runner is not safe.
        let us = start_join_round(Starter::Thread, 3).unwrap();
        assert!(us > 0.0);
    }
}
