//! Shard assignment: which process of a cluster mirrors which unit (a user's Drive, a shared drive).
//!
//! Each unit has one owner among shards `0..n`, chosen by rendezvous (highest-random-weight) hashing:
//! every shard gets a weight for the unit and the highest weight owns it. Going from `n` to `n + 1`
//! shards moves exactly the units whose new shard's weight beats their old owner's — about
//! `1/(n+1)` of them, all to the new shard — so a rescale re-adopts few units.
//!
//! The weight is the first 8 bytes (big-endian) of SHA-256 over
//! `"mirrorflow/shard/v1" 0x00 <unit key, UTF-8> 0x00 <shard index as u32 big-endian>`: a
//! standardized hash over a fixed encoding, so every version and platform assigns a unit to the same
//! shard (a test pins known owners). Ties (never seen: 64-bit weights) go to the lower index.
//!
//! Everything here is pure except [`host_name`], which reads the host name once.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Environment variable that sets the shard (`"i/n"`), overriding `[cluster] shard` in the file, so
/// one ConfigMap can serve every pod and a single process can be pointed at a shard by hand.
pub const SHARD_ENV: &str = "MIRRORFLOW_SHARD";

/// The most shards a cluster may have: each unit's owner costs one hash per shard.
pub const MAX_SHARDS: u32 = 1024;

/// Domain separator of the weight hash; changing it would move every unit, so it carries a version.
const WEIGHT_DOMAIN: &[u8] = b"mirrorflow/shard/v1";

/// Why a shard cannot be resolved. Every variant is permanent (a configuration or host problem that
/// retrying does not fix); each message starts with the key or variable to fix, as config problems do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not of the form `i/n`.
    #[error("{key}: {text:?} is not \"i/n\" (this shard's 0-based index, a slash, the shard count: \"0/3\")")]
    Syntax {
        /// The key or variable holding it.
        key: &'static str,
        /// What it held.
        text: String,
    },
    /// A count of zero or above [`MAX_SHARDS`].
    #[error("{key}: the shard count must be between 1 and {MAX_SHARDS}, not {count}")]
    Count {
        /// The key or variable holding it.
        key: &'static str,
        /// The count given.
        count: u64,
    },
    /// An index not below the count.
    #[error("{key}: the shard index {index} must be below the shard count {count} (indexes start at 0)")]
    Index {
        /// The key or variable holding it.
        key: &'static str,
        /// The index given.
        index: u64,
        /// The count given.
        count: u32,
    },
    /// `i/n` disagrees with `[cluster] shards`.
    #[error("{key}: {count} shards here, but cluster.shards = {shards}; every process must agree on the count")]
    Mismatch {
        /// The key or variable holding `i/n`.
        key: &'static str,
        /// Its count.
        count: u32,
        /// `[cluster] shards`.
        shards: u32,
    },
    /// The host name has no trailing `-<digits>`.
    #[error(
        "cluster.shards: the host name {host:?} does not end in -<digits> (a StatefulSet pod's ordinal, as in \
         \"mirrorflow-2\"); set cluster.shard = \"i/n\" or {SHARD_ENV}"
    )]
    NoOrdinal {
        /// The host name read.
        host: String,
    },
    /// The host name's ordinal is not below `[cluster] shards`.
    #[error(
        "cluster.shards: the host name {host:?} makes this shard {ordinal}, not below cluster.shards = {count} \
         (more pods than shards?)"
    )]
    Ordinal {
        /// The host name read.
        host: String,
        /// Its ordinal.
        ordinal: u64,
        /// `[cluster] shards`.
        count: u32,
    },
    /// Neither `HOSTNAME` nor the system gave a host name.
    #[error("cluster.shards: cannot read the host name ({reason}); set cluster.shard = \"i/n\" or {SHARD_ENV}")]
    HostName {
        /// What failed.
        reason: String,
    },
}

