//! The arithmetic of calibration: Wilson intervals, threshold sweeps and
//! reliability tables. Pure functions over (confidence, right) pairs.

/// One answer a layer offered: its confidence and whether it was right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer {
    /// The layer's confidence in [0, 1].
    pub confidence: f64,
    /// Whether the answer's source is among the label's expected ones.
    pub right: bool,
}

/// The 95% Wilson score interval of a proportion `k / n` (`(0, 1)` when
/// `n` is 0). Unlike the normal approximation it stays inside [0, 1] and
/// is honest at 0 of n: 0 errors in 200 answers still allow up to 1.9%.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n_f = n as f64;
    let p = k as f64 / n_f;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n_f);
    let spread = Z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    let denom = 1.0 + z2 / n_f;
    (
        ((centre - spread) / denom).max(0.0),
        ((centre + spread) / denom).min(1.0),
    )
}

/// What a layer does at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The threshold: answers with confidence ≥ it are given.
    pub threshold: f64,
    /// Answers given.
    pub answered: usize,
    /// Of those, right ones.
    pub right: usize,
    /// Questions the layer saw that some fact answers (recall's base).
    pub answerable: usize,
}

impl Point {
    /// Wrong answers given (a wrong fact, or any answer to a question that
    /// should be refused).
    pub fn wrong(&self) -> usize {
        self.answered - self.right
    }

    /// right / answered (1 when nothing was answered).
    pub fn precision(&self) -> f64 {
        ratio(self.right, self.answered, 1.0)
    }

    /// right / answerable.
    pub fn recall(&self) -> f64 {
        ratio(self.right, self.answerable, 0.0)
    }

    /// wrong / answered, with its 95% Wilson interval.
    pub fn error(&self) -> (f64, (f64, f64)) {
        (
            ratio(self.wrong(), self.answered, 0.0),
            wilson(self.wrong(), self.answered),
        )
    }
}

fn ratio(k: usize, n: usize, empty: f64) -> f64 {
    if n == 0 { empty } else { k as f64 / n as f64 }
}

/// The layer's behaviour at `threshold`.
pub fn at(offers: &[Offer], answerable: usize, threshold: f64) -> Point {
    let given = offers.iter().filter(|o| o.confidence >= threshold);
    let (answered, right) = given.fold((0, 0), |(a, r), o| (a + 1, r + usize::from(o.right)));
    Point {
        threshold,
        answered,
        right,
        answerable,
    }
}

/// The lowest threshold whose error rate stays within `budget` with 95%
/// confidence (the Wilson interval's upper end ≤ `budget`), among the
/// confidences the layer actually gave (any threshold between two of them
/// behaves like the higher one). `None` when no threshold with at least one
/// answer meets it.
pub fn lowest_within(offers: &[Offer], answerable: usize, budget: f64) -> Option<Point> {
    let mut candidates: Vec<f64> = offers
        .iter()
        .map(|o| o.confidence)
        .filter(|c| *c > 0.0)
        .collect();
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    candidates
        .into_iter()
        .map(|t| at(offers, answerable, t))
        .find(|p| p.answered > 0 && p.error().1.1 <= budget)
}

/// One bin of a reliability table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    /// Lower edge of the bin (the bin is `[lower, lower + 0.1)`, the last
    /// one closed).
    pub lower: f64,
    /// Answers in it.
    pub count: usize,
    /// Their mean confidence.
    pub mean_confidence: f64,
    /// The share of them that were right.
    pub accuracy: f64,
}

/// Ten bins of width 0.1 over the offers with confidence above 0 (empty
/// bins left out), and the expected calibration error: the mean over
/// offers of |accuracy − confidence| of their bin.
pub fn reliability(offers: &[Offer]) -> (Vec<Bin>, f64) {
    let mut sums = [(0usize, 0.0f64, 0usize); 10];
    let mut total = 0usize;
    for o in offers.iter().filter(|o| o.confidence > 0.0) {
        let b = ((o.confidence * 10.0) as usize).min(9);
        sums[b].0 += 1;
        sums[b].1 += o.confidence;
        sums[b].2 += usize::from(o.right);
        total += 1;
    }
    let mut bins = Vec::new();
    let mut ece = 0.0;
    for (i, &(n, conf, right)) in sums.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let bin = Bin {
            lower: i as f64 / 10.0,
            count: n,
            mean_confidence: conf / n as f64,
            accuracy: right as f64 / n as f64,
        };
        ece += (n as f64 / total as f64) * (bin.accuracy - bin.mean_confidence).abs();
        bins.push(bin);
    }
    (bins, ece)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(confidence: f64, right: bool) -> Offer {
        Offer { confidence, right }
    }

    #[test]
    fn wilson_matches_published_values() {
        // 0 of 10: the upper end is 0.2775 (Wilson 1927; e.g. Newcombe 1998, table I).
        let (lo, hi) = wilson(0, 10);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 1e-3, "{hi}");
        // 81 of 263: 0.2553 to 0.3662 (Newcombe 1998, example).
        let (lo, hi) = wilson(81, 263);
        assert!(
            (lo - 0.2553).abs() < 1e-3 && (hi - 0.3662).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, hi) = wilson(5, 5);
        assert!(hi <= 1.0 && lo > 0.5);
    }

    #[test]
    fn the_lowest_threshold_within_the_budget_is_found() {
        // Below 0.5 half the answers are wrong; from 0.5 up all are right.
        let mut offers = Vec::new();
        for i in 0..400 {
            offers.push(offer(0.5 + (i % 50) as f64 / 100.0, true));
        }
        for i in 0..100 {
            offers.push(offer(0.1 + (i % 30) as f64 / 100.0, i % 2 == 0));
        }
        let p = lowest_within(&offers, 450, 0.02).expect("a threshold meets it");
        assert_eq!(p.threshold, 0.5);
        assert_eq!(p.answered, 400);
        assert_eq!(p.wrong(), 0);
        assert!(p.error().1.1 <= 0.02);
        // No threshold meets an impossible budget on a small set.
        assert!(lowest_within(&offers[..10], 10, 0.0).is_none());
    }

    #[test]
    fn reliability_bins_and_ece() {
        let offers = [
            offer(0.95, true),
            offer(0.95, true),
            offer(0.15, false),
            offer(0.15, true),
            offer(0.0, false),
        ];
        let (bins, ece) = reliability(&offers);
        assert_eq!(bins.len(), 2);
        assert_eq!(bins[0].count, 2);
        assert!((bins[0].accuracy - 0.5).abs() < 1e-9);
        assert!((bins[1].accuracy - 1.0).abs() < 1e-9);
        // (2/4)·|0.5 − 0.15| + (2/4)·|1 − 0.95| = 0.2
        assert!((ece - 0.2).abs() < 1e-9, "{ece}");
    }
}
