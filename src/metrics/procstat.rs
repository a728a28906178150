//! Process and thread CPU time from /proc (issue 16): `process_cpu_seconds_total` (user +
//! system, the Prometheus client convention) and the CPU time of each thread of the broker
//! (shards, the signal and watchdog threads), read at scrape time only.
//!
//! Pure parsing ([`parse_stat_cpu_ticks`]) is separate from the reads so that it is tested on
//! fixed text; a `stat` line's second field (the command name) may hold spaces and parentheses,
//! so the fields are counted from the LAST `)`. Bounded: at most [`THREADS_REPORTED_MAX`]
//! threads are read per scrape.

/// Threads whose CPU time one scrape reports at most.
pub const THREADS_REPORTED_MAX: usize = 256;

/// User and system CPU time of a process or thread, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTimes {
    pub user_seconds: f64,
    pub system_seconds: f64,
}

impl CpuTimes {
    pub fn total_seconds(&self) -> f64 {
        self.user_seconds + self.system_seconds
    }
}

/// `(utime, stime)` in clock ticks from a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat`
/// line, and the command name (fields 14 and 15 and field 2 of proc(5)). `None` if the line is
/// not of that form.
pub fn parse_stat_cpu_ticks(line: &str) -> Option<(String, u64, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = line[open + 1..close].to_string();
    // After ") ": field 3 (state) is index 0, so utime (field 14) is index 11.
    let mut rest = line[close + 1..].split_ascii_whitespace();
    let utime = rest.nth(11)?.parse().ok()?;
    let stime = rest.next()?.parse().ok()?;
    Some((comm, utime, stime))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux in practice).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn to_times(user_ticks: u64, system_ticks: u64, hz: f64) -> CpuTimes {
    CpuTimes {
        user_seconds: user_ticks as f64 / hz,
        system_seconds: system_ticks as f64 / hz,
    }
}

/// This process's CPU time, from /proc/self/stat.
pub fn process_cpu() -> Option<CpuTimes> {
    let line = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, u, s) = parse_stat_cpu_ticks(&line)?;
    Some(to_times(u, s, ticks_per_second()))
}

/// CPU time per thread of this process, `(thread name, times)`, from /proc/self/task/*/stat;
/// sorted by name (threads of the same name are summed), at most [`THREADS_REPORTED_MAX`].
pub fn thread_cpu() -> Vec<(String, CpuTimes)> {
    let hz = ticks_per_second();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut by_name: std::collections::BTreeMap<String, CpuTimes> = Default::default();
    for entry in dir.flatten().take(THREADS_REPORTED_MAX) {
        let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // The thread ended meanwhile.
        };
        if let Some((name, u, s)) = parse_stat_cpu_ticks(&line) {
            let t = to_times(u, s, hz);
            let e = by_name.entry(name).or_default();
            e.user_seconds += t.user_seconds;
            e.system_seconds += t.system_seconds;
        }
    }
    by_name.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_from_the_last_parenthesis() {
        let line = "1234 (freshet) S 1 1234 1234 0 -1 4194560 2000 0 0 0 250 75 0 0 20 0 9 0 \
                    100 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat_cpu_ticks(line),
            Some(("freshet".into(), 250, 75))
        );
        // A command name with spaces and parentheses (any thread may name itself so).
        let odd = "77 (a) b (c)) R 1 1 1 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat_cpu_ticks(odd), Some(("a) b (c)".into(), 3, 4)));
    }

    #[test]
    fn garbage_stat_lines_give_none() {
        assert_eq!(parse_stat_cpu_ticks(""), None);
        assert_eq!(parse_stat_cpu_ticks("12 (x) S 1 2"), None);
        assert_eq!(
            parse_stat_cpu_ticks(")( S 1 2 3 4 5 6 7 8 9 10 11 12 13"),
            None
        );
        assert_eq!(
            parse_stat_cpu_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 nope 4"),
            None
        );
    }

    #[test]
    fn this_process_reports_cpu_that_grows_with_work() {
        let before = process_cpu().expect("/proc/self/stat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = process_cpu().unwrap();
        assert!(
            after.total_seconds() > before.total_seconds(),
            "{before:?} {after:?}"
        );
        assert!(!thread_cpu().is_empty());
    }
}
