// Guest for the write-back tests: each mode does one thing and reports on
// stdout line by line (flushed), so the test can act between its steps.
//   close-then-wait FILE SECONDS  write FILE, close it, say "closed", sleep
//   poll FILE SECONDS              say "waiting", then try to open FILE every
//                                  10 ms; print its content when it opens
//   churn N MS                     create f0..fN-1 (closing each), MS apart
//   fill DIR SIZE                  create DIR/f0, f1, ... of SIZE bytes ("DIR:i;"
//                                  repeated) until one fails: "ok i" per closed
//                                  file, then "err ERRNO MESSAGE"
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int put(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    return (close(fd) == 0 && n == (ssize_t)strlen(text)) ? 0 : -1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "close-then-wait") && argc == 4) {
        if (put(argv[2], "hello from the run\n")) return 1;
        printf("closed\n");
        sleep_ms((long)(atof(argv[3]) * 1000));
        return 0;
    }
    if (!strcmp(argv[1], "poll") && argc == 4) {
        printf("waiting\n");
        long tries = (long)(atof(argv[3]) * 100);
        for (long i = 0; i < tries; i++) {
            int fd = open(argv[2], O_RDONLY);
            if (fd >= 0) {
                char buf[256];
                ssize_t n = read(fd, buf, sizeof buf - 1);
                close(fd);
                if (n > 0) {
                    buf[n] = 0;
                    printf("got %s", buf);
                    return 0;
                }
            }
            sleep_ms(10);
        }
        printf("timed out\n");
        return 3;
    }
    if (!strcmp(argv[1], "churn") && argc == 4) {
        int n = atoi(argv[2]);
        char path[64];
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "/workspace/f%d", i);
            if (put(path, path + 11)) {
                printf("failed at %d\n", i);
                return 1;
            }
            printf("%d\n", i);
            sleep_ms(atol(argv[3]));
        }
        return 0;
    }
    if (!strcmp(argv[1], "fill") && argc == 4) {
        const char *dir = argv[2];
        long size = atol(argv[3]);
        char *buf = malloc(size + 64), path[256], unit[128];
        if (!buf || (mkdir(dir, 0755) < 0 && errno != EEXIST)) {
            printf("err %d %s\n", errno, strerror(errno));
            return 0;
        }
        for (int i = 0;; i++) {
            int len = snprintf(unit, sizeof unit, "%s:%d;", dir, i);
            for (long k = 0; k < size; k += len) memcpy(buf + k, unit, len);
            snprintf(path, sizeof path, "%s/f%d", dir, i);
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0 || write(fd, buf, size) != size || close(fd) < 0) {
                printf("err %d %s\n", errno, strerror(errno));
                return 0;
            }
            printf("ok %d\n", i);
        }
    }
    return 2;
}
