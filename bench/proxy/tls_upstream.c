/* Benchmark upstream for bench/tls.sh: bench/proxy/upstream.c over TLS (OpenSSL), a loopback
 * HTTPS/1.1 server, one thread per connection, keep-alive unless the request says
 * "Connection: close". GET /big answers BIG bytes; anything else answers "ok".
 * Usage: tls_upstream PORT BIG_BYTES CERT.pem KEY.pem   (on 127.0.0.1; prints "ready") */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static long long big;
static char chunk[1 << 20];
static SSL_CTX *ctx;

static int send_all(SSL *ssl, const char *p, size_t n) {
  while (n > 0) {
    int w = SSL_write(ssl, p, n > (1 << 30) ? (1 << 30) : (int)n);
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void *serve(void *arg) {
  int fd = (int)(long)arg;
  SSL *ssl = SSL_new(ctx);
  char buf[16384];
  size_t len = 0;
  if (!ssl) goto out;
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) <= 0) goto out;
  for (;;) {
    char *end;
    while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
      if (len == sizeof buf) goto out;
      int r = SSL_read(ssl, buf + len, (int)(sizeof buf - len));
      if (r <= 0) goto out;
      len += (size_t)r;
    }
    size_t head_len = (size_t)(end - buf);
    int is_big = len > 8 && (strncmp(buf, "GET /big ", 9) == 0 || memmem(buf, head_len, "/big HTTP", 9));
    int close_after = memmem(buf, head_len, "onnection: close", 16) != NULL ||
                      memmem(buf, head_len, "onnection: Close", 16) != NULL;
    size_t used = head_len + 4;
    memmove(buf, buf + used, len - used);
    len -= used;
    char head[160];
    const char *conn = close_after ? "Connection: close\r\n" : "";
    if (is_big) {
      int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\n%sContent-Length: %lld\r\n\r\n", conn, big);
      if (send_all(ssl, head, (size_t)n)) goto out;
      long long left = big;
      while (left > 0) {
        size_t n2 = left > (long long)sizeof chunk ? sizeof chunk : (size_t)left;
        if (send_all(ssl, chunk, n2)) goto out;
        left -= (long long)n2;
      }
    } else {
      int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\n%sContent-Length: 2\r\n\r\nok", conn);
      if (send_all(ssl, head, (size_t)n)) goto out;
    }
    if (close_after) break;
  }
  SSL_shutdown(ssl);
out:
  if (ssl) SSL_free(ssl);
  close(fd);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: tls_upstream PORT BIG_BYTES CERT KEY\n"); return 2; }
  signal(SIGPIPE, SIG_IGN);
  big = atoll(argv[2]);
  memset(chunk, 'x', sizeof chunk);
  ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096)) { perror("tls_upstream: bind"); return 1; }
  printf("ready\n");
  fflush(stdout);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t t;
    if (pthread_create(&t, &attr, serve, (void *)(long)c)) close(c);
  }
}
