//! The kernel tier: BPF LSM programs (`src/bpf/selfprotect.bpf.c`) that refuse attempts in the
//! kernel, before they take effect.
//!
//! libbpf's skeleton is not `Send`, so one thread owns it from load to unload: it loads the
//! programs, fills the maps with the scope, attaches, then polls the ring buffer of refusals and
//! serves commands (protect another process, another inode; unload). Dropping the
//! [`KernelTier`] (or [`KernelTier::unload`]) detaches every program: nothing is pinned, so
//! nothing outlives the agent.

pub(crate) mod events;

use std::mem::MaybeUninit;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags};
use rampart_protocol::tamper::TamperAttempt;

use crate::scope::{InodeKey, Resolved};

#[allow(missing_docs, clippy::all, unsafe_code)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/selfprotect.skel.rs"));
}
use skel::{SelfprotectSkel, SelfprotectSkelBuilder};

/// Task flags in the `tasks` map (src/bpf/selfprotect.h).
pub const TASK_PROTECTED: u32 = 0x1;
/// Its own accesses are never refused.
pub const TASK_TRUSTED: u32 = 0x2;

/// Why the kernel tier is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelTierError {
    /// `bpf` is not among the active LSMs.
    #[error("BPF LSM is not active (the kernel's LSM list is {0:?}; boot with lsm=...,bpf)")]
    NotActive(String),
    /// The kernel refused to load or attach the programs.
    #[error("BPF LSM programs are not loadable on this kernel: {0}")]
    NotLoadable(String),
    /// Something else failed (the scope could not be applied, say).
    #[error("kernel tier failed: {0}")]
    Failed(String),
}

enum Command {
    Task(u32, u32),
    ForgetTask(u32),
    Inodes(Vec<(InodeKey, u32)>),
    Unload(mpsc::Sender<()>),
}

/// A running kernel tier.
pub struct KernelTier {
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
    bpf_ids: Vec<u32>,
}

