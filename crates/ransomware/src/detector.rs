//! Conviction: evidence about what actors did to documents, combined into a score per actor key
//! (process group, program), and the decision that an actor is ransomware.
//!
//! No single signal decides, except the decoys: a document made encrypted-looking counts one,
//! destroyed (emptied, zeroed) one, renamed to an extension no document has a little, deleted
//! after an encrypted copy of it was written one, a new file that looks encrypted half, the same
//! note dropped in three folders two, a deletion alone a fortieth. Two make a conviction — about as
//! many documents as Apex One's rule (three) and far fewer than CryptoDrop's median (ten). A
//! document converted to another known format (gzip, zip, an image format) or edited in its own
//! format counts nothing. Scores keep their value for a minute, then fade (half of it every ten
//! minutes), so a program that changes one document a day is not convicted for it, while a slow
//! drip of a few seconds per file is.
//!
//! Evidence counts per document: the same finding about the same file counts once for an actor
//! (a package built four times over one name is one file that looks encrypted, a tree unpacked
//! five times over itself is one deletion per document at most), and a document made again
//! after its deletion takes back exactly the deletion that was counted — whatever order the
//! kernel's queue gives the two in, an actor cannot be left with a deletion its own
//! recreation took back, nor gain credit from a recreation of a deletion never counted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::actor::ActorKey;

/// What a score must reach for a conviction.
pub const THRESHOLD: f64 = 2.0;
/// How fast scores fade.
pub const HALF_LIFE: Duration = Duration::from_secs(600);

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// A document's content was made to look encrypted.
    Encrypted(PathBuf),
    /// A document was emptied or overwritten with one byte.
    Destroyed(PathBuf),
    /// A document was renamed to an extension no document type has.
    RenamedAway {
        /// The old name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
    },
    /// A document was deleted after the same actor wrote an encrypted-looking file beside it.
    ReplacedByEncryptedCopy(PathBuf),
    /// A document was deleted.
    Deleted(PathBuf),
    /// A new file that looks encrypted.
    EncryptedFile(PathBuf),
    /// The same note-like file dropped in several folders.
    RansomNotes {
        /// The file name.
        name: String,
        /// In how many folders.
        folders: usize,
    },
    /// A decoy document was changed, renamed or deleted.
    Canary(PathBuf),
    /// A program blocked on this host started again, from this file (a copy, or the file
    /// itself at another path).
    BlockedProgram {
        /// What ran.
        file: PathBuf,
        /// The program blocked, as it was named then.
        blocked: String,
    },
    /// A document deleted a moment ago was made again under its name by the same actor: a
    /// replacement (what `git checkout` and `tar -x` do), not a deletion; takes its deletion back.
    Recreated(PathBuf),
}

impl Evidence {
    /// What it counts.
    pub fn weight(&self) -> f64 {
        match self {
            Evidence::Encrypted(_) | Evidence::Destroyed(_) => 1.0,
            Evidence::ReplacedByEncryptedCopy(_) => 1.0,
            Evidence::RenamedAway { .. } => 0.4,
            Evidence::EncryptedFile(_) => 0.5,
            // deleting is what people do every day (`git rm`, `rm -r`), and a held document is
            // not lost: deletions alone convict only in numbers (forty); decoys catch wipers early
            Evidence::Deleted(_) => 0.05,
            Evidence::Recreated(_) => -0.05,
            Evidence::RansomNotes { folders, .. } if *folders >= 3 => THRESHOLD,
            Evidence::RansomNotes { .. } => 0.0,
            Evidence::Canary(_) | Evidence::BlockedProgram { .. } => THRESHOLD,
        }
    }

    /// The document this evidence is about, with its kind, for counting it once: `None` for
    /// evidence about no one document (notes in folders), or that convicts alone.
    fn document(&self) -> Option<(u8, &Path)> {
        match self {
            Evidence::Encrypted(p) => Some((0, p)),
            Evidence::Destroyed(p) => Some((1, p)),
            Evidence::RenamedAway { from, .. } => Some((2, from)),
            Evidence::ReplacedByEncryptedCopy(p) => Some((3, p)),
            Evidence::Deleted(p) | Evidence::Recreated(p) => Some((4, p)),
            Evidence::EncryptedFile(p) => Some((5, p)),
            Evidence::RansomNotes { .. }
            | Evidence::Canary(_)
            | Evidence::BlockedProgram { .. } => None,
        }
    }

