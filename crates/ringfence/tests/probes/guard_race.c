/* Probes for the creation guard, run inside a sandbox by tests/guard.rs.
 *
 *   guard_race race DIR OP ITERS   OP: open mkdir rename symlink link; a second thread flips
 *                                  the path buffer between "ok-NNNN" and ".bashrc" while the
 *                                  main thread creates it; prints "created N failed M"
 *   guard_race tmpfile DIR NAME    O_TMPFILE in DIR, then linkat(/proc/self/fd/N, DIR/NAME,
 *                                  AT_SYMLINK_FOLLOW); prints "link errno=E"
 *   guard_race dirfd DIR           openat/mkdirat relative to a directory fd, and an absolute
 *                                  path with an invalid dirfd; prints "NAME errno=E" lines
 *   guard_race exchange DIR        renameat2 RENAME_EXCHANGE / RENAME_NOREPLACE to .bashrc
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static char path_buf[16] = "ok-0000";
static atomic_int stop_flag;

static void *flipper(void *arg) {
    (void)arg;
    unsigned n = 0;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        char ok[16];
        snprintf(ok, sizeof ok, "ok-%04u", n++ % 10000);
        /* Byte by byte, through a volatile pointer: every interleaving is possible. */
        volatile char *p = path_buf;
        for (int i = 0; i < 8; i++) p[i] = ok[i];
        for (int i = 0; i < 8; i++) p[i] = ".bashrc"[i];
    }
    return NULL;
}

static int race(const char *dir, const char *op, long iters) {
    if (chdir(dir) != 0) { perror("chdir"); return 2; }
    pthread_t t;
    if (pthread_create(&t, NULL, flipper, NULL) != 0) { perror("pthread_create"); return 2; }
    long created = 0, failed = 0;
    for (long i = 0; i < iters; i++) {
        int r;
        if (strcmp(op, "open") == 0) {
            r = open(path_buf, O_CREAT | O_WRONLY, 0644);
            if (r >= 0) close(r);
        } else if (strcmp(op, "mkdir") == 0) {
            r = mkdir(path_buf, 0755);
        } else if (strcmp(op, "symlink") == 0) {
            r = symlink("target", path_buf);
        } else if (strcmp(op, "rename") == 0 || strcmp(op, "link") == 0) {
            int fd = open("src", O_CREAT | O_WRONLY, 0644);
            if (fd >= 0) close(fd);
            r = op[0] == 'r' ? rename("src", path_buf) : link("src", path_buf);
        } else {
            fprintf(stderr, "unknown op %s\n", op);
            return 2;
        }
        if (r >= 0) created++; else failed++;
    }
    atomic_store(&stop_flag, 1);
    pthread_join(t, NULL);
    printf("created %ld failed %ld\n", created, failed);
    return 0;
}

static int tmpfile_link(const char *dir, const char *name) {
    int fd = open(dir, O_TMPFILE | O_WRONLY, 0644);
    if (fd < 0) { printf("tmpfile errno=%d\n", errno); return 0; }
    printf("tmpfile errno=0\n");
    if (write(fd, "tmpdata\n", 8) != 8) { perror("write"); return 2; }
    char src[64], dst[4096];
    snprintf(src, sizeof src, "/proc/self/fd/%d", fd);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    int r = linkat(AT_FDCWD, src, AT_FDCWD, dst, AT_SYMLINK_FOLLOW);
    printf("link errno=%d\n", r == 0 ? 0 : errno);
    return 0;
}

static void report(const char *name, int r) {
    printf("%s errno=%d\n", name, r >= 0 ? 0 : errno);
    if (r > 2) close(r);
}

static int dirfd_probe(const char *dir) {
    int d = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (d < 0) { perror("open dir"); return 2; }
    report("openat_rel_ok", openat(d, "rel-ok", O_CREAT | O_WRONLY, 0644));
    report("openat_rel_bashrc", openat(d, ".bashrc", O_CREAT | O_WRONLY, 0644));
    report("openat_rel_sub_profile", openat(d, "sub/.profile", O_CREAT | O_WRONLY, 0644));
    report("mkdirat_rel_ok", mkdirat(d, "dir-ok", 0755));
    report("mkdirat_rel_vscode", mkdirat(d, ".vscode", 0755));
    char abs[4096];
    snprintf(abs, sizeof abs, "%s/abs-ok", dir);
    report("openat_badfd_abs_ok", openat(999, abs, O_CREAT | O_WRONLY, 0644));
    snprintf(abs, sizeof abs, "%s/.zshrc", dir);
    report("openat_badfd_abs_zshrc", openat(999, abs, O_CREAT | O_WRONLY, 0644));
    report("openat_badfd_rel", openat(999, "rel-badfd", O_CREAT | O_WRONLY, 0644));
    /* A file descriptor that is not a directory. */
    int f = openat(d, "rel-ok", O_RDONLY | O_CLOEXEC);
    report("openat_filefd_rel", openat(f, "x", O_CREAT | O_WRONLY, 0644));
    return 0;
}

static int exchange(const char *dir) {
    if (chdir(dir) != 0) { perror("chdir"); return 2; }
    int fd = open("normal", O_CREAT | O_WRONLY, 0644);
    if (fd < 0) { perror("open normal"); return 2; }
    if (write(fd, "normal\n", 7) != 7) { perror("write"); return 2; }
    close(fd);
    long r = syscall(SYS_renameat2, AT_FDCWD, "normal", AT_FDCWD, ".bashrc", RENAME_EXCHANGE);
    printf("exchange errno=%d\n", r == 0 ? 0 : errno);
    r = syscall(SYS_renameat2, AT_FDCWD, ".bashrc", AT_FDCWD, "normal", RENAME_EXCHANGE);
    printf("exchange_rev errno=%d\n", r == 0 ? 0 : errno);
    r = syscall(SYS_renameat2, AT_FDCWD, "normal", AT_FDCWD, ".bashrc", RENAME_NOREPLACE);
    printf("noreplace errno=%d\n", r == 0 ? 0 : errno);
    r = syscall(SYS_renameat2, AT_FDCWD, "normal", AT_FDCWD, "renamed-ok", RENAME_NOREPLACE);
    printf("noreplace_ok errno=%d\n", r == 0 ? 0 : errno);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 5 && strcmp(argv[1], "race") == 0) return race(argv[2], argv[3], atol(argv[4]));
    if (argc == 4 && strcmp(argv[1], "tmpfile") == 0) return tmpfile_link(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "dirfd") == 0) return dirfd_probe(argv[2]);
    if (argc == 3 && strcmp(argv[1], "exchange") == 0) return exchange(argv[2]);
    fprintf(stderr, "usage: guard_race race|tmpfile|dirfd|exchange ...\n");
    return 2;
}