/// This process's part of the cluster: shard `index` of `count`. Built only through [`Shard::new`]
/// and the resolvers, so `index < count` always holds and every unit has exactly one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// The one shard of a process that mirrors everything (no `[cluster]`).
    pub const SOLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; `key` names where the values came from, for the error.
    pub fn new(key: &'static str, index: u64, count: u64) -> Result<Shard, ShardError> {
        let count = u32::try_from(count)
            .ok()
            .filter(|c| (1..=MAX_SHARDS).contains(c))
            .ok_or(ShardError::Count { key, count })?;
        let index = u32::try_from(index).ok().filter(|i| *i < count).ok_or(ShardError::Index { key, index, count })?;
        Ok(Shard { index, count })
    }

    /// This shard's 0-based index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many shards the cluster has.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this shard mirrors `unit` (a key from [`user_unit`] or [`drive_unit`]).
    pub fn owns(&self, unit: &str) -> bool {
        owner(unit, self.count) == self.index
    }

    /// Parses `"i/n"` as found in `key`.
    pub fn parse(key: &'static str, text: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax { key, text: text.to_string() };
        let (i, n) = text.trim().split_once('/').ok_or_else(syntax)?;
        let number = |s: &str| {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            // All digits: only an overflow fails, and such a number is out of range anyway.
            Ok(s.parse::<u64>().unwrap_or(u64::MAX))
        };
        Shard::new(key, number(i)?, number(n)?)
    }
}

impl fmt::Display for Shard {
    /// `i/n`, as `[cluster] shard` and `status.json` write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        Shard::parse("shard", s)
    }
}

