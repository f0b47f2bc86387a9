//! `tcb-backup bench`: how close the tool gets to what the platform and the machine allow,
//! measured against the in-process emulator and printed beside the targets of the engine and
//! backup issues (see `docs/performance.md`).
//!
//! - `scenario`: the list of scenarios and how to run one
//! - `report`: figures, limits and the text/JSON rendering
//! - `harness`: an emulator, a store and the real backup workflows wired together
//! - `clock`: engine clocks that follow the emulator's virtual clock
//! - `fanout`, `polling`, `tokens`, `datapath`, `engine`: one module per scenario
//! - `memory`: peak RSS (VmHWM) and per-scenario child processes
//! - `scratch`: temporary directories removed on drop

pub mod clock;
pub mod datapath;
pub mod engine;
pub mod fanout;
pub mod harness;
pub mod memory;
pub mod polling;
pub mod report;
pub mod scenario;
pub mod scratch;
pub mod tokens;

pub use report::{BenchReport, Figure, Limit, LimitOp, Machine, ScenarioReport};
pub use scenario::{run_in_process, BenchError, BenchOptions, Scenario};
