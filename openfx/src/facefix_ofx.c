/* FaceFix OpenFX image effect: a thin plug-in that hands frames to the warm FaceFix bridge (`facefix serve`).
 *
 * Convention: OpenFX images are addressed bottom-up (row y of an image is data + (y - bounds.y1) * rowBytes,
 * rowBytes possibly negative); the frames the bridge sees are packed top-down (row 0 = the top of the source's
 * region of definition), as FaceTracks' top-left origin wants. Frames cross in POSIX shared memory segments
 * this plug-in creates (names facefix-ofx-PID-N-...); requests are HTTP/1.1 + JSON on 127.0.0.1 with the token
 * from the bridge's connection file. No image math here: rows are copied, nothing else.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <limits.h>
#include <locale.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#ifdef __APPLE__
#include <xlocale.h>
#endif

#include "ofxCore.h"
#include "ofxImageEffect.h"
#include "ofxMemory.h"
#include "ofxMessage.h"
#include "ofxMultiThread.h"
#include "ofxParam.h"
#include "ofxProperty.h"

#include "facefix_params.h"

#ifndef MSG_NOSIGNAL /* macOS: SO_NOSIGPIPE on the socket instead */
#define MSG_NOSIGNAL 0
#endif
#ifndef SOCK_CLOEXEC
#define SOCK_CLOEXEC 0
#endif
#ifndef SOCK_NONBLOCK /* macOS: O_NONBLOCK set with fcntl after socket() */
#define SOCK_NONBLOCK 0
#define FACEFIX_FCNTL_NONBLOCK 1
#endif

#define PLUGIN_ID "org.facefix.FaceFix"
#define MASK_CLIP "Mask"
#define TRACKS_PARAM "tracks"
#define ANALYSE_PARAM "analyse"
#define MAX_WINDOW 64            /* frames one render hands over at most (the bridge's limit) */
#define REQUEST_TIMEOUT_S 600    /* seconds one bridge request may take, start to end; FACEFIX_OFX_TIMEOUT overrides */
#define MAX_ANSWER (64u << 20)   /* bytes of an answer's body: the face tracks of a long shot fit, a runaway does not */
#define MAX_ANSWER_HEAD (64u << 10) /* bytes of an answer's status line and headers */
#define MAX_SIDE 32768           /* pixels a side of a frame (the bridge's limit) */
#define MAX_EDGE 1073741824.0    /* |pixel coordinate| a host may use: edges and their differences fit an int */
#define MAX_FRAME 1000000000.0   /* |frame number|: beyond it a host's time is no frame (and frame +- window fits) */
#define MAX_CLIP 1000000         /* frames one analysis takes (the bridge's limit) */

static OfxHost *g_host;
static const OfxPropertySuiteV1 *g_prop;
static const OfxParameterSuiteV1 *g_param;
static const OfxImageEffectSuiteV1 *g_effect;
static const OfxMemorySuiteV1 *g_memory;
static const OfxMultiThreadSuiteV1 *g_thread;
static const OfxMessageSuiteV1 *g_message;
static unsigned g_segment_counter;

/* ------------------------------------------------------------------------------------------ numbers */

/* Numbers go to the bridge as JSON, come from the environment and appear in messages in C notation ("0.25"),
 * whatever the host's locale: Qt hosts (Nuke, Resolve) set the process's LC_NUMERIC from the user's, and de_DE's
 * would write "0,25". Every float this plug-in formats or parses goes through c_vsnprintf or c_strtod, which put
 * the calling thread alone in the C locale (uselocale) for that call only: the host's other threads, and its own
 * code on this one, keep theirs. (Whole numbers do not depend on the locale: printed without the ' flag, read with
 * strtol or sscanf's %d and %x, as everywhere here.) */
static locale_t g_c_locale;  /* made at load */

static int c_vsnprintf(char *out, size_t size, const char *fmt, va_list ap) {
    locale_t previous = g_c_locale ? uselocale(g_c_locale) : (locale_t)0;
    int n = vsnprintf(out, size, fmt, ap);
    if (previous) uselocale(previous);
    return n;
}

static int c_snprintf(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int c_snprintf(char *out, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = c_vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return n;
}

static double c_strtod(const char *text, char **stop) {
    locale_t previous = g_c_locale ? uselocale(g_c_locale) : (locale_t)0;
    double value = strtod(text, stop);
    int saved = errno;  /* strtod's range error, whatever restoring the locale does */
    if (previous) uselocale(previous);
    errno = saved;
    return value;
}

/* ------------------------------------------------------------------------------------------ strings */

typedef struct buf { char *data; size_t len, cap; int failed; } buf;

static void buf_add(buf *b, const char *text, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) { b->failed = 1; return; }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, text, n);
    b->len += n;
    b->data[b->len] = 0;
}

static void buf_str(buf *b, const char *text) { buf_add(b, text, strlen(text)); }

static void buf_fmt(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_fmt(buf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = c_vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) { b->failed = 1; return; }
    if ((size_t)n < sizeof small) { buf_add(b, small, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { b->failed = 1; return; }
    va_start(ap, fmt);
    c_vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_add(b, big, (size_t)n);
    free(big);
}

static void buf_json_string(buf *b, const char *text) {
    buf_str(b, "\"");
    for (const unsigned char *p = (const unsigned char *)text; p && *p; p++) {
        if (*p == '"' || *p == '\\') { char e[2] = {'\\', (char)*p}; buf_add(b, e, 2); }
        else if (*p < 0x20) buf_fmt(b, "\\u%04x", *p);
        else buf_add(b, (const char *)p, 1);
    }
    buf_str(b, "\"");
}

static void buf_free(buf *b) { free(b->data); memset(b, 0, sizeof *b); }

/* 1 if the request body `b` was built whole; 0 and a reason if memory ran out on the way. */
static int request_ready(const buf *b, char *err, size_t errsize) {
    if (!b->failed) return 1;
    snprintf(err, errsize, "out of memory for a request to the bridge");
    return 0;
}

/* The end of the JSON value starting at p (an object, array, string or scalar), or NULL. */
static const char *json_skip(const char *p) {
    if (*p == '"') {
        for (p++; *p; p++) {
            if (*p == '\\' && p[1]) p++;
            else if (*p == '"') return p + 1;
        }
        return NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; *p; p++) {
            if (*p == '"') { p = json_skip(p); if (!p) return NULL; p--; }
            else if (*p == '{' || *p == '[') depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0) return p + 1;
        }
        return NULL;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']') p++;
    return p;
}

/* The value of top-level key `key` in the JSON object `json`: its span [*start, *end), 1 if found. */
static int json_find(const char *json, const char *key, const char **start, const char **end) {
    const char *p = json;
    if (!p) return 0;
    while (*p && *p != '{') p++;
    if (!*p) return 0;
    p++;
    for (;;) {
        while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t' || *p == ',') p++;
        if (*p != '"') return 0;
        const char *k = p + 1, *kend = json_skip(p);
        if (!kend) return 0;
        size_t klen = (size_t)(kend - 1 - k);
        p = kend;
        while (*p == ' ' || *p == ':') p++;
        const char *vend = json_skip(p);
        if (!vend) return 0;
        if (klen == strlen(key) && memcmp(k, key, klen) == 0) { *start = p; *end = vend; return 1; }
        p = vend;
    }
}

