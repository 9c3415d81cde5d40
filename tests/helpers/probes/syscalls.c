/* What a process may do that a container should not: one line per probe,
 * "NAME OK" or "NAME <errno name>" (EPERM...). Each probe runs in its own child, so one
 * that succeeds (a new user namespace) does not change the next.
 * Built static (gcc -static) to run in a busybox root. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long probe_keyctl(void) {
    return syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1);
}
static long probe_unshare_user(void) { return syscall(SYS_unshare, CLONE_NEWUSER); }
static long probe_clone_user(void) {
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return pid;
}
static long probe_perf(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.exclude_kernel = 1;
    return syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
}
static long probe_io_uring(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    return syscall(SYS_io_uring_setup, 1, &p);
}
static long probe_mount(void) {
    return syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, "size=1m");
}

struct probe { const char *name; long (*fn)(void); };
static const struct probe probes[] = {
    {"keyctl", probe_keyctl},
    {"unshare_user", probe_unshare_user},
    {"clone_user", probe_clone_user},
    {"perf_event_open", probe_perf},
    {"io_uring_setup", probe_io_uring},
    {"mount", probe_mount},
};

int main(void) {
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        int fds[2];
        if (pipe(fds) != 0) return 2;
        pid_t pid = fork();
        if (pid == 0) {
            long rc = probes[i].fn();
            int err = rc < 0 ? errno : 0;
            (void)!write(fds[1], &err, sizeof err);
            _exit(0);
        }
        close(fds[1]);
        int err = -1;
        if (read(fds[0], &err, sizeof err) != sizeof err) err = -1;
        close(fds[0]);
        waitpid(pid, NULL, 0);
        if (err == 0)
            printf("%s OK\n", probes[i].name);
        else if (err < 0)
            printf("%s CRASHED\n", probes[i].name);
        else
            printf("%s %s\n", probes[i].name, strerrorname_np(err));
    }
    return 0;
}
