/* The lateness probe: the first thing it does is read the clock, then it appends
 * "<HOURGLASS_SCHEDULED_AT> <seconds>.<nanoseconds>\n" to the file named by argv[1].
 * Built static by the bench (no dynamic loader on the path to the first instruction), so
 * what it records is the moment the process started, give or take the exec itself. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (argc < 2) return 2;
    const char *scheduled = getenv("HOURGLASS_SCHEDULED_AT");
    char line[256];
    int n = snprintf(line, sizeof line, "%s %lld.%09ld\n", scheduled ? scheduled : "-",
                     (long long)now.tv_sec, now.tv_nsec);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return 1;
    /* One write with O_APPEND: lines from concurrent processes never interleave. */
    if (write(fd, line, (size_t)n) != n) return 1;
    return close(fd) == 0 ? 0 : 1;
}
