//! The `backup.run` workflow: resolves the selection into collections (discovering them through
//! the API where configured), fans out one `backup.collection` child per collection, and ends
//! Succeeded, PartiallyFailed or Failed with every child's outcome.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tcb_state::{ChildSpec, JobStatus, StepContext, StepError, Transition, Workflow};

use super::collection::CollectionWorkflow;
use super::errors::step_error;
use super::plan::BackupPlan;
use super::settings::WorkflowDeps;
use super::state::{CollectionSpec, CollectionState, RunState};

#[derive(Clone)]
pub struct RunWorkflow {
    deps: WorkflowDeps,
    plan: Arc<BackupPlan>,
}

/// One child's line in a run's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildResult {
    pub job: u64,
    pub label: String,
    pub status: JobStatus,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// The output a finished run stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutput {
    pub succeeded: usize,
    pub failed: usize,
    pub problems: Vec<String>,
    pub children: Vec<ChildResult>,
}

impl RunWorkflow {
    pub fn new(deps: WorkflowDeps, plan: Arc<BackupPlan>) -> Self {
        RunWorkflow { deps, plan }
    }

    async fn resolve(
        &self,
        ctx: &StepContext,
        selection: &super::state::RunSelection,
    ) -> Result<(Vec<CollectionSpec>, Vec<String>), StepError> {
        let envs = self.plan.envs(selection).map_err(StepError::permanent)?;
        let mut specs = Vec::new();
        let mut problems = Vec::new();
        for (app, env) in envs {
            let available = if env.needs_discovery() {
                let Some(client) = self.deps.clients.get(&app.appid) else {
                    problems.push(format!("app {}: no client configured", app.appid));
                    continue;
                };
                match client.list_collections(&env.id).await {
                    Ok(list) => Some(list.into_iter().map(|c| c.name).collect::<Vec<_>>()),
                    Err(e) => {
                        let err = step_error(
                            &format!("listing the collections of env {}", env.id),
                            &e,
                            ctx.now,
                        );
                        if err.is_retryable() {
                            // Transient: retry the whole discovery rather than run half a backup.
                            return Err(err);
                        }
                        problems.push(err.message().to_string());
                        continue;
                    }
                }
            } else {
                None
            };
            let names = env
                .select(available.as_deref())
                .map_err(|e| StepError::permanent(format!("env {}: {e}", env.id)))?;
            specs.extend(BackupPlan::finish(
                app,
                env,
                names,
                selection,
                &mut problems,
            ));
        }
        Ok((specs, problems))
    }
}

impl Workflow for RunWorkflow {
    type State = RunState;
    const KIND: &'static str = "backup.run";
    const SCHEMA_VERSION: u32 = 1;

    fn retry_policy(&self) -> tcb_state::RetryPolicy {
        self.deps.settings.retry.clone()
    }

    async fn step(
        &self,
        ctx: StepContext,
        state: RunState,
    ) -> Result<Transition<RunState>, StepError> {
        crate::faultpoint::hit("run.before_step");
        match state {
            RunState::Start { selection } => {
                let (targets, problems) = self.resolve(&ctx, &selection).await?;
                for p in &problems {
                    tracing::warn!(run = %ctx.job_id, "{p}");
                }
                // A misspelt name would otherwise just be missing from the run.
                for name in BackupPlan::unmatched(&selection, &targets) {
                    tracing::warn!(
                        run = %ctx.job_id,
                        "--collection {name} matches no collection of the selected env(s); skipped"
                    );
                }
                if targets.is_empty() {
                    let message = if problems.is_empty() {
                        "no collection matches the selection".to_string()
                    } else {
                        format!("nothing to back up: {}", problems.join("; "))
                    };
                    return Err(StepError::permanent(message));
                }
                let mut children = Vec::with_capacity(targets.len());
                for spec in &targets {
                    let child = ChildSpec::of::<CollectionWorkflow>(
                        &CollectionState::new(spec.clone()),
                        spec.target.to_string(),
                    )
                    .map_err(|e| StepError::permanent(format!("cannot encode a child: {e}")))?;
                    children.push(child);
                }
                tracing::info!(run = %ctx.job_id, collections = targets.len(), "run fans out");
                Ok(Transition::SpawnChildren {
                    state: RunState::Spawned {
                        selection,
                        targets,
                        problems,
                    },
                    children,
                })
            }
            RunState::Spawned { ref problems, .. } => {
                let children: Vec<ChildResult> = ctx
                    .children
                    .iter()
                    .map(|c| ChildResult {
                        job: c.id.0,
                        label: c.label.clone(),
                        status: c.status,
                        output: c.output.clone(),
                        error: c.error.clone(),
                    })
                    .collect();
                let succeeded = children
                    .iter()
                    .filter(|c| c.status == JobStatus::Succeeded)
                    .count();
                let failed = children.len() - succeeded + problems.len();
                let output = RunOutput {
                    succeeded,
                    failed,
                    problems: problems.clone(),
                    children,
                };
                if succeeded == 0 {
                    return Err(StepError::permanent(format!(
                        "all {failed} collections failed"
                    )));
                }
                let output_json = serde_json::to_value(&output).unwrap_or_default();
                if failed > 0 {
                    Ok(Transition::CompletePartial {
                        state,
                        output: output_json,
                    })
                } else {
                    Ok(Transition::Complete {
                        state,
                        output: output_json,
                    })
                }
            }
        }
    }
}