    /// In words, for the incident.
    pub fn describe(&self) -> String {
        match self {
            Evidence::Encrypted(p) => format!("{} made to look encrypted", p.display()),
            Evidence::Destroyed(p) => format!("{} emptied or overwritten", p.display()),
            Evidence::RenamedAway { from, to } => {
                format!("{} renamed to {}", from.display(), to.display())
            }
            Evidence::ReplacedByEncryptedCopy(p) => {
                format!(
                    "{} deleted after an encrypted copy was written",
                    p.display()
                )
            }
            Evidence::Deleted(p) => format!("{} deleted", p.display()),
            Evidence::EncryptedFile(p) => format!("{} written, looks encrypted", p.display()),
            Evidence::RansomNotes { name, folders } => {
                format!("note {name:?} dropped in {folders} folders")
            }
            Evidence::Canary(p) => format!("decoy document {} touched", p.display()),
            Evidence::BlockedProgram { file, blocked } => format!(
                "{} started: the same program as {blocked}, blocked on this host",
                file.display()
            ),
            Evidence::Recreated(p) => format!("{} made again after its deletion", p.display()),
        }
    }
}

/// A decision that an actor is ransomware.
#[derive(Debug, Clone, PartialEq)]
pub struct Conviction {
    /// The key that reached the threshold.
    pub key: ActorKey,
    /// Its score.
    pub score: f64,
    /// The evidence, oldest first (the first [`EVIDENCE_KEPT`]).
    pub evidence: Vec<Evidence>,
    /// Evidence that counted but is not listed (past [`EVIDENCE_KEPT`]).
    pub unlisted: usize,
    /// When its first evidence came.
    pub first: Instant,
}

/// How many pieces of evidence an actor's score lists (an incident names what convicted it,
/// not every one of ten thousand deletions).
pub const EVIDENCE_KEPT: usize = 64;

/// How many documents an actor's score remembers having counted (past it, evidence about a
/// document counts without looking whether it counted before: bounded memory, never less
/// evidence).
const COUNTED_AT_MOST: usize = 1 << 16;

#[derive(Debug)]
struct Score {
    value: f64,
    at: Instant,
    /// When evidence last counted against it.
    accused: Instant,
    /// What the evidence of the current accusation adds up to (evidence within
    /// [`PRESSING_FOR`] of the one before it), less what was taken back since: whether the actor
    /// presses is about what it is doing now, not about what is left of a score from before (a
    /// program that deleted and made again thousands of files ten minutes ago — `git` — pressed
    /// at each deletion taken back at once, its opens held for seconds after each).
    lately: f64,
    /// Its deletions younger than [`DELETION_STANDS`] (when, which document): they are part of
    /// `lately`, but do not make it press yet — a deletion may still be taken back.
    deleted_lately: Vec<(Instant, PathBuf)>,
    first: Instant,
    evidence: Vec<Evidence>,
    unlisted: usize,
    /// The documents counted against it, by kind of evidence.
    counted: HashSet<(u8, PathBuf)>,
    convicted: bool,
}

/// How long a deletion must stand — not taken back by its document made again — before it
/// counts as the work of an actor at work on documents now ([`Detector::pressing`]) or makes
/// every folder alert. `git checkout` deletes each file it changes and makes it again a few
/// milliseconds later, and the judge, faster than that, met the deletion alone: every folder
/// was alert for `CALM_AFTER` (see `monitor::calm`) after each, 4,000–12,000 permission events a
/// round of the bench's `git`, and its next lease breaks waited for their judgement. A deletion
/// loses nothing meanwhile (the document's guard or hold keeps it, and its evidence counts at
/// once towards a conviction); what waits is only that its actor's next steps are held back.
pub const DELETION_STANDS: Duration = Duration::from_millis(50);

/// How long after its last evidence an actor is still pressing (see [`Detector::pressing`]).
pub const PRESSING_FOR: Duration = Duration::from_secs(5);

/// How long a score keeps its full value before it starts to fade (evidence close together
/// adds up exactly: two documents are two).
pub const FULL_FOR: Duration = Duration::from_secs(60);

impl Score {
    fn record(&mut self, evidence: &Evidence) {
        if self.evidence.len() < EVIDENCE_KEPT {
            self.evidence.push(evidence.clone());
        } else {
            self.unlisted += 1;
        }
    }

    /// Whether `evidence` counts: not when the same was counted about the same document.
    fn counts(&mut self, evidence: &Evidence) -> bool {
        match evidence.document() {
            Some((kind, path)) => {
                if self.counted.contains(&(kind, path.to_path_buf())) {
                    return false;
                }
                if self.counted.len() < COUNTED_AT_MOST {
                    self.counted.insert((kind, path.to_path_buf()));
                }
                true
            }
            None => true,
        }
    }

