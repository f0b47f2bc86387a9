//! The `Workflow` trait a job kind implements, and its type-erased form the runner stores.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{RetryPolicy, StepContext, StepError, Transition};

/// A kind of durable job: a serde state and an async step that performs one side effect and
/// returns the next state. Steps must tolerate running more than once for the same state: a step
/// interrupted by a crash or a timeout runs again (side effects are at-least-once).
pub trait Workflow: Send + Sync + 'static {
    type State: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    /// Stored with every job; must never change for a kind once jobs exist.
    const KIND: &'static str;
    /// Stored with every job; a job whose version differs from the registered one is quarantined.
    const SCHEMA_VERSION: u32;

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// A step running longer is abandoned and counts as a retryable failure.
    fn step_timeout(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn step(
        &self,
        ctx: StepContext,
        state: Self::State,
    ) -> impl Future<Output = Result<Transition<Self::State>, StepError>> + Send;
}

pub(crate) type BoxedStep =
    Pin<Box<dyn Future<Output = Result<Transition<serde_json::Value>, StepFailure>> + Send>>;

/// A step's failure as the runner sees it.
#[derive(Debug)]
pub(crate) enum StepFailure {
    Step(StepError),
    /// The stored state does not decode into the kind's state type: quarantine.
    Decode(String),
}

pub(crate) trait ErasedWorkflow: Send + Sync + 'static {
    fn schema_version(&self) -> u32;
    fn retry_policy(&self) -> RetryPolicy;
    fn step_timeout(&self) -> Duration;
    fn run_step(self: Arc<Self>, ctx: StepContext, state: serde_json::Value) -> BoxedStep;
}

pub(crate) struct Erased<W>(pub W);

fn encode<S: Serialize>(s: S) -> Result<serde_json::Value, StepFailure> {
    serde_json::to_value(s).map_err(|e| {
        StepFailure::Step(StepError::permanent(format!(
            "the step's new state cannot be serialized: {e}"
        )))
    })
}

impl<W: Workflow> ErasedWorkflow for Erased<W> {
    fn schema_version(&self) -> u32 {
        W::SCHEMA_VERSION
    }
    fn retry_policy(&self) -> RetryPolicy {
        self.0.retry_policy()
    }
    fn step_timeout(&self) -> Duration {
        self.0.step_timeout()
    }
    fn run_step(self: Arc<Self>, ctx: StepContext, state: serde_json::Value) -> BoxedStep {
        Box::pin(async move {
            let typed: W::State = serde_json::from_value(state).map_err(|e| {
                StepFailure::Decode(format!(
                    "state does not decode as kind {} v{}: {e}",
                    W::KIND,
                    W::SCHEMA_VERSION
                ))
            })?;
            let t = self.0.step(ctx, typed).await.map_err(StepFailure::Step)?;
            Ok(match t {
                Transition::Next(s) => Transition::Next(encode(s)?),
                Transition::WaitUntil { state, at } => Transition::WaitUntil {
                    state: encode(state)?,
                    at,
                },
                Transition::SpawnChildren { state, children } => Transition::SpawnChildren {
                    state: encode(state)?,
                    children,
                },
                Transition::Complete { state, output } => Transition::Complete {
                    state: encode(state)?,
                    output,
                },
                Transition::CompletePartial { state, output } => Transition::CompletePartial {
                    state: encode(state)?,
                    output,
                },
            })
        })
    }
}
