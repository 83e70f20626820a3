// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rampart self-protection, kernel tier: BPF LSM programs that refuse, in the kernel, every
 * attempt by anyone but the agent itself to stop, trace or change the agent and what it owns.
 *
 * Everything is scoped by explicit sets the loader fills: the agent's processes (`tasks`), the
 * inodes of its install folder, configuration store, state and service units
 * (`protected_inodes`, by device and inode number, so another path or a hard link to the same
 * file changes nothing), the devices holding them, and the ids of these very programs, maps and
 * links. Decisions are map lookups only; a refused attempt is reported through a ring buffer.
 * Hooks whose arguments differ between kernels come in variants; the loader picks by BTF.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "event.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EPERM 1
#define FMODE_WRITE 0x2
#define FS_IOC_SETFLAGS 0x40086602
#define FS_IOC_FSSETXATTR 0x401c5820
#define PTRACE_MODE_ATTACH 0x02

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct rp_inode);
	__type(value, __u32);
} protected_inodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} tasks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u32);
} protected_devs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} protected_bpf_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* refusals that found the ring buffer full: reported as a count, never lost silently */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline bool caller_trusted(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *flags = bpf_map_lookup_elem(&tasks, &tgid);
	return flags && (*flags & RP_TASK_TRUSTED);
}

static __always_inline bool task_protected(struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u32 *flags = bpf_map_lookup_elem(&tasks, &tgid);
	return flags && (*flags & RP_TASK_PROTECTED);
}

static __always_inline __u32 inode_flags(struct inode *inode, struct rp_inode *key)
{
	if (!inode)
		return 0;
	key->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key->ino = BPF_CORE_READ(inode, i_ino);
	__u32 *flags = bpf_map_lookup_elem(&protected_inodes, key);
	return flags ? *flags : 0;
}

static __always_inline __u32 dentry_flags(struct dentry *dentry, struct rp_inode *key)
{
	if (!dentry)
		return 0;
	return inode_flags(BPF_CORE_READ(dentry, d_inode), key);
}

/*
 * Whether the file or folder at `dentry` is protected: registered itself, or held by a protected
 * folder (so files the agent creates later, such as a rewritten state file, are covered at once).
 */
static __always_inline bool object_protected(struct dentry *dentry, struct rp_inode *key)
{
	if (!dentry)
		return false;
	if (dentry_flags(dentry, key) & RP_OBJECT)
		return true;
	struct rp_inode parent = {};
	if (dentry_flags(BPF_CORE_READ(dentry, d_parent), &parent) & RP_CONTENTS) {
		/* report the file itself */
		struct inode *inode = BPF_CORE_READ(dentry, d_inode);
		key->dev = parent.dev;
		key->ino = inode ? BPF_CORE_READ(inode, i_ino) : 0;
		return true;
	}
	return false;
}

static __always_inline int refuse(__u32 hook, struct rp_inode *key, __u32 target_tgid, __s64 detail)
{
	struct rp_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&dropped, &zero);
		if (n)
			*n += 1;
		return -EPERM;
	}
	rp_fill_event(e, hook, key ? key->dev : 0, key ? key->ino : 0, target_tgid, detail);
	bpf_ringbuf_submit(e, 0);
	return -EPERM;
}

/* ---- processes ---- */

