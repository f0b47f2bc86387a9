//! Token calls per run: several apps, envs and collections in one run must cost one token
//! call per app (the client caches the token and every job of the app shares the client).

use super::harness::timing_for;
use super::harness::{bench_appid, everything, small_docs, Harness, HarnessSpec, TimeMode};
use super::report::{Figure, LimitOp, ScenarioReport};
use super::scenario::BenchError;

#[derive(Debug, Clone)]
pub struct TokenParams {
    pub apps: usize,
    pub envs_per_app: usize,
    pub collections_per_env: usize,
}

impl TokenParams {
    pub fn full() -> Self {
        TokenParams {
            apps: 2,
            envs_per_app: 2,
            collections_per_env: 10,
        }
    }

    pub fn smoke() -> Self {
        TokenParams {
            apps: 1,
            envs_per_app: 2,
            collections_per_env: 2,
        }
    }
}

pub async fn run(p: &TokenParams) -> Result<ScenarioReport, BenchError> {
    let total = p.apps * p.envs_per_app * p.collections_per_env;
    let mut rep = ScenarioReport::new(
        "tokens",
        format!(
            "{} apps x {} envs x {} collections in one run",
            p.apps, p.envs_per_app, p.collections_per_env
        ),
    );
    let spec = HarnessSpec {
        label: "tokens".into(),
        apps: (0..p.apps)
            .map(|a| {
                (
                    bench_appid(a),
                    (0..p.envs_per_app)
                        .map(|e| format!("bench-tok-{a}{e}"))
                        .collect(),
                )
            })
            .collect(),
        time: TimeMode::Virtual,
        timing: timing_for(std::time::Duration::from_secs(5)),
        concurrency: 8,
    };
    let h = Harness::start(&spec).await?;
    for (_, envs) in &spec.apps {
        for env in envs {
            for c in 0..p.collections_per_env {
                let name = format!("t{c:02}");
                h.control()
                    .insert_documents(env, &name, small_docs(&name, 5))
                    .map_err(|e| BenchError::Setup(format!("seeding {env}/{name}: {e}")))?;
            }
        }
    }
    let outcome = h.run(everything()).await?;
    let per_app = h.service.clients().token_fetches();
    let counters = h.control().counters();
    let endpoint_calls: u64 = ["token", "stable_token"]
        .iter()
        .filter_map(|ep| counters.endpoints.get(*ep))
        .map(|s| s.calls)
        .sum();
    h.shutdown().await;
    rep.push(Figure::info(
        "collections backed up",
        outcome.report.collections.len() as f64,
        "",
    ));
    let worst = per_app.values().copied().max().unwrap_or(0);
    rep.push(Figure::limited(
        "token calls per app (worst app)",
        worst as f64,
        "",
        LimitOp::Le,
        1.0,
        "issue 4: one token call per run",
    ));
    rep.push(Figure::limited(
        "token endpoint calls seen by the emulator",
        endpoint_calls as f64,
        "",
        LimitOp::Le,
        p.apps as f64,
        "one per app",
    ));
    rep.note(format!("{total} collections; the client counts its own token fetches, the emulator counts requests to /cgi-bin/token and /cgi-bin/stable_token"));
    Ok(rep)
}
