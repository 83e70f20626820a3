// fanotify-floor: the least any fanotify-based document monitor costs a writer.
//
// It watches a folder tree the way the ransomware protection does — the same two fanotify
// groups with the same reports and masks (names in folders with the target's file handle; opens
// of folders and documents for permission), a read lease on every document, every new folder
// and document watched as it appears, every folder "calm" (an ignore mark silencing its
// documents' permission events) — and does nothing else: no judgement, no vault, no path walk
// beyond marking what is new; permission events answered at once, a lease given up at once when
// it breaks. Whatever a workload loses under it is the kernel's own cost of being watched, which
// no agent built on these mechanisms can go below. Used by `bench/ransomware.sh` (FLOOR=1).
//
// Usage: fanotify-floor DIR   (runs until SIGTERM or SIGINT, then prints what it saw)
//
// Built with parts left out, it tells what each costs (bench/fanotify-floor.sh):
//   -DPERMISSION=0  no permission group marks (folders, documents, calm ignore marks);
//   -DDOCUMENTS=0   new documents not watched (no open, mark or lease for each);
//   -DLEASES=0      new documents marked but given no read lease.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/resource.h>
#include <unistd.h>

#define ON_FOLDER \
    (FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_CLOSE_WRITE | FAN_ONDIR | FAN_EVENT_ON_CHILD)
#define LEASE_SIGNAL (SIGRTMIN + 1)
#ifndef PERMISSION
#define PERMISSION 1
#endif
#ifndef DOCUMENTS
#define DOCUMENTS 1
#endif
#ifndef LEASES
#define LEASES 1
#endif

static int notif, perm, mount_fd;
static volatile uint64_t changes, opens, breaks, watched;

static void die(const char *what) {
    perror(what);
    exit(1);
}

// A document: a name not hidden (the temporary files of rsync and editors are).
static int is_document(const char *name) { return name[0] != '.'; }

static void watch_folder(int at, const char *name) {
    fanotify_mark(notif, FAN_MARK_ADD, ON_FOLDER, at, name);
    if (!PERMISSION)
        return;
    fanotify_mark(perm, FAN_MARK_ADD, FAN_OPEN_PERM | FAN_ONDIR, at, name);
    // calm: the permission events of its documents and folders silenced by an ignore mark
    // (FAN_MARK_IGNORE, Linux 6.0: one that honours FAN_EVENT_ON_CHILD)
    fanotify_mark(perm, FAN_MARK_ADD | 0x400 | FAN_MARK_IGNORED_SURV_MODIFY,
                  FAN_OPEN_PERM | FAN_ONDIR | FAN_EVENT_ON_CHILD, at, name);
}

static void watch_document(int at, const char *name) {
    if (!DOCUMENTS)
        return;
    int fd = openat(at, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOATIME | O_CLOEXEC);
    if (fd < 0)
        return;
    if (PERMISSION)
        fanotify_mark(perm, FAN_MARK_ADD, FAN_OPEN_PERM, fd, NULL);
    if (!LEASES) {
        close(fd);
        return;
    }
    if (fcntl(fd, F_SETSIG, LEASE_SIGNAL) < 0 || fcntl(fd, F_SETLEASE, F_RDLCK) < 0) {
        close(fd);
        return;
    }
    __atomic_add_fetch(&watched, 1, __ATOMIC_RELAXED);
}

static int walk(const char *path, const struct stat *st, int type, struct FTW *f) {
    (void)st;
    (void)f;
    if (type == FTW_D)
        watch_folder(AT_FDCWD, path);
    else if (type == FTW_F && is_document(path + f->base))
        watch_document(AT_FDCWD, path);
    return 0;
}

// A folder just made, and everything made in it before it was watched (as the agent does).
static void watch_tree(int at, const char *name) {
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    close(fd);
    if (n <= 0)
        return;
    path[n] = 0;
    nftw(path, walk, 64, FTW_PHYS);
}

// Reads what group `fd` has queued into `buf`, waiting for it.
static ssize_t read_events(int fd, char *buf, size_t len, const char *what) {
    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            die(what);
    }
}