    /// Whether its evidence came within [`PRESSING_FOR`] and still counts (not all taken back).
    fn presses(&self, now: Instant) -> bool {
        self.lately > 0.0 && now.duration_since(self.accused) < PRESSING_FOR
    }

    /// [`Score::presses`], not counting deletions too young to tell (see [`DELETION_STANDS`]).
    fn presses_with_standing(&self, now: Instant) -> bool {
        if !self.presses(now) {
            return false;
        }
        let young = self
            .deleted_lately
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) < DELETION_STANDS)
            .count();
        // a small margin: sums of the same weights taken away again need not be exactly 0
        self.lately - young as f64 * Evidence::Deleted(PathBuf::new()).weight() > 1e-9
    }

    fn faded(&self, now: Instant) -> f64 {
        let aged = now.duration_since(self.at).saturating_sub(FULL_FOR);
        self.value * 0.5f64.powf(aged.as_secs_f64() / HALF_LIFE.as_secs_f64())
    }
}

/// Scores by actor key.
#[derive(Debug, Default)]
pub struct Detector {
    scores: HashMap<ActorKey, Score>,
}

impl Detector {
    /// A detector with no evidence.
    pub fn new() -> Detector {
        Detector::default()
    }

    /// Adds evidence against an actor (all its keys). Returns a conviction the first time a key
    /// reaches the threshold.
    pub fn add(
        &mut self,
        keys: &[ActorKey],
        evidence: Evidence,
        now: Instant,
    ) -> Option<Conviction> {
        let weight = evidence.weight();
        if weight == 0.0 {
            return None;
        }
        if weight < 0.0 {
            // taking evidence back: only what was counted (a deletion, by its document)
            let (kind, path) = evidence.document()?;
            let counted = (kind, path.to_path_buf());
            for key in keys {
                if let Some(s) = self.scores.get_mut(key) {
                    if s.counted.remove(&counted) {
                        s.deleted_lately.retain(|(_, p)| p != path);
                        s.value = (s.faded(now) + weight).max(0.0);
                        s.lately = (s.lately + weight).max(0.0);
                        s.at = now;
                        s.record(&evidence);
                    }
                }
            }
            return None;
        }
        let mut convicted = None;
        for key in keys {
            let s = self.scores.entry(key.clone()).or_insert(Score {
                value: 0.0,
                at: now,
                accused: now,
                lately: 0.0,
                deleted_lately: Vec::new(),
                first: now,
                evidence: Vec::new(),
                unlisted: 0,
                counted: HashSet::new(),
                convicted: false,
            });
            if !s.counts(&evidence) {
                continue;
            }
            s.value = s.faded(now) + weight;
            s.at = now;
            if now.duration_since(s.accused) >= PRESSING_FOR {
                s.lately = 0.0;
            }
            s.lately += weight;
            s.accused = now;
            s.deleted_lately
                .retain(|(at, _)| now.saturating_duration_since(*at) < DELETION_STANDS);
            if let Evidence::Deleted(p) = &evidence {
                s.deleted_lately.push((now, p.clone()));
            }
            s.record(&evidence);
            if s.value >= THRESHOLD && !s.convicted && convicted.is_none() {
                s.convicted = true;
                convicted = Some(Conviction {
                    key: key.clone(),
                    score: s.value,
                    evidence: s.evidence.clone(),
                    unlisted: s.unlisted,
                    first: s.first,
                });
            }
        }
        // a conviction on one key convicts the others too (one actor)
        if convicted.is_some() {
            for key in keys {
                if let Some(s) = self.scores.get_mut(key) {
                    s.convicted = true;
                }
            }
        }
        convicted
    }

    /// The current score of the highest of `keys` (0 for an actor never seen).
    pub fn score(&self, keys: &[ActorKey], now: Instant) -> f64 {
        keys.iter()
            .filter_map(|k| self.scores.get(k))
            .map(|s| s.faded(now))
            .fold(0.0, f64::max)
    }

    /// Whether any of `keys` has evidence against it that came in the last
    /// [`PRESSING_FOR`]: an actor at work on documents now, whose next steps wait for the
    /// judgement of its earlier ones. Evidence long past still counts towards a conviction,
    /// but does not slow down what the actor does afterwards (a user's script that encrypted one
    /// file with `gpg` and then edits documents for an hour).
    pub fn pressing(&self, keys: &[ActorKey], now: Instant) -> bool {
        keys.iter()
            .filter_map(|k| self.scores.get(k))
            .any(|s| s.presses_with_standing(now))
    }

