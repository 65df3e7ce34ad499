//! The pipeline supervisor. Children are started from builders (restart by builder, never by reviving
//! the dead actor); a failed child's in-hand items are re-delivered to the stage that must redo them;
//! restarts are bounded by intensity (N in T), past which the pipeline stops with a clear error.

use super::worker::InHand;
use crate::stages::{StageError, StageName};
use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Starts one child linked to the given supervisor; called again for every restart.
pub type SpawnFn = Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, String>> + Send + Sync>;

/// How to (re)build one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Which stage the child runs: logs, metrics and a graceful stop.
    pub stage: StageName,
    /// Builder.
    pub spawn: SpawnFn,
    /// What the child holds while working.
    pub in_hand: InHand,
}

/// Supervisor arguments.
pub struct SupervisorArgs {
    /// Children to start.
    pub children: Vec<ChildSpec>,
    /// Restarts allowed within `within`.
    pub max_restarts: u32,
    /// Intensity window.
    pub within: Duration,
    /// Set when the pipeline must stop on an unrecoverable failure.
    pub fatal: watch::Sender<Option<String>>,
}

/// Supervisor state.
pub struct SupervisorState {
    children: HashMap<ActorId, (ChildSpec, ActorCell)>,
    restarts: VecDeque<Instant>,
    args: SupervisorArgs,
}

/// Control messages.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Stop every child and then the supervisor.
    Shutdown,
    /// Stop the children of one stage for good (no restart): the first step of a graceful stop.
    StopStage(StageName),
}

/// Why a child died, as the supervisor acts on it: a fatal error (the state store failed, or work
/// could not be re-delivered) stops the pipeline at once; anything else, a panic included, is
/// restarted within the restart intensity.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Stop the pipeline.
    Fatal(String),
    /// Restart the child.
    Restartable(String),
}

impl Failure {
    /// Reads a child's error: the workers fail with the [`StageError`] their stage returned.
    pub fn of(err: &ActorProcessingErr) -> Failure {
        match err.downcast_ref::<StageError>() {
            Some(StageError::Fatal(e)) => Failure::Fatal(e.clone()),
            _ => Failure::Restartable(err.to_string()),
        }
    }
}

/// The supervisor actor.
#[derive(Default)]
pub struct PipelineSupervisor;

impl PipelineSupervisor {
    async fn start_child(
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
        st: &mut SupervisorState,
    ) -> Result<(), String> {
        let cell = (spec.spawn)(myself.get_cell()).await?;
        st.children.insert(cell.get_id(), (spec, cell));
        Ok(())
    }

    fn over_intensity(st: &mut SupervisorState) -> bool {
        let now = Instant::now();
        st.restarts.push_back(now);
        while st.restarts.front().is_some_and(|t| now.duration_since(*t) > st.args.within) {
            st.restarts.pop_front();
        }
        st.restarts.len() as u32 > st.args.max_restarts
    }

    async fn on_failure(myself: &ActorRef<SupervisorMsg>, id: ActorId, failure: Failure, st: &mut SupervisorState) {
        let Some((spec, _dead)) = st.children.remove(&id) else {
            return;
        };
        let err = match &failure {
            Failure::Fatal(e) | Failure::Restartable(e) => e.clone(),
        };
        tracing::error!(stage = spec.stage.as_str(), error = %err, "stage failed; restarting it");
        crate::metrics::restart(spec.stage.as_str());
        let held = std::mem::take(&mut *spec.in_hand.lock().unwrap_or_else(|p| p.into_inner()));
        let lost = held.into_iter().map(|redeliver| redeliver()).find_map(|r| match r {
            Err(StageError::Fatal(e)) => Some(e),
            _ => None,
        });
        let fatal = if let Some(e) = lost {
            Some(format!("stage {} failed and its work could not be re-delivered: {e}", spec.stage))
        } else if matches!(failure, Failure::Fatal(_)) {
            Some(format!("stage {} hit an unrecoverable error: {err}", spec.stage))
        } else if Self::over_intensity(st) {
            Some(format!(
                "stage {} failed too often ({} restarts within {:?}); last error: {err}",
                spec.stage, st.args.max_restarts, st.args.within
            ))
        } else {
            Self::start_child(myself, spec.clone(), st)
                .await
                .err()
                .map(|e| format!("cannot restart stage {}: {e}", spec.stage))
        };
        if let Some(msg) = fatal {
            tracing::error!("{msg}");
            let _ = st.args.fatal.send(Some(msg));
        }
    }
}

impl Actor for PipelineSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        mut args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let specs = std::mem::take(&mut args.children);
        let mut st = SupervisorState { children: HashMap::new(), restarts: VecDeque::new(), args };
        for spec in specs {
            Self::start_child(&myself, spec, &mut st).await.map_err(|e| -> ActorProcessingErr { e.into() })?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Shutdown => {
                for child in myself.get_children() {
                    child.kill();
                }
                st.children.clear();
                myself.stop(Some("shutdown".into()));
            }
            SupervisorMsg::StopStage(stage) => {
                let ids: Vec<ActorId> =
                    st.children.iter().filter(|(_, (s, _))| s.stage == stage).map(|(id, _)| *id).collect();
                for id in ids {
                    if let Some((_, cell)) = st.children.remove(&id) {
                        cell.kill();
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                Self::on_failure(&myself, cell.get_id(), Failure::of(&err), st).await
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                st.children.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
