// Confinement fuzzing guest: performs a batch of path operations given on stdin
// through the raw wasi_snapshot_preview1 imports, so paths reach the host
// byte for byte (NUL, non-UTF-8, 4 KiB names: wasi-libc would cut at NUL).
// All operations are relative to the first preopen (fd 3).
//
// Input, repeated: u8 op, u8 flags, u16 len_a, u16 len_b (little endian), a, b.
// Output, one line per case: "<index> <errno> <detail>", then "done <count>".
// Read data and names are printed with space and non-printable bytes as \xNN.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(name)))
IMPORT("path_open") int32_t w_open(int32_t, int32_t, const char *, int32_t, int32_t, int64_t, int64_t, int32_t, int32_t *);
IMPORT("fd_read") int32_t w_read(int32_t, const void *, int32_t, int32_t *);
IMPORT("fd_write") int32_t w_write(int32_t, const void *, int32_t, int32_t *);
IMPORT("fd_close") int32_t w_close(int32_t);
IMPORT("fd_readdir") int32_t w_readdir(int32_t, void *, int32_t, int64_t, int32_t *);
IMPORT("path_filestat_get") int32_t w_stat(int32_t, int32_t, const char *, int32_t, void *);
IMPORT("path_filestat_set_times") int32_t w_times(int32_t, int32_t, const char *, int32_t, int64_t, int64_t, int32_t);
IMPORT("path_create_directory") int32_t w_mkdir(int32_t, const char *, int32_t);
IMPORT("path_rename") int32_t w_rename(int32_t, const char *, int32_t, int32_t, const char *, int32_t);
IMPORT("path_symlink") int32_t w_symlink(const char *, int32_t, int32_t, const char *, int32_t);
IMPORT("path_unlink_file") int32_t w_unlink(int32_t, const char *, int32_t);
IMPORT("path_remove_directory") int32_t w_rmdir(int32_t, const char *, int32_t);
IMPORT("path_readlink") int32_t w_readlink(int32_t, const char *, int32_t, char *, int32_t, int32_t *);
IMPORT("path_link") int32_t w_link(int32_t, int32_t, const char *, int32_t, int32_t, const char *, int32_t);

enum { OPEN_READ, STAT, CREATE_WRITE, MKDIR, RENAME, SYMLINK, UNLINK, RMDIR, READLINK, LINK, LIST, TIMES, NOPS };
#define FOLLOW 1
#define ALL_RIGHTS 0x1fffffffLL
#define READ_RIGHTS (2 | 4 | 32 | 16384 | (1 << 21)) /* read seek tell readdir filestat_get */
#define DIRFD 3

static void put(const unsigned char *p, int n) {
    for (int i = 0; i < n; i++) {
        if (p[i] > 0x20 && p[i] < 0x7f && p[i] != '\\') putchar(p[i]);  // space escaped: names are space-separated
        else printf("\\x%02x", p[i]);
    }
}

struct iov { const void *buf; int32_t len; };

static int32_t read_some(int32_t fd) {
    unsigned char buf[256];
    struct iov v = {buf, sizeof buf};
    int32_t n = 0, e = w_read(fd, &v, 1, &n);
    if (e == 0) { printf(" read=%d:", n); put(buf, n); }
    return e;
}

static int32_t list(int32_t fd) {
    static unsigned char buf[65536];
    int32_t used = 0, e = w_readdir(fd, buf, sizeof buf, 0, &used);
    if (e) return e;
    printf(" names:");
    for (int32_t off = 0; off + 24 <= used;) {
        uint32_t namlen; memcpy(&namlen, buf + off + 16, 4);
        if (off + 24 + (int32_t)namlen > used) break;
        putchar(' '); put(buf + off + 24, namlen);
        off += 24 + namlen;
    }
    return 0;
}

int main(void) {
    static unsigned char in[1 << 22];
    size_t len = fread(in, 1, sizeof in, stdin);
    size_t pos = 0; int count = 0;
    while (pos + 6 <= len) {
        int op = in[pos], flags = in[pos + 1];
        int la = in[pos + 2] | in[pos + 3] << 8, lb = in[pos + 4] | in[pos + 5] << 8;
        pos += 6;
        if (pos + la + lb > len) break;
        const char *a = (const char *)in + pos, *b = a + la;
        pos += la + lb;
        int follow = flags & FOLLOW;
        int32_t e = 0, fd = -1;
        printf("%d ", count++);
        char detail[64] = "";
        switch (op % NOPS) {
        case OPEN_READ:
            e = w_open(DIRFD, follow, a, la, 0, READ_RIGHTS, ALL_RIGHTS, 0, &fd);
            if (!e) { printf("0"); e = read_some(fd); if (e) printf(" readerr=%d", e); w_close(fd); putchar('\n'); continue; }
            break;
        case STAT: {
            unsigned char st[64];
            e = w_stat(DIRFD, follow, a, la, st);
            if (!e) { uint64_t size; memcpy(&size, st + 32, 8); if (st[16] == 3) size = 0; /* directory sizes differ per filesystem */ snprintf(detail, sizeof detail, " type=%d size=%llu", st[16], (unsigned long long)size); }
            break;
        }
        case CREATE_WRITE:
            e = w_open(DIRFD, follow, a, la, 1 | 8 /* creat|trunc */, ALL_RIGHTS, ALL_RIGHTS, 0, &fd);
            if (!e) { struct iov v = {"w", 1}; int32_t n; e = w_write(fd, &v, 1, &n); w_close(fd); }
            break;
        case MKDIR: e = w_mkdir(DIRFD, a, la); break;
        case RENAME: e = w_rename(DIRFD, a, la, DIRFD, b, lb); break;
        case SYMLINK: e = w_symlink(a, la, DIRFD, b, lb); break;
        case UNLINK: e = w_unlink(DIRFD, a, la); break;
        case RMDIR: e = w_rmdir(DIRFD, a, la); break;
        case READLINK: {
            char buf[512]; int32_t n = 0;
            e = w_readlink(DIRFD, a, la, buf, sizeof buf, &n);
            if (!e) { printf("0 link:"); put((unsigned char *)buf, n); putchar('\n'); continue; }
            break;
        }
        case LINK: e = w_link(DIRFD, follow, a, la, DIRFD, b, lb); break;
        case LIST:
            e = w_open(DIRFD, follow, a, la, 2 /* directory */, READ_RIGHTS, ALL_RIGHTS, 0, &fd);
            if (!e) { printf("0"); e = list(fd); if (e) printf(" listerr=%d", e); w_close(fd); putchar('\n'); continue; }
            break;
        case TIMES: e = w_times(DIRFD, follow, a, la, 1000000000LL, 2000000000LL, 1 | 4); break;
        }
        printf("%d%s\n", e, detail);
    }
    printf("done %d\n", count);
    return 0;
}
