//! The stage worker actor. Data flows through bounded tokio channels (ractor mailboxes are unbounded,
//! so they carry only the worker's own `Pull` control message). The item being processed is kept in
//! an in-hand slot the supervisor can read after a crash.

use crate::stages::{Emit, Replay, Stage, StageError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// A stage input shared by the workers of a pool.
pub type SharedInput<T> = Arc<tokio::sync::Mutex<mpsc::Receiver<T>>>;

/// Items a worker holds while processing them, for re-delivery if it dies.
pub type InHand = Arc<Mutex<Vec<Replay>>>;

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
        *st.in_hand.lock().unwrap_or_else(|p| p.into_inner()) = items.iter().map(S::replay).collect();
        let started = Instant::now();
        match st.stage.process(items, &st.emit).await {
            Ok(()) => {
                crate::metrics::stage_time(S::NAME, started.elapsed());
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
