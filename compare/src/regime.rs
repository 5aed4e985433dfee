//! The host's wake-up regimes (the performance issue: "compare/ detects each round's regime and
//! reports the verdicts per regime").
//!
//! The host under the VM swings between two regimes: a loopback round trip costs ~5–11 µs where
//! wake-ups are fast and ~60–80 µs where they are slow, and one run can move between them from
//! round to round. Whole-run p50s compared across clients are then noise. So each round is
//! classified by a reference measured in that same round (the blocking floor in the plain
//! scenarios, the TLS floor in the TLS ones), and clients are compared round by round: each
//! client's round p50 divided by the reference's (or another client's) in the same round, the
//! median of those ratios taken over the rounds of one regime.
//!
//! The threshold comes from the reference's own round p50s: sorted, the largest jump between
//! consecutive ones splits them, if it is at least [`MIN_JUMP`]; the threshold is the geometric
//! mean of the two values either side of it. Within one regime round p50s drift by ±20 % or so
//! (consecutive sorted values of ten rounds rarely differ by more than 1.2×), while the two
//! regimes differ 6–10× on a loopback round trip; a handshake per command dilutes that (a
//! handshake's CPU does not change with the regime), so the jump asked for is a modest 1.5×
//! rather than a fixed number of µs, which would have to differ per scenario and per network.

/// The smallest jump between consecutive sorted round p50s of the reference that splits a run
/// into two regimes.
pub const MIN_JUMP: f64 = 1.5;

/// The regime a round was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// Below the threshold (fast wake-ups).
    Fast,
    /// At or above it.
    Slow,
    /// The run saw one regime only: no split.
    One,
}

impl Regime {
    pub fn name(self) -> &'static str {
        match self {
            Regime::Fast => "fast",
            Regime::Slow => "slow",
            Regime::One => "one regime",
        }
    }
}

/// The classification of a scenario's rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Regimes {
    /// The regime of each round (`None`: the reference has no p50 in that round).
    pub per_round: Vec<Option<Regime>>,
    /// The threshold in ns, and the round p50s either side of the jump; `None`: one regime.
    pub split: Option<Split>,
}

/// Where the reference's round p50s were split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    pub threshold_ns: u64,
    /// The highest fast round p50 and the lowest slow one, in ns.
    pub below: u64,
    pub above: u64,
}

impl Regimes {
    /// The regimes seen, in the order fast, slow (or the single one).
    pub fn seen(&self) -> Vec<Regime> {
        [Regime::Fast, Regime::Slow, Regime::One]
            .into_iter()
            .filter(|r| self.per_round.contains(&Some(*r)))
            .collect()
    }

    /// The indices of the rounds in `regime`.
    pub fn rounds(&self, regime: Regime) -> Vec<usize> {
        (0..self.per_round.len()).filter(|&k| self.per_round[k] == Some(regime)).collect()
    }
}

/// Classifies each round by the reference's p50 in it (see the module's documentation).
pub fn classify(reference: &[Option<u64>]) -> Regimes {
    let mut v: Vec<u64> = reference.iter().flatten().copied().filter(|&p| p > 0).collect();
    v.sort_unstable();
    let jump = (1..v.len())
        .map(|i| (i, v[i] as f64 / v[i - 1] as f64))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|&(_, j)| j >= MIN_JUMP);
    let split = jump.map(|(i, _)| Split {
        threshold_ns: ((v[i - 1] as f64 * v[i] as f64).sqrt()).round() as u64,
        below: v[i - 1],
        above: v[i],
    });
    let per_round = reference
        .iter()
        .map(|p| {
            let p = (*p)?;
            Some(match split {
                None => Regime::One,
                Some(s) if p < s.threshold_ns => Regime::Fast,
                Some(_) => Regime::Slow,
            })
        })
        .collect();
    Regimes { per_round, split }
}

/// The median (upper median for an even count) of `v`, or `None` if it is empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The median over `rounds` of `a[k] / b[k]`, the rounds where either has no value left out;
/// with the number of rounds paired.
pub fn paired_median(a: &[Option<u64>], b: &[Option<u64>], rounds: &[usize]) -> Option<(f64, usize)> {
    let ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|&k| match (a.get(k).copied().flatten(), b.get(k).copied().flatten()) {
            (Some(x), Some(y)) if y > 0 => Some(x as f64 / y as f64),
            _ => None,
        })
        .collect();
    let n = ratios.len();
    median(ratios).map(|m| (m, n))
}

