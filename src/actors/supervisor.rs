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
        crate::internal_events::InternalEvent::emit(crate::internal_events::StageFailed {
            stage: spec.stage,
            error: &err,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::worker::{StageInput, workers};
    use crate::stages::{Emit, Stage, testing};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A stage that doubles numbers, panics once on 7, and fails fatally on 13.
    struct Flaky {
        panicked: Arc<AtomicBool>,
    }

    impl Stage for Flaky {
        type In = u32;
        type Out = u32;
        type Replay = u32;
        const NAME: StageName = StageName::Planner;

        async fn process(&mut self, items: Vec<u32>, emit: &Emit<u32>) -> Result<(), StageError> {
            for n in items {
                if n == 7 && !self.panicked.swap(true, Ordering::SeqCst) {
                    panic!("injected");
                }
                if n == 13 {
                    return Err(StageError::Fatal("the store is gone".into()));
                }
                emit.forward(n * 2).await?;
            }
            Ok(())
        }

        fn replay(item: &u32) -> u32 {
            *item
        }
    }

    async fn start(
        max_restarts: u32,
    ) -> (StageInput<u32>, testing::Taps<u32>, watch::Receiver<Option<String>>, ActorRef<SupervisorMsg>) {
        let input = StageInput::new(StageName::Planner, 8, 8);
        let (emit, taps) = testing::emit();
        let panicked = Arc::new(AtomicBool::new(false));
        let build = move || Ok(Flaky { panicked: panicked.clone() });
        let children = workers(1, build, &input, emit, &input.redo, &Arc::default());
        let (fatal_tx, fatal) = watch::channel(None);
        let args = SupervisorArgs { children, max_restarts, within: Duration::from_secs(60), fatal: fatal_tx };
        let (sup, _) = Actor::spawn(None, PipelineSupervisor, args).await.unwrap();
        (input, taps, fatal, sup)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_worker_is_restarted_and_the_item_it_held_is_done_again() {
        let (input, mut taps, fatal, sup) = start(3).await;
        for n in [1, 7, 2] {
            input.tx.send(n).await.unwrap();
        }
        let mut out = Vec::new();
        while out.len() < 3 {
            let n = tokio::time::timeout(Duration::from_secs(10), taps.next.recv()).await.unwrap().unwrap();
            out.push(n);
        }
        out.sort();
        assert_eq!(out, vec![2, 4, 14], "7 was re-delivered to the restarted worker");
        assert_eq!(*fatal.borrow(), None);
        sup.stop(None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fatal_error_stops_the_pipeline_without_a_restart() {
        let (input, _taps, mut fatal, sup) = start(3).await;
        input.tx.send(13).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), fatal.wait_for(|f| f.is_some())).await.unwrap().unwrap();
        let msg = fatal.borrow().clone().unwrap();
        assert!(msg.contains("unrecoverable") && msg.contains("the store is gone"), "{msg}");
        sup.stop(None);
    }

    #[test]
    fn only_a_fatal_stage_error_reads_as_fatal() {
        let fatal: ActorProcessingErr = Box::new(StageError::Fatal("x".into()));
        let failed: ActorProcessingErr = Box::new(StageError::Failed("fatal: in the text only".into()));
        let other: ActorProcessingErr = "panicked: fatal".into();
        assert_eq!(Failure::of(&fatal), Failure::Fatal("x".into()));
        assert!(matches!(Failure::of(&failed), Failure::Restartable(_)));
        assert!(matches!(Failure::of(&other), Failure::Restartable(_)));
    }
}
