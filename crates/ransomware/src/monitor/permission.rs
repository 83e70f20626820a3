//! The permission side: every open of a protected document. Reads by actors without evidence
//! against them, and everything the agent does, are answered at once. An open for writing by a
//! process that is not trusted has the document's content copied into the vault first (from the
//! event's own descriptor), and is then allowed — refused in `strict` mode, or once the actor is
//! convicted. An actor with evidence against it (or with more than two documents open for
//! writing) is held until the worker has judged what it did before (at most
//! [`HOLD_AT_MOST`](super::HOLD_AT_MOST)), so that it cannot get ahead of its judgement.
//!
//! Every opener of a protected document or folder waits for this side's answer, so a bug that
//! stops it (a lock never let go: it happened, see `hold_folder`'s caller) would stop every
//! such opener on the host. A [`watchdog`] answers for it then: the opens it has read and not
//! answered, and those the kernel still queues, are let through unjudged and counted — the
//! protection fails open rather than the host hanging.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use rampart_protocol::policy::RansomwareMode;
use rampart_sys::open::{open_kind, tgid_of, OpenKind};

use super::{is_convicted, is_trusted, Shared, Work, HOLD_AT_MOST};
use crate::actor::{self, ActorKey};

/// An open waiting for its answer.
struct Held {
    fd: OwnedFd,
    keys: Vec<ActorKey>,
    group: u32,
    /// The document an open for writing is about to change (its own pending verdict does not
    /// hold it: the actor writing again what it emptied).
    except: Option<(u64, u64)>,
    since: Instant,
}

enum Answer {
    Allow,
    Deny,
    Hold(Vec<ActorKey>, u32, Option<(u64, u64)>),
}

/// How long the permission side may take no step, with openers waiting on it, before the
/// watchdog answers them (it steps at least every 100 ms when all is well).
const STUCK_AFTER: Duration = Duration::from_secs(2);

/// How long the opener whose open is being decided waits for its answer before the watchdog
/// answers it too (a decision may take a while: a large document copied into the vault).
const DECIDING_AT_MOST: Duration = Duration::from_secs(10);

/// What the permission side shows its watchdog.
pub(crate) struct Watch {
    /// When the permission side last took a step, in ms since `epoch`.
    beat: AtomicU64,
    epoch: Instant,
    /// The events read and not answered yet, by descriptor. Whoever answers one takes it out
    /// first, under this lock, and closes it only after: an event is answered once, and never
    /// through a descriptor number since given to another.
    unanswered: Mutex<HashSet<i32>>,
    /// The event being decided now (-1: none).
    deciding: AtomicI32,
    /// Opens let through by the watchdog.
    pub let_through: AtomicU64,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            beat: AtomicU64::new(0),
            epoch: Instant::now(),
            unanswered: Mutex::new(HashSet::new()),
            deciding: AtomicI32::new(-1),
            let_through: AtomicU64::new(0),
        }
    }
}

