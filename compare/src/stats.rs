//! Latency samples and their summary: nearest-rank percentiles over all samples pooled.

use std::collections::BTreeMap;

/// A percentile as an exact fraction, so that the nearest rank is integer arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct Pct {
    num: u64,
    den: u64,
}

pub const P50: Pct = Pct { num: 50, den: 100 };
pub const P99: Pct = Pct { num: 99, den: 100 };
pub const P999: Pct = Pct { num: 999, den: 1000 };

/// Nearest-rank percentile of ascending `sorted`: the smallest value with at least `p` of the
/// samples at or below it (rank ⌈p·n⌉, 1-based). `None` without samples.
pub fn nearest_rank(sorted: &[u64], p: Pct) -> Option<u64> {
    nearest_rank_with_lost(sorted, 0, p).flatten()
}

/// Nearest-rank percentile over the answered commands in ascending `sorted` and `lost` more
/// that were never answered (ranked above every answered one): `Some(None)` when the rank
/// falls among the lost ones, `None` without any command.
pub fn nearest_rank_with_lost(sorted: &[u64], lost: u64, p: Pct) -> Option<Option<u64>> {
    let n = sorted.len() as u64 + lost;
    if n == 0 {
        return None;
    }
    let rank = (p.num * n).div_ceil(p.den).clamp(1, n);
    Some(sorted.get(rank as usize - 1).copied())
}

/// A latency as the verdicts see it: answered after so many ns, or never (a lost command, ranked
/// above every answered one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lat {
    Ns(u64),
    Never,
}

impl Lat {
    /// From a percentile with lost commands counted (`None`: the rank fell among the lost).
    pub fn from_rank(p: Option<u64>) -> Lat {
        p.map_or(Lat::Never, Lat::Ns)
    }

    /// `self / other`: infinite when `self` never came, 0 when only `other` never did.
    pub fn ratio(self, other: Lat) -> f64 {
        match (self, other) {
            (Lat::Never, _) => f64::INFINITY,
            (Lat::Ns(_), Lat::Never) => 0.0,
            (Lat::Ns(a), Lat::Ns(b)) if b > 0 => a as f64 / b as f64,
            (Lat::Ns(a), Lat::Ns(_)) => {
                if a == 0 {
                    1.0
                } else {
                    f64::INFINITY
                }
            }
        }
    }
}

/// What one client did in one scenario, over all rounds.
#[derive(Debug, Default)]
pub struct Record {
    pub ok: u64,
    pub failed: u64,
    /// Connections the device accepted from this client during the measured rounds.
    pub conns: u64,
    /// Requests the device answered for this client during the measured rounds.
    pub served: u64,
    /// CPU time of the whole process while this client's measured commands ran, in ns.
    pub cpu_ns: u64,
    /// Latency of every successful command, in nanoseconds: round by round, each round's sorted.
    pub samples: Vec<u64>,
    /// How many of `samples` each round added, in order.
    pub round_len: Vec<usize>,
    /// The p50 of each round, in nanoseconds.
    pub round_p50: Vec<u64>,
    /// The p50 and the p99 of every round in order, `None` for a round without a successful
    /// command: what the per-regime figures pair round by round.
    pub by_round: Vec<Option<(u64, u64)>>,
    /// Commands lost in each round, in order.
    pub round_failed: Vec<u64>,
    /// The p50 and the p99 of every round with its lost commands counted as never answered
    /// (`None`: a round without any command): what the verdicts pair round by round.
    pub by_round_lost: Vec<Option<(Lat, Lat)>>,
    /// Distinct error messages and how often each was seen.
    pub errors: BTreeMap<String, u64>,
    /// In (c): the latency of every successful command by the index of the gap before it.
    pub by_gap: Vec<Vec<u64>>,
    /// TLS handshakes the device completed with this client during the measured rounds.
    pub handshakes: Handshakes,
    /// The same over the whole scenario, warm-up included (where the full handshakes are).
    pub handshakes_all: Handshakes,
}

/// The device's TLS handshake counters for one port (see `device::Counters`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Handshakes {
    pub full: u64,
    pub resumed: u64,
    pub full_ns: u64,
    pub resumed_ns: u64,
    pub full_cpu_ns: u64,
    pub resumed_cpu_ns: u64,
    pub tls13: u64,
    pub errors: u64,
}

impl Handshakes {
    pub fn read(c: &crate::device::Counters) -> Handshakes {
        use std::sync::atomic::Ordering::Relaxed;
        Handshakes {
            full: c.hs_full.load(Relaxed),
            resumed: c.hs_resumed.load(Relaxed),
            full_ns: c.hs_full_ns.load(Relaxed),
            resumed_ns: c.hs_resumed_ns.load(Relaxed),
            full_cpu_ns: c.hs_full_cpu_ns.load(Relaxed),
            resumed_cpu_ns: c.hs_resumed_cpu_ns.load(Relaxed),
            tls13: c.tls13.load(Relaxed),
            errors: c.tls_errors.load(Relaxed),
        }
    }

