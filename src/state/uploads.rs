//! The multipart bookkeeping's handle on the store: upload records only (a marker before the create,
//! the id, the finished parts and their digest state, the clear once completed or aborted). The
//! destination's multipart code holds this, not the whole [`Store`]: it writes no outcome, no claim,
//! no checkpoint — those stay the committer's.

use super::{Store, StoreError, UploadRecord};
use crate::model::FileId;

/// Upload records of interrupted and running multipart uploads.
#[derive(Clone)]
pub struct UploadBook(Store);

impl UploadBook {
    /// Records an upload before its first part, or its progress (synced: it must survive a crash).
    pub fn record(&self, file: &FileId, rec: &UploadRecord) -> Result<(), StoreError> {
        self.0.record_upload(file, rec)
    }

    /// The upload recorded for a file, if any.
    pub fn get(&self, file: &FileId) -> Result<Option<UploadRecord>, StoreError> {
        self.0.upload(file)
    }

    /// Forgets a finished or aborted upload.
    pub fn clear(&self, file: &FileId) -> Result<(), StoreError> {
        self.0.clear_upload(file)
    }

    /// The upload ids recorded (markers of uploads being created have none).
    pub fn recorded_ids(&self) -> Result<Vec<String>, StoreError> {
        self.0.recorded_upload_ids()
    }

    /// Uploads left by a previous process.
    pub fn pending(&self) -> Result<Vec<(FileId, UploadRecord)>, StoreError> {
        self.0.pending_uploads()
    }
}

impl Store {
    /// The narrow handle the multipart bookkeeping writes through.
    pub fn upload_book(&self) -> UploadBook {
        UploadBook(self.clone())
    }
}
