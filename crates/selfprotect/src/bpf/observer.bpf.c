// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rampart self-protection, userspace tier: an observer of signals aimed at the protected
 * processes. Where the kernel will not load BPF LSM programs, signals cannot be refused; this
 * names who sent them, so every attempt is reported with its author, and stops whoever sends
 * SIGKILL until the pair is whole again. It runs only when a signal is generated, never on
 * other work (a sys_enter hook would tax every system call of the host, and kprobes are not
 * available on every kernel we run on).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "event.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";


/* protected process ids (tgid), and trusted tgids */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __s32);
	__type(value, __u32);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} observed SEC(".maps");

static __always_inline bool is_watched(__s32 pid)
{
	__u32 *f = bpf_map_lookup_elem(&watched, &pid);
	return f && (*f & RP_TASK_PROTECTED);
}

static __always_inline bool caller_trusted(void)
{
	__s32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *f = bpf_map_lookup_elem(&watched, &tgid);
	return f && (*f & RP_TASK_TRUSTED);
}

static __always_inline void report(__u32 hook, __s32 target, __s64 detail)
{
	struct rp_event *e = bpf_ringbuf_reserve(&observed, sizeof(*e), 0);
	if (!e)
		return;
	rp_fill_event(e, hook, 0, 0, target, detail);
	bpf_ringbuf_submit(e, 0);
}

/* A signal being generated for a protected process: fires only when a signal is sent, so it
 * costs nothing to other system calls. Signals the kernel raises itself (si_code > 0) are not
 * attempts by anyone. */
SEC("tp_btf/signal_generate")
int BPF_PROG(rp_observe_signal, int sig, struct kernel_siginfo *info, struct task_struct *task)
{
	if (sig == 0)
		return 0;
	if ((unsigned long)info == 1) /* SEND_SIG_PRIV: from the kernel */
		return 0;
	if ((unsigned long)info > 1 && BPF_CORE_READ(info, si_code) > 0)
		return 0;
	__s32 target = BPF_CORE_READ(task, tgid);
	if (!is_watched(target) || caller_trusted())
		return 0;
	/* SIGKILL cannot be held back; a process that sends it with kill(2) and its kind
	 * (SI_USER, SI_QUEUE, SI_TKILL) is stopped before the call returns, so it cannot kill the
	 * other process of the pair before this one is back (user space continues it then). Kills
	 * the kernel carries out for a writer (cgroup.kill: no siginfo) are reported, not stopped. */
	if (sig == 9 && (unsigned long)info > 1) {
		int code = BPF_CORE_READ(info, si_code);
		if (code == 0 || code == -1 || code == -6)
			bpf_send_signal(19);
	}
	report(RP_HOOK_TASK_KILL, target, sig);
	return 0;
}
