//! A backup record: what one backup holds, as lists of chunks, and which
//! records a repository keeps as time goes by.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::seal::ChunkId;
use crate::ground::clock::{civil, days_from_civil};

pub(crate) const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) format: u32,
    /// The leitner version that wrote it.
    pub(crate) version: String,
    /// The data folder format of the files it holds.
    pub(crate) data_format: u32,
    /// Milliseconds since 1970.
    pub(crate) created: i64,
    pub(crate) host: String,
    pub(crate) users_file: Option<Stored>,
    /// The devices store (from leitner 0.2 on): restored, devices that
    /// logged in before the backup sync on without logging in again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) devices_file: Option<Stored>,
    pub(crate) users: Vec<UserRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    pub(crate) name: String,
    pub(crate) collection: Option<Stored>,
    pub(crate) media_db: Option<Stored>,
    pub(crate) media: Vec<MediaEntry>,
}

/// One file, as the chunks that make it up, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) size: u64,
    pub(crate) chunks: Vec<ChunkId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MediaEntry {
    pub(crate) name: String,
    /// The media database's SHA-1 of the file, hex: what the next backup
    /// compares to know the file unchanged without reading it.
    pub(crate) sha1: String,
    #[serde(flatten)]
    pub(crate) stored: Stored,
}

impl Record {
    /// Every chunk the record needs.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &ChunkId> {
        let users = self.users.iter().flat_map(|u| {
            u.collection
                .iter()
                .chain(&u.media_db)
                .chain(u.media.iter().map(|m| &m.stored))
        });
        self.users_file
            .iter()
            .chain(&self.devices_file)
            .chain(users)
            .flat_map(|s| s.chunks.iter())
    }

    pub(crate) fn size(&self) -> u64 {
        let users = self.users.iter().flat_map(|u| {
            u.collection
                .iter()
                .chain(&u.media_db)
                .chain(u.media.iter().map(|m| &m.stored))
        });
        self.users_file
            .iter()
            .chain(&self.devices_file)
            .chain(users)
            .map(|s| s.size)
            .sum()
    }
}

/// A record's file name: its UTC time, sortable and valid on FAT
/// (`2026-12-04T031500Z`).
pub(crate) fn name_for(created_ms: i64) -> String {
    let secs = created_ms.div_euclid(1000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}{:02}{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The time a record's name stands for, in seconds since 1970.
pub(crate) fn time_of(name: &str) -> Option<i64> {
    let b = name.as_bytes();
    if b.len() < 18 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[17] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| name.get(from..to)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = (num(11, 13)?, num(13, 15)?, num(15, 17)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// How many records to keep: the newest of each of the last `daily` days
/// that have one, of the last `weekly` weeks and `monthly` months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keep {
    pub(crate) daily: usize,
    pub(crate) weekly: usize,
    pub(crate) monthly: usize,
}

impl Default for Keep {
    fn default() -> Keep {
        Keep {
            daily: 7,
            weekly: 4,
            monthly: 6,
        }
    }
}

/// The records (by name) to keep; the newest is always kept, and names that
/// are not record times are left alone (kept).
pub(crate) fn to_keep(names: &[String], keep: Keep) -> BTreeSet<String> {
    let mut dated: Vec<(i64, &String)> = Vec::new();
    let mut kept = BTreeSet::new();
    for name in names {
        match time_of(name) {
            Some(t) => dated.push((t, name)),
            None => {
                kept.insert(name.clone());
            }
        }
    }
    dated.sort_by(|a, b| b.cmp(a));
    if let Some((_, newest)) = dated.first() {
        kept.insert((*newest).clone());
    }
    type Bucket = fn(i64) -> i64;
    let buckets: [(usize, Bucket); 3] = [
        (keep.daily, |t| t.div_euclid(86_400)),
        // 1970-01-01 was a Thursday: shifting by 3 days makes weeks start
        // on Mondays, as ISO weeks do.
        (keep.weekly, |t| (t.div_euclid(86_400) + 3).div_euclid(7)),
        (keep.monthly, |t| {
            let (y, m, _) = civil(t.div_euclid(86_400));
            y * 12 + m
        }),
    ];
    for (count, bucket) in buckets {
        let mut last = None;
        let mut taken = 0;
        for (t, name) in &dated {
            if taken == count {
                break;
            }
            let b = bucket(*t);
            if last != Some(b) {
                last = Some(b);
                taken += 1;
                kept.insert((*name).clone());
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_times_and_back() {
        let ms = 1_796_355_300_000; // 2026-12-04 03:35:00 UTC
        let name = name_for(ms);
        assert_eq!(name, "2026-12-04T033500Z");
        assert_eq!(time_of(&name), Some(ms / 1000));
        assert_eq!(name_for(951_782_400_000), "2000-02-29T000000Z");
        for bad in [
            "2026-13-04T033500Z",
            "lock",
            "2026-12-04T033500",
            "2026-12-04T0335ZZ",
        ] {
            assert_eq!(time_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_year_of_nightly_backups_thins_to_seven_four_six() {
        let start = 1_767_225_600; // 2026-01-01 00:00 UTC, a Thursday
        let names: Vec<String> = (0..365)
            .map(|day| name_for((start + day * 86_400 + 3 * 3600) * 1000))
            .collect();
        let kept = to_keep(&names, Keep::default());
        let newest = names.last().unwrap();
        assert!(kept.contains(newest));
        // The last 7 days.
        for name in &names[358..] {
            assert!(kept.contains(name), "{name}");
        }
        // Weeks end on Sundays; months on their last day.
        for sunday in ["2026-12-27T030000Z", "2026-12-20T030000Z"] {
            assert!(kept.contains(sunday), "{sunday}");
        }
        for month_end in ["2026-11-30T030000Z", "2026-07-31T030000Z"] {
            assert!(kept.contains(month_end), "{month_end}");
        }
        assert!(!kept.contains("2026-06-30T030000Z"), "seven months back");
        // 7 days; 4 weeks of which the newest is among the days; 6 months
        // of which the newest is too.
        assert!(kept.len() <= 7 + 4 + 6, "{kept:?}");
        assert!(kept.len() >= 14, "{kept:?}");
    }

    #[test]
    fn several_a_day_keep_the_newest_of_the_day_and_odd_names_stay() {
        let names: Vec<String> = [
            "2026-12-04T010000Z",
            "2026-12-04T020000Z",
            "2026-12-03T230000Z",
            "notes",
        ]
        .map(String::from)
        .to_vec();
        let kept = to_keep(
            &names,
            Keep {
                daily: 1,
                weekly: 0,
                monthly: 0,
            },
        );
        assert_eq!(
            kept.into_iter().collect::<Vec<_>>(),
            ["2026-12-04T020000Z", "notes"]
        );
    }
}
