// Guest for limits and capability tests; argv[1] picks the behaviour.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "spin")) {
        volatile unsigned long n = 0;
        for (;;) n++;
    } else if (!strcmp(mode, "alloc")) {
        // grow until malloc fails, touching every page
        static char *volatile keep;  // stops the compiler from eliding the allocations
        size_t total = 0;
        for (;;) {
            char *p = malloc(1 << 20);
            if (!p) {
                printf("malloc failed after %zu MiB\n", total >> 20);
                fflush(stdout);
                if (argc > 2) abort();  // like Rust's allocation-failure handler: a trap
                return 12;
            }
            memset(p, 1, 1 << 20);
            keep = p;
            total += 1 << 20;
        }
    } else if (!strcmp(mode, "print")) {
        for (;;) fputs("spam spam spam spam spam spam spam spam\n", stdout);
    } else if (!strcmp(mode, "fds")) {
        int n = 0;
        for (;;) {
            char name[32];
            snprintf(name, sizeof name, "/workspace/f%d", n);
            int fd = open(name, O_WRONLY | O_CREAT, 0644);
            if (fd < 0) { printf("opened %d, then errno %d %s\n", n, errno, strerror(errno)); return 0; }
            n++;
        }
    } else if (!strcmp(mode, "clock")) {
        struct timespec ts;
        int r = clock_gettime(CLOCK_REALTIME, &ts);
        printf("clock %d errno %d year>=2024 %d\n", r, r ? errno : 0, r == 0 && ts.tv_sec > 1704067200);
    } else if (!strcmp(mode, "random")) {
        unsigned char b[16];
        int r = getentropy(b, sizeof b);
        printf("random %d errno %d\n", r, r ? errno : 0);
    } else if (!strcmp(mode, "sleep")) {
        struct timespec ts = {10, 0};
        nanosleep(&ts, NULL);
        printf("woke\n");
    } else if (!strcmp(mode, "write")) {
        long n = atol(argv[2]);
        FILE *f = fopen("/workspace/big", "w");
        if (!f) { printf("open errno %d %s\n", errno, strerror(errno)); return 1; }
        static char buf[65536];
        unsigned x = 12345;
        long done = 0;
        while (done < n) {
            for (size_t i = 0; i < sizeof buf; i++) { x = x * 1103515245u + 12345u; buf[i] = (char)(x >> 16); }
            size_t k = fwrite(buf, 1, sizeof buf, f);
            if (k < sizeof buf) break;
            done += k;
        }
        int e1 = ferror(f) ? errno : 0;
        int r = fclose(f);
        int e2 = r ? errno : 0;
        printf("wrote %ld write-errno %d close %d close-errno %d %s\n", done, e1, r, e2, strerror(e1 ? e1 : e2));
        return r ? 1 : 0;
    } else if (!strcmp(mode, "readonly")) {
        FILE *f = fopen("/workspace/new", "w");
        printf("create %s\n", f ? "ok" : strerror(errno));
        f = fopen("/workspace/existing", "r");
        char buf[64] = {0};
        if (f) { fread(buf, 1, 63, f); fclose(f); }
        printf("read [%s]\n", buf);
        printf("unlink %d %s\n", unlink("/workspace/existing"), strerror(errno));
        printf("mkdir %d %s\n", mkdir("/workspace/d", 0755), strerror(errno));
    } else if (!strcmp(mode, "exit")) {
        exit(atoi(argv[2]));
    }
    return 0;
}