impl Watch {
    fn beat(&self) {
        self.beat
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn still_for(&self) -> Duration {
        let beat = Duration::from_millis(self.beat.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(beat)
    }
}

pub(crate) fn run(shared: &Shared, stop: &AtomicBool, work: &mpsc::Sender<Work>) {
    rampart_sys::block_signals_in_this_thread();
    if let Err(e) = rampart_sys::favour_this_thread(-10) {
        tracing::warn!(error = %e, "the permission thread keeps the usual scheduling weight");
    }
    // a read takes a descriptor for each event in it: at most about 340 at once (of the
    // descriptors `Holds` leaves for everything else)
    let mut buf = vec![0u8; 8 * 1024];
    let mut held: Vec<Held> = Vec::new();
    let mut expired_at = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        shared.watch.beat();
        if expired_at.elapsed() > std::time::Duration::from_secs(5) {
            shared.holds.expire(Instant::now());
            expired_at = Instant::now();
        }
        let timeout = if held.is_empty() { 100 } else { 2 };
        let (readable, judged) =
            rampart_sys::poll_readable_either(&shared.perm, &shared.judged, timeout);
        if judged {
            rampart_sys::eventfd_take(&shared.judged);
        }
        if readable {
            // a read fails when the kernel could not give this process a descriptor for an
            // event (EMFILE, ENFILE): it has refused that opener itself (EPERM), unasked
            let n = match rampart_sys::read_fd(&shared.perm, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    if shared
                        .refused_unasked
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(1000)
                    {
                        tracing::error!(error = %e, "the kernel refused an open the agent could not be told of");
                    }
                    0
                }
            };
            // every event of the batch judged before any is answered (an answer wakes every
            // waiting opener for a moment, which hides what the others are doing)
            let mut answers = Vec::new();
            let mut later = Vec::new();
            let read = events(&buf[..n]);
            shared
                .watch
                .unanswered
                .lock()
                .expect("unanswered lock")
                .extend(read.iter().map(|(fd, _)| fd.as_raw_fd()));
            for (fd, tid) in read {
                shared.permission_events.fetch_add(1, Ordering::Relaxed);
                shared
                    .watch
                    .deciding
                    .store(fd.as_raw_fd(), Ordering::Relaxed);
                let answer = decide(shared, fd.as_fd(), tid, work, &mut later);
                shared.watch.deciding.store(-1, Ordering::Relaxed);
                shared.watch.beat();
                answers.push((fd, answer));
            }
            let holds = answers.iter().any(|(_, a)| matches!(a, Answer::Hold(..)));
            for (fd, answer) in answers {
                match answer {
                    Answer::Allow => answer_now(shared, &fd, true),
                    Answer::Deny => answer_now(shared, &fd, false),
                    Answer::Hold(keys, group, except) => held.push(Held {
                        fd,
                        keys,
                        group,
                        except,
                        since: Instant::now(),
                    }),
                }
            }
            for pid in later {
                name(shared, pid);
            }
            if holds {
                // the queue read now, for these openers (the reader's own wait would add up
                // to 5 ms to each): it is judged from a moment after they were held
                shared.holding.store(true, Ordering::SeqCst);
                rampart_sys::eventfd_post(&shared.read_now);
            }
        }
        if !held.is_empty() {
            release(shared, &mut held);
        }
        shared.holding.store(!held.is_empty(), Ordering::SeqCst);
    }
    // nothing is left waiting: what is held, and what was queued before the marks went
    for h in held {
        answer_now(shared, &h.fd, true);
    }
    while rampart_sys::poll_readable(&shared.perm, 20) {
        let n = match rampart_sys::read_fd(&shared.perm, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for (fd, _) in events(&buf[..n]) {
            let _ = rampart_sys::fanotify_answer(&shared.perm, fd.as_raw_fd(), true);
        }
    }
}

/// The permission events in what one read gave: each event's descriptor (owned from here:
/// closed once answered) and the thread that opened.
fn events(buf: &[u8]) -> Vec<(OwnedFd, u32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 24 <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
        let fd = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4"));
        let tid = i32::from_ne_bytes(buf[at + 20..at + 24].try_into().expect("4")) as u32;
        if len < 24 {
            break;
        }
        if fd >= 0 {
            out.push((rampart_sys::own_event_fd(fd), tid));
        }
        at += len;
    }
    out
}

/// Whether any actor may have its reads held: evidence against it came in lately, or a verdict
/// on it is pending (when none may, reads need no looking at — an old score, or a conviction
/// whose processes are stopped, holds nothing back).
fn reads_may_wait(shared: &Shared) -> bool {
    let state = shared.state.lock().expect("state lock");
    state.detector.any_pressing(Instant::now()) || !state.pending.is_empty()
}

