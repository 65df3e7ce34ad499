//! Wire-protocol tests of the Drive emulator, driven through the real google-drive3 + yup-oauth2 stack,
//! one module per protocol area.

mod auth;
mod changes;
mod files;
mod media;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::support::emu::{Ctx, envelope, hub_error_reason, start};
use drive_emulator::{EmuTree, EmulatorConfig};
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use serde_json::{Value, json};

const FULL_FIELDS: &str = "id,name,mimeType,parents,size,md5Checksum,sha256Checksum,modifiedTime,version,trashed,driveId,shortcutDetails,exportLinks,capabilities/canDownload";

fn hostile() -> EmulatorConfig {
    EmulatorConfig { files: 60, folders: 10, gdocs: 4, shared_drives: 2, hostile: true, seed: 42, ..Default::default() }
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

async fn hub_body(resp: google_drive3::common::Response) -> Vec<u8> {
    resp.into_body().collect().await.expect("body").to_bytes().to_vec()
}
