//! A Google Workspace domain: its accounts, who sees which item, and the per-user rendering of
//! Drive resources. Google's model, followed here: a service account with domain-wide delegation
//! acts as the user named by its JWT's `sub`; each user has their own My Drive (owned items), sees
//! items other users shared with them (and everything below a shared folder), and the shared drives
//! they are members of; anything else answers 404 as if it did not exist.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Value, json};

use super::DomainUser;
use super::EmulatorConfig;
use super::content::content_key;
use super::corpus::{add_files, add_folder_tree, add_shared_drive};
use super::model::{Corpus, Item};
use super::resources::USER_EMAIL;
use super::rng::Rng64;

/// Customer id of the emulated Workspace account (`customerId` of its users).
pub(crate) const CUSTOMER_ID: &str = "C0emu4m1r";

/// One account of the domain (or the service account itself, which owns an empty My Drive).
#[derive(Debug, Clone)]
pub(crate) struct UserRec {
    pub email: String,
    /// Directory `id`: a numeric string, as Google's.
    pub id: String,
    pub admin: bool,
    pub suspended: bool,
    pub root_id: String,
    /// Shared drives the user is a member of.
    pub drives: BTreeSet<String>,
    /// Items shared with the user directly → `sharedWithMeTime` (ms).
    pub shared: BTreeMap<String, i64>,
    /// The service account acting as itself (no `sub`): not a Workspace user, not in the directory.
    pub service_account: bool,
}

impl UserRec {
    fn new(email: &str, root_id: String, admin: bool, suspended: bool) -> UserRec {
        UserRec {
            email: email.to_string(),
            id: format!("1{:020}", content_key(&email.to_ascii_lowercase(), 0, "user") % 10u64.pow(19)),
            admin,
            suspended,
            root_id,
            drives: BTreeSet::new(),
            shared: BTreeMap::new(),
            service_account: false,
        }
    }

    /// Display name Drive and the directory report: the local part, capitalised.
    pub fn full_name(&self) -> String {
        let local = self.email.split('@').next().unwrap_or_default();
        let mut chars = local.chars();
        chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }
}

/// Drive's `User` resource for `email`, `me` when it is the caller.
pub(crate) fn user_json(email: &str, me: bool) -> Value {
    let rec = UserRec::new(email, String::new(), false, false);
    let permission_id = format!("{:020}", content_key(&email.to_ascii_lowercase(), 0, "perm") % 10u64.pow(19));
    json!({"kind": "drive#user", "displayName": rec.full_name(), "me": me, "permissionId": permission_id, "emailAddress": email})
}

impl Corpus {
    /// True when the emulator serves a domain (`domain_users` configured).
    pub fn is_domain(&self) -> bool {
        !self.users.is_empty()
    }

    /// The account with this email (case-insensitive, as Google compares addresses).
    pub fn user(&self, email: &str) -> Option<&UserRec> {
        self.users.iter().find(|u| u.email.eq_ignore_ascii_case(email))
    }

    /// Mutable [`Corpus::user`].
    pub fn user_mut(&mut self, email: &str) -> Option<&mut UserRec> {
        self.users.iter_mut().find(|u| u.email.eq_ignore_ascii_case(email))
    }

    /// The first Workspace user: who acts when nobody is named (mutations, refresh-token sign-ins).
    pub fn first_user(&self) -> Option<&UserRec> {
        self.users.iter().find(|u| !u.service_account)
    }

    /// `root` resolved for `viewer` (their own My Drive's root).
    pub fn resolve_for<'a>(&'a self, id: &'a str, viewer: Option<&str>) -> &'a str {
        if id != "root" {
            return id;
        }
        match viewer.and_then(|v| self.user(v)) {
            Some(u) => &u.root_id,
            None => &self.root_id,
        }
    }

    /// My Drive root of `viewer` (the single user's in single-user mode).
    pub fn root_for(&self, viewer: Option<&str>) -> &str {
        self.resolve_for("root", viewer)
    }

