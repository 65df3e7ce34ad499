//! The pipeline supervisor. Children are started from builders (restart by builder, never by reviving
//! the dead actor); a failed child's in-hand items are re-delivered to the stage that must redo them;
//! restarts are bounded by intensity (N in T), past which the pipeline stops with a clear error.

use super::worker::InHand;
use crate::model::{ChangeEvent, Planned, Uploaded};
use crate::stages::{CommitMsg, Redo, Replay, StageError};
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
    /// Stage name, for logs and metrics.
    pub stage: &'static str,
    /// Builder.
    pub spawn: SpawnFn,
    /// What the child holds while working.
    pub in_hand: InHand,
}

/// The redo lanes a dead worker's items are re-delivered on.
#[derive(Clone)]
pub struct ReplayRoutes {
    /// Dedup's.
    pub dedup: Redo<ChangeEvent>,
    /// The planner's.
    pub planner: Redo<ChangeEvent>,
    /// The downloader's.
    pub downloader: Redo<Planned>,
    /// The verifier's.
    pub verifier: Redo<Uploaded>,
    /// The committer's.
    pub committer: Redo<CommitMsg>,
}

impl ReplayRoutes {
    /// Puts a replay on its stage's redo lane, at once (the lanes are sized so the supervisor never
    /// waits); an error means the pipeline cannot go on.
    fn deliver(&self, r: Replay) -> Result<(), StageError> {
        match r {
            Replay::Dedup(e) => self.dedup.put(e),
            Replay::Planner(e) => self.planner.put(e),
            Replay::Downloader(p) => self.downloader.put(p),
            Replay::Verifier(u) => self.verifier.put(u),
            Replay::Committer(m) => self.committer.put(m),
        }
    }
}

/// Supervisor arguments.
pub struct SupervisorArgs {
    /// Children to start.
    pub children: Vec<ChildSpec>,
    /// Replay routes.
    pub routes: ReplayRoutes,
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
    StopStage(&'static str),
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

    async fn on_failure(myself: &ActorRef<SupervisorMsg>, id: ActorId, err: String, st: &mut SupervisorState) {
        let Some((spec, _dead)) = st.children.remove(&id) else {
            return;
        };
        tracing::error!(stage = spec.stage, error = %err, "stage failed; restarting it");
        crate::metrics::restart(spec.stage);
        let replays: Vec<Replay> = std::mem::take(&mut *spec.in_hand.lock().unwrap_or_else(|p| p.into_inner()));
        let lost = replays.into_iter().map(|r| st.args.routes.deliver(r)).find_map(|r| match r {
            Err(StageError::Fatal(e)) => Some(e),
            _ => None,
        });
        let fatal = if let Some(e) = lost {
            Some(format!("stage {} failed and its work could not be re-delivered: {e}", spec.stage))
        } else if err.contains("fatal:") {
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
                Self::on_failure(&myself, cell.get_id(), err.to_string(), st).await
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                st.children.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
