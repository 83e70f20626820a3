/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Types shared by the kernel tier's BPF programs and the Rust loader (src/kernel/events.rs
 * mirrors struct rp_event field by field). */
#ifndef RAMPART_SELFPROTECT_H
#define RAMPART_SELFPROTECT_H

/* protected_inodes values: what is refused on that inode */
#define RP_OBJECT 0x1        /* the file or folder itself: write, truncate, unlink, rename, link, attributes */
#define RP_CONTENTS 0x2      /* a folder: creating, removing or renaming entries in it */
#define RP_MOUNT_GUARD 0x4   /* nothing may be mounted onto it, nor may it be renamed (protected folders and their ancestors) */

/* tasks values */
#define RP_TASK_PROTECTED 0x1 /* may not be signalled or traced */
#define RP_TASK_TRUSTED 0x2   /* its own accesses are never refused (the agent itself) */

/* hooks, as reported in rp_event.hook */
enum rp_hook {
	RP_HOOK_TASK_KILL = 1,
	RP_HOOK_PTRACE = 2,
	RP_HOOK_FILE_OPEN = 3,
	RP_HOOK_TRUNCATE = 4,
	RP_HOOK_UNLINK = 5,
	RP_HOOK_RMDIR = 6,
	RP_HOOK_RENAME = 7,
	RP_HOOK_LINK = 8,
	RP_HOOK_CREATE = 9,
	RP_HOOK_SETATTR = 10,
	RP_HOOK_XATTR = 11,
	RP_HOOK_IOCTL = 12,
	RP_HOOK_MOUNT = 13,
	RP_HOOK_MOVE_MOUNT = 14,
	RP_HOOK_UMOUNT = 15,
	RP_HOOK_BPF = 16,
	RP_HOOK_BPF_MAP = 17,
	RP_HOOK_BPF_PROG = 18,
};

struct rp_inode {
	__u64 dev;
	__u64 ino;
};

/* one refused attempt */
struct rp_event {
	__u32 hook;
	__u32 pid;         /* thread id of the actor */
	__u32 tgid;        /* process id of the actor */
	__u32 ppid;        /* its parent's process id */
	__u32 uid;
	__u32 target_tgid; /* signalled or traced process, else 0 */
	__s64 detail;      /* signal, ioctl command, bpf command or object id */
	__u64 dev;         /* inode acted on, else 0 */
	__u64 ino;
	char comm[16];
};

#endif
