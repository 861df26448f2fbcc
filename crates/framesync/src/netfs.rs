//! Detects a ledger on a network filesystem, where SQLite's locks and WAL shared memory do not
//! work, by finding the mount that holds the ledger's folder in /proc/self/mountinfo.

use std::path::Path;

const NETWORK_FILESYSTEMS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ncpfs",
    "afs",
    "9p",
    "ceph",
    "glusterfs",
    "lustre",
    "gpfs",
    "fuse.sshfs",
    "fuse.glusterfs",
    "fuse.s3fs",
    "fuse.rclone",
    "fuse.gcsfuse",
    "davfs",
    "fuse.davfs2",
];

/// The network filesystem type holding `ledger`, if it is on one.
pub fn network_filesystem(ledger: &Path) -> Option<String> {
    let folder = ledger.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fstype = filesystem_of(folder)?;
    NETWORK_FILESYSTEMS.contains(&fstype.as_str()).then_some(fstype)
}

/// The filesystem type holding `folder`, or `None` when the mounts cannot be read.
fn filesystem_of(folder: &Path) -> Option<String> {
    let folder = std::fs::canonicalize(folder).ok()?;
    let mountinfo = std::fs::read_to_string(crate::hooks::mountinfo()).ok()?;
    fstype_of(&mountinfo, folder.to_str()?)
}

/// The filesystem type of the longest mount point that contains `path`.
fn fstype_of(mountinfo: &str, path: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = unescape(fields.get(4)?);
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            let inside = path == mount_point
                || mount_point == "/"
                || path.strip_prefix(mount_point.as_str()).is_some_and(|rest| rest.starts_with('/'));
            inside.then(|| (mount_point.len(), fstype.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fstype)| fstype)
}

/// mountinfo writes spaces and other bytes in paths as octal escapes such as `\040`.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /var/lib/framesync rw,relatime shared:20 - nfs4 srv:/export rw,vers=4.2
41 22 0:36 / /mnt/my\\040share rw - cifs //srv/share rw
42 40 8:2 / /var/lib/framesync/local rw - xfs /dev/sdb1 rw
";

    #[test]
    fn the_longest_containing_mount_decides() {
        assert_eq!(fstype_of(MOUNTINFO, "/var/lib/framesync").as_deref(), Some("nfs4"));
        assert_eq!(fstype_of(MOUNTINFO, "/var/lib/framesync/a/b").as_deref(), Some("nfs4"));
        assert_eq!(fstype_of(MOUNTINFO, "/var/lib/framesync/local").as_deref(), Some("xfs"));
        assert_eq!(fstype_of(MOUNTINFO, "/var/lib/framesyncx").as_deref(), Some("ext4"));
        assert_eq!(fstype_of(MOUNTINFO, "/mnt/my share/x").as_deref(), Some("cifs"));
    }

    /// Detection must work for the answer "not a network filesystem" to mean anything: the
    /// filesystems every Linux machine mounts are recognised from the real mount table.
    #[test]
    fn the_real_mount_table_names_the_filesystem_of_a_folder() {
        assert_eq!(filesystem_of(Path::new("/proc")).as_deref(), Some("proc"));
        assert_eq!(filesystem_of(Path::new("/proc/self")).as_deref(), Some("proc"));
        assert_eq!(filesystem_of(Path::new("/sys")).as_deref(), Some("sysfs"));
    }

    #[test]
    fn a_local_temp_folder_is_recognised_and_is_not_a_network_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let fstype = filesystem_of(dir.path()).expect("the temp folder's filesystem is found in the mount table");
        assert!(!NETWORK_FILESYSTEMS.contains(&fstype.as_str()), "{fstype}");
        assert_eq!(network_filesystem(&dir.path().join("l.db")), None);
    }
}