    /// What happened since `base`.
    pub fn minus(&self, base: &Handshakes) -> Handshakes {
        Handshakes {
            full: self.full - base.full,
            resumed: self.resumed - base.resumed,
            full_ns: self.full_ns - base.full_ns,
            resumed_ns: self.resumed_ns - base.resumed_ns,
            full_cpu_ns: self.full_cpu_ns - base.full_cpu_ns,
            resumed_cpu_ns: self.resumed_cpu_ns - base.resumed_cpu_ns,
            tls13: self.tls13 - base.tls13,
            errors: self.errors - base.errors,
        }
    }

    /// Mean duration at the device (ClientHello to the client's Finished) of a full and of a
    /// resumed handshake, in ns.
    pub fn mean_ns(&self) -> (Option<u64>, Option<u64>) {
        (mean(self.full_ns, self.full), mean(self.resumed_ns, self.resumed))
    }

    /// Mean device CPU time of a full and of a resumed handshake, in ns.
    pub fn mean_cpu_ns(&self) -> (Option<u64>, Option<u64>) {
        (mean(self.full_cpu_ns, self.full), mean(self.resumed_cpu_ns, self.resumed))
    }
}

fn mean(total: u64, n: u64) -> Option<u64> {
    (n > 0).then(|| total / n)
}

impl Record {
    /// Adds one round's successful latencies (consumed) and records that round's p50; the
    /// commands it lost are those [`Record::add_error`] counted since the previous round.
    pub fn add_round(&mut self, mut round: Vec<u64>) {
        round.sort_unstable();
        let lost = self.failed.saturating_sub(self.round_failed.iter().sum::<u64>());
        self.round_failed.push(lost);
        let with_lost = |p| nearest_rank_with_lost(&round, lost, p).map(Lat::from_rank);
        self.by_round_lost.push(with_lost(P50).zip(with_lost(P99)));
        if let Some(p) = nearest_rank(&round, P50) {
            self.round_p50.push(p);
        }
        self.by_round.push(nearest_rank(&round, P50).zip(nearest_rank(&round, P99)));
        self.round_len.push(round.len());
        self.samples.extend(round);
    }

    /// The p50 (or p99) of the commands of `rounds` taken together, lost commands counted as
    /// never answered; `None` if those rounds had no command. A round of 100 commands has no
    /// p99 of its own (its "p99" is its second slowest command); the regime's rounds together
    /// have one.
    pub fn pooled_lat(&self, rounds: &[usize], p99: bool) -> Option<Lat> {
        let mut pool = Vec::new();
        let mut at = 0;
        for (k, &n) in self.round_len.iter().enumerate() {
            if rounds.contains(&k) {
                pool.extend_from_slice(self.samples.get(at..at + n).unwrap_or_default());
            }
            at += n;
        }
        let lost = rounds.iter().filter_map(|&k| self.round_failed.get(k)).sum();
        pool.sort_unstable();
        nearest_rank_with_lost(&pool, lost, if p99 { P99 } else { P50 }).map(Lat::from_rank)
    }

    /// Files one successful latency under the gap (its index in the cycle) that preceded it.
    pub fn add_gap_sample(&mut self, gap: usize, ns: u64) {
        if self.by_gap.len() <= gap {
            self.by_gap.resize_with(gap + 1, Vec::new);
        }
        self.by_gap[gap].push(ns);
    }

    /// The p50 of the commands after each gap (index in the cycle), in ns.
    pub fn gap_p50s(&self) -> Vec<Option<u64>> {
        self.by_gap
            .iter()
            .map(|v| {
                let mut v = v.clone();
                v.sort_unstable();
                nearest_rank(&v, P50)
            })
            .collect()
    }

    /// The p50 of every round, in order (`None`: no command of that round succeeded).
    pub fn round_p50s(&self) -> Vec<Option<u64>> {
        self.by_round.iter().map(|r| r.map(|(p50, _)| p50)).collect()
    }

    /// The p99 of every round, in order.
    pub fn round_p99s(&self) -> Vec<Option<u64>> {
        self.by_round.iter().map(|r| r.map(|(_, p99)| p99)).collect()
    }

    /// The p50 (or p99) of every round with its lost commands counted as never answered.
    pub fn round_lats(&self, p99: bool) -> Vec<Option<Lat>> {
        self.by_round_lost.iter().map(|r| r.map(|(p50, p)| if p99 { p } else { p50 })).collect()
    }

    pub fn add_error(&mut self, e: String) {
        self.failed += 1;
        *self.errors.entry(e).or_default() += 1;
    }

