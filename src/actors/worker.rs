//! The stage worker actor. Data flows through bounded tokio channels (ractor mailboxes are unbounded,
//! so they carry only the worker's own `Pull` control message). The item being processed is kept in
//! an in-hand slot the supervisor can read after a crash.

use super::supervisor::{ChildSpec, SpawnFn};
use crate::internal_events::InternalEvent;
use crate::stages::{Emit, FailureInjector, Redo, Stage, StageError, StageName};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// A stage input shared by the workers of a pool.
pub type SharedInput<T> = Arc<tokio::sync::Mutex<Lanes<T>>>;

/// A stage's input: its redo lane (work already admitted coming back, see [`crate::stages::Redo`]),
/// always drained first, and its main channel, whose bound is the backpressure upstream feels.
pub struct Lanes<T> {
    redo: mpsc::Receiver<T>,
    main: mpsc::Receiver<T>,
    redo_open: bool,
}

impl<T> Lanes<T> {
    /// The two receivers of one stage.
    pub fn new(redo: mpsc::Receiver<T>, main: mpsc::Receiver<T>) -> Self {
        Lanes { redo, main, redo_open: true }
    }

    /// Takes up to `limit` items, redo work first; 0 when the main channel is closed.
    pub async fn recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        let first = loop {
            tokio::select! {
                biased;
                item = self.redo.recv(), if self.redo_open => match item {
                    Some(item) => break item,
                    None => self.redo_open = false,
                },
                item = self.main.recv() => match item {
                    Some(item) => break item,
                    None => return 0,
                },
            }
        };
        let before = buf.len();
        buf.push(first);
        while buf.len() - before < limit
            && let Ok(item) = self.redo.try_recv()
        {
            buf.push(item);
        }
        while buf.len() - before < limit
            && let Ok(item) = self.main.try_recv()
        {
            buf.push(item);
        }
        buf.len() - before
    }
}

/// Puts one item a dead worker held back on the redo lane of the stage that must redo it.
pub type Redeliver = Box<dyn FnOnce() -> Result<(), StageError> + Send>;

/// Items a worker holds while processing them, for re-delivery if it dies. The supervisor only runs
/// them: where each item goes was decided when the topology was compiled (the worker's `replay_to`).
pub type InHand = Arc<Mutex<Vec<Redeliver>>>;

/// What a worker is started with (built fresh by the supervisor at every restart).
pub struct WorkerArgs<S: Stage> {
    /// The stage logic.
    pub stage: S,
    /// Input channel.
    pub input: SharedInput<S::In>,
    /// Outputs.
    pub emit: Emit<S::Out>,
    /// In-hand slot.
    pub in_hand: InHand,
    /// The redo lane a dead worker's items go back to.
    pub replay_to: Redo<S::Replay>,
    /// `[testing]` failure injection, checked before each batch (the one place every stage gets it).
    pub faults: Arc<FailureInjector>,
}

/// Control message: take the next item(s) from the input channel.
#[derive(Debug)]
pub struct Pull;

/// Runs a [`Stage`] one batch at a time.
pub struct StageWorker<S: Stage>(std::marker::PhantomData<fn() -> S>);

impl<S: Stage> Default for StageWorker<S> {
    fn default() -> Self {
        StageWorker(std::marker::PhantomData)
    }
}

impl<S: Stage + Sync> Actor for StageWorker<S>
where
    S::In: Sync,
    S::Out: Sync,
{
    type Msg = Pull;
    type State = WorkerArgs<S>;
    type Arguments = WorkerArgs<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<Pull>,
        args: WorkerArgs<S>,
    ) -> Result<WorkerArgs<S>, ActorProcessingErr> {
        myself.send_message(Pull)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Pull>,
        _msg: Pull,
        st: &mut WorkerArgs<S>,
    ) -> Result<(), ActorProcessingErr> {
        let mut items = Vec::with_capacity(S::BATCH);
        let received = {
            let mut input = st.input.lock().await;
            input.recv_many(&mut items, S::BATCH).await
        };
        if received == 0 {
            myself.stop(Some("input closed".into()));
            return Ok(());
        }
        *st.in_hand.lock().unwrap_or_else(|p| p.into_inner()) =
            items.iter().map(|item| redeliver(&st.replay_to, S::replay(item))).collect();
        st.faults.check(S::NAME)?;
        let started = Instant::now();
        match st.stage.process(items, &st.emit).await {
            Ok(()) => {
                crate::internal_events::BatchProcessed { stage: S::NAME, took: started.elapsed() }.emit();
                st.in_hand.lock().unwrap_or_else(|p| p.into_inner()).clear();
                myself.send_message(Pull)?;
                Ok(())
            }
            Err(StageError::Closed) => {
                myself.stop(Some("pipeline closing".into()));
                Ok(())
            }
            Err(e) => Err(Box::new(e)),
        }
    }
}

/// The re-delivery of `item` on `lane`, for the in-hand slot.
fn redeliver<T: Send + 'static>(lane: &Redo<T>, item: T) -> Redeliver {
    let lane = lane.clone();
    Box::new(move || lane.put(item))
}

/// One stage's input: the main channel upstream sends into (its capacity is the backpressure) and the
/// redo lane for work already admitted (sized from the ledger's limit; see [`Redo`]).
pub struct StageInput<T> {
    /// What upstream sends into.
    pub tx: mpsc::Sender<T>,
    /// Where work already admitted comes back.
    pub redo: Redo<T>,
    /// What the stage's workers read.
    pub rx: SharedInput<T>,
}

impl<T> StageInput<T> {
    /// The input of `stage`: `capacity` on the main channel, `redo_capacity` on the redo lane.
    pub fn new(stage: StageName, capacity: usize, redo_capacity: usize) -> StageInput<T> {
        let (tx, rx) = mpsc::channel(capacity);
        let (redo_tx, redo_rx) = mpsc::channel(redo_capacity);
        let lanes = Lanes::new(redo_rx, rx);
        StageInput { tx, redo: Redo::new(stage.as_str(), redo_tx), rx: Arc::new(tokio::sync::Mutex::new(lanes)) }
    }
}

/// Makes the specs of `n` workers of stage `S`, each building its stage fresh with `build` at every
/// start; a dead worker's items go back on `replay_to`.
pub fn workers<S, F>(
    n: usize,
    build: F,
    input: &StageInput<S::In>,
    emit: Emit<S::Out>,
    replay_to: &Redo<S::Replay>,
    faults: &Arc<FailureInjector>,
) -> Vec<ChildSpec>
where
    S: Stage + Sync,
    S::In: Sync,
    S::Out: Sync,
    F: Fn() -> Result<S, String> + Send + Sync + 'static,
{
    let build = Arc::new(build);
    (0..n)
        .map(|_| {
            let in_hand: InHand = Arc::default();
            let (build, input, emit, slot, replay_to) =
                (build.clone(), input.rx.clone(), emit.clone(), in_hand.clone(), replay_to.clone());
            let faults = faults.clone();
            let spawn: SpawnFn = Arc::new(move |sup| {
                let (build, input, emit, in_hand, replay_to) =
                    (build.clone(), input.clone(), emit.clone(), slot.clone(), replay_to.clone());
                let faults = faults.clone();
                Box::pin(async move {
                    let stage = build()?;
                    let args = WorkerArgs { stage, input, emit, in_hand, replay_to, faults };
                    let (actor, _) = Actor::spawn_linked(None, StageWorker::<S>::default(), args, sup)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(actor.get_cell())
                })
            });
            ChildSpec { stage: S::NAME, spawn, in_hand }
        })
        .collect()
}
