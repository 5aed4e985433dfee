//! Whole-machine load from `/proc/stat`, shared by the benches (to report how much of the
//! machine other processes used while they measured).

/// Busy clock ticks of the whole machine (all but idle and iowait), from `/proc/stat`.
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else { return 0 };
    let f: Vec<u64> = cpu.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    f.iter().take(8).enumerate().filter(|&(i, _)| i != 3 && i != 4).map(|(_, v)| v).sum()
}