    /// Process CPU time per measured command (successful or not), in ns.
    pub fn cpu_per_command(&self) -> Option<u64> {
        let n = self.ok + self.failed;
        (n > 0).then(|| self.cpu_ns / n)
    }

    /// p50 and p99 with every failed command counted as never answered (ranked slowest): what
    /// the latency of a command looks like to a caller who needs the answer.
    pub fn with_lost(&self) -> (Option<Option<u64>>, Option<Option<u64>>) {
        let mut s = self.samples.clone();
        s.sort_unstable();
        (nearest_rank_with_lost(&s, self.failed, P50), nearest_rank_with_lost(&s, self.failed, P99))
    }

    pub fn summary(&self) -> Summary {
        let mut s = self.samples.clone();
        s.sort_unstable();
        let mut rounds = self.round_p50.clone();
        rounds.sort_unstable();
        Summary {
            p50: nearest_rank(&s, P50),
            p99: nearest_rank(&s, P99),
            p999: nearest_rank(&s, P999),
            max: s.last().copied(),
            round_p50_min: rounds.first().copied(),
            round_p50_max: rounds.last().copied(),
        }
    }
}

/// Percentiles in nanoseconds (`None` when no command succeeded).
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub p999: Option<u64>,
    pub max: Option<u64>,
    pub round_p50_min: Option<u64>,
    pub round_p50_max: Option<u64>,
}

/// Microseconds with one decimal, or `–`.
pub fn us(ns: Option<u64>) -> String {
    ns.map_or_else(|| "–".to_string(), |ns| format!("{:.1}", ns as f64 / 1000.0))
}

/// `a / b` as `1.23×`, or `–`.
pub fn ratio(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.2}×", a as f64 / b as f64),
        _ => "–".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_the_definition() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(nearest_rank(&v, P50), Some(500));
        assert_eq!(nearest_rank(&v, P99), Some(990));
        assert_eq!(nearest_rank(&v, P999), Some(999));
        assert_eq!(nearest_rank(&[7], P999), Some(7));
        assert_eq!(nearest_rank(&[1, 2, 3], P50), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], P50), Some(2));
        assert_eq!(nearest_rank(&[], P50), None);
    }

    #[test]
    fn lost_commands_rank_above_every_answered_one() {
        let v: Vec<u64> = (1..=75).collect();
        // 100 commands, 25 lost: the p50 is the 50th answered, the p99 never came.
        assert_eq!(nearest_rank_with_lost(&v, 25, P50), Some(Some(50)));
        assert_eq!(nearest_rank_with_lost(&v, 25, P99), Some(None));
        assert_eq!(nearest_rank_with_lost(&v, 0, P99), nearest_rank(&v, P99).map(Some));
        assert_eq!(nearest_rank_with_lost(&[], 3, P50), Some(None));
        assert_eq!(nearest_rank_with_lost(&[], 0, P50), None);
    }

    /// A round's lost commands are those counted since the previous round, ranked slowest in
    /// that round's figures only.
    #[test]
    fn each_round_counts_its_own_lost_commands() {
        let mut r = Record::default();
        r.add_round((1..=100).collect());
        r.add_error("lost".into());
        r.add_round((1..=99).collect());
        for _ in 0..60 {
            r.add_error("lost".into());
        }
        r.add_round((1..=40).collect());
        assert_eq!(r.round_failed, vec![0, 1, 60]);
        assert_eq!(r.round_lats(false), vec![Some(Lat::Ns(50)), Some(Lat::Ns(50)), Some(Lat::Never)]);
        assert_eq!(r.round_lats(true), vec![Some(Lat::Ns(99)), Some(Lat::Ns(99)), Some(Lat::Never)]);
        // Without the lost ones the last round's p50 would be 20.
        assert_eq!(r.round_p50s()[2], Some(20));
        assert!(Lat::Ns(u64::MAX) < Lat::Never);
        assert_eq!(Lat::Never.ratio(Lat::Ns(5)), f64::INFINITY);
        assert_eq!(Lat::Ns(5).ratio(Lat::Never), 0.0);
        assert_eq!(Lat::Ns(6).ratio(Lat::Ns(4)), 1.5);
    }

    #[test]
    fn samples_are_filed_by_gap() {
        let mut r = Record::default();
        for (g, ns) in [(2, 30), (0, 10), (2, 10), (2, 20)] {
            r.add_gap_sample(g, ns);
        }
        assert_eq!(r.gap_p50s(), vec![Some(10), None, Some(20)]);
    }

    #[test]
    fn formatting() {
        assert_eq!(us(Some(12_345)), "12.3");
        assert_eq!(us(None), "–");
        assert_eq!(ratio(Some(3), Some(2)), "1.50×");
        assert_eq!(ratio(Some(3), None), "–");
    }
}