/* A JSON string value of `key` unescaped into out (\uXXXX outside ASCII becomes '?'); 1 if found. */
static int json_string(const char *json, const char *key, char *out, size_t size) {
    const char *s, *e;
    if (!json_find(json, key, &s, &e) || *s != '"' || size == 0) return 0;
    size_t n = 0;
    for (const char *p = s + 1; p < e - 1 && n + 1 < size; p++) {
        char c = *p;
        if (c == '\\' && p + 1 < e - 1) {
            c = *++p;
            if (c == 'n' || c == 't' || c == 'r') c = ' ';
            else if (c == 'u') {
                unsigned v = 0;
                if (p + 4 < e - 1 && sscanf(p + 1, "%4x", &v) == 1) p += 4;
                c = v < 0x80 ? (char)v : '?';
            }
        }
        out[n++] = c;
    }
    out[n] = 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------ the bridge */

typedef struct bridge { char host[64]; int port; char token[256]; char url[128]; } bridge;

/* The connection file's path into out; 0 when it does not fit. */
static int connection_path(char *out, size_t size) {
    const char *own = getenv("FACEFIX_CACHE"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (own && *own) n = snprintf(out, size, "%s/serve.json", own);
    else if (xdg && *xdg) n = snprintf(out, size, "%s/facefix/serve.json", xdg);
    else n = snprintf(out, size, "%s/.cache/facefix/serve.json", home ? home : "");
    return n >= 0 && (size_t)n < size;
}

/* The bridge named by the connection file; 0 and a one-line reason in err if there is none. */
static int find_bridge(bridge *br, char *err, size_t errsize) {
    char path[768];
    if (!connection_path(path, sizeof path)) {
        snprintf(err, errsize, "the path of the FaceFix bridge's connection file (FACEFIX_CACHE, XDG_CACHE_HOME or "
                 "HOME) is over %zu characters", sizeof path - 1);
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errsize, "no FaceFix bridge is running (no %s): start it with `facefix serve`", path);
        return 0;
    }
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    memset(br, 0, sizeof *br);
    int at = -1;  /* where the port begins */
    if (!json_string(text, "url", br->url, sizeof br->url) || !json_string(text, "token", br->token, sizeof br->token)
        || sscanf(br->url, "http://%63[^:/]:%n", br->host, &at) != 1 || at < 0) {
        snprintf(err, errsize, "the FaceFix bridge's connection file %s is unreadable: restart `facefix serve`", path);
        return 0;
    }
    const char *digits = br->url + at;
    char *stop = NULL;
    errno = 0;
    long number = *digits >= '0' && *digits <= '9' ? strtol(digits, &stop, 10) : 0;
    if (errno || number < 1 || number > 65535 || (*stop && *stop != '/')) {
        snprintf(err, errsize, "the FaceFix bridge's connection file %s names no usable port (%.40s; 1 to 65535): "
                 "restart `facefix serve`", path, br->url);
        return 0;
    }
    br->port = (int)number;
    /* the token goes into a header line: printable ASCII only (the bridge's are URL-safe base64) */
    for (const char *c = br->token; *c; c++)
        if (*c <= ' ' || *c > '~') {
            snprintf(err, errsize, "the FaceFix bridge's connection file %s has an unusable token: restart "
                     "`facefix serve`", path);
            return 0;
        }
    if (!br->token[0]) {
        snprintf(err, errsize, "the FaceFix bridge's connection file %s has an empty token: restart `facefix serve`",
                 path);
        return 0;
    }
    return 1;
}

/* The one deadline of every request, in ms from now: REQUEST_TIMEOUT_S or FACEFIX_OFX_TIMEOUT (seconds). */
static int request_timeout_ms(long long *ms, char *err, size_t errsize) {
    const char *text = getenv("FACEFIX_OFX_TIMEOUT");
    *ms = REQUEST_TIMEOUT_S * 1000LL;
    if (!text || !*text) return 1;
    char *stop = NULL;
    errno = 0;
    double seconds = c_strtod(text, &stop);
    if (stop == text || *stop || errno || !(seconds > 0 && seconds <= 86400)) {
        snprintf(err, errsize, "FACEFIX_OFX_TIMEOUT=%.40s is not a number of seconds (more than 0, at most 86400)",
                 text);
        return 0;
    }
    *ms = (long long)ceil(seconds * 1000);
    return 1;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until `fd` is ready for `events` or the clock passes `deadline`: 1 ready, 0 out of time, -1 error (errno). */
static int wait_until(int fd, short events, long long deadline) {
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) return 0;
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0) return 1;  /* POLLERR / POLLHUP too: the next call says what happened */
        if (n < 0 && errno != EINTR) return -1;
    }
}

/* Whether the `n` bytes at `a` and `b` are equal but for the case of ASCII letters. (strncasecmp follows the host's
 * LC_CTYPE: in tr_TR.ISO-8859-9 'I' lower-cases to a dotless i, and "TRANSFER-ENCODING" would not match.) */
static int ascii_equal_ignoring_case(const char *a, const char *b, size_t n) {
    for (size_t k = 0; k < n; k++) {
        unsigned char x = (unsigned char)a[k], y = (unsigned char)b[k];
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return 1;
}

/* The value of header `name` in the header lines [head, end) (after the status line), or NULL; *count: how many. */
static const char *header_value(const char *head, const char *end, const char *name, int *count) {
    const char *found = NULL;
    size_t n = strlen(name);
    *count = 0;
    for (const char *line = head; line < end;) {
        const char *next = memchr(line, '\n', (size_t)(end - line));
        next = next ? next + 1 : end;
        if ((size_t)(next - line) > n && ascii_equal_ignoring_case(line, name, n) && line[n] == ':') {
            if (!found) found = line + n + 1;
            (*count)++;
        }
        line = next;
    }
    return found;
}

/* A Content-Length value: 1 and its number (at most MAX_ANSWER; *over when it names more), 0 if it is no number. */
static int content_length(const char *value, size_t *length, int *over) {
    while (*value == ' ' || *value == '\t') value++;
    size_t n = 0;
    const char *p = value;
    *over = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > MAX_ANSWER) *over = 1;  /* keep reading the digits, not the number: no overflow */
        else n = n * 10 + (size_t)(*p - '0');
    }
    while (*p == ' ' || *p == '\t') p++;
    if (p == value || (*p != '\r' && *p != '\n')) return 0;
    if (n > MAX_ANSWER) *over = 1;
    *length = n;
    return 1;
}

/* One HTTP/1.1 request; returns the status (0 when the bridge cannot be reached or its answer is unusable, err
 * says why) and the body in `answer`. The whole exchange, connect to last byte, ends by one deadline (a bridge that
 * trickles bytes cannot hold a render thread); the answer must name its Content-Length, at most MAX_ANSWER bytes,
 * and bring exactly that many. */
static int http_request(const bridge *br, const char *method, const char *path, const buf *body, buf *answer,
                        char *err, size_t errsize) {
    long long timeout_ms;
    if (!request_timeout_ms(&timeout_ms, err, errsize)) return 0;
    long long deadline = now_ms() + timeout_ms;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)br->port);
    if (inet_pton(AF_INET, strcmp(br->host, "localhost") == 0 ? "127.0.0.1" : br->host, &addr.sin_addr) != 1) {
        snprintf(err, errsize, "the FaceFix bridge's address %s is not a local IPv4 address", br->url);
        return 0;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) { snprintf(err, errsize, "cannot open a socket: %s", strerror(errno)); return 0; }