/// The median over `rounds` of `ratio(k)` (an infinite ratio, a lost command's, sorts last),
/// the rounds without one left out; with the number of rounds that had one.
pub fn median_over(rounds: &[usize], ratio: impl Fn(usize) -> Option<f64>) -> Option<(f64, usize)> {
    let v: Vec<f64> = rounds.iter().filter_map(|&k| ratio(k)).collect();
    let n = v.len();
    median(v).map(|m| (m, n))
}

/// The range (lowest, highest) of `values` over `rounds`, in ns.
pub fn range(values: &[Option<u64>], rounds: &[usize]) -> Option<(u64, u64)> {
    let v: Vec<u64> = rounds.iter().filter_map(|&k| values.get(k).copied().flatten()).collect();
    Some((*v.iter().min()?, *v.iter().max()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1000;

    /// Two clusters, as on the host: ~7–11 µs and ~60–80 µs; the threshold sits between them
    /// (the geometric mean of 11 and 60 µs), each round is filed by its own p50.
    #[test]
    fn two_clusters_split_at_their_largest_jump() {
        let r = [7, 62, 11, 80, 9, 60].map(|u| Some(u * US));
        let c = classify(&r);
        let s = c.split.expect("two regimes");
        assert_eq!((s.below, s.above), (11 * US, 60 * US));
        assert_eq!(s.threshold_ns, 25_690); // √(11 × 60) µs
        use Regime::*;
        assert_eq!(c.per_round, [Fast, Slow, Fast, Slow, Fast, Slow].map(Some).to_vec());
        assert_eq!(c.seen(), vec![Fast, Slow]);
        assert_eq!(c.rounds(Slow), vec![1, 3, 5]);
    }

    /// ±20 % drift is one regime; so is a single round, and a round without a p50 is left
    /// unclassified.
    #[test]
    fn drift_within_a_regime_is_not_a_split() {
        let c = classify(&[Some(70 * US), Some(84 * US), None, Some(62 * US), Some(75 * US)]);
        assert_eq!(c.split, None);
        assert_eq!(
            c.per_round,
            vec![Some(Regime::One), Some(Regime::One), None, Some(Regime::One), Some(Regime::One)]
        );
        assert_eq!(c.seen(), vec![Regime::One]);
        assert_eq!(classify(&[Some(8 * US)]).per_round, vec![Some(Regime::One)]);
        assert_eq!(classify(&[]).seen(), vec![]);
        // A handshake per command dilutes the regimes: 230 against 400 µs still splits.
        let c = classify(&[Some(230 * US), Some(400 * US), Some(240 * US)]);
        assert_eq!(c.rounds(Regime::Slow), vec![1]);
    }

    /// The per-regime figure is the median of per-round ratios: a client twice as slow as the
    /// reference in every fast round and as fast in every slow one reads 2× and 1×, whatever
    /// the pooled p50s say.
    #[test]
    fn per_regime_medians_pair_rounds() {
        let reference = [8, 70, 9, 75, 10].map(|u| Some(u * US));
        let client = [16, 70, 18, 75, 21].map(|u| Some(u * US));
        let c = classify(&reference);
        let (fast, slow) = (c.rounds(Regime::Fast), c.rounds(Regime::Slow));
        assert_eq!(fast, vec![0, 2, 4]);
        assert_eq!(paired_median(&client, &reference, &fast), Some((2.0, 3)));
        assert_eq!(paired_median(&client, &reference, &slow), Some((1.0, 2)));
        // A round either side lacks is left out; no round, no median.
        let mut gappy = client;
        gappy[0] = None;
        assert_eq!(paired_median(&gappy, &reference, &fast).map(|(_, n)| n), Some(2));
        assert_eq!(paired_median(&client, &reference, &[]), None);
        assert_eq!(range(&reference, &slow), Some((70 * US, 75 * US)));
        assert_eq!(median(vec![3.0, 1.0, 2.0, 4.0]), Some(3.0));
        // A lost command's infinite ratio sorts last: one round in three does not move the median,
        // two do.
        let inf = f64::INFINITY;
        assert_eq!(median_over(&[0, 1, 2], |k| Some([1.0, inf, 1.2][k])), Some((1.2, 3)));
        assert_eq!(median_over(&[0, 1, 2], |k| Some([1.0, inf, inf][k])), Some((inf, 3)));
        assert_eq!(median_over(&[0, 1, 2], |k| (k != 1).then_some(2.0)), Some((2.0, 2)));
    }
}
