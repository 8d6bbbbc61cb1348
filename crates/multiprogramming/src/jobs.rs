//! The job syntax of OSTEP's `process-run.py`, so that a learner can type the homework's own
//! command lines: `--jobs 5:100,4:25` (`-l`: instructions : percent CPU, drawn at random with
//! `--seed`) and `--program c3,i,c1:c4` (`-P`: exact programs, `cN` for N CPU ticks, `i` for one
//! IO, `:` between jobs).

use rand_mt::Mt;

use crate::sim::Op;

/// At most this many jobs: each is a real process pinned to one CPU.
pub const MAX_JOBS: usize = 10;
/// At most this many instructions in one job (an `i` counts twice: `io` and `io_done`), so a
/// typo cannot ask for a run of hours.
pub const MAX_INSTRUCTIONS: usize = 100;

/// One `X:Y` of `--jobs`: X instructions, each a CPU tick with chance Y %.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub instructions: usize,
    pub percent_cpu: f64,
}

/// Parses `--jobs` (`-l`): `X:Y,X:Y,...`.
pub fn parse_jobs(text: &str) -> Result<Vec<Mix>, String> {
    if text.trim().is_empty() {
        return Err("empty: give X:Y,... (X instructions, Y percent CPU)".into());
    }
    let mixes: Vec<Mix> = text.split(',').map(parse_mix).collect::<Result<_, _>>()?;
    if mixes.len() > MAX_JOBS {
        return Err(format!("{} jobs: at most {MAX_JOBS}", mixes.len()));
    }
    Ok(mixes)
}

fn parse_mix(job: &str) -> Result<Mix, String> {
    let Some((x, y)) = job.split_once(':') else {
        return Err(format!("{job:?} is not X:Y (X instructions, Y percent CPU)"));
    };
    let instructions = match x.trim().parse::<usize>() {
        Ok(n) if n <= MAX_INSTRUCTIONS => n,
        Ok(n) => return Err(format!("{job:?}: {n} instructions: at most {MAX_INSTRUCTIONS}")),
        Err(_) => return Err(format!("{job:?}: {x:?} is not a number of instructions")),
    };
    // process-run.py reads Y with float(), so 33.3 is a percent too.
    let percent_cpu = match y.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => p,
        _ => return Err(format!("{job:?}: {y:?} is not a percent from 0 to 100")),
    };
    Ok(Mix { instructions, percent_cpu })
}

/// Parses `--program` (`-P`): jobs separated by `:`, instructions by `,`.
pub fn parse_program(text: &str) -> Result<Vec<Vec<Op>>, String> {
    if text.trim().is_empty() {
        return Err("empty: give a program such as c3,i,c1:c4".into());
    }
    let jobs: Vec<Vec<Op>> = text.split(':').map(parse_one_program).collect::<Result<_, _>>()?;
    if jobs.len() > MAX_JOBS {
        return Err(format!("{} jobs: at most {MAX_JOBS}", jobs.len()));
    }
    Ok(jobs)
}

fn parse_one_program(job: &str) -> Result<Vec<Op>, String> {
    let mut code = Vec::new();
    for word in job.split(',') {
        match word.trim() {
            // process-run.py looks only at the first letter, so it takes `i3` for `i`; a
            // learner who wrote `i3` meant something else, and is told.
            "i" => code.extend([Op::Io, Op::IoDone]),
            w if w.starts_with('c') => match w[1..].parse::<usize>() {
                Ok(n) if n <= MAX_INSTRUCTIONS => code.extend(std::iter::repeat_n(Op::Cpu, n)),
                Ok(n) => return Err(format!("{w:?}: {n} CPU ticks: at most {MAX_INSTRUCTIONS}")),
                Err(_) => return Err(format!("{w:?}: c needs a number of ticks, as in c3")),
            },
            "" => return Err(format!("{job:?}: an empty instruction (c<N> or i)")),
            w => {
                return Err(format!(
                    "{w:?} is not an instruction: c<N> (N CPU ticks) or i (one IO)"
                ));
            }
        }
        if code.len() > MAX_INSTRUCTIONS {
            return Err(format!("{job:?}: more than {MAX_INSTRUCTIONS} instructions"));
        }
    }
    Ok(code)
}

/// CPython's `random` module: MT19937 seeded and read as CPython does, so that a seed draws the
/// same programs here as in `process-run.py`.
#[derive(Debug)]
pub struct PythonRandom(Mt);

