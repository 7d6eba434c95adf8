// SPDX-License-Identifier: Apache-2.0
// The static program the container tests run inside a container (the image
// holds it and a static busybox; nothing can be pulled here). Each command
// prints one word, so that a test reads an errno by name, not by number:
//   probe open PATH               OPENED or the errno name of open(O_RDWR)
//   probe mknod-open PATH MAJ MIN makes a char node, then opens it
//   probe write PATH OFFSET TEXT  maps PATH MAP_SHARED (2 MiB at OFFSET,
//                                 which must be aligned) and writes TEXT
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static const char* errno_name(int e) {
    switch (e) {
    case ENOENT: return "ENOENT";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENXIO: return "ENXIO";
    case ENODEV: return "ENODEV";
    case EROFS: return "EROFS";
    case EINVAL: return "EINVAL";
    case EEXIST: return "EEXIST";
    default: return strerror(e);
    }
}

static int report_open(const char* path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        printf("%s\n", errno_name(errno));
        return 0;
    }
    close(fd);
    printf("OPENED\n");
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 3 && strcmp(argv[1], "open") == 0)
        return report_open(argv[2]);
    if (argc == 5 && strcmp(argv[1], "mknod-open") == 0) {
        dev_t dev = makedev(strtoul(argv[3], NULL, 0), strtoul(argv[4], NULL, 0));
        if (mknod(argv[2], S_IFCHR | 0666, dev) != 0) {
            printf("mknod:%s\n", errno_name(errno));
            return 0;
        }
        return report_open(argv[2]);
    }
    if (argc == 5 && strcmp(argv[1], "write") == 0) {
        const size_t len = 2u << 20;
        int fd = open(argv[2], O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            printf("open:%s\n", errno_name(errno));
            return 1;
        }
        void* p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                       (off_t)strtoull(argv[3], NULL, 0));
        if (p == MAP_FAILED) {
            printf("mmap:%s\n", errno_name(errno));
            return 1;
        }
        memcpy(p, argv[4], strlen(argv[4]));
        msync(p, len, MS_SYNC);
        munmap(p, len);
        close(fd);
        printf("WROTE\n");
        return 0;
    }
    fprintf(stderr, "usage: probe open PATH | mknod-open PATH MAJ MIN | write PATH OFF TEXT\n");
    return 2;
}