#ifdef FACEFIX_FCNTL_NONBLOCK
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
#ifdef SO_NOSIGPIPE
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on);
#endif
    int failure = 0;  /* errno of a failed connect */
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        failure = errno;
        if (failure == EINPROGRESS || failure == EINTR) {
            int ready = wait_until(fd, POLLOUT, deadline);
            socklen_t len = sizeof failure;
            if (ready == 0) failure = ETIMEDOUT;
            else if (ready < 0) failure = errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &len) != 0) failure = errno;
        }
    }
    if (failure) {
        snprintf(err, errsize, "cannot reach the FaceFix bridge at %s (%s): start it with `facefix serve`", br->url,
                 strerror(failure));
        close(fd);
        return 0;
    }
    buf head = {0}, raw = {0};
    size_t body_len = body ? body->len : 0;
    buf_fmt(&head, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\nAccept: application/json\r\n"
            "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
            method, path, br->host, br->port, br->token, body_len);
    const char *why = head.failed ? "out of memory" : NULL;  /* set: the exchange failed, and why */
    int late = 0;  /* the deadline passed */
    for (int part = 0; !why && part < 2; part++) {
        const char *p = part == 0 ? head.data : (body ? body->data : NULL);
        size_t left = part == 0 ? head.len : body_len;
        while (!why && p && left > 0) {
            if (now_ms() >= deadline) { late = 1; why = ""; break; }  /* a bridge that reads, but slowly */
            ssize_t sent = send(fd, p, left, MSG_NOSIGNAL);
            if (sent > 0) { p += sent; left -= (size_t)sent; continue; }
            if (sent < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) { why = strerror(errno); break; }
            int ready = wait_until(fd, POLLOUT, deadline);
            if (ready <= 0) { late = ready == 0; why = late ? "" : strerror(errno); }
        }
    }
    buf_free(&head);
    char chunk[8192];
    size_t head_len = 0, length = 0;  /* once the headers are in: their bytes (with the blank line), the body's */
    int status = 0;
    for (;;) {
        if (!why && now_ms() >= deadline) { late = 1; why = ""; }  /* a bridge that writes, but slowly */
        if (why) break;
        ssize_t got = recv(fd, chunk, sizeof chunk, 0);
        if (got < 0) {
            if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) { why = strerror(errno); break; }
            int ready = wait_until(fd, POLLIN, deadline);
            if (ready <= 0) { late = ready == 0; why = late ? "" : strerror(errno); }
            continue;
        }
        if (got == 0) {  /* the bridge closed the connection */
            if (!head_len) why = raw.len ? "its answer is not HTTP" : "it closed the connection without an answer";
            else if (raw.len - head_len < length) why = "its answer was cut short of its Content-Length";
            break;
        }
        buf_add(&raw, chunk, (size_t)got);
        if (raw.failed) { why = "out of memory"; break; }
        if (!head_len) {
            const char *split = strstr(raw.data, "\r\n\r\n");
            if (!split) {
                if (raw.len > MAX_ANSWER_HEAD) why = "its answer's headers are over 64 KiB";
                continue;
            }
            head_len = (size_t)(split + 4 - raw.data);
            int count = 0, encodings = 0, over = 0;
            const char *line_end = memchr(raw.data, '\n', head_len);
            const char *value = header_value(line_end + 1, split + 2, "Content-Length", &count);
            if (sscanf(raw.data, "HTTP/1.%*d %d", &status) != 1 || status < 100 || status > 599)
                why = "its answer is not HTTP";
            else if (header_value(line_end + 1, split + 2, "Transfer-Encoding", &encodings))
                why = "its answer has a Transfer-Encoding";
            else if (!value) why = "its answer has no Content-Length";
            else if (count > 1 || !content_length(value, &length, &over)) why = "its answer's Content-Length is unusable";
            else if (over) why = "its answer is larger than 64 MiB";
            if (why) break;
        }
        if (raw.len - head_len > length) { why = "its answer is longer than its Content-Length"; break; }
        if (raw.len - head_len == length) break;  /* all of it: no need to wait for the bridge to close */
    }
    close(fd);
    if (why) {
        if (late)
            c_snprintf(err, errsize, "the FaceFix bridge at %s did not answer within %g s (FACEFIX_OFX_TIMEOUT sets "
                       "the limit)", br->url, (double)timeout_ms / 1000);
        else
            snprintf(err, errsize, "the FaceFix bridge at %s did not answer usably (%s)", br->url, why);
        buf_free(&raw);
        return 0;
    }
    buf_add(answer, raw.data + head_len, length);  /* never NULL on success, even for an empty body */
    buf_free(&raw);
    if (answer->failed) { snprintf(err, errsize, "out of memory for the FaceFix bridge's answer"); return 0; }
    return status;
}