/// The active LSMs, from securityfs (mounting it if needed).
pub fn active_lsms() -> Option<String> {
    let path = "/sys/kernel/security/lsm";
    if let Ok(s) = std::fs::read_to_string(path) {
        return Some(s.trim().to_owned());
    }
    crate::sys::mount_securityfs().ok()?;
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Number of parameters of LSM hook `hook` in the running kernel, from its BTF.
fn hook_params(btf: &libbpf_rs::btf::Btf<'_>, hook: &str) -> Option<usize> {
    use libbpf_rs::btf::types::{Func, FuncProto};
    use libbpf_rs::btf::ReferencesType;
    let func: Func<'_> = btf.type_by_name(&format!("bpf_lsm_{hook}"))?;
    let proto = FuncProto::try_from(func.referenced_type()).ok()?;
    Some(proto.len())
}

impl KernelTier {
    /// Loads and attaches the programs for `scope`, protecting and trusting `own_pids`.
    /// Refused attempts go to `reports`.
    pub fn start(
        scope: &Resolved,
        own_pids: &[u32],
        reports: mpsc::Sender<TamperAttempt>,
    ) -> Result<KernelTier, KernelTierError> {
        let lsms = active_lsms().unwrap_or_default();
        if !lsms.split(',').any(|l| l == "bpf") {
            return Err(KernelTierError::NotActive(lsms));
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel();
        let scope = scope.clone();
        let own: Vec<u32> = own_pids.to_vec();
        let thread = std::thread::Builder::new()
            .name("selfprotect-kernel".into())
            .spawn(move || run(scope, own, reports, command_rx, ready_tx))
            .map_err(|e| KernelTierError::Failed(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(bpf_ids)) => Ok(KernelTier {
                commands,
                thread: Some(thread),
                bpf_ids,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(KernelTierError::Failed("the loader thread died".into()))
            }
        }
    }

    /// Ids of the programs, maps and links the kernel tier protects as its own.
    pub fn bpf_ids(&self) -> &[u32] {
        &self.bpf_ids
    }

    /// Protects (and, with [`TASK_TRUSTED`], trusts) process `tgid`.
    pub fn protect_task(&self, tgid: u32, flags: u32) {
        let _ = self.commands.send(Command::Task(tgid, flags));
    }

    /// Stops protecting process `tgid` (it exited).
    pub fn forget_task(&self, tgid: u32) {
        let _ = self.commands.send(Command::ForgetTask(tgid));
    }

    /// Adds inodes to the protected set.
    pub fn protect_inodes(&self, inodes: Vec<(InodeKey, u32)>) {
        let _ = self.commands.send(Command::Inodes(inodes));
    }

    /// Detaches every program and waits until they are gone.
    pub fn unload(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let (tx, rx) = mpsc::channel();
        if self.commands.send(Command::Unload(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KernelTier {
    fn drop(&mut self) {
        self.stop();
    }
}

fn inode_key_bytes(k: &InodeKey) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&k.dev.to_ne_bytes());
    b[8..].copy_from_slice(&k.ino.to_ne_bytes());
    b
}

fn failed(e: impl std::fmt::Display) -> KernelTierError {
    KernelTierError::Failed(e.to_string())
}

/// Loads, fills and attaches; `Err` says why the tier cannot run here.
fn load<'obj>(
    open_object: &'obj mut MaybeUninit<libbpf_rs::OpenObject>,
    scope: &Resolved,
    own: &[u32],
) -> Result<(SelfprotectSkel<'obj>, Vec<u32>), KernelTierError> {
    let builder = SelfprotectSkelBuilder::default();
    let mut open = builder.open(open_object).map_err(failed)?;
    // hooks whose arguments moved between kernels: load the variant this kernel has
    let btf = libbpf_rs::btf::Btf::from_vmlinux().map_err(failed)?;
    let setattr = hook_params(&btf, "inode_setattr").unwrap_or(0);
    open.progs
        .rp_inode_setattr_dentry_first
        .set_autoload(setattr == 2);
    open.progs
        .rp_inode_setattr_idmap_first
        .set_autoload(setattr == 3);
    for (hook, prog) in [
        ("inode_set_acl", &mut open.progs.rp_inode_set_acl),
        ("inode_remove_acl", &mut open.progs.rp_inode_remove_acl),
    ] {
        prog.set_autoload(hook_params(&btf, hook).is_some());
    }
    let mut skel = open.load().map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("Operation not permitted") || text.contains("EPERM") || text.contains("-1")
        {
            KernelTierError::NotLoadable(format!("the kernel refused to load them ({text})"))
        } else {
            KernelTierError::NotLoadable(text)
        }
    })?;
    let flags = (TASK_PROTECTED | TASK_TRUSTED).to_ne_bytes();
    for pid in own {
        skel.maps
            .tasks
            .update(&pid.to_ne_bytes(), &flags, MapFlags::ANY)
            .map_err(failed)?;
    }
    for (key, f) in &scope.inodes {
        skel.maps
            .protected_inodes
            .update(&inode_key_bytes(key), &f.to_ne_bytes(), MapFlags::ANY)
            .map_err(failed)?;
    }
    for dev in &scope.devices {
        skel.maps
            .protected_devs
            .update(&dev.to_ne_bytes(), &1u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(failed)?;
    }
    skel.attach()
        .map_err(|e| KernelTierError::NotLoadable(format!("attaching: {e:#}")))?;
    // these programs, their maps and links are protected objects too
    let mut ids = Vec::new();
    for map in skel.object().maps() {
        if let Ok(info) = map.info() {
            ids.push(info.info.id);
        }
    }
    for link in all_links(&skel) {
        if let Ok(info) = link.info() {
            ids.push(info.id);
            ids.push(info.prog_id);
        }
    }
    for id in &ids {
        skel.maps
            .protected_bpf_ids
            .update(&id.to_ne_bytes(), &1u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(failed)?;
    }
    Ok((skel, ids))
}

fn all_links<'a>(skel: &'a SelfprotectSkel<'_>) -> Vec<&'a libbpf_rs::Link> {
    let l = &skel.links;
    [
        &l.rp_task_kill,
        &l.rp_ptrace_access_check,
        &l.rp_file_open,
        &l.rp_path_truncate,
        &l.rp_inode_unlink,
        &l.rp_inode_rmdir,
        &l.rp_inode_rename,
        &l.rp_inode_link,
        &l.rp_inode_create,
        &l.rp_inode_mkdir,
        &l.rp_inode_symlink,
        &l.rp_inode_mknod,
        &l.rp_inode_setattr_dentry_first,
        &l.rp_inode_setattr_idmap_first,
        &l.rp_inode_setxattr,
        &l.rp_inode_removexattr,
        &l.rp_inode_set_acl,
        &l.rp_inode_remove_acl,
        &l.rp_file_ioctl,
        &l.rp_sb_mount,
        &l.rp_move_mount,
        &l.rp_sb_umount,
        &l.rp_bpf,
        &l.rp_bpf_map,
        &l.rp_bpf_prog,
    ]
    .into_iter()
    .filter_map(Option::as_ref)
    .collect()
}

fn run(
    scope: Resolved,
    own: Vec<u32>,
    reports: mpsc::Sender<TamperAttempt>,
    commands: mpsc::Receiver<Command>,
    ready: mpsc::Sender<Result<Vec<u32>, KernelTierError>>,
) {
    let mut open_object = MaybeUninit::uninit();
    let (skel, ids) = match load(&mut open_object, &scope, &own) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let decoder = events::Decoder::new(scope);
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    let added = builder.add(&skel.maps.events, |data: &[u8]| {
        if let Some(attempt) = decoder.decode(data) {
            let _ = reports.send(attempt);
        }
        0
    });
    if let Err(e) = added {
        let _ = ready.send(Err(failed(e)));
        return;
    }
    let ring = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(failed(e)));
            return;
        }
    };
    let _ = ready.send(Ok(ids));
    tracing::info!("self-protection kernel tier attached");
    let mut dropped_reported = 0u64;
    loop {
        let _ = ring.poll(Duration::from_millis(100));
        let dropped = events::dropped(&skel.maps.dropped);
        if dropped > dropped_reported {
            tracing::warn!(
                count = dropped - dropped_reported,
                "refusals not reported individually: the ring buffer was full"
            );
            dropped_reported = dropped;
        }
        loop {
            match commands.try_recv() {
                Ok(Command::Task(pid, flags)) => {
                    let _ = skel.maps.tasks.update(
                        &pid.to_ne_bytes(),
                        &flags.to_ne_bytes(),
                        MapFlags::ANY,
                    );
                }
                Ok(Command::ForgetTask(pid)) => {
                    let _ = skel.maps.tasks.delete(&pid.to_ne_bytes());
                }
                Ok(Command::Inodes(list)) => {
                    for (key, f) in list {
                        let _ = skel.maps.protected_inodes.update(
                            &inode_key_bytes(&key),
                            &f.to_ne_bytes(),
                            MapFlags::ANY,
                        );
                    }
                }
                Ok(Command::Unload(done)) => {
                    drop(ring);
                    drop(skel);
                    tracing::info!("self-protection kernel tier detached");
                    let _ = done.send(());
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    drop(ring);
                    drop(skel);
                    return;
                }
            }
        }
    }
}
