//! Decoding fanotify notifications with names (`FAN_REPORT_DFID_NAME`): each event names the
//! acting process, what happened, and the folder (by file handle) and entry it happened to; a
//! rename names both the old and the new place. A group that asks for it
//! ([`fanotify_notification_group_naming_files`](crate::fanotify_notification_group_naming_files))
//! also names the file itself by its handle.

use crate::Handle;

/// An entry of a folder, as an event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The folder's file handle.
    pub dir: Handle,
    /// The entry's name in it.
    pub name: String,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `FAN_CREATE`, `FAN_DELETE`, `FAN_ATTRIB`, `FAN_RENAME`, with `FAN_ONDIR` for folders.
    pub mask: u64,
    /// The acting process.
    pub pid: u32,
    /// Where (create, delete, attribute change), or where from (rename).
    pub place: Option<Place>,
    /// Where to (rename).
    pub to: Option<Place>,
    /// The file itself, by its handle (where the group reports it): the one made, deleted,
    /// renamed, or closed — read late, its name may be another file's.
    pub object: Option<Handle>,
    /// The filesystem the event happened on (the `f_fsid` of `statfs`, see [`crate::fsid`]), as
    /// its records name it.
    pub fsid: Option<[u8; 8]>,
}

/// The queue overflowed: events were lost (the healer then checks everything).
pub const FAN_Q_OVERFLOW: u64 = 0x4000;

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_ne_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// One `fanotify_event_info_fid` record with a name: fsid (8 bytes), file handle, name.
fn place(rec: &[u8]) -> Option<Place> {
    // header (4) + fsid (8) + handle_bytes (4) + handle_type (4)
    if rec.len() < 20 {
        return None;
    }
    let len = u32_at(rec, 12) as usize;
    let ty = u32_at(rec, 16) as i32;
    let data = rec.get(20..20 + len)?.to_vec();
    let name_bytes = rec.get(20 + len..)?;
    let end = name_bytes
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(name_bytes.len());
    let name = String::from_utf8_lossy(&name_bytes[..end]).into_owned();
    Some(Place {
        dir: (ty, data),
        name,
    })
}

/// One `fanotify_event_info_fid` record without a name: fsid (8 bytes), file handle.
fn handle(rec: &[u8]) -> Option<Handle> {
    if rec.len() < 20 {
        return None;
    }
    let len = u32_at(rec, 12) as usize;
    let ty = u32_at(rec, 16) as i32;
    Some((ty, rec.get(20..20 + len)?.to_vec()))
}

/// Decodes the events in `buf`.
pub fn decode(buf: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 24 <= buf.len() {
        let event_len = u32_at(buf, at) as usize;
        let meta_len = u16_at(buf, at + 6);
        if event_len < 24 || at + event_len > buf.len() {
            break;
        }
        let mask = u64::from_ne_bytes(buf[at + 8..at + 16].try_into().expect("8 bytes"));
        let pid = u32_at(buf, at + 20);
        let mut change = Change {
            mask,
            pid,
            place: None,
            to: None,
            object: None,
            fsid: None,
        };
        let mut rec_at = at + meta_len.max(24);
        while rec_at + 4 <= at + event_len {
            let info_type = buf[rec_at];
            let rec_len = u16_at(buf, rec_at + 2);
            if rec_len < 4 || rec_at + rec_len > at + event_len {
                break;
            }
            let rec = &buf[rec_at..rec_at + rec_len];
            if change.fsid.is_none() && rec.len() >= 12 {
                change.fsid = rec[4..12].try_into().ok();
            }
            match info_type {
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME | libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => {
                    change.place = place(rec)
                }
                libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => change.to = place(rec),
                libc::FAN_EVENT_INFO_TYPE_FID => change.object = handle(rec),
                _ => {}
            }
            rec_at += rec_len;
        }
        out.push(change);
        at += event_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(info_type: u8, handle: &[u8], name: &str) -> Vec<u8> {
        let mut r = vec![info_type, 0, 0, 0];
        r.extend_from_slice(&[7u8; 8]); // fsid
        r.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        r.extend_from_slice(&1i32.to_ne_bytes());
        r.extend_from_slice(handle);
        r.extend_from_slice(name.as_bytes());
        r.push(0);
        while r.len() % 4 != 0 {
            r.push(0);
        }
        let len = r.len() as u16;
        r[2..4].copy_from_slice(&len.to_ne_bytes());
        r
    }

    /// A record naming a file by its handle alone (`FAN_EVENT_INFO_TYPE_FID`).
    fn file_record(handle: &[u8]) -> Vec<u8> {
        let mut r = vec![libc::FAN_EVENT_INFO_TYPE_FID, 0, 0, 0];
        r.extend_from_slice(&[7u8; 8]); // fsid
        r.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        r.extend_from_slice(&1i32.to_ne_bytes());
        r.extend_from_slice(handle);
        let len = r.len() as u16;
        r[2..4].copy_from_slice(&len.to_ne_bytes());
        r
    }

    fn event(mask: u64, pid: u32, records: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = records.concat();
        let mut e = Vec::new();
        e.extend_from_slice(&((24 + body.len()) as u32).to_ne_bytes());
        e.extend_from_slice(&[3, 0]); // version, reserved
        e.extend_from_slice(&24u16.to_ne_bytes());
        e.extend_from_slice(&mask.to_ne_bytes());
        e.extend_from_slice(&(-1i32).to_ne_bytes());
        e.extend_from_slice(&pid.to_ne_bytes());
        e.extend_from_slice(&body);
        e
    }

    #[test]
    fn decodes_deletes_and_renames() {
        let mut buf = event(
            libc::FAN_DELETE,
            42,
            &[record(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                &[1, 2, 3, 4],
                "agent.toml",
            )],
        );
        buf.extend(event(
            libc::FAN_RENAME | libc::FAN_ONDIR,
            43,
            &[
                record(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, &[9; 8], "agent"),
                record(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, &[9; 8], "gone"),
            ],
        ));
        let changes = decode(&buf);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].pid, 42);
        assert_eq!(
            changes[0].place,
            Some(Place {
                dir: (1, vec![1, 2, 3, 4]),
                name: "agent.toml".into()
            })
        );
        assert_eq!(changes[1].place.as_ref().unwrap().name, "agent");
        assert_eq!(changes[1].to.as_ref().unwrap().name, "gone");
        assert!(changes[1].mask & libc::FAN_ONDIR != 0);
        assert_eq!(changes[0].object, None, "the group named no file");
        assert_eq!(changes[0].fsid, Some([7; 8]));
        // a truncated buffer yields what is whole
        assert_eq!(decode(&buf[..buf.len() - 3]).len(), 1);
    }

    #[test]
    fn decodes_the_file_itself_beside_its_place() {
        let buf = event(
            libc::FAN_CREATE,
            42,
            &[
                record(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, &[1, 2, 3, 4], "a.gz"),
                file_record(&[5, 6, 7, 8, 9, 10, 11, 12]),
            ],
        );
        let changes = decode(&buf);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].place.as_ref().unwrap().name, "a.gz");
        assert_eq!(
            changes[0].object,
            Some((1, vec![5, 6, 7, 8, 9, 10, 11, 12]))
        );
    }
}
