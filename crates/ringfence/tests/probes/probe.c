/* Syscall probes run inside the sandbox. Each probe calls one syscall with a harmless bad
 * argument where the kernel allows it, so an error the kernel itself returns (EBADF, EFAULT,
 * EINVAL, ESRCH) is told apart from the filter's answer (EPERM, ENOSYS, EAFNOSUPPORT).
 * Usage: probe NAME...; prints one "NAME errno=N" line per probe (N=0 when the call succeeded).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif
#ifndef AF_CAN
#define AF_CAN 29
#endif
#ifndef AF_TIPC
#define AF_TIPC 30
#endif
#ifndef AF_RDS
#define AF_RDS 21
#endif
#define NETLINK_ROUTE 0
#define NETLINK_SOCK_DIAG 4
#define NETLINK_AUDIT 9
#define NETLINK_KOBJECT_UEVENT 15
#define NETLINK_GENERIC 16
#define HIGH ((unsigned long)1 << 32)

static long check_socket(long fd) {
    if (fd >= 0) {
        close((int)fd);
        return 0;
    }
    return -1;
}

static long check_pair(long family, long type) {
    int sv[2];
    long r = syscall(SYS_socketpair, family, type, 0, sv);
    if (r == 0) {
        close(sv[0]);
        close(sv[1]);
    }
    return r;
}

static long probe(const char *name) {
    if (!strcmp(name, "unshare_user")) return syscall(SYS_unshare, CLONE_NEWUSER);
    if (!strcmp(name, "unshare_mount")) return syscall(SYS_unshare, CLONE_NEWNS);
    if (!strcmp(name, "unshare_net")) return syscall(SYS_unshare, CLONE_NEWNET);
    if (!strcmp(name, "unshare_user_high"))
        return syscall(SYS_unshare, HIGH | CLONE_NEWUSER);
    if (!strcmp(name, "clone_newuser")) {
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) {
            waitpid((pid_t)pid, NULL, 0);
            return 0;
        }
        return pid;
    }
    if (!strcmp(name, "clone_newpid")) {
        long pid = syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) {
            waitpid((pid_t)pid, NULL, 0);
            return 0;
        }
        return pid;
    }
    if (!strcmp(name, "fork")) {
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        if (pid > 0) {
            waitpid(pid, NULL, 0);
            return 0;
        }
        return -1;
    }
    /* Reached the kernel: EFAULT (NULL args) or EINVAL (size 0). */
    if (!strcmp(name, "clone3")) return syscall(SYS_clone3, NULL, 0);
    /* Reached the kernel: EBADF. */
    if (!strcmp(name, "setns")) return syscall(SYS_setns, -1, 0);
    /* Reached the kernel: EFAULT (NULL target is resolved before the capability check). */
    if (!strcmp(name, "mount")) return syscall(SYS_mount, NULL, NULL, NULL, 0, NULL);
    if (!strcmp(name, "umount2")) return syscall(SYS_umount2, NULL, 0);
    if (!strcmp(name, "pivot_root")) return syscall(SYS_pivot_root, NULL, NULL);
    if (!strcmp(name, "chroot")) return syscall(SYS_chroot, NULL);
    if (!strcmp(name, "ptrace_attach_1")) return syscall(SYS_ptrace, PTRACE_ATTACH, 1, 0, 0);
    /* Reached the kernel: ESRCH. */
    if (!strcmp(name, "ptrace_attach_none"))
        return syscall(SYS_ptrace, PTRACE_ATTACH, 0x3fffffff, 0, 0);
    /* Reached the kernel: EOPNOTSUPP (unknown operation). */
    if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0x7fffffff, 0, 0, 0, 0);
    if (!strcmp(name, "add_key")) return syscall(SYS_add_key, NULL, NULL, NULL, 0, 0);
    if (!strcmp(name, "request_key")) return syscall(SYS_request_key, NULL, NULL, NULL, 0);
    if (!strcmp(name, "bpf")) return syscall(SYS_bpf, -1, NULL, 0);
    /* Reached the kernel: EFAULT or EINVAL. */
    if (!strcmp(name, "io_uring_setup")) return syscall(SYS_io_uring_setup, 0, NULL);
    if (!strcmp(name, "io_uring_enter")) return syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0);
    if (!strcmp(name, "io_uring_register"))
        return syscall(SYS_io_uring_register, -1, 0, NULL, 0);
    if (!strcmp(name, "perf_event_open"))
        return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
    if (!strcmp(name, "userfaultfd")) return syscall(SYS_userfaultfd, -1);
    if (!strcmp(name, "open_by_handle_at")) return syscall(SYS_open_by_handle_at, -1, NULL, 0);
    if (!strcmp(name, "name_to_handle_at"))
        return syscall(SYS_name_to_handle_at, -1, NULL, NULL, NULL, 0);
    if (!strcmp(name, "process_vm_readv"))
        return syscall(SYS_process_vm_readv, 1, NULL, 0, NULL, 0, 0);
    if (!strcmp(name, "pidfd_getfd")) return syscall(SYS_pidfd_getfd, -1, 0, 0);
    /* x32 getpid: ENOSYS or a pid when it reaches a kernel without or with x32 support. */
    if (!strcmp(name, "x32_getpid")) return syscall(__X32_SYSCALL_BIT | SYS_getpid);
    if (!strcmp(name, "x32_unshare"))
        return syscall(__X32_SYSCALL_BIT | SYS_unshare, CLONE_NEWUSER);
    /* Reached the kernel: EBADF. The kernel takes the request as 32 bits. */
    if (!strcmp(name, "tiocsti")) return syscall(SYS_ioctl, -1, (unsigned long)TIOCSTI, "x");
    if (!strcmp(name, "tiocsti_high"))
        return syscall(SYS_ioctl, -1, HIGH | (unsigned long)TIOCSTI, "x");
    if (!strcmp(name, "tioclinux")) return syscall(SYS_ioctl, -1, (unsigned long)TIOCLINUX, NULL);
    if (!strcmp(name, "tioclinux_high"))
        return syscall(SYS_ioctl, -1, HIGH | (unsigned long)TIOCLINUX, NULL);
    if (!strcmp(name, "ioctl_other")) return syscall(SYS_ioctl, -1, (unsigned long)FIONREAD, NULL);
    /* Docker's profile allows these and so does ringfence: reading the clock's state
     * succeeds, a change is refused by the kernel (no CAP_SYS_TIME), and name_to_handle_at
     * with a zero-sized handle reaches the kernel (EOVERFLOW). */
    if (!strcmp(name, "adjtimex_read")) {
        struct timex tx = {0};
        return adjtimex(&tx) < 0 ? -1 : 0;
    }
    if (!strcmp(name, "clock_adjtime_read")) {
        struct timex tx = {0};
        return syscall(SYS_clock_adjtime, CLOCK_REALTIME, &tx) < 0 ? -1 : 0;
    }
    if (!strcmp(name, "adjtimex_set")) {
        struct timex tx = {.modes = ADJ_OFFSET | ADJ_OFFSET_SINGLESHOT, .offset = 1};
        return adjtimex(&tx) < 0 ? -1 : 0;
    }
    if (!strcmp(name, "name_to_handle_at")) {
        struct file_handle fh = {.handle_bytes = 0};
        int mount_id;
        return syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &fh, &mount_id, 0);
    }
    /* Kept refusals (docs/seccomp-audit.md): EPERM/ENOSYS from the filter, where the kernel
     * would answer EFAULT/EINVAL/ESRCH for these arguments. */
    if (!strcmp(name, "process_vm_writev"))
        return syscall(SYS_process_vm_writev, 1, NULL, 0, NULL, 0, 0);
    if (!strcmp(name, "ptrace_traceme_child")) {
        /* PTRACE_TRACEME in a child, so a success would not trace this probe. */
        pid_t pid = fork();
        if (pid == 0) _exit(syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0) < 0 ? errno : 0);
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
        errno = WIFEXITED(status) ? WEXITSTATUS(status) : 255;
        return errno ? -1 : 0;
    }
    if (!strcmp(name, "kcmp_self")) {
        pid_t self = getpid();
        return syscall(SYS_kcmp, self, self, 0x7fffffff, 0, 0);
    }
    if (!strcmp(name, "openat2")) return syscall(SYS_openat2, AT_FDCWD, NULL, NULL, 0);
    if (!strcmp(name, "openat_root")) {
        long fd = syscall(SYS_openat, AT_FDCWD, "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return check_socket(fd);
    }
    /* ICMP echo sockets are datagram sockets: allowed by the filter; the kernel answers
     * EACCES unless the group is in net.ipv4.ping_group_range. */
    if (!strcmp(name, "socket_inet_icmp"))
        return check_socket(syscall(SYS_socket, AF_INET, SOCK_DGRAM, IPPROTO_ICMP));
    if (!strcmp(name, "socket_can")) return check_socket(syscall(SYS_socket, AF_CAN, SOCK_RAW, 1));
    if (!strcmp(name, "socket_tipc"))
        return check_socket(syscall(SYS_socket, AF_TIPC, SOCK_RDM, 0));
    if (!strcmp(name, "socket_rds"))
        return check_socket(syscall(SYS_socket, AF_RDS, SOCK_SEQPACKET, 0));
    if (!strcmp(name, "socket_netlink_generic"))
        return check_socket(syscall(SYS_socket, AF_NETLINK, SOCK_RAW, NETLINK_GENERIC));
    if (!strcmp(name, "socket_netlink_sock_diag"))
        return check_socket(syscall(SYS_socket, AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG));
    if (!strcmp(name, "socket_netlink_uevent"))
        return check_socket(syscall(SYS_socket, AF_NETLINK, SOCK_RAW, NETLINK_KOBJECT_UEVENT));
#if defined(__x86_64__)
    /* The 32-bit entry: getpid through int 0x80. The filter kills the process (SIGSYS). */
    if (!strcmp(name, "int80_getpid")) {
        long r = 20;
        __asm__ volatile("int $0x80" : "+a"(r) : : "memory", "r8", "r9", "r10", "r11");
        if (r < 0) {
            errno = (int)-r;
            return -1;
        }
        return 0;
    }
#endif
    /* Sockets: success (errno=0) when allowed. The kernel takes the family as 32 bits. */
    if (!strcmp(name, "socket_unix"))
        return check_socket(syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0));
    if (!strcmp(name, "socket_unix_high"))
        return check_socket(syscall(SYS_socket, HIGH | AF_UNIX, SOCK_STREAM, 0));
    if (!strcmp(name, "socket_unix_dgram"))
        return check_socket(syscall(SYS_socket, AF_UNIX, SOCK_DGRAM, 0));
    if (!strcmp(name, "socket_inet"))
        return check_socket(syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    if (!strcmp(name, "socket_inet6"))
        return check_socket(syscall(SYS_socket, AF_INET6, SOCK_DGRAM, 0));
    if (!strcmp(name, "socket_inet_raw"))
        return check_socket(syscall(SYS_socket, AF_INET, SOCK_RAW, 1));
    if (!strcmp(name, "socket_inet_packet"))
        return check_socket(syscall(SYS_socket, AF_INET, SOCK_PACKET, 0));
    if (!strcmp(name, "socket_packet"))
        return check_socket(syscall(SYS_socket, AF_PACKET, SOCK_RAW, 0));
    if (!strcmp(name, "socket_packet_high"))
        return check_socket(syscall(SYS_socket, HIGH | AF_PACKET, SOCK_RAW, 0));
    if (!strcmp(name, "socket_vsock"))
        return check_socket(syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0));
    if (!strcmp(name, "socket_alg"))
        return check_socket(syscall(SYS_socket, AF_ALG, SOCK_SEQPACKET, 0));
    if (!strcmp(name, "socket_netlink_route"))
        return check_socket(syscall(SYS_socket, AF_NETLINK, SOCK_RAW, NETLINK_ROUTE));
    if (!strcmp(name, "socket_netlink_audit"))
        return check_socket(syscall(SYS_socket, AF_NETLINK, SOCK_RAW, NETLINK_AUDIT));
    /* Every type of anonymous unix pair is allowed; another family is not. */
    if (!strcmp(name, "socketpair_unix_stream")) return check_pair(AF_UNIX, SOCK_STREAM);
    if (!strcmp(name, "socketpair_unix_dgram")) return check_pair(AF_UNIX, SOCK_DGRAM);
    if (!strcmp(name, "socketpair_unix_seqpacket"))
        return check_pair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC);
    if (!strcmp(name, "socketpair_inet")) return check_pair(AF_INET, SOCK_STREAM);
    /* forkcount=N: fork up to N children that wait to be killed; prints how many were made. */
    if (!strncmp(name, "forkcount=", 10)) {
        int want = atoi(name + 10), made = 0;
        long r = 0;
        for (; made < want; made++) {
            pid_t pid = fork();
            if (pid == 0) {
                pause();
                _exit(0);
            }
            if (pid < 0) {
                r = -1;
                break;
            }
        }
        int saved = errno;
        printf("forked=%d\n", made);
        fflush(stdout);
        errno = saved;
        return r;
    }
    /* alloc=MB: allocate and touch MB mebibytes. */
    if (!strncmp(name, "alloc=", 6)) {
        size_t size = (size_t)atol(name + 6) << 20;
        char *buf = malloc(size);
        if (!buf) return -1;
        /* Every page touched through a volatile pointer: a memset before free is a dead store
           the compiler may remove, and untouched pages use no memory. */
        for (size_t i = 0; i < size; i += 4096) ((volatile char *)buf)[i] = 1;
        free(buf);
        return 0;
    }
    /* connect_tcp=PORT: connect to 127.0.0.1:PORT. */
    if (!strncmp(name, "connect_tcp=", 12)) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) return -1;
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(name + 12))};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        long r = connect(fd, (struct sockaddr *)&sin, sizeof sin);
        int saved = errno;
        close(fd);
        errno = saved;
        return r;
    }
    /* connect_abstract=NAME: connect to the abstract unix socket "\0NAME". */
    if (!strncmp(name, "connect_abstract=", 17)) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0) return -1;
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        const char *abs = name + 17;
        size_t len = strlen(abs);
        if (len > sizeof sun.sun_path - 1) len = sizeof sun.sun_path - 1;
        memcpy(sun.sun_path + 1, abs, len);
        long r = connect(fd, (struct sockaddr *)&sun, (socklen_t)(sizeof(sa_family_t) + 1 + len));
        int saved = errno;
        close(fd);
        errno = saved;
        return r;
    }
    /* rename=FROM,TO: rename(2) without the copy fallback of mv. */
    if (!strncmp(name, "rename=", 7)) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", name + 7);
        char *comma = strchr(buf, ',');
        if (!comma) {
            fprintf(stderr, "probe: rename=FROM,TO\n");
            exit(2);
        }
        *comma = 0;
        return rename(buf, comma + 1);
    }
    fprintf(stderr, "probe: unknown probe %s\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        errno = 0;
        long r = probe(argv[i]);
        printf("%s errno=%d\n", argv[i], r < 0 ? errno : 0);
    }
    return 0;
}
