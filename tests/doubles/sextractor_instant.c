/* The stand-in of tests/doubles/sextractor_instant, compiled: a Python stand-in costs a
 * Python start (~100 ms of CPU on a slow VM) per image, more than the driver's own work it
 * is meant to leave visible. Copies $SEXSTREAM_DOUBLE_CATALOG to -CATALOG_NAME; with no
 * image (`--version`, `-dp`, `-dd`) it runs the real binary. scripts/bench_scale.py
 * compiles it with cc when it can. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        argv[0] = "source-extractor";
        execvp(argv[0], argv);
        perror("source-extractor");
        return 127;
    }
    const char *out = NULL, *template = getenv("SEXSTREAM_DOUBLE_CATALOG");
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "-CATALOG_NAME") == 0) out = argv[i + 1];
    if (!out || !template) {
        fprintf(stderr, "sextractor_instant: -CATALOG_NAME and SEXSTREAM_DOUBLE_CATALOG needed\n");
        return 2;
    }
    FILE *in = fopen(template, "rb"), *dst = fopen(out, "wb");
    if (!in || !dst) {
        perror("sextractor_instant");
        return 1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, dst) != n) {
            perror("sextractor_instant");
            return 1;
        }
    return fclose(in) | fclose(dst) ? 1 : 0;
}