    /// Whether any of `keys` was convicted.
    pub fn is_convicted(&self, keys: &[ActorKey]) -> bool {
        keys.iter()
            .any(|k| self.scores.get(k).is_some_and(|s| s.convicted))
    }

    /// Whether any actor had evidence against it lately (within [`PRESSING_FOR`]; a conviction
    /// is the last evidence) that still counts: evidence taken back since (a document deleted,
    /// then made again by the same actor: a database replaced, a file saved anew) holds nothing
    /// back.
    pub fn any_pressing(&self, now: Instant) -> bool {
        self.scores.values().any(|s| s.presses(now))
    }

    /// Forgets keys whose score faded below a hundredth and that were not convicted.
    pub fn forget_faded(&mut self, now: Instant) {
        self.scores
            .retain(|_, s| s.convicted || s.faded(now) >= 0.01);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: u32) -> Vec<ActorKey> {
        vec![ActorKey::Group(n)]
    }

    #[test]
    fn two_encrypted_documents_convict_one_does_not() {
        let mut d = Detector::new();
        let t = Instant::now();
        assert!(d
            .add(&group(7), Evidence::Encrypted("a".into()), t)
            .is_none());
        assert!(d.score(&group(7), t) > 0.9);
        let c = d
            .add(&group(7), Evidence::Encrypted("b".into()), t)
            .unwrap();
        assert_eq!(c.key, ActorKey::Group(7));
        assert_eq!(c.evidence.len(), 2);
        assert!(d.is_convicted(&group(7)));
        // once only
        assert!(d
            .add(&group(7), Evidence::Encrypted("c".into()), t)
            .is_none());
        // another actor is untouched
        assert!(!d.is_convicted(&group(8)));
    }

    #[test]
    fn the_same_finding_about_one_document_counts_once() {
        let mut d = Detector::new();
        let t = Instant::now();
        // a package built four times over one name: one file that looks encrypted
        for _ in 0..4 {
            assert!(d
                .add(&group(1), Evidence::EncryptedFile("demo.deb".into()), t)
                .is_none());
        }
        assert_eq!(d.score(&group(1), t), 0.5);
        // a tree unpacked five times over itself: every deletion taken back by its recreation
        for _ in 0..5 {
            for i in 0..2000 {
                let doc = PathBuf::from(format!("doc-{i}"));
                assert!(d
                    .add(&group(2), Evidence::Deleted(doc.clone()), t)
                    .is_none());
                assert!(d.add(&group(2), Evidence::Recreated(doc), t).is_none());
            }
        }
        assert!(d.score(&group(2), t) < 1e-9);
        // a recreation of a deletion never counted is no credit: forty deletions still convict
        let mut d = Detector::new();
        d.add(&group(3), Evidence::Deleted("a".into()), t);
        for i in 0..100 {
            d.add(&group(3), Evidence::Recreated(format!("r-{i}").into()), t);
        }
        d.add(&group(3), Evidence::Recreated("a".into()), t);
        d.add(&group(3), Evidence::Recreated("a".into()), t);
        assert_eq!(d.score(&group(3), t), 0.0);
        let deletions = (0..100)
            .position(|i| {
                d.add(&group(3), Evidence::Deleted(format!("{i}").into()), t)
                    .is_some()
            })
            .map(|i| i + 1);
        assert_eq!(deletions, Some(40));
        // what an incident lists is bounded; what counted is all there
        let mut d = Detector::new();
        let c = (0..200)
            .find_map(|i| d.add(&group(4), Evidence::Deleted(format!("{i}").into()), t))
            .unwrap();
        assert_eq!((c.evidence.len(), c.unlisted), (40, 0));
        let mut d = Detector::new();
        for i in 0..100 {
            d.add(&group(5), Evidence::Deleted(format!("{i}").into()), t);
            d.add(&group(5), Evidence::Recreated(format!("{i}").into()), t);
        }
        let c = d
            .add(&group(5), Evidence::Canary("decoy".into()), t)
            .unwrap();
        assert_eq!(c.evidence.len(), EVIDENCE_KEPT);
        assert_eq!(c.evidence.len() + c.unlisted, 200 + 1);
    }