/// Answers an event read by the permission side (unless the watchdog has: then it is not
/// asked again).
fn answer_now(shared: &Shared, fd: &OwnedFd, allow: bool) {
    let mut unanswered = shared.watch.unanswered.lock().expect("unanswered lock");
    if !unanswered.remove(&fd.as_raw_fd()) {
        return;
    }
    if let Err(e) = rampart_sys::fanotify_answer(&shared.perm, fd.as_raw_fd(), allow) {
        tracing::error!(error = %e, "answering a permission event failed");
    }
}

/// Answers for the permission side when it stops: once it has taken no step for
/// [`STUCK_AFTER`] with openers waiting, every open it read and has not answered (but the one
/// it is deciding, for [`DECIDING_AT_MOST`]) and every open the kernel still queues is let
/// through, unjudged, and counted in the status. Its own steps are cheap (a look every 250 ms);
/// it never takes a lock the permission side may hold across a wait.
pub(crate) fn watchdog(shared: &Shared, stop: &AtomicBool) {
    rampart_sys::block_signals_in_this_thread();
    let mut buf = vec![0u8; 8 * 1024];
    let mut stuck = false;
    while !stop.load(Ordering::SeqCst) {
        if stuck {
            // openers are answered as they come while it lasts
            rampart_sys::poll_readable(&shared.perm, 50);
        } else {
            std::thread::sleep(Duration::from_millis(250));
        }
        let still = shared.watch.still_for();
        if still < STUCK_AFTER {
            if stuck {
                tracing::warn!("ransomware: the permission side answers again");
                stuck = false;
            }
            continue;
        }
        // the open being decided waits longer (a large document may be being copied)
        let deciding = match shared.watch.deciding.load(Ordering::Relaxed) {
            fd if still < DECIDING_AT_MOST => fd,
            _ => -1,
        };
        let let_through = answer_all(shared, &mut buf, deciding);
        record(shared, let_through, still, &mut stuck);
    }
    // the last answers: a permission side left behind stuck (see the monitor's `Drop`) answers
    // nothing more (its marks are gone: nothing new comes)
    let left = answer_all(shared, &mut buf, -1);
    record(shared, left, shared.watch.still_for(), &mut stuck);
}

/// Lets through every open the permission side read and has not answered (but `deciding`) and
/// every open the kernel still queues. Returns how many.
fn answer_all(shared: &Shared, buf: &mut [u8], deciding: i32) -> u64 {
    let mut let_through = 0;
    shared
        .watch
        .unanswered
        .lock()
        .expect("unanswered lock")
        .retain(|&fd| {
            if fd == deciding {
                return true;
            }
            let _ = rampart_sys::fanotify_answer(&shared.perm, fd, true);
            let_through += 1;
            false
        });
    // what the kernel still queues (a batch at a time: the permission side may wake)
    for _ in 0..64 {
        if !rampart_sys::poll_readable(&shared.perm, 0) {
            break;
        }
        let Ok(n) = rampart_sys::read_fd(&shared.perm, buf) else {
            break;
        };
        for (fd, _) in events(&buf[..n]) {
            let _ = rampart_sys::fanotify_answer(&shared.perm, fd.as_raw_fd(), true);
            let_through += 1;
        }
    }
    let_through
}

/// Counts opens the watchdog let through, and logs the first of a stretch.
fn record(shared: &Shared, let_through: u64, still: Duration, stuck: &mut bool) {
    if let_through == 0 {
        return;
    }
    shared
        .watch
        .let_through
        .fetch_add(let_through, Ordering::Relaxed);
    if !*stuck {
        tracing::error!(
            still_ms = still.as_millis() as u64,
            "ransomware: the permission side stopped answering (a bug): opens are let through unjudged until it answers again"
        );
        *stuck = true;
    }
}

