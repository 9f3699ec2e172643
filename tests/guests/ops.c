// A scripted POSIX client: reads one command per line from stdin, performs it
// with wasi-libc (so every call goes through wasi_snapshot_preview1) and prints
// the result or the errno. The same script runs on wasmtime's own WASI over a
// real directory and on Tarbox; the outputs must be equal.
//
// Commands (paths relative to the working directory, which is the preopen):
//   open PATH FLAGS    FLAGS from: r w a c x t d n  (read write append creat excl trunc directory nofollow)
//   close N | write N TEXT | read N COUNT | pread N COUNT OFF | pwrite N OFF TEXT
//   seek N OFF WHENCE | ftruncate N SIZE | fstat N | fsync N
//   mkdir P | rmdir P | unlink P | rename A B | symlink TARGET P | readlink P | link A B
//   stat P | lstat P | truncate P SIZE | ls P | cat P | utime P | touch P
//   fadvise N | getfl N | futime N | sameino A B (st_ino equal?) | fsameino N P
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fds[64];
static int nfds;

static void fail(void) { printf("err %d %s\n", errno, strerror(errno)); }

static const char *kind(mode_t m) {
    if (S_ISDIR(m)) return "dir";
    if (S_ISREG(m)) return "file";
    if (S_ISLNK(m)) return "link";
    return "other";
}