    #[test]
    fn an_actor_presses_only_while_its_evidence_is_fresh() {
        let mut d = Detector::new();
        let t = Instant::now();
        d.add(&group(7), Evidence::EncryptedFile("a.gpg".into()), t);
        assert!(d.pressing(&group(7), t + Duration::from_secs(1)));
        assert!(!d.pressing(&group(8), t));
        // later: still a suspect (its score counts towards a conviction), no longer pressing
        let later = t + PRESSING_FOR + Duration::from_millis(1);
        assert!(!d.pressing(&group(7), later));
        assert!(d.score(&group(7), later) > 0.0);
        assert!(d.any_pressing(t + Duration::from_secs(1)));
        assert!(!d.any_pressing(later), "an old score holds nothing back");
        // evidence taken back does not make it press again; new evidence does
        d.add(&group(7), Evidence::Recreated("b".into()), later);
        assert!(!d.pressing(&group(7), later));
        // a deletion taken back at once (the document made again) leaves nothing pressing
        let mut remade = Detector::new();
        remade.add(&group(9), Evidence::Deleted("app.db".into()), t);
        assert!(remade.any_pressing(t));
        remade.add(&group(9), Evidence::Recreated("app.db".into()), t);
        assert!(
            !remade.any_pressing(t + Duration::from_millis(1)),
            "a deletion taken back holds the folders alert"
        );
        d.add(&group(7), Evidence::Encrypted("c".into()), later);
        assert!(d.pressing(&group(7), later));
    }

    /// What is left of a score from minutes before does not make a deletion taken back at once
    /// press: the third round of the bench's `git` workload (the agent's second pass) held
    /// thousands of its opens for that.
    #[test]
    fn a_deletion_taken_back_does_not_press_for_an_old_score() {
        let mut d = Detector::new();
        let t = Instant::now();
        for i in 0..10 {
            d.add(&group(3), Evidence::Deleted(format!("old-{i}").into()), t);
        }
        let later = t + Duration::from_secs(300);
        assert!(!d.any_pressing(later));
        assert!(
            d.score(&group(3), later) > 0.0,
            "the old score still counts"
        );
        d.add(&group(3), Evidence::Deleted("new".into()), later);
        assert!(
            !d.pressing(&group(3), later + Duration::from_millis(1)),
            "a deletion too young to tell presses"
        );
        assert!(
            d.pressing(&group(3), later + DELETION_STANDS),
            "a deletion that stood presses until taken back"
        );
        d.add(&group(3), Evidence::Recreated("new".into()), later);
        assert!(
            !d.pressing(&group(3), later + Duration::from_millis(1)),
            "a deletion taken back at once presses because of an old score"
        );
        assert!(!d.any_pressing(later + Duration::from_millis(1)));
        // within one accusation, evidence adds up and only what was taken back goes
        d.add(&group(3), Evidence::Deleted("x".into()), later);
        d.add(&group(3), Evidence::Deleted("y".into()), later);
        d.add(&group(3), Evidence::Recreated("x".into()), later);
        assert!(
            d.pressing(&group(3), later + DELETION_STANDS),
            "y is still deleted"
        );
        // a deletion taken back after it stood presses no more
        d.add(
            &group(3),
            Evidence::Recreated("y".into()),
            later + DELETION_STANDS,
        );
        assert!(!d.pressing(&group(3), later + DELETION_STANDS));
    }

    #[test]
    fn deletions_alone_need_more_and_scores_fade() {
        let mut d = Detector::new();
        let t = Instant::now();
        let deletions = (0..100)
            .position(|i| {
                d.add(&group(1), Evidence::Deleted(format!("{i}").into()), t)
                    .is_some()
            })
            .map(|i| i + 1);
        assert_eq!(deletions, Some(40), "deletions alone convict at forty");
        // one document a day is not a pattern
        let mut d = Detector::new();
        assert!(d
            .add(&group(2), Evidence::Encrypted("x".into()), t)
            .is_none());
        let later = t + Duration::from_secs(24 * 3600);
        assert!(d
            .add(&group(2), Evidence::Encrypted("y".into()), later)
            .is_none());
        d.forget_faded(later + Duration::from_secs(24 * 3600));
        // a decoy convicts at once; a conviction on the program convicts the group too
        let keys = vec![
            ActorKey::Group(3),
            ActorKey::Program(crate::actor::Program {
                exe: "/tmp/evil".into(),
                script: None,
            }),
        ];
        assert!(d.add(&keys, Evidence::Canary("c".into()), t).is_some());
        assert!(d.is_convicted(&keys[..1]));
        // converted documents and notes in one folder count nothing
        assert!(d
            .add(
                &group(4),
                Evidence::RansomNotes {
                    name: "x".into(),
                    folders: 1
                },
                t
            )
            .is_none());
        assert_eq!(d.score(&group(4), t), 0.0);
    }
}
