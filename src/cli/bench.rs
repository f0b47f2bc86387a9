//! `tcb-backup bench`: runs the benchmark scenarios (see `crate::bench`) and prints each figure
//! beside its limit. Each scenario runs in a child process of the same binary, so that its peak
//! RSS is its own; `--in-process` runs them all here instead.

use std::time::Duration;

use clap::Args;

use crate::bench::{self, BenchOptions, BenchReport, Scenario, ScenarioReport};

use super::exit::{CliError, ExitStatus};
use super::output::Output;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenario to run (repeatable): default, all, fanout, polling, tokens, datapath,
    /// datapath-1g, engine, smoke. `default` is everything but datapath-1g.
    #[arg(long = "scenario", value_name = "NAME", default_value = "default")]
    pub scenarios: Vec<String>,
    /// Fan-out: number of collections.
    #[arg(long, default_value_t = 100)]
    pub collections: usize,
    /// Fan-out: concurrency.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Fan-out: duration of each export, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub export_secs: f64,
    /// Fan-out: virtual seconds per real second (1 = real time; higher magnifies overheads).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Run every scenario in this process (peak RSS then includes earlier scenarios'
    /// allocator leftovers).
    #[arg(long)]
    pub in_process: bool,
    /// Internal: this process is a child running one scenario for a parent `bench`.
    #[arg(long, hide = true)]
    pub child: bool,
}

impl BenchArgs {
    fn options(&self) -> Result<BenchOptions, CliError> {
        if !(self.export_secs.is_finite() && self.export_secs > 0.0) {
            return Err(CliError::error("--export-secs must be a positive number"));
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(CliError::error("--time-scale must be a positive number"));
        }
        Ok(BenchOptions {
            fanout_collections: self.collections.max(1),
            fanout_concurrency: self.concurrency.max(1),
            fanout_export: Duration::from_secs_f64(self.export_secs),
            fanout_time_scale: self.time_scale,
            ..BenchOptions::default()
        })
    }

    fn scenario_list(&self) -> Result<Vec<Scenario>, CliError> {
        let mut out: Vec<Scenario> = Vec::new();
        for name in &self.scenarios {
            for s in Scenario::parse(name).map_err(|e| CliError::error(e.to_string()))? {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// The fan-out flags, for children and for the report's command line.
    fn fanout_flags(&self) -> Vec<String> {
        let mut v = Vec::new();
        let d = BenchArgs::default_values();
        if self.collections != d.collections {
            v.extend(["--collections".into(), self.collections.to_string()]);
        }
        if self.concurrency != d.concurrency {
            v.extend(["--concurrency".into(), self.concurrency.to_string()]);
        }
        if self.export_secs != d.export_secs {
            v.extend(["--export-secs".into(), self.export_secs.to_string()]);
        }
        if self.time_scale != d.time_scale {
            v.extend(["--time-scale".into(), self.time_scale.to_string()]);
        }
        v
    }

    fn default_values() -> BenchArgs {
        BenchArgs {
            scenarios: vec![],
            collections: 100,
            concurrency: 10,
            export_secs: 2.0,
            time_scale: 1.0,
            in_process: false,
            child: false,
        }
    }
}

pub async fn run(a: BenchArgs, out: Output) -> Result<ExitStatus, CliError> {
    let opts = a.options()?;
    let scenarios = a.scenario_list()?;
    if a.child {
        let reports = bench::run_in_process(&scenarios, &opts)
            .await
            .map_err(|e| CliError::error(e.to_string()))?;
        out.document(&reports);
        return Ok(ExitStatus::Ok);
    }
    let mut command = vec!["tcb-backup".to_string(), "bench".to_string()];
    for s in &a.scenarios {
        command.extend(["--scenario".to_string(), s.clone()]);
    }
    command.extend(a.fanout_flags());
    if a.in_process {
        command.push("--in-process".into());
    }
    if out.is_json() {
        command.push("--json".into());
    }
    let mut reports = Vec::new();
    for s in scenarios {
        if !out.is_json() {
            eprintln!("running scenario {} ...", s.name());
        }
        let mut r = if a.in_process {
            bench::run_in_process(&[s], &opts)
                .await
                .map_err(|e| CliError::error(format!("scenario {}: {e}", s.name())))?
        } else {
            run_child(s, &a).await?
        };
        reports.append(&mut r);
    }
    let report = BenchReport::new(command.join(" "), reports);
    if out.is_json() {
        out.document(&report);
    } else {
        out.text(&report.to_text());
    }
    let status = exit_status(&report);
    if status != ExitStatus::Ok && !out.is_json() {
        eprintln!("tcb-backup: bench: some figures MISSED their limits");
    }
    Ok(status)
}

/// A figure past its limit is a failed benchmark: scripts and CI see it in the exit code. (A
/// child reports to its parent, which decides, so a child exits 0 with its figures.)
fn exit_status(report: &BenchReport) -> ExitStatus {
    if report.all_ok {
        ExitStatus::Ok
    } else {
        ExitStatus::Error
    }
}

/// Runs one scenario in a child process of this binary and reads its reports.
async fn run_child(s: Scenario, a: &BenchArgs) -> Result<Vec<ScenarioReport>, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::error(format!("cannot find this executable: {e}")))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["bench", "--child", "--json", "--scenario", s.name()])
        .args(a.fanout_flags())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    let output = cmd.output().await.map_err(|e| {
        CliError::error(format!("scenario {}: cannot start a child: {e}", s.name()))
    })?;
    if !output.status.success() {
        return Err(CliError::error(format!(
            "scenario {} failed in its child process ({}): {}",
            s.name(),
            output.status,
            String::from_utf8_lossy(&output.stdout).trim()
        )));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        CliError::error(format!(
            "scenario {}: unreadable child report: {e}",
            s.name()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{Figure, LimitOp};

    fn report(value: f64) -> BenchReport {
        let mut r = ScenarioReport::new("fanout", "t");
        r.push(Figure::info("informational", 1e9, "s"));
        r.push(Figure::limited(
            "wall time",
            value,
            "s",
            LimitOp::Le,
            23.0,
            "",
        ));
        BenchReport::new("tcb-backup bench".into(), vec![r])
    }

    #[test]
    fn a_missed_limit_exits_1_and_info_figures_never_do() {
        assert_eq!(exit_status(&report(22.0)), ExitStatus::Ok);
        assert_eq!(exit_status(&report(24.0)), ExitStatus::Error);
        assert_eq!(ExitStatus::Error.code(), 1);
    }
}