static int fd_at(const char *s) {
    int i = atoi(s);
    return (i >= 0 && i < nfds) ? fds[i] : -1;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(void) {
    char line[8192];
    if (chdir("/workspace") < 0) { fail(); return 1; }
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char *cmd = strtok(line, " ");
        if (!cmd) continue;
        char *a = strtok(NULL, " "), *b = strtok(NULL, " "), *c = strtok(NULL, "");
        printf("%s: ", cmd);
        if (!strcmp(cmd, "open") && a && b) {
            int fl = 0, rd = strchr(b, 'r') != NULL, wr = strchr(b, 'w') != NULL;
            fl |= rd && wr ? O_RDWR : wr ? O_WRONLY : O_RDONLY;
            if (strchr(b, 'a')) fl |= O_APPEND;
            if (strchr(b, 'c')) fl |= O_CREAT;
            if (strchr(b, 'x')) fl |= O_EXCL;
            if (strchr(b, 't')) fl |= O_TRUNC;
            if (strchr(b, 'd')) fl |= O_DIRECTORY;
            if (strchr(b, 'n')) fl |= O_NOFOLLOW;
            int fd = open(a, fl, 0644);
            if (fd < 0) fail();
            else if (nfds < 64) { fds[nfds] = fd; printf("ok %d\n", nfds++); }
            else printf("ok (no slot)\n");
        } else if (!strcmp(cmd, "touch") && a) {
            int fd = open(a, O_WRONLY | O_CREAT, 0644);
            if (fd < 0) fail(); else { close(fd); printf("ok\n"); }
        } else if (!strcmp(cmd, "close") && a) {
            if (close(fd_at(a)) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "write") && a) {
            const char *t = b ? b : "";
            ssize_t n = write(fd_at(a), t, strlen(t));
            if (n < 0) fail(); else printf("ok %zd\n", n);
        } else if (!strcmp(cmd, "read") && a && b) {
            char buf[4096]; int want = atoi(b); if (want > 4096) want = 4096; if (want < 0) want = 0;
            ssize_t n = read(fd_at(a), buf, want);
            if (n < 0) fail(); else printf("ok %zd [%.*s]\n", n, (int)n, buf);
        } else if (!strcmp(cmd, "pread") && a && b && c) {
            char buf[4096]; int want = atoi(b); if (want > 4096) want = 4096; if (want < 0) want = 0;
            ssize_t n = pread(fd_at(a), buf, want, atoll(c));
            if (n < 0) fail(); else printf("ok %zd [%.*s]\n", n, (int)n, buf);
        } else if (!strcmp(cmd, "pwrite") && a && b) {
            const char *t = c ? c : "";
            ssize_t n = pwrite(fd_at(a), t, strlen(t), atoll(b));
            if (n < 0) fail(); else printf("ok %zd\n", n);
        } else if (!strcmp(cmd, "seek") && a && b && c) {
            off_t o = lseek(fd_at(a), atoll(b), atoi(c));
            if (o < 0) fail(); else printf("ok %lld\n", (long long)o);
        } else if (!strcmp(cmd, "ftruncate") && a && b) {
            if (ftruncate(fd_at(a), atoll(b)) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "fstat") && a) {
            struct stat st;
            if (fstat(fd_at(a), &st) < 0) fail();
            else printf("ok %s size=%lld nlink=%lld\n", kind(st.st_mode), S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_size,
                        S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_nlink);
        } else if (!strcmp(cmd, "fsync") && a) {
            if (fsync(fd_at(a)) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "mkdir") && a) {
            if (mkdir(a, 0755) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "rmdir") && a) {
            if (rmdir(a) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "unlink") && a) {
            if (unlink(a) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "rename") && a && b) {
            if (rename(a, b) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "symlink") && a && b) {
            if (symlink(a, b) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "link") && a && b) {
            if (link(a, b) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "readlink") && a) {
            char buf[4096]; ssize_t n = readlink(a, buf, sizeof buf);
            if (n < 0) fail(); else printf("ok [%.*s]\n", (int)n, buf);
        } else if ((!strcmp(cmd, "stat") || !strcmp(cmd, "lstat")) && a) {
            struct stat st;
            int r = cmd[0] == 's' ? stat(a, &st) : lstat(a, &st);
            if (r < 0) fail();
            else printf("ok %s size=%lld nlink=%lld\n", kind(st.st_mode),
                        S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_size,  // directory sizes are per-filesystem
                        S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_nlink);
        } else if (!strcmp(cmd, "truncate") && a && b) {
            if (truncate(a, atoll(b)) < 0) fail(); else printf("ok\n");
        } else if (!strcmp(cmd, "utime") && a) {
            struct timespec ts[2] = {{1000, 5}, {2000, 7}};
            struct stat st;
            if (utimensat(AT_FDCWD, a, ts, 0) < 0) fail();
            else if (stat(a, &st) < 0) fail();
            else printf("ok mtime=%lld.%ld\n", (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
        } else if (!strcmp(cmd, "fadvise") && a) {
            int r = posix_fadvise(fd_at(a), 0, 100, POSIX_FADV_SEQUENTIAL);
            if (r) printf("err %d %s\n", r, strerror(r)); else printf("ok\n");
        } else if (!strcmp(cmd, "getfl") && a) {
            int fl = fcntl(fd_at(a), F_GETFL);
            if (fl < 0) fail();
            else printf("ok%s%s%s\n", (fl & O_ACCMODE) == O_RDONLY ? " rdonly" : (fl & O_ACCMODE) == O_WRONLY ? " wronly" : " rdwr",
                        fl & O_APPEND ? " append" : "", fl & O_NONBLOCK ? " nonblock" : "");
        } else if (!strcmp(cmd, "futime") && a) {
            struct timespec ts[2] = {{3000, 9}, {4000, 11}};
            struct stat st;
            if (futimens(fd_at(a), ts) < 0) fail();
            else if (fstat(fd_at(a), &st) < 0) fail();
            else printf("ok mtime=%lld.%ld\n", (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
        } else if (!strcmp(cmd, "sameino") && a && b) {
            struct stat s1, s2;
            if (lstat(a, &s1) < 0 || lstat(b, &s2) < 0) fail();
            else printf("ok %s\n", s1.st_ino == s2.st_ino ? "same" : "different");
        } else if (!strcmp(cmd, "fsameino") && a && b) {
            struct stat s1, s2;
            if (fstat(fd_at(a), &s1) < 0 || lstat(b, &s2) < 0) fail();
            else printf("ok %s\n", s1.st_ino == s2.st_ino ? "same" : "different");
        } else if (!strcmp(cmd, "ls") && a) {
            DIR *d = opendir(a);
            if (!d) { fail(); continue; }
            char *names[4096]; int n = 0; struct dirent *e;
            while ((e = readdir(d)) && n < 4096) names[n++] = strdup(e->d_name);
            closedir(d);
            qsort(names, n, sizeof *names, cmp);
            printf("ok %d", n);
            for (int i = 0; i < n; i++) { if (i < 50) printf(" %s", names[i]); free(names[i]); }
            printf("\n");
        } else if (!strcmp(cmd, "cat") && a) {
            FILE *f = fopen(a, "r");
            if (!f) { fail(); continue; }
            char buf[4096]; size_t n = fread(buf, 1, sizeof buf, f); fclose(f);
            printf("ok %zu [%.*s]\n", n, (int)n, buf);
        } else {
            printf("bad command\n");
        }
    }
    return 0;
}
