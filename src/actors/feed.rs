//! The change-feed actor: runs the feed loop; an error or panic reaches the supervisor, which starts a
//! fresh feed that resumes from the saved checkpoint (replays are harmless: dedup skips them).

use crate::stages::change_feed::{ChangeFeed, ChangeSource, FeedOutputs};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// Arguments of the feed actor.
pub struct FeedArgs<S: ChangeSource> {
    /// The feed.
    pub feed: ChangeFeed<S>,
    /// Where it sends.
    pub out: FeedOutputs,
}

/// Start message.
#[derive(Debug)]
pub struct Run;

/// The feed actor.
pub struct FeedActor<S: ChangeSource>(std::marker::PhantomData<fn() -> S>);

impl<S: ChangeSource> Default for FeedActor<S> {
    fn default() -> Self {
        FeedActor(std::marker::PhantomData)
    }
}

impl<S: ChangeSource> Actor for FeedActor<S> {
    type Msg = Run;
    type State = FeedArgs<S>;
    type Arguments = FeedArgs<S>;

    async fn pre_start(&self, myself: ActorRef<Run>, args: FeedArgs<S>) -> Result<FeedArgs<S>, ActorProcessingErr> {
        myself.send_message(Run)?;
        Ok(args)
    }

    async fn handle(&self, myself: ActorRef<Run>, _msg: Run, st: &mut FeedArgs<S>) -> Result<(), ActorProcessingErr> {
        match st.feed.run(&st.out).await {
            Ok(()) | Err(crate::stages::StageError::Closed) => {
                myself.stop(Some("feed finished".into()));
                Ok(())
            }
            Err(e) => Err(Box::new(e)),
        }
    }
}
