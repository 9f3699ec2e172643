// Copies argv[1] to argv[2] through stdio (reads and writes in 64 KiB): every byte value
// must survive the host's stream path unchanged.
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) { perror("open"); return 1; }
    static char buf[65536];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) { perror("write"); return 1; }
        total += n;
    }
    if (fclose(out)) { perror("close"); return 1; }
    fclose(in);
    printf("copied %zu\n", total);
    return 0;
}
