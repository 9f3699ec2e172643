// An example agent, as in the original design: reads its task, creates a
// project directory, writes files, appends to a log, streams a large input
// line by line, and reports. Built to wasm32-wasip1 and run by `tarbox demo`
// (or `tarbox run`) with /workspace served by Tarbox.
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void log_line(const char *msg) {
    FILE *f = fopen("/workspace/agent.log", "a");
    if (f) { fprintf(f, "%s\n", msg); fclose(f); }
}

int main(int argc, char **argv) {
    const char *task = argc > 1 ? argv[1] : "summarise";
    // read_to_string of the input
    FILE *in = fopen("/workspace/input.txt", "r");
    if (!in) { fprintf(stderr, "no /workspace/input.txt: %s\n", strerror(errno)); return 1; }
    // streaming: line by line, bounded memory
    char line[4096];
    long lines = 0, words = 0, bytes = 0;
    while (fgets(line, sizeof line, in)) {
        lines++;
        bytes += (long)strlen(line);
        for (char *p = strtok(line, " \t\n"); p; p = strtok(NULL, " \t\n")) words++;
    }
    fclose(in);
    mkdir("/workspace/out", 0755);  // create_dir (EEXIST on a second run is fine)
    FILE *r = fopen("/workspace/out/report.md", "w");
    if (!r) { fprintf(stderr, "cannot write report: %s\n", strerror(errno)); return 1; }
    fprintf(r, "# %s\n\nlines: %ld\nwords: %ld\nbytes: %ld\n", task, lines, words, bytes);
    fclose(r);
    char msg[256];
    snprintf(msg, sizeof msg, "task %s: %ld lines, %ld words", task, lines, words);
    log_line(msg);
    // list what we produced
    DIR *d = opendir("/workspace/out");
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d))) if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    printf("agent: %s -> %ld lines, %ld words; %d file(s) in out/\n", task, lines, words, n);
    return 0;
}
