//! Ractor actors: one generic worker that runs any stage over its bounded input channel, the feed
//! actor, and the supervisor that restarts failed workers by builder and re-delivers what they held.

pub mod feed;
pub mod supervisor;
pub mod worker;

pub use supervisor::{ChildSpec, PipelineSupervisor, SupervisorArgs, SupervisorMsg};
