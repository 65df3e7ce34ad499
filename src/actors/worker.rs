//! The stage worker actor. Data flows through bounded tokio channels (ractor mailboxes are unbounded,
//! so they carry only the worker's own `Pull` control message). The item being processed is kept in
//! an in-hand slot the supervisor can read after a crash.

use crate::stages::{Emit, Redo, Stage, StageError};
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
        let started = Instant::now();
        match st.stage.process(items, &st.emit).await {
            Ok(()) => {
                crate::metrics::stage_time(S::NAME.as_str(), started.elapsed());
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
