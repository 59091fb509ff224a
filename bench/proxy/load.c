/* Benchmark client. Three modes:
 *   load rps PROXY|- TARGET CONCURRENCY SECONDS
 *       CONCURRENCY keep-alive connections, each sending GET /small back to back (absolute-form
 *       through PROXY host:port, origin-form straight to TARGET when PROXY is "-"; with
 *       LOAD_PROXY_AUTH=base64(user:pass) a Proxy-Authorization header is sent). Prints
 *       "requests rps median_us p99_us errors".
 *   load rate PROXY|- TARGET CONCURRENCY SECONDS RATE
 *       the same at a fixed total RATE of requests/s, spread over the connections on a fixed
 *       schedule; a request's latency counts from the time it was due, so a proxy that falls
 *       behind shows it (no coordinated omission). Same output.
 *   load hold PROXY TARGET N
 *       opens N CONNECT tunnels through PROXY to TARGET (with LOAD_PROXY_AUTH as above),
 *       prints "ready OPENED", waits for stdin to close, then sends one GET /small through
 *       every open tunnel and prints "alive ANSWERED". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *proxy, *target;
static double seconds;
static double interval; /* per connection, seconds; 0 = back to back */
static int nconc;
#define MAXS 4000000
static long *samples;
static long nsamples;
static long errors;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static int dial(const char *hostport) {
  char host[64];
  const char *colon = strrchr(hostport, ':');
  if (!colon || colon - hostport >= (long)sizeof host) return -1;
  memcpy(host, hostport, (size_t)(colon - hostport));
  host[colon - hostport] = 0;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(colon + 1))};
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) return -1;
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  if (connect(s, (struct sockaddr *)&a, sizeof a)) { close(s); return -1; }
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Reads one response with a Content-Length body; 0 on success. */
static int read_response(int s, char *buf, size_t cap) {
  size_t len = 0;
  char *end;
  while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
    if (len == cap) return -1;
    ssize_t r = read(s, buf + len, cap - len);
    if (r <= 0) return -1;
    len += (size_t)r;
  }
  if (strncmp(buf, "HTTP/1.1 200", 12) != 0) return -1;
  *end = 0; /* the head as a string */
  char *cl = strcasestr(buf, "content-length:");
  long body = cl ? atol(cl + 15) : 0;
  long have = (long)len - (long)(end + 4 - buf);
  while (have < body) {
    ssize_t r = read(s, buf, cap);
    if (r <= 0) return -1;
    have += r;
  }
  return have == body ? 0 : -1;
}

static void *worker(void *arg) {
  char req[2048], buf[65536];
  const char *auth = getenv("LOAD_PROXY_AUTH");
  char authh[1024] = "";
  if (proxy && auth && *auth) snprintf(authh, sizeof authh, "Proxy-Authorization: Basic %s\r\n", auth);
  int n = proxy ? snprintf(req, sizeof req, "GET http://%s/small HTTP/1.1\r\nHost: %s\r\n%s\r\n", target, target, authh)
                : snprintf(req, sizeof req, "GET /small HTTP/1.1\r\nHost: %s\r\n\r\n", target);
  int s = dial(proxy ? proxy : target);
  if (s < 0) { __sync_fetch_and_add(&errors, 1); return NULL; }
  long local[65536];
  int nl = 0;
  double start = now(), stop = start + seconds;
  /* Connections start spread over one interval, so the total rate is even. */
  double due = start + interval * (double)(long)arg / nconc;
  for (;;) {
    double t0 = now();
    if (interval > 0) {
      if (due >= stop) break;
      if (due > t0) {
        struct timespec ts = {.tv_sec = (time_t)(due - t0), .tv_nsec = (long)((due - t0 - (double)(time_t)(due - t0)) * 1e9)};
        nanosleep(&ts, NULL);
      }
      t0 = due;
      due += interval;
    }
    if (t0 >= stop) break;
    if (write(s, req, (size_t)n) != n || read_response(s, buf, sizeof buf)) {
      __sync_fetch_and_add(&errors, 1);
      close(s);
      s = dial(proxy ? proxy : target);
      if (s < 0) break;
      continue;
    }
    local[nl++] = (long)((now() - t0) * 1e6);
    if (nl == 65536) {
      pthread_mutex_lock(&mu);
      for (int i = 0; i < nl && nsamples < MAXS; i++) samples[nsamples++] = local[i];
      pthread_mutex_unlock(&mu);
      nl = 0;
    }
  }
  pthread_mutex_lock(&mu);
  for (int i = 0; i < nl && nsamples < MAXS; i++) samples[nsamples++] = local[i];
  pthread_mutex_unlock(&mu);
  if (s >= 0) close(s);
  return NULL;
}

static int cmp(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int rated = argc == 7 && strcmp(argv[1], "rate") == 0;
  if ((argc == 6 && strcmp(argv[1], "rps") == 0) || rated) {
    proxy = strcmp(argv[2], "-") ? argv[2] : NULL;
    target = argv[3];
    int conc = atoi(argv[4]);
    seconds = atof(argv[5]);
    nconc = conc;
    if (rated) interval = (double)conc / atof(argv[6]);
    samples = malloc(sizeof(long) * MAXS);
    pthread_t *t = calloc((size_t)conc, sizeof *t);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    double t0 = now();
    for (int i = 0; i < conc; i++) pthread_create(&t[i], &attr, worker, (void *)(long)i);
    for (int i = 0; i < conc; i++) pthread_join(t[i], NULL);
    double el = now() - t0;
    qsort(samples, (size_t)nsamples, sizeof(long), cmp);
    long med = nsamples ? samples[nsamples / 2] : 0, p99 = nsamples ? samples[nsamples * 99 / 100] : 0;
    printf("%ld %.0f %ld %ld %ld\n", nsamples, (double)nsamples / el, med, p99, errors);
    return 0;
  }
  if (argc == 5 && strcmp(argv[1], "hold") == 0) {
    int n = atoi(argv[4]), ok = 0;
    int *held = calloc((size_t)n, sizeof *held);
    char req[1024], buf[65536], authh[512] = "";
    const char *auth = getenv("LOAD_PROXY_AUTH");
    if (auth && *auth) snprintf(authh, sizeof authh, "Proxy-Authorization: Basic %s\r\n", auth);
    int m = snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", argv[3], argv[3], authh);
    for (int i = 0; i < n; i++) {
      int s = dial(argv[2]);
      if (s < 0) continue;
      if (write(s, req, (size_t)m) != m) continue;
      ssize_t r = read(s, buf, sizeof buf - 1);
      if (r > 12 && strncmp(buf, "HTTP/1.1 200", 12) == 0) held[ok++] = s;
    }
    printf("ready %d\n", ok);
    fflush(stdout);
    while (read(0, buf, sizeof buf) > 0) {}
    char get[512];
    int g = snprintf(get, sizeof get, "GET /small HTTP/1.1\r\nHost: %s\r\n\r\n", argv[3]), alive = 0;
    struct timeval tv = {.tv_sec = 5};
    for (int i = 0; i < ok; i++) {
      setsockopt(held[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (write(held[i], get, (size_t)g) == g && read_response(held[i], buf, sizeof buf) == 0) alive++;
    }
    printf("alive %d\n", alive);
    fflush(stdout);
    return 0;
  }
  fprintf(stderr, "usage: load rps PROXY|- TARGET CONCURRENCY SECONDS | load rate PROXY|- TARGET CONCURRENCY SECONDS RATE | load hold PROXY TARGET N\n");
  return 2;
}
