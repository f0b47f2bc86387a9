//! The scenarios `tcb-backup bench` knows, their sizes, and running them in this process.

use std::time::{Duration, Instant};

use super::report::{Figure, LimitOp, ScenarioReport};
use super::{datapath, engine, fanout, memory, polling, tokens};

/// Why a benchmark could not produce its figures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BenchError {
    #[error("benchmark setup failed: {0}")]
    Setup(String),
    #[error("benchmark run failed: {0}")]
    Run(String),
    #[error("unknown scenario {0:?}: expected one of default, all, fanout, polling, tokens, datapath, datapath-1g, engine, smoke")]
    UnknownScenario(String),
}

/// One benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// N collections × export duration D at concurrency C, vs ideal and one by one.
    Fanout,
    /// Status calls and detection lag for exports from 1 s to 10 min (virtual time).
    Polling,
    /// Token endpoint calls per run.
    Tokens,
    /// download → sha256 → zstd → fsync vs plain file, 100 MiB export.
    DataPath,
    /// The same with a 1 GiB export (opt-in: it takes a while and ~3 GiB of scratch disk).
    DataPath1G,
    /// Durable transitions/s and resume time of the engine.
    Engine,
    /// Every scenario at a tiny size (the tests' smoke run; figures are not meaningful).
    Smoke,
}

impl Scenario {
    pub const DEFAULT: [Scenario; 5] = [
        Scenario::Fanout,
        Scenario::Polling,
        Scenario::Tokens,
        Scenario::DataPath,
        Scenario::Engine,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Polling => "polling",
            Scenario::Tokens => "tokens",
            Scenario::DataPath => "datapath",
            Scenario::DataPath1G => "datapath-1g",
            Scenario::Engine => "engine",
            Scenario::Smoke => "smoke",
        }
    }

    /// Parses one `--scenario` value; `default` and `all` expand to several.
    pub fn parse(name: &str) -> Result<Vec<Scenario>, BenchError> {
        let one = match name {
            "default" => return Ok(Self::DEFAULT.to_vec()),
            "all" => {
                let mut v = Self::DEFAULT.to_vec();
                v.push(Scenario::DataPath1G);
                return Ok(v);
            }
            "fanout" | "fan-out" => Scenario::Fanout,
            "polling" => Scenario::Polling,
            "tokens" => Scenario::Tokens,
            "datapath" | "data-path" => Scenario::DataPath,
            "datapath-1g" | "data-path-1g" => Scenario::DataPath1G,
            "engine" => Scenario::Engine,
            "smoke" => Scenario::Smoke,
            other => return Err(BenchError::UnknownScenario(other.to_string())),
        };
        Ok(vec![one])
    }
}

/// Knobs of the fan-out scenario (the others have fixed sizes).
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub fanout_collections: usize,
    pub fanout_concurrency: usize,
    pub fanout_export: Duration,
    /// Virtual seconds per real second of the fan-out run (1 = real time).
    pub fanout_time_scale: f64,
    /// Collections backed up one run at a time to estimate the one-by-one time.
    pub sequential_sample: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            fanout_collections: 100,
            fanout_concurrency: 10,
            fanout_export: Duration::from_secs(2),
            fanout_time_scale: 1.0,
            sequential_sample: 5,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Runs one scenario here (the smoke scenario yields one report per part).
pub async fn run_scenario(
    scenario: Scenario,
    opts: &BenchOptions,
) -> Result<Vec<ScenarioReport>, BenchError> {
    Ok(match scenario {
        Scenario::Fanout => vec![fanout::run(&fanout::FanoutParams::from_options(opts)).await?],
        Scenario::Polling => vec![polling::run(&polling::PollingParams::full()).await?],
        Scenario::Tokens => vec![tokens::run(&tokens::TokenParams::full()).await?],
        Scenario::DataPath => vec![datapath::run("datapath", 100 * MIB).await?],
        Scenario::DataPath1G => vec![datapath::run("datapath-1g", 1024 * MIB).await?],
        Scenario::Engine => vec![engine::run(&engine::EngineParams::full()).await?],
        Scenario::Smoke => {
            let mut v = vec![
                fanout::run(&fanout::FanoutParams::smoke()).await?,
                polling::run(&polling::PollingParams::smoke()).await?,
                tokens::run(&tokens::TokenParams::smoke()).await?,
                datapath::run("datapath", MIB).await?,
                engine::run(&engine::EngineParams::smoke()).await?,
            ];
            for r in &mut v {
                r.scenario = format!("smoke-{}", r.scenario);
            }
            v
        }
    })
}

/// Runs the scenarios one after the other in this process, each followed by its peak RSS
/// (reset between scenarios through `/proc/self/clear_refs` where the kernel allows it).
pub async fn run_in_process(
    scenarios: &[Scenario],
    opts: &BenchOptions,
) -> Result<Vec<ScenarioReport>, BenchError> {
    let mut out = Vec::new();
    for &s in scenarios {
        let reset = memory::reset_peak_rss();
        let start = Instant::now();
        let mut reports = run_scenario(s, opts).await?;
        let real = start.elapsed().as_secs_f64();
        let peak = memory::peak_rss_bytes();
        for r in &mut reports {
            r.real_secs = real;
            if let Some(bytes) = peak {
                r.push(rss_figure(&r.scenario, bytes, reset));
            }
        }
        out.extend(reports);
    }
    Ok(out)
}

/// The peak-RSS figure of a scenario; the data-path scenarios are held to the 64 MiB bound.
pub fn rss_figure(scenario: &str, bytes: u64, isolated: bool) -> Figure {
    let mib = bytes as f64 / MIB as f64;
    let how = if isolated {
        "VmHWM of the process running only this scenario, emulator included"
    } else {
        "VmHWM of the whole process (could not reset it), emulator included"
    };
    // Smoke parts share one process and one peak: informational only.
    if scenario == "datapath" || scenario == "datapath-1g" {
        Figure::limited(
            "peak RSS",
            mib,
            "MiB",
            LimitOp::Le,
            64.0,
            "issue 4: <= 64 MiB while backing up a 1 GiB export",
        )
        .with_note(how)
    } else {
        Figure::info("peak RSS", mib, "MiB").with_note(how)
    }
}
