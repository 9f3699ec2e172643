// Guest for the crash trials (tests/suites/crash.py, guest_kill_trials): writes
// /workspace/f0, f1, ... until it is killed. File i's size and bytes come from
// (seed, i) -- 32-byte lines "iiiiiii sssss ooooooooooooooooo\n" (file, seed,
// offset), so every block is distinct and a checker can rebuild them. Each file
// is written 64 KiB per write(), pausing 2 ms every 8 writes so that large
// files span several write-back windows. After each close it prints "ok I"; a
// file whose index is a multiple of EVERY (> 0) is fsync'ed first and prints
// "synced I".
//   crashwriter SEED EVERY
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

static uint64_t fmix(uint64_t x) {  // MurmurHash3's finalizer: the checker repeats it
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static long long file_size(long i, long seed) {
    static const long long sizes[16] = {
        1 << 10,   1 << 10,   1 << 10,   1 << 10,   1 << 10,   100 << 10, 100 << 10, 100 << 10,
        100 << 10, 1 << 20,   1 << 20,   1 << 20,   1 << 20,   3 << 20,   3 << 20,   20 << 20,
    };
    uint64_t r = fmix((uint64_t)seed * 1000003u + (uint64_t)i);
    return sizes[r & 15] + (long long)((r >> 8) % 4096);
}

static void fill(char *buf, long i, long seed, long long off, long long n) {
    char line[40];
    for (long long p = off; p < off + n; p += 32) {
        snprintf(line, sizeof line, "%07ld %05ld %017lld\n", i, seed, p);
        long long k = off + n - p < 32 ? off + n - p : 32;
        memcpy(buf + (p - off), line, (size_t)k);
    }
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int fail(const char *what, long i) {
    printf("err %s f%ld: %d %s\n", what, i, errno, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 3) return 2;
    long seed = atol(argv[1]), every = atol(argv[2]);
    char *buf = malloc(CHUNK);
    if (!buf) return 3;
    for (long i = 0;; i++) {
        char path[64];
        snprintf(path, sizeof path, "/workspace/f%ld", i);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return fail("open", i);
        long long size = file_size(i, seed);
        for (long long off = 0; off < size; off += CHUNK) {
            long long n = size - off < CHUNK ? size - off : CHUNK;
            fill(buf, i, seed, off, n);
            for (long long done = 0; done < n;) {
                ssize_t w = write(fd, buf + done, (size_t)(n - done));
                if (w <= 0) return fail("write", i);
                done += w;
            }
            if ((off / CHUNK) % 8 == 7) sleep_ms(2);
        }
        int synced = every > 0 && i % every == 0;
        if (synced && fsync(fd) != 0) return fail("fsync", i);
        if (close(fd) != 0) return fail("close", i);
        printf(synced ? "synced %ld\n" : "ok %ld\n", i);
    }
}