/// Answers held opens whose actor is judged up to the moment they were held, convicted, or
/// held long enough.
fn release(shared: &Shared, held: &mut Vec<Held>) {
    let now = Instant::now();
    let state = shared.state.lock().expect("state lock");
    let drained = state.drained;
    held.retain(|h| {
        let convicted = is_convicted(&state, &h.keys);
        let writing = state.journals.get(&h.group).map_or(0, |j| j.writing);
        // what it did before is judged: the changes read up to a moment after it was held, and
        // any verdict left waiting (an emptied document is judged once it had time to be
        // written again; a truncating wiper goes no further meanwhile)
        let judged = drained.is_some_and(|d| d >= h.since)
            && writing <= 1
            && !state.pending_for(&h.keys, h.except);
        let waited = now.duration_since(h.since);
        if convicted || judged || waited >= HOLD_AT_MOST {
            let allow = !(convicted && shared.settings.mode == RansomwareMode::Block);
            answer_now(shared, &h.fd, allow);
            shared.held.fetch_add(1, Ordering::Relaxed);
            shared
                .held_us
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
            false
        } else {
            true
        }
    });
}

/// Remembers who process `pid` is (once per process), for its changes read after it is gone.
fn name(shared: &Shared, pid: u32) {
    let known = shared
        .state
        .lock()
        .expect("state lock")
        .keys_of
        .contains_key(&pid);
    if known {
        return;
    }
    if let Some(p) = actor::process(pid).filter(|p| !is_trusted(shared, &p.program, pid)) {
        shared
            .state
            .lock()
            .expect("state lock")
            .remember(pid, &p.keys());
    }
}

