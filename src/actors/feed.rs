//! The change-feed actor: runs the feed loop; an error or panic reaches the supervisor, which starts a
//! fresh feed that resumes from the saved checkpoint (replays are harmless: dedup skips them).

use crate::stages::change_feed::{ChangeFeed, ChangeSource, FeedOutputs, FeedState};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// Arguments of the feed actor.
pub struct FeedArgs<S: ChangeSource, T: FeedState> {
    /// The feed.
    pub feed: ChangeFeed<S, T>,
    /// Where it sends.
    pub out: FeedOutputs,
}

/// Start message.
#[derive(Debug)]
pub struct Run;

/// The feed actor.
pub struct FeedActor<S: ChangeSource, T: FeedState>(std::marker::PhantomData<fn() -> (S, T)>);

impl<S: ChangeSource, T: FeedState> Default for FeedActor<S, T> {
    fn default() -> Self {
        FeedActor(std::marker::PhantomData)
    }
}

impl<S: ChangeSource, T: FeedState> Actor for FeedActor<S, T> {
    type Msg = Run;
    type State = FeedArgs<S, T>;
    type Arguments = FeedArgs<S, T>;

    async fn pre_start(
        &self,
        myself: ActorRef<Run>,
        args: FeedArgs<S, T>,
    ) -> Result<FeedArgs<S, T>, ActorProcessingErr> {
        myself.send_message(Run)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Run>,
        _msg: Run,
        st: &mut FeedArgs<S, T>,
    ) -> Result<(), ActorProcessingErr> {
        match st.feed.run(&st.out).await {
            Ok(()) | Err(crate::stages::StageError::Closed) => {
                myself.stop(Some("feed finished".into()));
                Ok(())
            }
            Err(e) => Err(Box::new(e)),
        }
    }
}