SEC("lsm/task_kill")
int BPF_PROG(rp_task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig)
{
	if (sig == 0 || !task_protected(p) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_TASK_KILL, 0, BPF_CORE_READ(p, tgid), sig);
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(rp_ptrace_access_check, struct task_struct *child, unsigned int mode)
{
	/* attaching, /proc/PID/mem, pidfd_getfd; reading /proc/PID/stat and the like stays allowed */
	if (!(mode & PTRACE_MODE_ATTACH) || !task_protected(child) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_PTRACE, 0, BPF_CORE_READ(child, tgid), mode);
}

/* ---- files and folders ---- */

SEC("lsm/file_open")
int BPF_PROG(rp_file_open, struct file *file)
{
	struct rp_inode key = {};
	if (!(BPF_CORE_READ(file, f_mode) & FMODE_WRITE))
		return 0;
	if (!object_protected(BPF_CORE_READ(file, f_path.dentry), &key) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_FILE_OPEN, &key, 0, BPF_CORE_READ(file, f_flags));
}

SEC("lsm/path_truncate")
int BPF_PROG(rp_path_truncate, const struct path *path)
{
	struct rp_inode key = {};
	if (!object_protected(BPF_CORE_READ(path, dentry), &key) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_TRUNCATE, &key, 0, 0);
}

static __always_inline int removal(__u32 hook, struct inode *dir, struct dentry *victim)
{
	struct rp_inode key = {};
	bool hit = object_protected(victim, &key);
	if (!hit)
		hit = inode_flags(dir, &key) & RP_CONTENTS;
	if (!hit || caller_trusted())
		return 0;
	return refuse(hook, &key, 0, 0);
}

SEC("lsm/inode_unlink")
int BPF_PROG(rp_inode_unlink, struct inode *dir, struct dentry *dentry)
{
	return removal(RP_HOOK_UNLINK, dir, dentry);
}

SEC("lsm/inode_rmdir")
int BPF_PROG(rp_inode_rmdir, struct inode *dir, struct dentry *dentry)
{
	return removal(RP_HOOK_RMDIR, dir, dentry);
}

SEC("lsm/inode_rename")
int BPF_PROG(rp_inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
	     struct dentry *new_dentry)
{
	struct rp_inode key = {};
	/* moving it (or a folder above it), replacing it, or changing the folders that hold it */
	bool hit = object_protected(old_dentry, &key);
	if (!hit)
		hit = dentry_flags(old_dentry, &key) & RP_MOUNT_GUARD;
	if (!hit)
		hit = dentry_flags(new_dentry, &key) & RP_OBJECT;
	if (!hit)
		hit = inode_flags(old_dir, &key) & RP_CONTENTS;
	if (!hit)
		hit = inode_flags(new_dir, &key) & RP_CONTENTS;
	if (!hit || caller_trusted())
		return 0;
	return refuse(RP_HOOK_RENAME, &key, 0, 0);
}

SEC("lsm/inode_link")
int BPF_PROG(rp_inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry)
{
	struct rp_inode key = {};
	bool hit = object_protected(old_dentry, &key);
	if (!hit)
		hit = inode_flags(dir, &key) & RP_CONTENTS;
	if (!hit || caller_trusted())
		return 0;
	return refuse(RP_HOOK_LINK, &key, 0, 0);
}

static __always_inline int creation(struct inode *dir)
{
	struct rp_inode key = {};
	if (!(inode_flags(dir, &key) & RP_CONTENTS) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_CREATE, &key, 0, 0);
}

SEC("lsm/inode_create")
int BPF_PROG(rp_inode_create, struct inode *dir)
{
	return creation(dir);
}

SEC("lsm/inode_mkdir")
int BPF_PROG(rp_inode_mkdir, struct inode *dir)
{
	return creation(dir);
}

SEC("lsm/inode_symlink")
int BPF_PROG(rp_inode_symlink, struct inode *dir)
{
	return creation(dir);
}

SEC("lsm/inode_mknod")
int BPF_PROG(rp_inode_mknod, struct inode *dir)
{
	return creation(dir);
}

static __always_inline int attribute_change(__u32 hook, struct dentry *dentry)
{
	struct rp_inode key = {};
	if (!object_protected(dentry, &key) || caller_trusted())
		return 0;
	return refuse(hook, &key, 0, 0);
}

/* chmod, chown, utimes, truncate: the dentry is the first argument up to 6.2, the second since */
SEC("lsm/inode_setattr")
int BPF_PROG(rp_inode_setattr_dentry_first, struct dentry *dentry)
{
	return attribute_change(RP_HOOK_SETATTR, dentry);
}

SEC("lsm/inode_setattr")
int BPF_PROG(rp_inode_setattr_idmap_first, void *idmap, struct dentry *dentry)
{
	return attribute_change(RP_HOOK_SETATTR, dentry);
}

SEC("lsm/inode_setxattr")
int BPF_PROG(rp_inode_setxattr, void *idmap, struct dentry *dentry)
{
	return attribute_change(RP_HOOK_XATTR, dentry);
}

SEC("lsm/inode_removexattr")
int BPF_PROG(rp_inode_removexattr, void *idmap, struct dentry *dentry)
{
	return attribute_change(RP_HOOK_XATTR, dentry);
}

/* setfacl since 6.2 */
SEC("lsm/inode_set_acl")
int BPF_PROG(rp_inode_set_acl, void *idmap, struct dentry *dentry)
{
	return attribute_change(RP_HOOK_XATTR, dentry);
}

SEC("lsm/inode_remove_acl")
int BPF_PROG(rp_inode_remove_acl, void *idmap, struct dentry *dentry)
{
	return attribute_change(RP_HOOK_XATTR, dentry);
}

/* chattr: changing the immutable or append-only flag */
SEC("lsm/file_ioctl")
int BPF_PROG(rp_file_ioctl, struct file *file, unsigned int cmd)
{
	struct rp_inode key = {};
	if (cmd != FS_IOC_SETFLAGS && cmd != FS_IOC_FSSETXATTR)
		return 0;
	if (!object_protected(BPF_CORE_READ(file, f_path.dentry), &key) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_IOCTL, &key, 0, cmd);
}

/* ---- mounts ---- */

SEC("lsm/sb_mount")
int BPF_PROG(rp_sb_mount, const char *dev_name, const struct path *path)
{
	struct rp_inode key = {};
	if (!(dentry_flags(BPF_CORE_READ(path, dentry), &key) & RP_MOUNT_GUARD) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_MOUNT, &key, 0, 0);
}

SEC("lsm/move_mount")
int BPF_PROG(rp_move_mount, const struct path *from_path, const struct path *to_path)
{
	struct rp_inode key = {};
	if (!(dentry_flags(BPF_CORE_READ(to_path, dentry), &key) & RP_MOUNT_GUARD) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_MOVE_MOUNT, &key, 0, 0);
}

SEC("lsm/sb_umount")
int BPF_PROG(rp_sb_umount, struct vfsmount *mnt)
{
	__u64 dev = BPF_CORE_READ(mnt, mnt_sb, s_dev);
	if (!bpf_map_lookup_elem(&protected_devs, &dev) || caller_trusted())
		return 0;
	struct rp_inode key = { .dev = dev, .ino = 0 };
	return refuse(RP_HOOK_UMOUNT, &key, 0, 0);
}

/* ---- these programs, their maps and links ---- */

SEC("lsm/bpf")
int BPF_PROG(rp_bpf, int cmd, union bpf_attr *attr)
{
	if (cmd != BPF_PROG_GET_FD_BY_ID && cmd != BPF_MAP_GET_FD_BY_ID && cmd != BPF_LINK_GET_FD_BY_ID)
		return 0;
	/* prog_id, map_id and link_id share one place in the union */
	__u32 id = BPF_CORE_READ(attr, prog_id);
	if (!bpf_map_lookup_elem(&protected_bpf_ids, &id) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_BPF, 0, 0, ((__s64)cmd << 32) | id);
}

SEC("lsm/bpf_map")
int BPF_PROG(rp_bpf_map, struct bpf_map *map)
{
	__u32 id = BPF_CORE_READ(map, id);
	if (!bpf_map_lookup_elem(&protected_bpf_ids, &id) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_BPF_MAP, 0, 0, id);
}

SEC("lsm/bpf_prog")
int BPF_PROG(rp_bpf_prog, struct bpf_prog *prog)
{
	__u32 id = BPF_CORE_READ(prog, aux, id);
	if (!bpf_map_lookup_elem(&protected_bpf_ids, &id) || caller_trusted())
		return 0;
	return refuse(RP_HOOK_BPF_PROG, 0, 0, id);
}