/* A request whose answer must be 2xx: 1, or 0 with the bridge's one-line error in err. */
static int call_bridge(const char *method, const char *path, const buf *body, buf *answer, char *err,
                       size_t errsize) {
    bridge br;
    if (!find_bridge(&br, err, errsize)) return 0;
    int status = http_request(&br, method, path, body, answer, err, errsize);
    if (status == 0) return 0;
    if (status < 200 || status >= 300) {
        if (!answer->data || !json_string(answer->data, "error", err, errsize))
            snprintf(err, errsize, "the FaceFix bridge answered HTTP %d", status);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ shared memory */

typedef struct segment { char name[96]; unsigned char *data; size_t size; } segment;

#ifdef __linux__
/* What glibc's shm_open does, without its symbol: glibc 2.34 moved shm_open into libc under a new version, so a
 * bundle linking it would not load in hosts on older systems (Resolve and Nuke run on EL8, glibc 2.28). */
static int segment_open(const char *name, int flags) {
    char path[128];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    return open(path, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
}

static void segment_unlink(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    unlink(path);
}
#else
static int segment_open(const char *name, int flags) { return shm_open(name, flags, 0600); }
static void segment_unlink(const char *name) { shm_unlink(name); }
#endif

/* A segment of at least `size` bytes (an existing one reused when big enough). */
static int segment_reserve(segment *s, const char *role, size_t size, char *err, size_t errsize) {
    if (s->data && s->size >= size) return 1;
    if (s->data) { munmap(s->data, s->size); segment_unlink(s->name); s->data = NULL; }
    snprintf(s->name, sizeof s->name, "/facefix-ofx-%d-%u-%s", (int)getpid(),
             __atomic_add_fetch(&g_segment_counter, 1, __ATOMIC_SEQ_CST), role);
    int fd = segment_open(s->name, O_RDWR | O_CREAT | O_EXCL);
    if (fd < 0) { snprintf(err, errsize, "cannot create shared memory %s: %s", s->name, strerror(errno)); return 0; }
    if (size > (size_t)INT64_MAX || ftruncate(fd, (off_t)size) != 0) {
        snprintf(err, errsize, "cannot size shared memory %s to %zu bytes: %s", s->name, size, strerror(errno));
        close(fd);
        segment_unlink(s->name);
        return 0;
    }
#ifdef __linux__
    /* A mapping of more than /dev/shm holds would take the host down (SIGBUS) at the first write past its end:
     * refuse what is plainly too big, then reserve every page now, so a full /dev/shm is an error here instead. */
    struct statvfs fs;
    int failure = fstatvfs(fd, &fs) == 0 && (double)fs.f_bavail * (double)fs.f_frsize < (double)size
                  ? ENOSPC : posix_fallocate(fd, 0, (off_t)size);
    if (failure) {
        c_snprintf(err, errsize, "cannot reserve %.0f MiB of shared memory for %s (%s): free some or enlarge /dev/shm",
                   (double)size / 1048576.0, s->name, strerror(failure));
        close(fd);
        segment_unlink(s->name);
        return 0;
    }
#endif
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errsize, "cannot map shared memory %s: %s", s->name, strerror(errno));
        segment_unlink(s->name);
        return 0;
    }
    s->data = p;
    s->size = size;
    return 1;
}

static void segment_release(segment *s) {
    if (s->data) { munmap(s->data, s->size); segment_unlink(s->name); }
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------------------------------ instances */

typedef struct instance {
    OfxImageClipHandle source, output, mask;
    OfxParamHandle params[FF_N_PARAMS];
    OfxParamHandle tracks;
    OfxMutexHandle lock;  /* the segments: a render and an Analyse may overlap in some hosts */
    segment input, result, masks;
} instance;

static instance *instance_of(OfxImageEffectHandle effect) {
    OfxPropertySetHandle props;
    void *data = NULL;
    if (g_effect->getPropertySet(effect, &props) != kOfxStatOK) return NULL;
    g_prop->propGetPointer(props, kOfxPropInstanceData, 0, &data);
    return data;
}

static OfxStatus fail(OfxImageEffectHandle effect, const char *text) {
    if (g_message && g_message->message) g_message->message(effect, kOfxMessageError, "FaceFix.error", "FaceFix: %s", text);
    return kOfxStatFailed;
}

/* ------------------------------------------------------------------------------------------ describe */

static OfxStatus describe(OfxImageEffectHandle effect) {
    OfxPropertySetHandle props;
    if (g_effect->getPropertySet(effect, &props) != kOfxStatOK) return kOfxStatErrBadHandle;
    g_prop->propSetString(props, kOfxPropLabel, 0, "FaceFix");
    g_prop->propSetString(props, kOfxImageEffectPluginPropGrouping, 0, "FaceFix");
    g_prop->propSetString(props, kOfxPropPluginDescription, 0,
                          "Face restoration for video through the FaceFix bridge (facefix serve).");
    g_prop->propSetString(props, kOfxImageEffectPropSupportedContexts, 0, kOfxImageEffectContextFilter);
    g_prop->propSetString(props, kOfxImageEffectPropSupportedContexts, 1, kOfxImageEffectContextGeneral);
    g_prop->propSetString(props, kOfxImageEffectPropSupportedPixelDepths, 0, kOfxBitDepthFloat);
    g_prop->propSetString(props, kOfxImageEffectPropSupportedPixelDepths, 1, kOfxBitDepthShort);
    g_prop->propSetString(props, kOfxImageEffectPropSupportedPixelDepths, 2, kOfxBitDepthByte);
    g_prop->propSetInt(props, kOfxImageEffectPropSupportsMultipleClipDepths, 0, 0);
    g_prop->propSetInt(props, kOfxImageEffectPropSupportsTiles, 0, 0);
    g_prop->propSetInt(props, kOfxImageEffectPropSupportsMultiResolution, 0, 0);
    g_prop->propSetInt(props, kOfxImageEffectPropTemporalClipAccess, 0, 1);
    g_prop->propSetString(props, kOfxImageEffectPluginRenderThreadSafety, 0, kOfxImageEffectRenderInstanceSafe);
    g_prop->propSetInt(props, kOfxImageEffectPluginPropHostFrameThreading, 0, 0);
    return kOfxStatOK;
}

static void define_clip(OfxImageEffectHandle effect, const char *name, int optional, int is_mask) {
    OfxPropertySetHandle props;
    if (g_effect->clipDefine(effect, name, &props) != kOfxStatOK) return;
    int i = 0;
    if (is_mask) g_prop->propSetString(props, kOfxImageEffectPropSupportedComponents, i++, kOfxImageComponentAlpha);
    g_prop->propSetString(props, kOfxImageEffectPropSupportedComponents, i++, kOfxImageComponentRGBA);
    g_prop->propSetString(props, kOfxImageEffectPropSupportedComponents, i++, kOfxImageComponentRGB);
    g_prop->propSetInt(props, kOfxImageEffectPropTemporalClipAccess, 0, strcmp(name, "Output") != 0);
    g_prop->propSetInt(props, kOfxImageEffectPropSupportsTiles, 0, 0);
    if (optional) g_prop->propSetInt(props, kOfxImageClipPropOptional, 0, 1);
    if (is_mask) g_prop->propSetInt(props, kOfxImageClipPropIsMask, 0, 1);
}

static OfxStatus describe_in_context(OfxImageEffectHandle effect) {
    define_clip(effect, kOfxImageEffectSimpleSourceClipName, 0, 0);
    define_clip(effect, MASK_CLIP, 1, 1);
    define_clip(effect, kOfxImageEffectOutputClipName, 0, 0);
    OfxParamSetHandle set;
    if (g_effect->getParamSet(effect, &set) != kOfxStatOK) return kOfxStatErrBadHandle;
    OfxPropertySetHandle props;
    for (int g = 0; g < FF_N_GROUPS; g++) {
        char group[64];  /* groups share the parameters' names space: "faces" is a group and a control */
        snprintf(group, sizeof group, "group_%s", ff_groups[g]);
        if (g_param->paramDefine(set, kOfxParamTypeGroup, group, &props) != kOfxStatOK) return kOfxStatFailed;
        char label[64];
        snprintf(label, sizeof label, "%s", ff_groups[g]);
        label[0] = (char)(label[0] >= 'a' && label[0] <= 'z' ? label[0] - 32 : label[0]);
        g_prop->propSetString(props, kOfxPropLabel, 0, label);
    }
    for (int i = 0; i < FF_N_PARAMS; i++) {
        const ff_param *p = &ff_params[i];
        static const char *const types[] = {kOfxParamTypeDouble, kOfxParamTypeInteger, kOfxParamTypeBoolean,
                                            kOfxParamTypeChoice, kOfxParamTypeString};
        if (g_param->paramDefine(set, types[p->kind], p->name, &props) != kOfxStatOK) return kOfxStatFailed;
        g_prop->propSetString(props, kOfxPropLabel, 0, p->label);
        g_prop->propSetString(props, kOfxParamPropHint, 0, p->hint);
        g_prop->propSetString(props, kOfxParamPropScriptName, 0, p->name);
        char parent[64];
        snprintf(parent, sizeof parent, "group_%s", p->group);
        g_prop->propSetString(props, kOfxParamPropParent, 0, parent);
        g_prop->propSetInt(props, kOfxParamPropAnimates, 0, p->animates);
        switch (p->kind) {
        case FF_DOUBLE:
            g_prop->propSetDouble(props, kOfxParamPropDefault, 0, p->def);
            g_prop->propSetString(props, kOfxParamPropDoubleType, 0, kOfxParamDoubleTypePlain);
            if (p->has_min) { g_prop->propSetDouble(props, kOfxParamPropMin, 0, p->min);
                              g_prop->propSetDouble(props, kOfxParamPropDisplayMin, 0, p->min); }
            if (p->has_max) { g_prop->propSetDouble(props, kOfxParamPropMax, 0, p->max);
                              g_prop->propSetDouble(props, kOfxParamPropDisplayMax, 0, p->max); }
            break;
        case FF_INT:
            g_prop->propSetInt(props, kOfxParamPropDefault, 0, (int)p->def);
            if (p->has_min) { g_prop->propSetInt(props, kOfxParamPropMin, 0, (int)p->min);
                              g_prop->propSetInt(props, kOfxParamPropDisplayMin, 0, (int)p->min); }
            if (p->has_max) { g_prop->propSetInt(props, kOfxParamPropMax, 0, (int)p->max);
                              g_prop->propSetInt(props, kOfxParamPropDisplayMax, 0, (int)p->max); }
            break;
        case FF_BOOL:
            g_prop->propSetInt(props, kOfxParamPropDefault, 0, (int)p->def);
            break;
        case FF_CHOICE:
            for (int c = 0; c < p->n_choices; c++) g_prop->propSetString(props, kOfxParamPropChoiceOption, c, p->choice_labels[c]);
            g_prop->propSetInt(props, kOfxParamPropDefault, 0, (int)p->def);
            break;
        case FF_STRING:
            g_prop->propSetString(props, kOfxParamPropDefault, 0, p->def_string);
            g_prop->propSetString(props, kOfxParamPropStringMode, 0, kOfxParamStringIsSingleLine);
            break;
        }
    }
    if (g_param->paramDefine(set, kOfxParamTypePushButton, ANALYSE_PARAM, &props) != kOfxStatOK) return kOfxStatFailed;
    g_prop->propSetString(props, kOfxPropLabel, 0, "Analyse");
    g_prop->propSetString(props, kOfxParamPropHint, 0,
                          "Detect and track the faces of the whole Source clip through the FaceFix bridge.");
    if (g_param->paramDefine(set, kOfxParamTypeString, TRACKS_PARAM, &props) != kOfxStatOK) return kOfxStatFailed;
    g_prop->propSetString(props, kOfxPropLabel, 0, "Face tracks");
    g_prop->propSetString(props, kOfxParamPropDefault, 0, "");
    g_prop->propSetString(props, kOfxParamPropStringMode, 0, kOfxParamStringIsMultiLine);
    g_prop->propSetInt(props, kOfxParamPropSecret, 0, 1);
    g_prop->propSetInt(props, kOfxParamPropAnimates, 0, 0);
    g_prop->propSetInt(props, kOfxParamPropPersistant, 0, 1);
    return kOfxStatOK;
}

/* ------------------------------------------------------------------------------------------ instances */

static OfxStatus create_instance(OfxImageEffectHandle effect) {
    OfxPropertySetHandle props;
    OfxParamSetHandle set;
    if (g_effect->getPropertySet(effect, &props) != kOfxStatOK || g_effect->getParamSet(effect, &set) != kOfxStatOK)
        return kOfxStatErrBadHandle;
    instance *it = NULL;
    if (g_memory->memoryAlloc(effect, sizeof *it, (void **)&it) != kOfxStatOK || !it) return kOfxStatErrMemory;
    memset(it, 0, sizeof *it);
    g_effect->clipGetHandle(effect, kOfxImageEffectSimpleSourceClipName, &it->source, NULL);
    g_effect->clipGetHandle(effect, kOfxImageEffectOutputClipName, &it->output, NULL);
    if (g_effect->clipGetHandle(effect, MASK_CLIP, &it->mask, NULL) != kOfxStatOK) it->mask = NULL;
    for (int i = 0; i < FF_N_PARAMS; i++)
        if (g_param->paramGetHandle(set, ff_params[i].name, &it->params[i], NULL) != kOfxStatOK) it->params[i] = NULL;
    if (g_param->paramGetHandle(set, TRACKS_PARAM, &it->tracks, NULL) != kOfxStatOK) it->tracks = NULL;
    if (g_thread->mutexCreate(&it->lock, 0) != kOfxStatOK) it->lock = NULL;
    g_prop->propSetPointer(props, kOfxPropInstanceData, 0, it);
    return kOfxStatOK;
}

static OfxStatus destroy_instance(OfxImageEffectHandle effect) {
    instance *it = instance_of(effect);
    if (!it) return kOfxStatOK;
    segment_release(&it->input);
    segment_release(&it->result);
    segment_release(&it->masks);
    if (it->lock) g_thread->mutexDestroy(it->lock);
    OfxPropertySetHandle props;
    if (g_effect->getPropertySet(effect, &props) == kOfxStatOK) g_prop->propSetPointer(props, kOfxPropInstanceData, 0, NULL);
    g_memory->memoryFree(it);
    return kOfxStatOK;
}

/* ------------------------------------------------------------------------------------------ settings */

/* Control `i` at `time` as JSON; 0 and a reason when the host's value is no number (NaN or infinite). */
static int add_value(buf *b, const instance *it, int i, OfxTime time, char *err, size_t errsize) {
    const ff_param *p = &ff_params[i];
    OfxParamHandle h = it->params[i];
    double d = p->def;
    int n = (int)p->def;
    char *s = NULL;
    switch (p->kind) {
    case FF_DOUBLE:
        if (h) g_param->paramGetValueAtTime(h, time, &d);
        if (!isfinite(d)) {
            c_snprintf(err, errsize, "the host gave the control %s the value %g at time %g: not a number", p->name, d,
                       time);
            return 0;
        }
        buf_fmt(b, "%.17g", d);
        break;
    case FF_INT:
        if (h) g_param->paramGetValueAtTime(h, time, &n);
        buf_fmt(b, "%d", n);
        break;
    case FF_BOOL:
        if (h) g_param->paramGetValueAtTime(h, time, &n);
        buf_str(b, n ? "true" : "false");
        break;
    case FF_CHOICE:
        if (h) g_param->paramGetValueAtTime(h, time, &n);
        buf_str(b, p->choice_json[n >= 0 && n < p->n_choices ? n : (int)p->def]);
        break;
    case FF_STRING:
        if (h) g_param->paramGetValueAtTime(h, time, &s);
        buf_json_string(b, s ? s : p->def_string);
        break;
    }
    return 1;
}

/* "settings": the controls at `frames` (animatable ones as {"frame": value} keys, the others at `time`); 0 and a
 * reason when a value is unusable. */
static int add_settings(buf *b, const instance *it, OfxTime time, const int *frames, int count, char *err,
                        size_t errsize) {
    buf_str(b, "\"settings\": {");
    for (int i = 0; i < FF_N_PARAMS; i++) {
        buf_fmt(b, "%s\"%s\": ", i ? ", " : "", ff_params[i].name);
        if (ff_params[i].animates && count > 0) {
            buf_str(b, "{");
            for (int k = 0; k < count; k++) {
                buf_fmt(b, "%s\"%d\": ", k ? ", " : "", frames[k]);
                if (!add_value(b, it, i, (OfxTime)frames[k], err, errsize)) return 0;
            }
            buf_str(b, "}");
        } else if (!add_value(b, it, i, time, err, errsize)) {
            return 0;
        }
    }
    buf_str(b, "}");
    return 1;
}

/* ------------------------------------------------------------------------------------------ pixels */

typedef struct image {
    OfxPropertySetHandle handle;
    unsigned char *data;
    OfxRectI bounds;
    int row_bytes, channels, bytes_per_channel;
    char depth[40];
} image;

static int depth_bytes(const char *depth) {
    if (strcmp(depth, kOfxBitDepthFloat) == 0) return 4;
    if (strcmp(depth, kOfxBitDepthShort) == 0) return 2;
    if (strcmp(depth, kOfxBitDepthByte) == 0) return 1;
    return 0;
}

static const char *depth_name(int bytes) { return bytes == 4 ? "float32" : bytes == 2 ? "uint16" : "uint8"; }

static int components_channels(const char *components) {
    if (strcmp(components, kOfxImageComponentRGBA) == 0) return 4;
    if (strcmp(components, kOfxImageComponentRGB) == 0) return 3;
    if (strcmp(components, kOfxImageComponentAlpha) == 0) return 1;
    return 0;
}

/* Fetch `clip` at `time`; 0 with a one-line reason when the host gives no usable image. */
static int fetch(OfxImageClipHandle clip, OfxTime time, const char *what, image *im, char *err, size_t errsize) {
    memset(im, 0, sizeof *im);
    if (g_effect->clipGetImage(clip, time, NULL, &im->handle) != kOfxStatOK || !im->handle) {
        c_snprintf(err, errsize, "the host gave no %s image at frame %g", what, time);
        im->handle = NULL;
        return 0;
    }
    char *depth = NULL, *components = NULL;
    void *data = NULL;
    g_prop->propGetPointer(im->handle, kOfxImagePropData, 0, &data);
    g_prop->propGetIntN(im->handle, kOfxImagePropBounds, 4, &im->bounds.x1);
    g_prop->propGetInt(im->handle, kOfxImagePropRowBytes, 0, &im->row_bytes);
    g_prop->propGetString(im->handle, kOfxImageEffectPropPixelDepth, 0, &depth);
    g_prop->propGetString(im->handle, kOfxImageEffectPropComponents, 0, &components);
    im->data = data;
    snprintf(im->depth, sizeof im->depth, "%s", depth ? depth : "?");
    im->bytes_per_channel = depth ? depth_bytes(depth) : 0;
    im->channels = components ? components_channels(components) : 0;
    if (!im->data || im->bytes_per_channel == 0 || im->channels == 0) {
        c_snprintf(err, errsize, "%s image at frame %g: unsupported pixel depth %s or components %s (use 8-bit, "
                   "16-bit or float RGBA/RGB)", what, time, depth ? depth : "none", components ? components : "none");
        return 0;
    }
    const int edges[4] = {im->bounds.x1, im->bounds.y1, im->bounds.x2, im->bounds.y2};
    for (int k = 0; k < 4; k++)
        if (!(edges[k] >= -MAX_EDGE && edges[k] <= MAX_EDGE)) {
            c_snprintf(err, errsize, "%s image at frame %g: bounds out of range (%d %d %d %d)", what, time,
                       im->bounds.x1, im->bounds.y1, im->bounds.x2, im->bounds.y2);
            return 0;
        }
    long width = (long)im->bounds.x2 - im->bounds.x1;
    if (width < 0 || im->bounds.y2 < im->bounds.y1) {
        c_snprintf(err, errsize, "%s image at frame %g: its bounds are reversed (%d %d %d %d)", what, time,
                   im->bounds.x1, im->bounds.y1, im->bounds.x2, im->bounds.y2);
        return 0;
    }
    if (labs((long)im->row_bytes) < width * im->channels * im->bytes_per_channel) {
        c_snprintf(err, errsize, "%s image at frame %g: row bytes %d too small for its bounds", what, time,
                   im->row_bytes);
        return 0;
    }
    return 1;
}

static void release(image *im) {
    if (im->handle) g_effect->clipReleaseImage(im->handle);
    im->handle = NULL;
}

/* Copy `im` into the packed top-down frame `dst` covering `frame` (zero where the image does not reach). */
static void copy_in(const image *im, const OfxRectI *frame, unsigned char *dst) {
    size_t pixel = (size_t)im->channels * (size_t)im->bytes_per_channel;
    size_t width = (size_t)(frame->x2 - frame->x1);
    int x1 = im->bounds.x1 > frame->x1 ? im->bounds.x1 : frame->x1;
    int x2 = im->bounds.x2 < frame->x2 ? im->bounds.x2 : frame->x2;
    for (int y = frame->y1; y < frame->y2; y++) {
        unsigned char *row = dst + (size_t)(frame->y2 - 1 - y) * width * pixel;
        if (y < im->bounds.y1 || y >= im->bounds.y2 || x1 >= x2) { memset(row, 0, width * pixel); continue; }
        const unsigned char *src = im->data + (ptrdiff_t)(y - im->bounds.y1) * im->row_bytes
                                   + (ptrdiff_t)(x1 - im->bounds.x1) * (ptrdiff_t)pixel;
        memset(row, 0, (size_t)(x1 - frame->x1) * pixel);
        memcpy(row + (size_t)(x1 - frame->x1) * pixel, src, (size_t)(x2 - x1) * pixel);
        memset(row + (size_t)(x2 - frame->x1) * pixel, 0, (size_t)(frame->x2 - x2) * pixel);
    }
}

/* Copy the packed top-down frame `src` (covering `frame`) into `out` within `window`. */
static void copy_out(const unsigned char *src, const OfxRectI *frame, const image *out, const OfxRectI *window) {
    size_t pixel = (size_t)out->channels * (size_t)out->bytes_per_channel;
    size_t width = (size_t)(frame->x2 - frame->x1);
    OfxRectI r = *window;
    if (r.x1 < out->bounds.x1) r.x1 = out->bounds.x1;
    if (r.y1 < out->bounds.y1) r.y1 = out->bounds.y1;
    if (r.x2 > out->bounds.x2) r.x2 = out->bounds.x2;
    if (r.y2 > out->bounds.y2) r.y2 = out->bounds.y2;
    for (int y = r.y1; y < r.y2; y++) {
        unsigned char *row = out->data + (ptrdiff_t)(y - out->bounds.y1) * out->row_bytes;
        for (int x = r.x1; x < r.x2;) {  /* inside the frame: its pixels; outside: transparent black */
            if (y < frame->y1 || y >= frame->y2 || x < frame->x1 || x >= frame->x2) {
                int stop = (y < frame->y1 || y >= frame->y2 || x >= frame->x2) ? r.x2 : (frame->x1 < r.x2 ? frame->x1 : r.x2);
                memset(row + (size_t)(x - out->bounds.x1) * pixel, 0, (size_t)(stop - x) * pixel);
                x = stop;
                continue;
            }
            int stop = frame->x2 < r.x2 ? frame->x2 : r.x2;
            memcpy(row + (size_t)(x - out->bounds.x1) * pixel,
                   src + ((size_t)(frame->y2 - 1 - y) * width + (size_t)(x - frame->x1)) * pixel,
                   (size_t)(stop - x) * pixel);
            x = stop;
        }
    }
}

static int clip_connected(OfxImageClipHandle clip) {
    OfxPropertySetHandle props;
    int connected = 0;
    if (clip && g_effect->clipGetPropertySet(clip, &props) == kOfxStatOK)
        g_prop->propGetInt(props, kOfxImageClipPropConnected, 0, &connected);
    return connected;
}

/* The frame number of host time `t`: 1, or 0 when `t` is no frame (NaN, infinite, beyond MAX_FRAME). */
static int frame_of(double t, int *frame) {
    if (!(t >= -MAX_FRAME && t <= MAX_FRAME)) return 0;
    *frame = (int)floor(t + 0.5);
    return 1;
}

/* `time` as a frame number, or 0 and a one-line reason naming `action`. */
static int host_frame(OfxTime time, const char *action, int *frame, char *err, size_t errsize) {
    if (frame_of(time, frame)) return 1;
    c_snprintf(err, errsize, "the host asked to %s at time %g, which is no frame (at most %.0f either side of 0)",
               action, time, MAX_FRAME);
    return 0;
}

/* a * b into *out; 0 when it does not fit a size_t. */
static int size_product(size_t a, size_t b, size_t *out) {
    if (b && a > SIZE_MAX / b) return 0;
    *out = a * b;
    return 1;
}

/* Bytes of `count` packed frames covering `frame` of `channels` x `bytes`; 0 when that is beyond a size_t. */
static int frames_size(const OfxRectI *frame, int channels, int bytes, int count, size_t *out) {
    size_t pixels, frame_bytes;
    return size_product((size_t)(frame->x2 - frame->x1), (size_t)(frame->y2 - frame->y1), &pixels)
           && size_product(pixels, (size_t)channels * (size_t)bytes, &frame_bytes)
           && size_product(frame_bytes, (size_t)count, out);
}

/* The source's region of definition at `time` in whole pixels (at most MAX_SIDE a side), and its frame range. */
static int source_frame(const instance *it, OfxTime time, OfxRectI *frame, int *first, int *last, char *err,
                        size_t errsize) {
    OfxRectD rod;
    if (g_effect->clipGetRegionOfDefinition(it->source, time, &rod) != kOfxStatOK) {
        snprintf(err, errsize, "the host gave no region of definition for the Source clip");
        return 0;
    }
    const double edges[4] = {rod.x1, rod.y1, rod.x2, rod.y2};
    for (int k = 0; k < 4; k++)
        if (!(edges[k] >= -MAX_EDGE && edges[k] <= MAX_EDGE)) {
            c_snprintf(err, errsize, "the host gave the Source clip a region of definition out of range (%g %g %g %g)",
                       rod.x1, rod.y1, rod.x2, rod.y2);
            return 0;
        }
    frame->x1 = (int)floor(rod.x1); frame->y1 = (int)floor(rod.y1);
    frame->x2 = (int)ceil(rod.x2); frame->y2 = (int)ceil(rod.y2);
    if (frame->x2 <= frame->x1 || frame->y2 <= frame->y1) {
        c_snprintf(err, errsize, "the Source clip is empty at frame %g", time);
        return 0;
    }
    if (frame->x2 - frame->x1 > MAX_SIDE || frame->y2 - frame->y1 > MAX_SIDE) {
        snprintf(err, errsize, "the Source clip is %d x %d pixels; FaceFix takes at most %d a side",
                 frame->x2 - frame->x1, frame->y2 - frame->y1, MAX_SIDE);
        return 0;
    }
    double range[2] = {time, time};
    OfxPropertySetHandle props;
    if (g_effect->clipGetPropertySet(it->source, &props) == kOfxStatOK)
        g_prop->propGetDoubleN(props, kOfxImageEffectPropFrameRange, 2, range);
    if (!frame_of(range[0], first) || !frame_of(range[1], last) || *last < *first) {
        c_snprintf(err, errsize, "the host gave the Source clip a frame range out of range (%g to %g)", range[0],
                   range[1]);
        return 0;
    }
    return 1;
}

/* The Source clip's pixel depth (bytes a channel) and channels, as the host set them on the clip; 0 with a reason. */
static int source_format(const instance *it, int *channels, int *bytes, char *err, size_t errsize) {
    OfxPropertySetHandle props;
    char *depth = NULL, *components = NULL;
    if (g_effect->clipGetPropertySet(it->source, &props) == kOfxStatOK) {
        g_prop->propGetString(props, kOfxImageEffectPropPixelDepth, 0, &depth);
        g_prop->propGetString(props, kOfxImageEffectPropComponents, 0, &components);
    }
    *bytes = depth ? depth_bytes(depth) : 0;
    *channels = components ? components_channels(components) : 0;
    if (*bytes == 0 || *channels < 3) {
        snprintf(err, errsize, "the Source clip's pixel depth %s or components %s are not supported (use 8-bit, "
                 "16-bit or float RGBA/RGB)", depth ? depth : "none", components ? components : "none");
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ render */

static int frame_window(const instance *it, OfxTime time, int *preroll, int *lookahead, char *err, size_t errsize);

static OfxStatus render_locked(OfxImageEffectHandle effect, instance *it, OfxPropertySetHandle in, char *err,
                               size_t errsize) {
    OfxTime time = 0;
    OfxRectI window = {0, 0, 0, 0};
    double scale[2] = {1, 1};
    g_prop->propGetDouble(in, kOfxPropTime, 0, &time);
    if (g_prop->propGetIntN(in, kOfxImageEffectPropRenderWindow, 4, &window.x1) != kOfxStatOK) {
        snprintf(err, errsize, "the host gave no render window");
        return kOfxStatFailed;
    }
    g_prop->propGetDoubleN(in, kOfxImageEffectPropRenderScale, 2, scale);
    if (scale[0] != 1.0 || scale[1] != 1.0) {
        c_snprintf(err, errsize, "FaceFix renders at full resolution only (render scale %g x %g): turn proxy off",
                   scale[0], scale[1]);
        return kOfxStatFailed;
    }
    if (window.x2 < window.x1 || window.y2 < window.y1 || window.x1 < -MAX_EDGE || window.y1 < -MAX_EDGE
        || window.x2 > MAX_EDGE || window.y2 > MAX_EDGE) {
        snprintf(err, errsize, "the host gave a render window out of range (%d %d %d %d)", window.x1, window.y1,
                 window.x2, window.y2);
        return kOfxStatFailed;
    }
    OfxRectI frame;
    int first, last, now;
    if (!host_frame(time, "render", &now, err, errsize)) return kOfxStatFailed;
    if (!source_frame(it, time, &frame, &first, &last, err, errsize)) return kOfxStatFailed;
    char *tracks = NULL;
    if (it->tracks) g_param->paramGetValue(it->tracks, &tracks);
    if (!tracks || tracks[0] != '{') {
        snprintf(err, errsize, "no face tracks yet: press Analyse");
        return kOfxStatFailed;
    }
    int preroll, lookahead;
    if (!frame_window(it, time, &preroll, &lookahead, err, errsize)) return kOfxStatFailed;
    int frames[MAX_WINDOW], count = 0;
    for (int n = now - preroll; n <= now + lookahead && count < MAX_WINDOW; n++)
        if ((n >= first && n <= last) || n == now) frames[count++] = n;
    /* Pixels: every frame of the window into one segment; the mask's likewise. */
    image im;
    int channels, bytes;
    if (!source_format(it, &channels, &bytes, err, errsize)) return kOfxStatFailed;
    size_t frame_bytes, window_bytes;
    if (!frames_size(&frame, channels, bytes, 1, &frame_bytes)
        || !frames_size(&frame, channels, bytes, count, &window_bytes)) {
        snprintf(err, errsize, "the Source frames are too large to hand over");
        return kOfxStatFailed;
    }
    if (!segment_reserve(&it->input, "in", window_bytes, err, errsize)
        || !segment_reserve(&it->result, "out", frame_bytes, err, errsize))
        return kOfxStatFailed;
    for (int k = 0; k < count; k++) {
        if (g_effect->abort(effect)) return kOfxStatOK;
        if (!fetch(it->source, (OfxTime)frames[k], "Source", &im, err, errsize)) { release(&im); return kOfxStatFailed; }
        if (im.channels != channels || im.bytes_per_channel != bytes) {
            snprintf(err, errsize, "the Source image at frame %d is not in the clip's pixel depth and components", frames[k]);
            release(&im);
            return kOfxStatFailed;
        }
        copy_in(&im, &frame, it->input.data + frame_bytes * (size_t)k);
        release(&im);
    }
    int mask_channels = 0;
    if (it->mask && clip_connected(it->mask)) {
        for (int k = 0; k < count; k++) {
            if (!fetch(it->mask, (OfxTime)frames[k], "Mask", &im, err, errsize)) { release(&im); return kOfxStatFailed; }
            if (im.bytes_per_channel != bytes) {
                snprintf(err, errsize, "the Mask clip's pixel depth %s differs from the Source's", im.depth);
                release(&im);
                return kOfxStatFailed;
            }
            size_t mask_bytes, masks_bytes;
            if (!frames_size(&frame, im.channels, bytes, 1, &mask_bytes)
                || !frames_size(&frame, im.channels, bytes, count, &masks_bytes)) {
                snprintf(err, errsize, "the Mask frames are too large to hand over");
                release(&im);
                return kOfxStatFailed;
            }
            if (k == 0) {
                mask_channels = im.channels;
                if (!segment_reserve(&it->masks, "mask", masks_bytes, err, errsize)) {
                    release(&im);
                    return kOfxStatFailed;
                }
            } else if (im.channels != mask_channels) {
                snprintf(err, errsize, "the Mask clip changes components at frame %d", frames[k]);
                release(&im);
                return kOfxStatFailed;
            }
            copy_in(&im, &frame, it->masks.data + mask_bytes * (size_t)k);
            release(&im);
        }
    }
    /* The frame through the bridge. */
    buf body = {0};
    buf_fmt(&body, "{\"width\": %d, \"height\": %d, \"channels\": %d, \"depth\": \"%s\", \"input\": \"%s\", "
            "\"output\": \"%s\", \"render\": %d, \"frames\": [", frame.x2 - frame.x1, frame.y2 - frame.y1, channels,
            depth_name(bytes), it->input.name + 1, it->result.name + 1, now);
    for (int k = 0; k < count; k++) buf_fmt(&body, "%s%d", k ? ", " : "", frames[k]);
    buf_str(&body, "], ");
    if (mask_channels) buf_fmt(&body, "\"mask\": \"%s\", \"mask_channels\": %d, ", it->masks.name + 1, mask_channels);
    int ok = add_settings(&body, it, time, frames, count, err, errsize);
    buf_str(&body, ", \"tracks\": ");
    tracks = NULL;  /* fetched again: a host's string is only sure to live until the next parameter call */
    g_param->paramGetValue(it->tracks, &tracks);
    buf_str(&body, tracks && tracks[0] == '{' ? tracks : "{}");
    buf_str(&body, "}");
    buf answer = {0};
    ok = ok && request_ready(&body, err, errsize) && call_bridge("POST", "/frames", &body, &answer, err, errsize);
    buf_free(&body);
    buf_free(&answer);
    if (!ok) return kOfxStatFailed;
    if (!fetch(it->output, time, "Output", &im, err, errsize)) { release(&im); return kOfxStatFailed; }
    if (im.channels != channels || im.bytes_per_channel != bytes) {
        snprintf(err, errsize, "the Output image's depth or components differ from the Source's");
        release(&im);
        return kOfxStatFailed;
    }
    copy_out(it->result.data, &frame, &im, &window);
    release(&im);
    return kOfxStatOK;
}

static OfxStatus render(OfxImageEffectHandle effect, OfxPropertySetHandle in) {
    instance *it = instance_of(effect);
    if (!it) return kOfxStatErrBadHandle;
    char err[1024] = "";
    if (it->lock) g_thread->mutexLock(it->lock);
    OfxStatus status = render_locked(effect, it, in, err, sizeof err);
    if (it->lock) g_thread->mutexUnLock(it->lock);
    return status == kOfxStatOK ? status : fail(effect, err[0] ? err : "the render failed");
}

/* ------------------------------------------------------------------------------------------ analyse */

static OfxStatus analyse_locked(instance *it, OfxTime time, char *err, size_t errsize) {
    OfxRectI frame;
    int first, last, now;
    if (!host_frame(time, "analyse", &now, err, errsize)) return kOfxStatFailed;
    if (!source_frame(it, time, &frame, &first, &last, err, errsize)) return kOfxStatFailed;
    if ((long long)last - first + 1 > MAX_CLIP) {
        snprintf(err, errsize, "the Source clip has %lld frames; one analysis takes at most %d",
                 (long long)last - first + 1, MAX_CLIP);
        return kOfxStatFailed;
    }
    image im;
    int channels, bytes;
    if (!source_format(it, &channels, &bytes, err, errsize)) return kOfxStatFailed;
    size_t frame_bytes;
    if (!frames_size(&frame, channels, bytes, 1, &frame_bytes)) {
        snprintf(err, errsize, "the Source frames are too large to hand over");
        return kOfxStatFailed;
    }
    if (!segment_reserve(&it->input, "in", frame_bytes, err, errsize)) return kOfxStatFailed;
    buf body = {0}, answer = {0};
    buf_fmt(&body, "{\"width\": %d, \"height\": %d, \"channels\": %d, \"depth\": \"%s\", \"frames\": [",
            frame.x2 - frame.x1, frame.y2 - frame.y1, channels, depth_name(bytes));
    for (int n = first; n <= last; n++) buf_fmt(&body, "%s%d", n > first ? ", " : "", n);
    buf_str(&body, "], ");
    int ok = add_settings(&body, it, time, NULL, 0, err, errsize);
    buf_str(&body, "}");
    ok = ok && request_ready(&body, err, errsize) && call_bridge("POST", "/analyses", &body, &answer, err, errsize);
    buf_free(&body);
    char id[64] = "", path[128];
    /* the id goes into request paths: letters, digits, '-' and '_' only */
    if (ok && (!json_string(answer.data, "id", id, sizeof id) || !id[0]
               || strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(id))) {
        snprintf(err, errsize, "the FaceFix bridge answered the analysis without a usable id");
        id[0] = 0;
        ok = 0;
    }
    buf_free(&answer);
    for (int n = first; ok && n <= last; n++) {
        ok = fetch(it->source, (OfxTime)n, "Source", &im, err, errsize);
        if (ok && (im.channels != channels || im.bytes_per_channel != bytes)) {
            snprintf(err, errsize, "the Source image at frame %d is not in the clip's pixel depth and components", n);
            ok = 0;
        }
        if (ok) copy_in(&im, &frame, it->input.data);
        release(&im);
        if (!ok) break;
        buf_fmt(&body, "{\"input\": \"%s\", \"frame\": %d}", it->input.name + 1, n);
        snprintf(path, sizeof path, "/analyses/%s/frames", id);
        ok = request_ready(&body, err, errsize) && call_bridge("POST", path, &body, &answer, err, errsize);
        buf_free(&body);
        buf_free(&answer);
    }
    if (!ok) {
        if (id[0]) {  /* tell the bridge to stop waiting for frames */
            char ignored[256];
            snprintf(path, sizeof path, "/analyses/%s", id);
            call_bridge("DELETE", path, NULL, &answer, ignored, sizeof ignored);
            buf_free(&answer);
        }
        return kOfxStatFailed;
    }
    snprintf(path, sizeof path, "/analyses/%s", id);
    if (!call_bridge("GET", path, NULL, &answer, err, errsize)) { buf_free(&answer); return kOfxStatFailed; }
    const char *s, *e;
    if (!json_find(answer.data, "tracks", &s, &e) || *s != '{') {
        snprintf(err, errsize, "the bridge answered the analysis without tracks");
        buf_free(&answer);
        return kOfxStatFailed;
    }
    char *tracks = malloc((size_t)(e - s) + 1);
    if (!tracks) { buf_free(&answer); snprintf(err, errsize, "out of memory"); return kOfxStatErrMemory; }
    memcpy(tracks, s, (size_t)(e - s));
    tracks[e - s] = 0;
    buf_free(&answer);
    OfxStatus status = g_param->paramSetValue(it->tracks, tracks);
    free(tracks);
    if (status != kOfxStatOK) { snprintf(err, errsize, "the host did not take the face tracks"); return kOfxStatFailed; }
    return kOfxStatOK;
}

static OfxStatus instance_changed(OfxImageEffectHandle effect, OfxPropertySetHandle in) {
    char *type = NULL, *name = NULL;
    OfxTime time = 0;
    g_prop->propGetString(in, kOfxPropType, 0, &type);
    g_prop->propGetString(in, kOfxPropName, 0, &name);
    g_prop->propGetDouble(in, kOfxPropTime, 0, &time);
    if (!type || !name || strcmp(type, kOfxTypeParameter) != 0 || strcmp(name, ANALYSE_PARAM) != 0)
        return kOfxStatReplyDefault;
    instance *it = instance_of(effect);
    if (!it || !it->tracks) return kOfxStatErrBadHandle;
    char err[1024] = "";
    if (it->lock) g_thread->mutexLock(it->lock);
    OfxStatus status = analyse_locked(it, time, err, sizeof err);
    if (it->lock) g_thread->mutexUnLock(it->lock);
    return status == kOfxStatOK ? status : fail(effect, err[0] ? err : "the analysis failed");
}

/* ------------------------------------------------------------------------------------------ regions */

static OfxStatus regions_of_interest(OfxImageEffectHandle effect, OfxPropertySetHandle in, OfxPropertySetHandle out) {
    /* The whole source frame: faces are found and pasted by their tracks, wherever the render window is. */
    instance *it = instance_of(effect);
    OfxTime time = 0;
    OfxRectD rod;
    g_prop->propGetDouble(in, kOfxPropTime, 0, &time);
    if (!it || g_effect->clipGetRegionOfDefinition(it->source, time, &rod) != kOfxStatOK) return kOfxStatReplyDefault;
    g_prop->propSetDoubleN(out, kOfxImageClipPropRoIPrefix kOfxImageEffectSimpleSourceClipName, 4, &rod.x1);
    if (it->mask) g_prop->propSetDoubleN(out, kOfxImageClipPropRoIPrefix MASK_CLIP, 4, &rod.x1);
    return kOfxStatOK;
}

/* The whole number of top-level key `key` in `json`, from `low` to `high`; 0 and a reason naming `what` if none. */
static int json_count(const char *json, const char *key, const char *what, long low, long high, int *out, char *err,
                      size_t errsize) {
    const char *s, *e;
    if (!json || !json_find(json, key, &s, &e)) {
        snprintf(err, errsize, "the FaceFix bridge answered without a %s", what);
        return 0;
    }
    char *stop = NULL;
    errno = 0;
    long value = *s == '-' || (*s >= '0' && *s <= '9') ? strtol(s, &stop, 10) : 0;
    while (stop && stop < e && (*stop == ' ' || *stop == '\n' || *stop == '\r' || *stop == '\t')) stop++;
    if (!stop || stop != e || errno || value < low || value > high) {
        snprintf(err, errsize, "the FaceFix bridge answered a %s of %.*s (expected a whole number from %ld to %ld)",
                 what, (int)(e - s < 24 ? e - s : 24), s, low, high);
        return 0;
    }
    *out = (int)value;
    return 1;
}

/* The frames before and after `now` that its result reads (the bridge knows the controls' reach); 0 and a reason if
 * the bridge cannot say, or says more than one request carries (MAX_WINDOW frames in all). */
static int frame_window(const instance *it, OfxTime time, int *preroll, int *lookahead, char *err, size_t errsize) {
    int now[1];
    if (!host_frame(time, "render", &now[0], err, errsize)) return 0;
    buf body = {0}, answer = {0};
    buf_str(&body, "{");
    int ok = add_settings(&body, it, time, now, 1, err, errsize);
    buf_str(&body, "}");
    ok = ok && request_ready(&body, err, errsize) && call_bridge("POST", "/frames/window", &body, &answer, err, errsize)
             && json_count(answer.data, "preroll", "pre-roll", 0, MAX_WINDOW - 1, preroll, err, errsize)
             && json_count(answer.data, "lookahead", "look-ahead", 0, MAX_WINDOW - 1, lookahead, err, errsize);
    if (ok && *preroll + *lookahead + 1 > MAX_WINDOW) {
        snprintf(err, errsize, "the FaceFix bridge asked for %d frames before and %d after each frame; one render "
                 "carries at most %d frames", *preroll, *lookahead, MAX_WINDOW);
        ok = 0;
    }
    buf_free(&body);
    buf_free(&answer);
    return ok;
}

/* The Source frames a render at `time` reads. A time that is no frame is the host's error; a bridge that cannot say
 * leaves the host's default (the frame alone), and the render then reports why. */
static OfxStatus frames_needed(OfxImageEffectHandle effect, OfxPropertySetHandle in, OfxPropertySetHandle out) {
    instance *it = instance_of(effect);
    OfxTime time = 0;
    char err[1024];
    int preroll, lookahead, now;
    g_prop->propGetDouble(in, kOfxPropTime, 0, &time);
    if (!host_frame(time, "render", &now, err, sizeof err)) return fail(effect, err);
    if (!it || !frame_window(it, time, &preroll, &lookahead, err, sizeof err)) return kOfxStatReplyDefault;
    double range[2] = {time - preroll, time + lookahead};
    g_prop->propSetDoubleN(out, kOfxImageClipPropFrameRangePrefix kOfxImageEffectSimpleSourceClipName, 2, range);
    return kOfxStatOK;
}

/* ------------------------------------------------------------------------------------------ entry points */

static OfxStatus load(void) {
    if (!g_host || !g_host->fetchSuite) return kOfxStatErrMissingHostFeature;
    g_prop = g_host->fetchSuite(g_host->host, kOfxPropertySuite, 1);
    g_param = g_host->fetchSuite(g_host->host, kOfxParameterSuite, 1);
    g_effect = g_host->fetchSuite(g_host->host, kOfxImageEffectSuite, 1);
    g_memory = g_host->fetchSuite(g_host->host, kOfxMemorySuite, 1);
    g_thread = g_host->fetchSuite(g_host->host, kOfxMultiThreadSuite, 1);
    g_message = g_host->fetchSuite(g_host->host, kOfxMessageSuite, 1);
    if (!g_prop || !g_param || !g_effect || !g_memory || !g_thread) return kOfxStatErrMissingHostFeature;
    /* Never freed: an Unload would free it under a thread still formatting (one small object; glibc's is static). */
    if (!g_c_locale) g_c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    return g_c_locale ? kOfxStatOK : kOfxStatErrMemory;
}

static OfxStatus main_entry(const char *action, const void *handle, OfxPropertySetHandle in, OfxPropertySetHandle out) {
    OfxImageEffectHandle effect = (OfxImageEffectHandle)handle;
    if (!action) return kOfxStatErrUnknown;
    if (strcmp(action, kOfxActionLoad) == 0) return load();
    if (!g_prop || !g_param || !g_effect || !g_memory || !g_thread) return kOfxStatErrMissingHostFeature;
    if (strcmp(action, kOfxActionUnload) == 0) return kOfxStatOK;
    if (strcmp(action, kOfxActionDescribe) == 0) return describe(effect);
    if (strcmp(action, kOfxImageEffectActionDescribeInContext) == 0) return describe_in_context(effect);
    if (strcmp(action, kOfxActionCreateInstance) == 0) return create_instance(effect);
    if (strcmp(action, kOfxActionDestroyInstance) == 0) return destroy_instance(effect);
    if (strcmp(action, kOfxImageEffectActionRender) == 0) return render(effect, in);
    if (strcmp(action, kOfxActionInstanceChanged) == 0) return instance_changed(effect, in);
    if (strcmp(action, kOfxImageEffectActionGetRegionsOfInterest) == 0) return regions_of_interest(effect, in, out);
    if (strcmp(action, kOfxImageEffectActionGetFramesNeeded) == 0) return frames_needed(effect, in, out);
    return kOfxStatReplyDefault;
}

static void set_host(OfxHost *host) { g_host = host; }

static OfxPlugin g_plugin = {kOfxImageEffectPluginApi, kOfxImageEffectPluginApiVersion, PLUGIN_ID, 1, 0, set_host,
                             main_entry};

OfxExport int OfxGetNumberOfPlugins(void) { return 1; }

OfxExport OfxPlugin *OfxGetPlugin(int nth) { return nth == 0 ? &g_plugin : NULL; }