impl PythonRandom {
    /// `random.seed(n)` for an int: `init_by_array` with the 32-bit words of `|n|`, least
    /// significant first (one word, 0, for 0).
    pub fn seed(n: i64) -> PythonRandom {
        let mut magnitude = n.unsigned_abs();
        let mut key = vec![(magnitude & 0xffff_ffff) as u32];
        magnitude >>= 32;
        while magnitude != 0 {
            key.push((magnitude & 0xffff_ffff) as u32);
            magnitude >>= 32;
        }
        PythonRandom(Mt::new_with_key(key))
    }

    /// `random.random()`: 53 random bits from two 32-bit draws (27 and 26 bits), in [0, 1).
    pub fn random(&mut self) -> f64 {
        let a = self.0.next_u32() >> 5;
        let b = self.0.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) * (1.0 / 9_007_199_254_740_992.0)
    }
}

/// Draws the programs of `--jobs` as `process-run.py`'s `load` does: for each instruction, CPU
/// if `random.random() < Y / 100`, otherwise an IO (`io` and its `io_done`).
pub fn draw(mixes: &[Mix], seed: i64) -> Vec<Vec<Op>> {
    let mut random = PythonRandom::seed(seed);
    mixes
        .iter()
        .map(|mix| {
            let chance_cpu = mix.percent_cpu / 100.0;
            let mut code = Vec::new();
            for _ in 0..mix.instructions {
                if random.random() < chance_cpu {
                    code.push(Op::Cpu);
                } else {
                    code.extend([Op::Io, Op::IoDone]);
                }
            }
            code
        })
        .collect()
}

/// A program written back in `--program` syntax (`c2,i,c1`), for the lines that show it.
pub fn program_text(code: &[Op]) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut cpu = 0;
    for op in code {
        match op {
            Op::Cpu => cpu += 1,
            Op::Io => {
                if cpu > 0 {
                    words.push(format!("c{cpu}"));
                    cpu = 0;
                }
                words.push("i".into());
            }
            Op::IoDone => {}
        }
    }
    if cpu > 0 || words.is_empty() {
        words.push(format!("c{cpu}"));
    }
    words.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPython 3: `random.seed(1); random.random()` is 0.13436424411240122, and
    /// `random.seed(0); random.random()` is 0.8444218515250481 (documented in many places;
    /// checked against python3).
    #[test]
    fn the_generator_is_cpythons_for_an_int_seed() {
        assert_eq!(PythonRandom::seed(1).random(), 0.134_364_244_112_401_22);
        assert_eq!(PythonRandom::seed(0).random(), 0.844_421_851_525_048_1);
        // A seed wider than 32 bits uses two key words, as CPython does.
        assert_ne!(PythonRandom::seed(1 << 32).random(), PythonRandom::seed(1).random());
        assert_eq!(PythonRandom::seed(-1).random(), PythonRandom::seed(1).random());
    }

    /// The homework's `process-run.py -s 1 -l 3:50,3:50` draws job 0 = cpu, io, io (so
    /// `c1,i,i`) and job 1 = cpu, cpu, cpu: the first draws are 0.134, 0.847, 0.763, 0.255,
    /// 0.495, 0.449 against 0.5.
    #[test]
    fn seed_1_draws_the_homeworks_programs() {
        let jobs = draw(&parse_jobs("3:50,3:50").unwrap(), 1);
        assert_eq!(jobs, parse_program("c1,i,i:c3").unwrap());
        assert_eq!(program_text(&jobs[0]), "c1,i,i");
    }

    #[test]
    fn bad_job_strings_say_what_is_wrong() {
        assert!(parse_jobs("5:101").unwrap_err().contains("percent"));
        assert!(parse_jobs("").unwrap_err().contains("empty"));
        assert!(parse_jobs("5").unwrap_err().contains("X:Y"));
        assert!(parse_jobs("1000:50").unwrap_err().contains("at most"));
        assert!(parse_jobs(&["1:50"; 11].join(",")).unwrap_err().contains("at most 10"));
        assert!(parse_program("c").unwrap_err().contains("number of ticks"));
        assert!(parse_program("i3").unwrap_err().contains("not an instruction"));
        assert!(parse_program("").unwrap_err().contains("empty"));
        assert!(parse_program("c1::c2").unwrap_err().contains("empty instruction"));
        assert!(parse_program("c999999").unwrap_err().contains("at most"));
        assert!(parse_program(&["c60"; 2].join(",")).unwrap_err().contains("more than"));
        assert_eq!(parse_program("c2,i").unwrap(), [vec![Op::Cpu, Op::Cpu, Op::Io, Op::IoDone]]);
    }
}
