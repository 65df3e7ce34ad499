//! Adoption: a run that starts with an empty state over a destination that already holds a mirror
//! (the state directory was lost, or moved to a new machine) keeps the objects that hold a file's
//! exact bytes instead of downloading everything again, and once its first full listing is committed,
//! sweeps the objects no file owns (per `deletes`: trash by default), so nothing stale stays behind.

use crate::dest::{DestError, Destination, keys::collision_class};
use crate::internal_events::{Adoption, InternalEvent};
use crate::model::ObjectKey;
use crate::state::{Store, StoreError};
use futures::StreamExt;
use std::time::Duration;

/// The adoption boundary's error.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The destination failed.
    #[error(transparent)]
    Dest(#[from] DestError),
}

/// Starts an adoption when the state is empty and the destination already holds mirrored objects;
/// returns whether this run adopts (also when a crashed adoption run is being continued).
pub async fn begin_if_needed(store: &Store, dest: &Destination, roots: &[String]) -> Result<bool, AdoptError> {
    if !store.adopting()? && store.is_empty()? && holds_a_mirror(dest, roots).await? {
        Adoption::Started.emit();
        store.begin_adoption()?;
    }
    Ok(store.adopting()?)
}

async fn holds_a_mirror(dest: &Destination, roots: &[String]) -> Result<bool, DestError> {
    for root in roots.iter().map(String::as_str) {
        if let Some(first) = Box::pin(dest.keys_under(root)).next().await {
            first?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Waits until the first full listing is committed (every file it found has its outcome and its key
/// claimed), then sweeps the orphans and ends the adoption. Returns how many objects were swept.
pub async fn sweep_when_listed(store: Store, dest: Destination, roots: Vec<String>) -> Result<usize, AdoptError> {
    while !store.listing_done()? {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let swept = sweep_orphans(&store, &dest, &roots).await?;
    store.end_adoption()?;
    Adoption::Done { swept }.emit();
    Ok(swept)
}

/// Removes (per `deletes`) every object under the mirror's folders that no file owns: its key's class
/// is claimed by no file and no write to it is under way. The intent is read before the claim: a write
/// that commits in between has its claim by then (the record, the claim and the intent's removal are
/// in one batch), so an object being written is never taken for an orphan.
async fn sweep_orphans(store: &Store, dest: &Destination, roots: &[String]) -> Result<usize, AdoptError> {
    let mut swept = 0;
    for root in roots.iter().map(String::as_str) {
        let mut keys = Box::pin(dest.keys_under(root));
        while let Some(key) = keys.next().await {
            let key = key?;
            if is_orphan(store, &key)? {
                Adoption::OrphanRemoved { key: &key }.emit();
                dest.remove(&key).await?;
                swept += 1;
            }
        }
    }
    Ok(swept)
}

fn is_orphan(store: &Store, key: &ObjectKey) -> Result<bool, StoreError> {
    Ok(!store.has_intent(key)? && store.claim_holder(&collision_class(key.as_str()))?.is_none())
}
