/* Benchmark upstream: a loopback HTTP/1.1 server, one thread per connection, keep-alive.
 * GET /big answers BIG bytes (from a static buffer); anything else answers "ok".
 * Usage: [UPSTREAM_ADDR=IPV4] upstream PORT BIG_BYTES    (prints "ready" once listening;
 * on 127.0.0.1 unless UPSTREAM_ADDR names another local address) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static long long big;
static char chunk[1 << 20];

static int send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void *serve(void *arg) {
  int fd = (int)(long)arg;
  char buf[16384];
  size_t len = 0;
  for (;;) {
    char *end;
    while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
      if (len == sizeof buf) goto out;
      ssize_t r = read(fd, buf + len, sizeof buf - len);
      if (r <= 0) goto out;
      len += (size_t)r;
    }
    int is_big = len > 8 && (strncmp(buf, "GET /big ", 9) == 0 || memmem(buf, (size_t)(end - buf), "/big HTTP", 9));
    size_t used = (size_t)(end + 4 - buf);
    memmove(buf, buf + used, len - used);
    len -= used;
    char head[128];
    if (is_big) {
      int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n\r\n", big);
      if (send_all(fd, head, (size_t)n)) goto out;
      long long left = big;
      while (left > 0) {
        size_t n2 = left > (long long)sizeof chunk ? sizeof chunk : (size_t)left;
        if (send_all(fd, chunk, n2)) goto out;
        left -= (long long)n2;
      }
    } else {
      static const char small[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
      if (send_all(fd, small, sizeof small - 1)) goto out;
    }
  }
out:
  close(fd);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: upstream PORT BIG_BYTES\n"); return 2; }
  signal(SIGPIPE, SIG_IGN);
  big = atoll(argv[2]);
  memset(chunk, 'x', sizeof chunk);
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* UPSTREAM_ADDR: another local address to listen on (bench/transparent.sh). */
  if (getenv("UPSTREAM_ADDR") && inet_pton(AF_INET, getenv("UPSTREAM_ADDR"), &a.sin_addr) != 1) {
    fprintf(stderr, "upstream: bad UPSTREAM_ADDR\n");
    return 2;
  }
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096)) { perror("upstream: bind"); return 1; }
  printf("ready\n");
  fflush(stdout);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t t;
    if (pthread_create(&t, &attr, serve, (void *)(long)c)) close(c);
  }
}