    /// Can `viewer` see `item`? `None` is the single user of single-user mode, who sees everything.
    pub fn sees(&self, viewer: Option<&str>, item: &Item) -> bool {
        let Some(v) = viewer else {
            return true;
        };
        let Some(user) = self.user(v) else {
            return false;
        };
        if let Some(d) = &item.drive_id {
            return user.drives.contains(d);
        }
        if item.is_root {
            return item.id == user.root_id;
        }
        if item.owner.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(v)) {
            return true;
        }
        !user.shared.is_empty() && self.under_shared(user, &item.id)
    }

    /// True if `id` or one of its ancestors was shared with `user`.
    fn under_shared(&self, user: &UserRec, id: &str) -> bool {
        let mut seen = HashSet::new();
        let mut stack = vec![id.to_string()];
        while let Some(cur) = stack.pop() {
            if user.shared.contains_key(&cur) {
                return true;
            }
            if seen.insert(cur.clone())
                && let Some(item) = self.items.get(&cur)
            {
                stack.extend(item.parents.iter().cloned());
            }
        }
        false
    }

    /// `sharedWithMeTime` of `item` for `viewer`, when it was shared with them directly.
    pub fn shared_with(&self, viewer: &str, item: &Item) -> Option<i64> {
        let owned = item.owner.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(viewer));
        if owned {
            return None;
        }
        self.user(viewer).and_then(|u| u.shared.get(&item.id).copied())
    }

    /// The users who see item `id` now (domain mode, My Drive items); `None` otherwise: single-user
    /// mode, or a shared-drive item whose readers are its drive's members.
    pub fn viewers_of(&self, id: &str) -> Option<BTreeSet<String>> {
        let item = self.items.get(id)?;
        if !self.is_domain() || item.drive_id.is_some() {
            return None;
        }
        Some(self.users.iter().filter(|u| self.sees(Some(&u.email), item)).map(|u| u.email.clone()).collect())
    }

    /// Members of a shared drive.
    pub fn members_of(&self, drive_id: &str) -> BTreeSet<String> {
        self.users.iter().filter(|u| u.drives.contains(drive_id)).map(|u| u.email.clone()).collect()
    }

    /// A new account with an empty My Drive.
    pub fn add_user(&mut self, email: &str, admin: bool, suspended: bool) -> String {
        let root = self.rng.drive_id();
        let at = self.tick();
        let acting = self.acting.replace(email.to_string());
        self.insert_root(root.clone(), "My Drive".into(), None, at);
        self.acting = acting;
        self.users.push(UserRec::new(email, root.clone(), admin, suspended));
        root
    }

    /// Render a file as `viewer` sees it: owners, `ownedByMe`, `sharedWithMeTime` and `sharingUser`
    /// are the viewer's view of a domain item.
    pub fn personalize(&self, value: &mut Value, item: &Item, viewer: Option<&str>) {
        let (Some(v), Some(owner), Some(obj)) = (viewer, item.owner.as_deref(), value.as_object_mut()) else {
            return;
        };
        if item.drive_id.is_some() {
            return;
        }
        let mine = owner.eq_ignore_ascii_case(v);
        obj.insert("owners".into(), json!([user_json(owner, mine)]));
        obj.insert("ownedByMe".into(), json!(mine));
        obj.insert("lastModifyingUser".into(), user_json(owner, mine));
        obj.remove("sharedWithMeTime");
        obj.remove("sharingUser");
        if let Some(at) = self.shared_with(v, item) {
            obj.insert("sharedWithMeTime".into(), json!(super::model::rfc3339(at)));
            obj.insert("sharingUser".into(), user_json(owner, false));
        }
    }
}

/// Folders of a generated user's My Drive: a few, whatever the file count.
fn user_folders(files: usize) -> usize {
    (files / 10).clamp(1, 4)
}

/// The corpus of a domain: the service account's empty My Drive, each user's own My Drive (from the
/// seed and the user's index alone), then the shared drives and their memberships.
pub(crate) fn generate(cfg: &EmulatorConfig, epoch_ms: i64) -> Corpus {
    let mut c = Corpus::empty(cfg.seed, epoch_ms);
    let mut sa = UserRec::new(USER_EMAIL, c.root_id.clone(), false, false);
    sa.service_account = true;
    c.users.push(sa);
    for (i, u) in cfg.domain_users.iter().enumerate() {
        generate_user(&mut c, cfg.seed, i, u);
    }
    c.acting = None;
    let drive_files: usize = cfg.domain_users.iter().map(|u| u.files).max().unwrap_or(cfg.files);
    for n in 0..cfg.shared_drives {
        add_shared_drive(&mut c, n, drive_files);
    }
    for u in &cfg.domain_users {
        let ids: Vec<String> = u.drives.iter().filter_map(|&n| c.drives.get(n).map(|d| d.id.clone())).collect();
        if let Some(rec) = c.user_mut(&u.email) {
            rec.drives.extend(ids);
        }
    }
    if let Some(first) = c.first_user() {
        c.root_id = first.root_id.clone();
    }
    c
}

fn generate_user(c: &mut Corpus, seed: u64, index: usize, u: &DomainUser) {
    let saved = std::mem::replace(&mut c.rng, Rng64::new(seed, 0x7573_6572_0000 + index as u64));
    c.acting = Some(u.email.clone());
    let root = c.rng.drive_id();
    let at = c.clock_ms;
    c.insert_root(root.clone(), "My Drive".into(), None, at);
    let folders = add_folder_tree(c, &root, user_folders(u.files), 2);
    add_files(c, &folders, u.files);
    c.users.push(UserRec::new(&u.email, root, u.admin, u.suspended));
    c.rng = saved;
}

impl Corpus {
    /// The account a service-account JWT acts as: in domain mode the user its `sub` names (Google
    /// answers an unknown or suspended one with `invalid_grant` "Invalid email or User ID"), or the
    /// service account itself without `sub`; in single-user mode the one user, whatever `sub` says.
    pub fn delegate(&self, sub: Option<&str>) -> Result<Option<String>, super::auth::GrantError> {
        if !self.is_domain() {
            return Ok(None);
        }
        let Some(sub) = sub else {
            return Ok(Some(USER_EMAIL.to_string()));
        };
        match self.user(sub) {
            Some(u) if !u.suspended => Ok(Some(u.email.clone())),
            _ => Err(super::auth::GrantError::InvalidGrant("Invalid email or User ID".into())),
        }
    }

    /// Who an API call acts as: the token's account in domain mode (a token without one, from a
    /// refresh token or an installed-app sign-in, acts as the first user); `None` in single-user mode.
    pub fn viewer(&self, caller_user: Option<&str>) -> Option<String> {
        if !self.is_domain() {
            return None;
        }
        caller_user.map(str::to_owned).or_else(|| self.first_user().map(|u| u.email.clone()))
    }
}
