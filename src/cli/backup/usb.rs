//! A USB drive as a backup destination: looked for when a backup or a
//! restore runs, mounted for that run only and unmounted after, so the rest
//! of the time it can be pulled out (or was never plugged in) without harm.
//!
//! A drive qualifies when it hangs off USB (or is hot-pluggable) and holds
//! FAT32, exFAT or ext2/3/4, on a partition or on the whole drive. Without a
//! label named, the one labelled `LEITNER` is taken, else the first
//! with a `leitner-backups` folder at its top.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::service::backups::USB_LABEL;
use crate::storage::backup::repository::FOLDER;

const MOUNT_BASE: &str = "/run/leitner-backup";
const FILE_SYSTEMS: [&str; 5] = ["vfat", "exfat", "ext4", "ext3", "ext2"];

/// A drive mounted for this run; unmounted when dropped (if this run
/// mounted it).
pub(super) struct Mounted {
    pub(super) root: PathBuf,
    device: String,
    ours: bool,
}

impl Mounted {
    /// Whether the drive is still there (not pulled out mid-run), asked
    /// after a failure. The failure can reach us before the kernel has
    /// taken the drive's node away (Linux 7.3 answers a pulled drive's
    /// pending writes with EIO at once), so a node still there is looked at
    /// again for a few seconds.
    pub(super) fn present(&self) -> bool {
        for _ in 0..50 {
            if !Path::new(&self.device).exists() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        true
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.ours {
            return;
        }
        super::super::as_root(|| {
            let _ = crate::ground::durable::sync_filesystem(&self.root);
            // Busy (or the drive gone): let the kernel finish it when it can.
            if umount2(&self.root, MntFlags::empty()).is_err() {
                let _ = umount2(&self.root, MntFlags::MNT_DETACH);
            }
            let _ = std::fs::remove_dir(&self.root);
        });
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Drive {
    device: String,
    fstype: String,
    label: Option<String>,
    mountpoint: Option<String>,
}

/// Finds the drive and mounts it.
pub(super) fn mount_drive(label: Option<&str>) -> Result<Mounted, String> {
    let drives = usb_drives()?;
    let described = match label {
        Some(l) => format!("a USB drive labelled {l}"),
        None => format!("a USB drive labelled {USB_LABEL} or with a {FOLDER} folder"),
    };
    let wanted = label.unwrap_or(USB_LABEL);
    let by_label = drives.iter().find(|d| {
        d.label
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(wanted))
    });
    if let Some(drive) = by_label {
        return mount_one(drive);
    }
    if label.is_none() {
        for drive in &drives {
            let mounted = mount_one(drive)?;
            if mounted.root.join(FOLDER).is_dir() {
                return Ok(mounted);
            }
        }
    }
    Err(if drives.is_empty() {
        format!("no USB drive is plugged in (looked for {described})")
    } else {
        format!(
            "none of the USB drives plugged in ({}) is {described}",
            drives
                .iter()
                .map(|d| format!(
                    "{} {}",
                    d.device,
                    d.label.as_deref().unwrap_or("(no label)")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn mount_one(drive: &Drive) -> Result<Mounted, String> {
    if let Some(at) = &drive.mountpoint {
        // Mounted by someone else (a desktop, say): used where it is.
        return Ok(Mounted {
            root: PathBuf::from(at),
            device: drive.device.clone(),
            ours: false,
        });
    }
    let name = Path::new(&drive.device)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "usb".into());
    let root = Path::new(MOUNT_BASE).join(name);
    // FAT and exFAT have no owners: root's alone, like the backups on it.
    let options = match drive.fstype.as_str() {
        "vfat" => Some("umask=077,iocharset=utf8,shortname=mixed,flush"),
        "exfat" => Some("umask=077"),
        _ => None,
    };
    super::super::as_root(|| {
        std::fs::create_dir_all(&root)?;
        mount(
            Some(drive.device.as_str()),
            &root,
            Some(drive.fstype.as_str()),
            MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            options,
        )
        .map_err(std::io::Error::from)
    })
    .map_err(|e| {
        let _ = super::super::as_root(|| std::fs::remove_dir(&root));
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                "mounting {} needs root: run the command with sudo",
                drive.device
            )
        } else {
            format!("mounting {} ({}): {e}", drive.device, drive.fstype)
        }
    })?;
    Ok(Mounted {
        root,
        device: drive.device.clone(),
        ours: true,
    })
}

/// Every USB (or hot-pluggable) drive or partition with a file system a
/// backup can use, as lsblk (udev's view) lists them.
fn usb_drives() -> Result<Vec<Drive>, String> {
    let out = Command::new("lsblk")
        .args([
            "--json",
            "--paths",
            "-o",
            "NAME,LABEL,FSTYPE,TRAN,HOTPLUG,MOUNTPOINT",
        ])
        .output()
        .map_err(|e| format!("lsblk: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "lsblk: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_lsblk(&out.stdout)
}

fn parse_lsblk(json: &[u8]) -> Result<Vec<Drive>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("lsblk's output: {e}"))?;
    let mut found = Vec::new();
    let devices = value["blockdevices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for device in &devices {
        walk(device, false, &mut found);
    }
    Ok(found)
}

fn walk(node: &serde_json::Value, removable_parent: bool, found: &mut Vec<Drive>) {
    let text = |key: &str| {
        node[key]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // lsblk prints booleans as true/false, or "0"/"1" in older versions.
    let hotplug =
        node["hotplug"].as_bool().unwrap_or(false) || node["hotplug"].as_str() == Some("1");
    let removable = removable_parent || hotplug || text("tran").as_deref() == Some("usb");
    if removable {
        if let (Some(device), Some(fstype)) = (text("name"), text("fstype")) {
            if FILE_SYSTEMS.contains(&fstype.as_str()) {
                found.push(Drive {
                    device,
                    fstype,
                    label: text("label"),
                    mountpoint: text("mountpoint"),
                });
            }
        }
    }
    if let Some(children) = node["children"].as_array() {
        for child in children {
            walk(child, removable, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_partitions_with_a_usable_file_system_are_found() {
        let json = br#"{"blockdevices": [
            {"name": "/dev/mmcblk0", "label": null, "fstype": null, "tran": null, "hotplug": false, "mountpoint": null,
             "children": [{"name": "/dev/mmcblk0p1", "label": "BOOT", "fstype": "vfat", "tran": null, "hotplug": false, "mountpoint": "/boot/firmware"}]},
            {"name": "/dev/sda", "label": null, "fstype": null, "tran": "usb", "hotplug": "1", "mountpoint": null,
             "children": [
                {"name": "/dev/sda1", "label": "LEITNER", "fstype": "exfat", "tran": null, "hotplug": "1", "mountpoint": null},
                {"name": "/dev/sda2", "label": null, "fstype": "ntfs", "tran": null, "hotplug": "1", "mountpoint": null}]},
            {"name": "/dev/sdb", "label": "STICK", "fstype": "vfat", "tran": "usb", "hotplug": true, "mountpoint": "/media/stick"}
        ]}"#;
        let drives = parse_lsblk(json).unwrap();
        assert_eq!(
            drives,
            [
                Drive {
                    device: "/dev/sda1".into(),
                    fstype: "exfat".into(),
                    label: Some("LEITNER".into()),
                    mountpoint: None
                },
                Drive {
                    device: "/dev/sdb".into(),
                    fstype: "vfat".into(),
                    label: Some("STICK".into()),
                    mountpoint: Some("/media/stick".into())
                },
            ]
        );
    }
}
