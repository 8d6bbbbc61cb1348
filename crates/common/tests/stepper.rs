//! `common::stepper`, through the crate's public API: its own test binary, since one test
//! installs the stepper for the whole process.

mod stepper {
    use std::sync::Mutex;

    use common::phase;
    use common::stepper::{
        Chooser, Controller, Ending, Probe, done, drive, parse_schedule, source_of, where_table,
        worker,
    };

    #[test]
    fn a_schedule_names_the_position_of_an_unknown_worker() {
        assert_eq!(parse_schedule("0, 1,0", 2), Ok(vec![0, 1, 0]));
        let error = parse_schedule("0,1,2", 2).unwrap_err();
        assert!(error.contains("position 3") && error.contains("worker 2"), "{error}");
        let error = parse_schedule("0,x", 2).unwrap_err();
        assert!(error.contains("position 2") && error.contains("\"x\""), "{error}");
    }

    #[test]
    fn a_step_finds_its_row_for_its_worker_or_for_everyone() {
        let guide = "# g\n\n## Where the mechanism is\n\n| step | where | call |\n|---|---|---|\n\
                     | `lock A` by s-1, `lock B` by s-2 | `src/a.rs:3` | `first()` |\n\
                     | `lock B` by s-1, `lock A` by s-2 | `src/a.rs:5` | `second()` |\n\
                     | `read`: the count | `src/b.rs:9` | `read()` |\n\n## Next\n| x | `src/c.rs:1` | `c` |\n";
        let table = where_table(guide);
        assert_eq!(table.len(), 3, "{table:?}");
        assert_eq!(source_of(&table, "lock A", "s-1").unwrap().2, "first()");
        assert_eq!(source_of(&table, "lock A", "s-2").unwrap().2, "second()");
        assert_eq!(source_of(&table, "read", "anyone").unwrap().1, "src/b.rs:9");
        assert!(source_of(&table, "write", "anyone").is_none());
    }

    /// The one test of this process that installs the stepper: two threads, three marks each,
    /// granted in a chosen order; each mark runs only once granted.
    #[test]
    fn threads_make_their_steps_in_the_granted_order_only() {
        let order = Mutex::new(Vec::new());
        let mut ctl = Controller::local(vec!["a".into(), "b".into()]).unwrap();
        let mut chooser = Chooser::Schedule(vec![1, 0, 0, 1, 1, 0]);
        let ending = std::thread::scope(|s| {
            for i in 0..2 {
                let order = &order;
                s.spawn(move || {
                    worker(i);
                    for step in ["one", "two", "three"] {
                        phase::step(step);
                        order.lock().unwrap().push(format!("{i}{step}"));
                    }
                    done();
                });
            }
            let ending = drive(&mut ctl, &mut chooser, true, |_, _| Probe::Going, |_| {});
            ctl.release();
            ending
        });
        assert_eq!(ending.unwrap(), Ending::Finished);
        assert_eq!(ctl.schedule(), "1,0,0,1,1,0");
        let order = order.into_inner().unwrap();
        assert_eq!(order, ["1one", "0one", "0two", "1two", "1three", "0three"]);
        assert!(
            ctl.timeline().lines().nth(1).unwrap().starts_with("  a     ·"),
            "{}",
            ctl.timeline()
        );
    }
}