/// The answer to one permission event. Processes to be named once every event of the batch is
/// answered go to `later`.
fn decide(
    shared: &Shared,
    fd: BorrowedFd<'_>,
    tid: u32,
    work: &mpsc::Sender<Work>,
    later: &mut Vec<u32>,
) -> Answer {
    let Ok(meta) = rampart_sys::fstat(fd) else {
        return Answer::Allow;
    };
    let is_dir = meta.is_dir();
    let blocked = {
        let mut state = shared.state.lock().expect("state lock");
        let key = (meta.dev(), meta.ino());
        match state.blocked.get(&key) {
            None => false,
            Some(&was) if meta.is_file() && was == (meta.len(), meta.mtime()) => true,
            // the blocked file is gone and its inode number taken by another file or folder
            // (ext4 gives numbers again at once): no longer blocked
            Some(_) => {
                state.blocked.remove(&key);
                false
            }
        }
    };
    // a blocked program: not opened, not run, by anyone but the agent
    if blocked {
        let pid = tgid_of(tid).unwrap_or(tid);
        let spare = shared.spare.read().expect("spare lock").contains(&pid);
        return if spare { Answer::Allow } else { Answer::Deny };
    }
    // whoever works near documents may delete them next: they are held
    let kind = if is_dir {
        OpenKind::Read
    } else {
        if !shared.holds.is_guarded(meta.dev(), meta.ino()) {
            shared.holds.keep_from(meta.dev(), meta.ino(), fd);
        }
        // the common case, with what the event gives and one read of the opener's system
        // call: a document read while no actor is under suspicion is let through
        let kind = open_kind(tid);
        if matches!(kind, OpenKind::Read | OpenKind::FlagChange) && !reads_may_wait(shared) {
            return Answer::Allow;
        }
        kind
    };
    let pid = tgid_of(tid).unwrap_or(tid);
    let writes = !is_dir && !matches!(kind, OpenKind::Read | OpenKind::FlagChange);
    if shared.spare.read().expect("spare lock").contains(&pid) {
        if writes {
            // the agent's own write (a restore): no lease to wait on
            shared.holds.unguard(meta.dev(), meta.ino());
        }
        return Answer::Allow;
    }
    let block = shared.settings.mode == RansomwareMode::Block;
    let audit = shared.settings.mode == RansomwareMode::Audit;
    // (not skipped for a calm folder: that took the calm lock here, and the thread that guards
    // documents holds it while it opens them — an open this thread must answer: the agent hung,
    // and every opener with it. No lock held across an open of a document or folder is taken on
    // this thread's way)
    if is_dir {
        super::hold_folder(shared, fd, (meta.dev(), meta.ino()));
    }
    // a folder is not opened for anyone's next step while deletions or renames of documents
    // read wait to be judged: a wiper's next folder waits until its last one's are (a program
    // that made and removed a file of its own beside a document waits for nothing). What the
    // kernel still has queued is not read here: that read, on the opener's way, cost a `sqlite3`
    // process 7 % (its folder opened to sync it, its journal's creation queued)
    let removals = is_dir && !audit && shared.removals.load(Ordering::SeqCst) > 0;
    if matches!(kind, OpenKind::Read | OpenKind::FlagChange) {
        let may_wait = reads_may_wait(shared) || removals;
        // whoever lists a folder may delete what is in it and be gone before the deletions
        // are read (a wiper takes microseconds): it is named at once — right after the answer
        // when the answer does not depend on who it is
        if audit || !may_wait {
            if is_dir {
                later.push(pid);
            }
            return Answer::Allow;
        }
        if is_dir {
            name(shared, pid);
        }
        let Some(p) = actor::process(pid) else {
            return Answer::Allow;
        };
        if is_trusted(shared, &p.program, pid) {
            return Answer::Allow;
        }
        let keys = p.keys();
        let state = shared.state.lock().expect("state lock");
        if is_convicted(&state, &keys) {
            return if block { Answer::Deny } else { Answer::Allow };
        }
        if state.held_back(&keys, None) || removals {
            return Answer::Hold(keys, p.pgid, None);
        }
        return Answer::Allow;
    }
    // an open that may change the document
    let Some(p) = actor::process(pid) else {
        return Answer::Allow;
    };
    if is_trusted(shared, &p.program, pid) {
        // nothing to keep for a trusted program: no lease to wait on either
        shared.holds.unguard(meta.dev(), meta.ino());
        return Answer::Allow;
    }
    if shared.settings.mode == RansomwareMode::Strict {
        tracing::warn!(pid, program = %p.program, "strict mode: an untrusted program may not modify documents");
        return Answer::Deny;
    }
    let keys = p.keys();
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default();
    let m = meta;
    let (dev, ino) = (m.dev(), m.ino());
    {
        let state = shared.state.lock().expect("state lock");
        if is_convicted(&state, &keys) && block {
            return Answer::Deny;
        }
    }
    // the original first: once per actor and document (none of a document it made)
    let born = rampart_sys::birth_time(fd);
    let need_copy = {
        let mut state = shared.state.lock().expect("state lock");
        state.renew(dev, ino, born);
        !state.has_original(p.pgid, dev, ino, &path)
    };
    let kept = if need_copy {
        match shared.vault.keep(fd, &path, m.len()) {
            Ok(k) => {
                shared
                    .state
                    .lock()
                    .expect("state lock")
                    .kept
                    .insert((p.pgid, dev, ino), k.clone());
                Some(k)
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "could not keep a document before it changes");
                None
            }
        }
    } else {
        None
    };
    // the original is kept and the writer known: its lease would only make it wait again
    shared.holds.unguard(dev, ino);
    let mut state = shared.state.lock().expect("state lock");
    state.remember(pid, &keys);
    state.seen(&p);
    let journal = state.journals.entry(p.pgid).or_default();
    journal.writing += 1;
    let writing = journal.writing;
    let _ = work.send(Work::Opened {
        pid,
        keys: keys.clone(),
        path,
        dev,
        ino,
        kept,
    });
    if audit {
        return Answer::Allow;
    }
    // changes not read yet: whoever made them may be about to be judged on them, so no document
    // is opened for writing for the first time until they are (one whose original the actor
    // has kept already waits for nothing: what it does to it again is restored all the same)
    let unjudged = need_copy && rampart_sys::poll_readable(&shared.notify, 0);
    if state.held_back(&keys, Some((dev, ino))) || writing > 2 || unjudged {
        return Answer::Hold(keys, p.pgid, Some((dev, ino)));
    }
    Answer::Allow
}