impl serde::Serialize for Shard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Shard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shard, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The unit key of a user's Drive: the email, lower-cased (Google treats addresses without regard
/// to case, so `Alice@` and `alice@` must land on one shard).
pub fn user_unit(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The unit key of a shared drive: `drive:<id>` (ids are case-sensitive and kept as they are).
pub fn drive_unit(drive_id: &str) -> String {
    format!("drive:{drive_id}")
}

/// The weight of `shard` for `unit`: see the module documentation for the exact bytes hashed.
fn weight(unit: &str, shard: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(WEIGHT_DOMAIN);
    h.update([0]);
    h.update(unit.as_bytes());
    h.update([0]);
    h.update(shard.to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The shard among `0..count` that owns `unit` (`count` 0 is taken as 1).
pub fn owner(unit: &str, count: u32) -> u32 {
    (0..count.max(1)).map(|i| (weight(unit, i), std::cmp::Reverse(i))).max().map_or(0, |(_, i)| i.0)
}

/// The ordinal a StatefulSet gives its pod, from the pod's host name: the digits after the last
/// `-` of its first label (`mirrorflow-2` → 2, `mirrorflow-2.mirrorflow.ns.svc` → 2).
pub fn host_ordinal(host: &str) -> Result<u64, ShardError> {
    let no_ordinal = || ShardError::NoOrdinal { host: host.to_string() };
    let label = host.trim().split('.').next().unwrap_or_default();
    let (_, digits) = label.rsplit_once('-').ok_or_else(no_ordinal)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(no_ordinal());
    }
    Ok(digits.parse::<u64>().unwrap_or(u64::MAX))
}

/// The host name: `HOSTNAME` (Kubernetes sets it to the pod's name), else the system's.
pub fn host_name() -> Result<String, ShardError> {
    if let Some(h) = std::env::var("HOSTNAME").ok().filter(|h| !h.trim().is_empty()) {
        return Ok(h);
    }
    whoami::hostname().map_err(|e| ShardError::HostName { reason: e.to_string() })
}

/// What decides the shard, in order: [`SHARD_ENV`]'s `"i/n"`, `[cluster] shard`'s `"i/n"`,
/// `[cluster] shards` with the host name's ordinal, else [`Shard::SOLE`]. When `shards` is set, an
/// `"i/n"` must agree with it on `n`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardSettings<'a> {
    /// The value of [`SHARD_ENV`], if set and not empty.
    pub env: Option<&'a str>,
    /// `[cluster] shard`.
    pub shard: Option<&'a str>,
    /// `[cluster] shards`.
    pub shards: Option<u64>,
}

impl ShardSettings<'_> {
    /// This process's shard; `host` is asked only when the ordinal must come from the host name.
    pub fn resolve(&self, host: impl FnOnce() -> Result<String, ShardError>) -> Result<Shard, ShardError> {
        let given = match (self.env, self.shard) {
            (Some(env), _) => Some(Shard::parse(SHARD_ENV, env).map(|s| (SHARD_ENV, s))?),
            (None, Some(text)) => Some(Shard::parse("cluster.shard", text).map(|s| ("cluster.shard", s))?),
            (None, None) => None,
        };
        match (given, self.shards) {
            (Some((_, shard)), None) => Ok(shard),
            (Some((key, shard)), Some(shards)) if u64::from(shard.count) != shards => {
                let shards = u32::try_from(shards).unwrap_or(u32::MAX);
                Err(ShardError::Mismatch { key, count: shard.count, shards })
            }
            (Some((_, shard)), Some(_)) => Ok(shard),
            (None, None) => Ok(Shard::SOLE),
            (None, Some(shards)) => {
                let count = Shard::new("cluster.shards", 0, shards)?.count;
                let host = host()?;
                let ordinal = host_ordinal(&host)?;
                Shard::new("cluster.shards", ordinal, u64::from(count)).map_err(|_| ShardError::Ordinal {
                    host,
                    ordinal,
                    count,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn units(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                if i % 5 == 0 {
                    drive_unit(&format!("0A{i:x}Uk9PVA"))
                } else {
                    user_unit(&format!("user{i}@example.com"))
                }
            })
            .collect()
    }

    #[test]
    fn the_assignment_is_pinned_so_versions_and_platforms_agree() {
        // Computed from the documented encoding with Python's hashlib, independently of this code; a
        // change here moves units between the shards of a running cluster, which must never happen
        // silently.
        let pinned = [
            ("alice@example.com", 7, 0),
            ("bob@example.com", 7, 4),
            ("drive:0AByz12Uk9PVA", 7, 3),
            ("carol@example.org", 3, 0),
            ("dave@example.net", 10, 1),
            ("drive:0AAZZ9", 10, 1),
        ];
        for (unit, count, expected) in pinned {
            assert_eq!(owner(unit, count), expected, "{unit} of {count}");
        }
        assert_eq!(weight("alice@example.com", 0), 16_927_314_405_067_333_533, "weight of alice@ on shard 0");
    }

    #[test]
    fn one_shard_owns_everything() {
        for u in units(200) {
            assert!(Shard::SOLE.owns(&u));
        }
    }

    #[test]
    fn adding_a_shard_moves_only_units_to_the_new_shard_and_about_one_in_n_plus_one() {
        let keys = units(4000);
        for n in [1u32, 2, 3, 7] {
            let moved: Vec<&String> = keys.iter().filter(|u| owner(u, n) != owner(u, n + 1)).collect();
            for u in &moved {
                assert_eq!(owner(u, n + 1), n, "{u} moved between old shards going from {n} to {}", n + 1);
            }
            let expected = keys.len() as f64 / f64::from(n + 1);
            let got = moved.len() as f64;
            assert!((got - expected).abs() < expected * 0.15, "{n}→{}: {got} moved, about {expected} expected", n + 1);
        }
    }

    #[test]
    fn units_spread_evenly_over_the_shards() {
        let keys = units(6000);
        let n = 6u32;
        let mut per = vec![0usize; n as usize];
        for u in &keys {
            per[owner(u, n) as usize] += 1;
        }
        for (i, c) in per.iter().enumerate() {
            assert!((800..=1200).contains(c), "shard {i} owns {c} of 6000: {per:?}");
        }
    }

    #[test]
    fn a_user_unit_ignores_the_emails_case_and_a_drive_unit_keeps_the_ids() {
        assert_eq!(user_unit(" Alice@Example.COM "), "alice@example.com");
        assert_eq!(drive_unit("0AbC"), "drive:0AbC");
        assert_ne!(drive_unit("0AbC"), drive_unit("0abc"));
    }

    #[test]
    fn i_over_n_parses_and_bad_text_names_its_key() {
        assert_eq!(Shard::parse("cluster.shard", "2/5").map(|s| (s.index(), s.count())), Ok((2, 5)));
        assert_eq!(Shard::parse("cluster.shard", " 0 / 1 "), Ok(Shard::SOLE));
        assert_eq!("1/3".parse::<Shard>().map(|s| s.to_string()), Ok("1/3".to_string()));
        for bad in ["", "3", "1/", "/3", "-1/3", "a/3", "1/3/4", "1.0/3"] {
            let e = Shard::parse("cluster.shard", bad).unwrap_err();
            assert!(matches!(e, ShardError::Syntax { .. }), "{bad:?}: {e}");
            assert!(e.to_string().starts_with("cluster.shard: "), "{e}");
        }
        let e = Shard::parse(SHARD_ENV, "3/3").unwrap_err();
        assert_eq!(e, ShardError::Index { key: SHARD_ENV, index: 3, count: 3 });
        assert!(e.to_string().starts_with("MIRRORFLOW_SHARD: "), "{e}");
        assert!(matches!(Shard::parse("k", "0/0"), Err(ShardError::Count { count: 0, .. })));
        assert!(matches!(Shard::parse("k", "0/1025"), Err(ShardError::Count { count: 1025, .. })));
        assert!(matches!(Shard::parse("k", "99999999999999999999999/2"), Err(ShardError::Index { .. })));
    }

    #[test]
    fn a_status_json_shard_round_trips_as_i_over_n() {
        let s = Shard::parse("k", "4/9").unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"4/9\"");
        assert_eq!(serde_json::from_str::<Shard>(&json).unwrap(), s);
        assert!(serde_json::from_str::<Shard>("\"9/4\"").is_err());
    }

    #[test]
    fn the_host_names_trailing_digits_are_the_ordinal() {
        assert_eq!(host_ordinal("mirrorflow-12"), Ok(12));
        assert_eq!(host_ordinal("a-b-3"), Ok(3));
        assert_eq!(host_ordinal("mirrorflow-0.mirrorflow.default.svc.cluster.local"), Ok(0));
        for bad in ["mirrorflow", "mirrorflow-", "mirrorflow-x1", "mirrorflow-1a", "", "host.example-3.com"] {
            let e = host_ordinal(bad).unwrap_err();
            assert!(matches!(e, ShardError::NoOrdinal { .. }), "{bad:?}");
            assert!(e.to_string().starts_with("cluster.shards: ") && e.to_string().contains("-<digits>"), "{e}");
        }
    }

    fn host(name: &str) -> impl FnOnce() -> Result<String, ShardError> + '_ {
        move || Ok(name.to_string())
    }

    fn no_host() -> Result<String, ShardError> {
        panic!("the host name was asked although the shard was given")
    }

    #[test]
    fn the_variable_overrides_the_file_and_shards_alone_reads_the_host_name() {
        let sole = ShardSettings::default();
        assert_eq!(sole.resolve(no_host), Ok(Shard::SOLE));
        let file = ShardSettings { shard: Some("1/3"), ..Default::default() };
        assert_eq!(file.resolve(no_host).map(|s| s.to_string()), Ok("1/3".into()));
        let env = ShardSettings { env: Some("2/3"), ..file };
        assert_eq!(env.resolve(no_host).map(|s| s.to_string()), Ok("2/3".into()));
        let agreeing = ShardSettings { shards: Some(3), ..env };
        assert_eq!(agreeing.resolve(no_host).map(|s| s.to_string()), Ok("2/3".into()));
        let pod = ShardSettings { shards: Some(3), ..Default::default() };
        assert_eq!(pod.resolve(host("mirrorflow-2")).map(|s| s.to_string()), Ok("2/3".into()));
    }

    #[test]
    fn a_count_that_disagrees_or_an_ordinal_past_it_is_refused_naming_the_key() {
        let env = ShardSettings { env: Some("0/4"), shards: Some(3), ..Default::default() };
        let e = env.resolve(no_host).unwrap_err();
        assert_eq!(e, ShardError::Mismatch { key: SHARD_ENV, count: 4, shards: 3 });
        let file = ShardSettings { shard: Some("0/4"), shards: Some(3), ..Default::default() };
        assert!(file.resolve(no_host).unwrap_err().to_string().starts_with("cluster.shard: "));
        let pod = ShardSettings { shards: Some(3), ..Default::default() };
        let e = pod.resolve(host("mirrorflow-3")).unwrap_err();
        assert!(matches!(e, ShardError::Ordinal { ordinal: 3, count: 3, .. }), "{e}");
        let e = pod.resolve(host("laptop")).unwrap_err();
        assert!(matches!(e, ShardError::NoOrdinal { .. }), "{e}");
        let zero = ShardSettings { shards: Some(0), ..Default::default() };
        assert!(matches!(zero.resolve(no_host), Err(ShardError::Count { key: "cluster.shards", count: 0 })));
        let unreadable = || Err(ShardError::HostName { reason: "no name".into() });
        assert!(pod.resolve(unreadable).unwrap_err().to_string().contains(SHARD_ENV));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn every_unit_has_exactly_one_owner_and_the_shards_cover_all(
            keys in prop::collection::vec("[a-z0-9._%+-]{1,20}@[a-z0-9.-]{1,12}|drive:[A-Za-z0-9_-]{5,20}", 1..40),
            count in 1u32..40,
        ) {
            for unit in &keys {
                let owners: Vec<u32> = (0..count)
                    .filter(|i| Shard::new("k", u64::from(*i), u64::from(count)).is_ok_and(|s| s.owns(unit)))
                    .collect();
                prop_assert_eq!(owners, vec![owner(unit, count)], "{}", unit);
            }
        }

        #[test]
        fn growing_by_one_never_moves_a_unit_between_old_shards(unit in "\\PC{1,40}", count in 1u32..64) {
            let before = owner(&unit, count);
            let after = owner(&unit, count + 1);
            prop_assert!(after == before || after == count, "{} moved {} → {}", unit, before, after);
        }
    }
}
