/* A tiny static probe run inside test containers: tries one system call and prints
 * "ok" or the errno name, so tests can see what seccomp and capabilities allow. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(long rc) {
    if (rc < 0) { printf("%s\n", strerrorname_np(errno)); return 1; }
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: probe keyctl|unshare-user|mount|sethostname|add_key\n"); return 2; }
    const char *what = argv[1];
    if (!strcmp(what, "keyctl")) return report(syscall(SYS_keyctl, 0 /*KEYCTL_GET_KEYRING_ID*/, -3, 0));
    if (!strcmp(what, "add_key")) return report(syscall(SYS_add_key, "user", "k", "v", 1, -3));
    if (!strcmp(what, "unshare-user")) return report(unshare(CLONE_NEWUSER));
    if (!strcmp(what, "mount")) return report(mount("none", "/tmp", "tmpfs", 0, NULL));
    if (!strcmp(what, "sethostname")) return report(sethostname("x", 1));
    if (!strcmp(what, "getpid")) return report(getpid());
    fprintf(stderr, "unknown probe %s\n", what);
    return 2;
}
