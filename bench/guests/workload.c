// The WASI benchmark workload: a small-file phase (create 1,000 files of
// 2-8 KiB in nested directories, read them all, stat them, list the
// directories, rename 250, delete 250, append 1,000 lines to a log) and a
// large-file phase (write and read 64 MiB in 64 KiB chunks). Prints the
// seconds each phase took, measured inside the guest.
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char buf[65536];

int main(int argc, char **argv) {
    int nfiles = argc > 1 ? atoi(argv[1]) : 1000;
    long big = argc > 2 ? atol(argv[2]) : 64L << 20;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 7 + 3);
    char path[128], path2[128];
    double t0 = now();
    for (int d = 0; d < 10; d++) {
        snprintf(path, sizeof path, "/workspace/w/d%d", d);
        mkdir("/workspace/w", 0755);
        mkdir(path, 0755);
        for (int s = 0; s < 4; s++) {
            snprintf(path, sizeof path, "/workspace/w/d%d/s%d", d, s);
            mkdir(path, 0755);
        }
    }
    for (int i = 0; i < nfiles; i++) {
        snprintf(path, sizeof path, "/workspace/w/d%d/s%d/f%d.txt", i % 10, (i / 10) % 4, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        size_t n = 2048 + (size_t)(i * 2654435761u % 6144);
        write(fd, buf + (i % 1000), n);
        close(fd);
    }
    long total = 0;
    for (int i = 0; i < nfiles; i++) {
        snprintf(path, sizeof path, "/workspace/w/d%d/s%d/f%d.txt", i % 10, (i / 10) % 4, i);
        int fd = open(path, O_RDONLY);
        ssize_t n;
        while ((n = read(fd, buf + 32768, 16384)) > 0) total += n;
        close(fd);
    }
    struct stat st;
    for (int i = 0; i < nfiles; i++) {
        snprintf(path, sizeof path, "/workspace/w/d%d/s%d/f%d.txt", i % 10, (i / 10) % 4, i);
        stat(path, &st);
    }
    double t_small_core = now() - t0;
    int entries = 0;
    for (int d = 0; d < 10; d++)
        for (int s = 0; s < 4; s++) {
            snprintf(path, sizeof path, "/workspace/w/d%d/s%d", d, s);
            DIR *dir = opendir(path);
            while (readdir(dir)) entries++;
            closedir(dir);
        }
    // argv[3] "norename": skip the renames (the component build, see bench/wasi_p2_bench.py)
    int renames = !(argc > 3 && !strcmp(argv[3], "norename"));
    for (int i = 0; renames && i < nfiles / 4; i++) {
        snprintf(path, sizeof path, "/workspace/w/d%d/s%d/f%d.txt", i % 10, (i / 10) % 4, i);
        snprintf(path2, sizeof path2, "/workspace/w/d%d/s%d/renamed%d.txt", i % 10, (i / 10) % 4, i);
        rename(path, path2);
    }
    for (int i = nfiles / 4; i < nfiles / 2; i++) {
        snprintf(path, sizeof path, "/workspace/w/d%d/s%d/f%d.txt", i % 10, (i / 10) % 4, i);
        unlink(path);
    }
    FILE *log = fopen("/workspace/w/log.txt", "a");
    for (int i = 0; i < 1000; i++) {
        fprintf(log, "step %d done\n", i);
        fflush(log);
    }
    fclose(log);
    double t_small = now() - t0;
    double t1 = now();
    int fd = open("/workspace/w/big.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (long done = 0; done < big; done += sizeof buf) {
        // every 4 KiB differs from every other in the file: no block deduplicates
        for (size_t k = 0; k < sizeof buf; k += 4096) memcpy(buf + k, &(long){done + (long)k}, sizeof(long));
        write(fd, buf, sizeof buf);
    }
    close(fd);
    fd = open("/workspace/w/big.bin", O_RDONLY);
    long got = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) got += n;
    close(fd);
    double t_big = now() - t1;
    printf("create+read+stat %.4f small-total %.4f big %.4f bytes %ld entries %d big-read %ld\n", t_small_core,
           t_small, t_big, total, entries, got);
    return 0;
}
