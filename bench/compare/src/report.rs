//! Collecting samples and printing them: a markdown table for people, JSON lines for scripts.

use std::io::Write;

/// Who a row measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Our framework.
    Ours,
    /// Hand-written sqlx doing the same work.
    Hand,
    /// postgres-es 0.5.
    Peer,
    /// Shown for scale, never a baseline (it does other work).
    Reference,
    /// One lever of ours isolated (our store with one option changed, or our statement sent
    /// by hand with one part changed): compared with the same baselines as ours, to say what
    /// that lever is worth.
    Lever,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Hand => "hand-written",
            Kind::Peer => "postgres-es",
            Kind::Reference => "reference",
            Kind::Lever => "lever",
        }
    }
}

/// One row: an operation measured on one implementation, one sample per round.
pub struct Measure {
    op: &'static str,
    system: String,
    kind: Kind,
    samples: Vec<f64>,
    unit: &'static str,
}

impl Measure {
    /// The median of the samples.
    fn rate(&self) -> f64 {
        median(&self.samples)
    }

    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.samples.iter().copied().fold(0.0, f64::max)
    }
}

/// Every row of a run, in the order first measured.
#[derive(Default)]
pub struct Report {
    rows: Vec<Measure>,
}

/// A ratio of one of our rows to a baseline row of the same operation (medians; above 1
/// means ours is faster), and the same ratio taken round by round (the two were measured
/// next to each other in each round, so the host's drift cancels): median, lowest, highest.
struct Ratio<'a> {
    baseline: &'a Measure,
    ratio: f64,
    paired: Option<(f64, f64, f64)>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Report {
    /// Adds one sample of `op` on `system`.
    pub fn add(
        &mut self,
        op: &'static str,
        kind: Kind,
        system: impl Into<String>,
        rate: f64,
        unit: &'static str,
    ) {
        let system = system.into();
        eprintln!("  {op:<48} {system:<60} {rate:>12.1} {unit}");
        match self
            .rows
            .iter_mut()
            .find(|m| m.op == op && m.system == system)
        {
            Some(m) => m.samples.push(rate),
            None => self.rows.push(Measure {
                op,
                system,
                kind,
                samples: vec![rate],
                unit,
            }),
        }
    }

    fn ops(&self) -> Vec<&'static str> {
        let mut ops: Vec<&'static str> = Vec::new();
        for m in &self.rows {
            if !ops.contains(&m.op) {
                ops.push(m.op);
            }
        }
        ops
    }

    fn ratios<'a>(&'a self, m: &Measure, kind: Kind) -> Vec<Ratio<'a>> {
        if !matches!(m.kind, Kind::Ours | Kind::Lever) {
            return Vec::new();
        }
        self.rows
            .iter()
            .filter(|o| o.op == m.op && o.kind == kind)
            .map(|o| Ratio {
                baseline: o,
                ratio: m.rate() / o.rate(),
                // One sample per round on both sides: pair them.
                paired: (m.samples.len() == o.samples.len() && m.samples.len() > 1).then(|| {
                    let per_round: Vec<f64> = m
                        .samples
                        .iter()
                        .zip(&o.samples)
                        .map(|(a, b)| a / b)
                        .collect();
                    let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = per_round.iter().copied().fold(0.0, f64::max);
                    (median(&per_round), lo, hi)
                }),
            })
            .collect()
    }

    /// The markdown table.
    pub fn print(&self) {
        println!(
            "| operation | implementation | throughput (median) | time per op | samples (min-max) | ours / hand-written | ours / postgres-es |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|");
        for op in self.ops() {
            for m in self.rows.iter().filter(|m| m.op == op) {
                let rate = m.rate();
                let spread = format!(
                    "{} {}-{}",
                    m.samples.len(),
                    fmt_rate(m.min()),
                    fmt_rate(m.max())
                );
                let per = if m.unit.starts_with("events") {
                    format!("{:.2} µs/event", 1e6 / rate)
                } else if 1e3 / rate >= 1.0 {
                    format!("{:.2} ms", 1e3 / rate)
                } else {
                    format!("{:.0} µs", 1e6 / rate)
                };
                let cell = |kind: Kind| {
                    self.ratios(m, kind)
                        .iter()
                        .map(|r| match r.paired {
                            Some((_, lo, hi)) => format!(
                                "{:.2}x ({}; rounds {lo:.2}-{hi:.2})",
                                r.ratio,
                                short(&r.baseline.system)
                            ),
                            None => format!("{:.2}x ({})", r.ratio, short(&r.baseline.system)),
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                let system = if m.kind == Kind::Reference {
                    format!("{} (for scale, not a baseline)", m.system)
                } else {
                    m.system.clone()
                };
                println!(
                    "| {op} | {system} | {} {} | {per} | {spread} | {} | {} |",
                    fmt_rate(rate),
                    m.unit,
                    cell(Kind::Hand),
                    cell(Kind::Peer)
                );
            }
        }
    }

    /// One JSON object per line and cell: the operation, the implementation, the median and
    /// every sample, and for our rows the ratio to every baseline of the same operation.
    pub fn write_json_lines(&self, out: &mut impl Write) -> std::io::Result<()> {
        for op in self.ops() {
            for m in self.rows.iter().filter(|m| m.op == op) {
                let ratios: Vec<serde_json::Value> = [Kind::Hand, Kind::Peer]
                    .into_iter()
                    .flat_map(|kind| self.ratios(m, kind))
                    .map(|r| {
                        serde_json::json!({
                            "baseline": r.baseline.system,
                            "baseline_kind": r.baseline.kind.name(),
                            "ratio": r.ratio,
                            "ratio_per_round": r.paired.map(|(median, min, max)| serde_json::json!({
                                "median": median,
                                "min": min,
                                "max": max,
                            })),
                        })
                    })
                    .collect();
                let line = serde_json::json!({
                    "operation": m.op,
                    "implementation": m.system,
                    "kind": m.kind.name(),
                    "unit": m.unit,
                    "median": m.rate(),
                    "min": m.min(),
                    "max": m.max(),
                    "samples": m.samples,
                    "ratios": ratios,
                });
                writeln!(out, "{line}")?;
            }
        }
        Ok(())
    }
}

/// A baseline's name in a ratio cell: the first two words of what it does.
fn short(system: &str) -> String {
    match system.split_once(": ") {
        Some(("hand-written", what)) => what
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
            .trim_end_matches(',')
            .to_owned(),
        Some((who, _)) => who.to_owned(),
        None => system.to_owned(),
    }
}

/// A rate with thousands separators, or one decimal below 100.
pub fn fmt_rate(rate: f64) -> String {
    if rate >= 100.0 {
        let s = (rate.round() as u64).to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{rate:.1}")
    }
}