// Watches what record `fid` of a change with `mask` names, if it is a folder made or a document
// made, renamed to, or written and closed (a writer's open broke its lease: guarded again, as
// the agent's settle does). Only those need their folder opened.
static void watch_named(uint64_t mask, struct fanotify_event_info_fid *fid) {
    int t = fid->hdr.info_type;
    int named = (t == FAN_EVENT_INFO_TYPE_DFID_NAME && (mask & (FAN_CREATE | FAN_CLOSE_WRITE))) ||
                t == FAN_EVENT_INFO_TYPE_NEW_DFID_NAME;
    if (!named)
        return;
    struct file_handle *h = (struct file_handle *)fid->handle;
    const char *name = (const char *)h->f_handle + h->handle_bytes;
    int folder = mask & FAN_ONDIR;
    if (folder ? !(mask & FAN_CREATE) : !is_document(name))
        return;
    int dir = open_by_handle_at(mount_fd, h, O_PATH | O_CLOEXEC);
    if (dir < 0)
        return;
    if (folder)
        watch_tree(dir, name);
    else
        watch_document(dir, name);
    close(dir);
}

static void *read_changes(void *unused) {
    (void)unused;
    static char buf[256 * 1024] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = read_events(notif, buf, sizeof buf, "read changes");
        // then lets changes gather for 2 ms, as the agent does (woken at every change, a
        // reader costs the writer a wakeup for each)
        usleep(2000);
        for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n);
             m = FAN_EVENT_NEXT(m, n)) {
            __atomic_add_fetch(&changes, 1, __ATOMIC_RELAXED);
            if (m->mask & FAN_Q_OVERFLOW)
                fprintf(stderr, "fanotify-floor: the queue overflowed\n");
            if (!(m->mask & (FAN_CREATE | FAN_RENAME | FAN_CLOSE_WRITE)))
                continue;
            for (char *p = (char *)(m + 1), *end = (char *)m + m->event_len; p < end;
                 p += ((struct fanotify_event_info_header *)p)->len)
                watch_named(m->mask, (struct fanotify_event_info_fid *)p);
        }
    }
    return NULL;
}

static void *answer_opens(void *unused) {
    (void)unused;
    static char buf[64 * 1024] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = read_events(perm, buf, sizeof buf, "read opens");
        for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n);
             m = FAN_EVENT_NEXT(m, n)) {
            struct fanotify_response r = {.fd = m->fd, .response = FAN_ALLOW};
            if (write(perm, &r, sizeof r) < 0)
                die("answer an open");
            close(m->fd);
            __atomic_add_fetch(&opens, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fanotify-floor DIR\n");
        return 2;
    }
    // a descriptor for every document watched, as the agent's guards (within the hard limit)
    struct rlimit l;
    if (getrlimit(RLIMIT_NOFILE, &l) == 0) {
        l.rlim_cur = l.rlim_max;
        setrlimit(RLIMIT_NOFILE, &l);
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, LEASE_SIGNAL);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    notif = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_REPORT_DFID_NAME_TARGET,
                          O_RDONLY | O_LARGEFILE);
    perm = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_REPORT_TID,
                         O_RDONLY | O_LARGEFILE | O_NOATIME);
    mount_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (notif < 0 || perm < 0 || mount_fd < 0)
        die("fanotify_init");
    if (nftw(argv[1], walk, 64, FTW_PHYS) < 0)
        die("walk");
    pthread_t a, b;
    pthread_create(&a, NULL, read_changes, NULL);
    pthread_create(&b, NULL, answer_opens, NULL);
    printf("watching %s: %llu documents\n", argv[1], (unsigned long long)watched);
    fflush(stdout);
    for (;;) {
        siginfo_t si;
        int s = sigwaitinfo(&set, &si);
        if (s == LEASE_SIGNAL) {
            // a writer waits on this document: let it go at once
            fcntl(si.si_fd, F_SETLEASE, F_UNLCK);
            close(si.si_fd);
            __atomic_add_fetch(&breaks, 1, __ATOMIC_RELAXED);
        } else if (s == SIGTERM || s == SIGINT) {
            break;
        }
    }
    printf("changes %llu, permission events %llu, lease breaks %llu, documents watched %llu\n",
           (unsigned long long)changes, (unsigned long long)opens, (unsigned long long)breaks,
           (unsigned long long)watched);
    return 0;
}
