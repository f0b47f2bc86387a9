//! What a benchmark produces: figures, each with the limit it is judged against, grouped by
//! scenario, plus the machine they came from. Rendered as an aligned text table or as JSON.

use serde::{Deserialize, Serialize};

/// Direction of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitOp {
    /// The figure must be at most the limit.
    Le,
    /// The figure must be at least the limit.
    Ge,
}

/// The target a figure is held to, and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    pub op: LimitOp,
    pub value: f64,
    /// Why this value ("issue 4: 1.15 × ideal 20 s").
    pub basis: String,
}

/// One measured number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub limit: Option<Limit>,
    /// `Some(true)` when within its limit; `None` without a limit.
    pub ok: Option<bool>,
    pub note: Option<String>,
}

impl Figure {
    /// An informational figure (no limit).
    pub fn info(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            limit: None,
            ok: None,
            note: None,
        }
    }

    /// A figure judged against `limit`.
    pub fn limited(
        name: impl Into<String>,
        value: f64,
        unit: impl Into<String>,
        op: LimitOp,
        limit: f64,
        basis: impl Into<String>,
    ) -> Self {
        let ok = match op {
            LimitOp::Le => value <= limit,
            LimitOp::Ge => value >= limit,
        };
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            limit: Some(Limit {
                op,
                value: limit,
                basis: basis.into(),
            }),
            ok: Some(ok),
            note: None,
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// The figures of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub title: String,
    pub figures: Vec<Figure>,
    /// How the figures were obtained, caveats.
    pub notes: Vec<String>,
    /// Real seconds the scenario took.
    pub real_secs: f64,
}

impl ScenarioReport {
    pub fn new(scenario: &str, title: impl Into<String>) -> Self {
        ScenarioReport {
            scenario: scenario.to_string(),
            title: title.into(),
            figures: Vec::new(),
            notes: Vec::new(),
            real_secs: 0.0,
        }
    }

    pub fn push(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }

    /// False when a figure misses its limit.
    pub fn all_ok(&self) -> bool {
        self.figures.iter().all(|f| f.ok != Some(false))
    }
}

/// Where the figures came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    /// `release` or `debug`: debug figures are not comparable.
    pub build: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            build: if cfg!(debug_assertions) {
                "debug".to_string()
            } else {
                "release".to_string()
            },
        }
    }
}

/// A whole benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub machine: Machine,
    pub command: String,
    pub scenarios: Vec<ScenarioReport>,
    pub all_ok: bool,
}

impl BenchReport {
    pub fn new(command: String, scenarios: Vec<ScenarioReport>) -> Self {
        let all_ok = scenarios.iter().all(ScenarioReport::all_ok);
        BenchReport {
            machine: Machine::detect(),
            command,
            scenarios,
            all_ok,
        }
    }

    /// The aligned text table the command prints.
    pub fn to_text(&self) -> String {
        let m = &self.machine;
        let mut s = format!(
            "tcb-backup bench ({} build) on {} cores, {}, Linux {}\ncommand: {}\n",
            m.build, m.cores, m.cpu, m.kernel, self.command
        );
        if m.build != "release" {
            s.push_str("WARNING: debug build; figures are not representative (use --release)\n");
        }
        for sc in &self.scenarios {
            s.push_str(&format!(
                "\n== {}: {} ({:.1} s real)\n",
                sc.scenario, sc.title, sc.real_secs
            ));
            let width = sc
                .figures
                .iter()
                .map(|f| f.name.chars().count())
                .max()
                .unwrap_or(0);
            for f in &sc.figures {
                let value = format!("{} {}", format_value(f.value), f.unit);
                let limit = match &f.limit {
                    Some(l) => format!(
                        "limit {} {} {}  [{}]  ({})",
                        match l.op {
                            LimitOp::Le => "<=",
                            LimitOp::Ge => ">=",
                        },
                        format_value(l.value),
                        f.unit,
                        if f.ok == Some(true) { "ok" } else { "MISSED" },
                        l.basis
                    ),
                    None => String::new(),
                };
                s.push_str(&format!("  {:<width$}  {value:>16}  {limit}\n", f.name));
                if let Some(note) = &f.note {
                    s.push_str(&format!("  {:<width$}  ({note})\n", ""));
                }
            }
            for n in &sc.notes {
                s.push_str(&format!("  note: {n}\n"));
            }
        }
        let missed: Vec<String> = self
            .scenarios
            .iter()
            .flat_map(|sc| {
                sc.figures
                    .iter()
                    .filter(|f| f.ok == Some(false))
                    .map(move |f| format!("{}: {}", sc.scenario, f.name))
            })
            .collect();
        if missed.is_empty() {
            s.push_str("\nall figures within their limits\n");
        } else {
            s.push_str(&format!("\nMISSED: {}\n", missed.join("; ")));
        }
        s
    }
}

fn format_value(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_judge_in_the_right_direction() {
        assert_eq!(
            Figure::limited("a", 2.0, "s", LimitOp::Le, 3.0, "").ok,
            Some(true)
        );
        assert_eq!(
            Figure::limited("a", 4.0, "s", LimitOp::Le, 3.0, "").ok,
            Some(false)
        );
        assert_eq!(
            Figure::limited("a", 4.0, "s", LimitOp::Ge, 3.0, "").ok,
            Some(true)
        );
        assert_eq!(Figure::info("a", 4.0, "s").ok, None);
    }

    #[test]
    fn text_names_missed_figures() {
        let mut sc = ScenarioReport::new("x", "t");
        sc.push(Figure::limited(
            "calls",
            20.0,
            "",
            LimitOp::Le,
            16.0,
            "issue 4",
        ));
        let r = BenchReport::new("cmd".into(), vec![sc]);
        assert!(!r.all_ok);
        let text = r.to_text();
        assert!(text.contains("MISSED: x: calls"), "{text}");
    }
}
