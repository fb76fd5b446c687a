#!/usr/bin/env python3
"""Login storm for sessiongate: successful form logins at a fixed rate.

Each login is what a browser does, on one fresh keep-alive TLS connection:
GET /.sessiongate/login (the gateway issues an anonymous session cookie and
puts its CSRF secret in the form's hidden `csrf` field), then POST
/.sessiongate/login with username, password, csrf and rd; a successful login
answers 303 with a new session cookie. Logins start on a fixed schedule
(open loop: a slow login does not delay the next one), each in its own
thread, so the offered rate is the rate asked for.

    bench/login-storm.py --url https://127.0.0.1:8443 --user demo --password demo \
        --rate 20 --duration 30

With --on-off S, logins start only in every second slot of S seconds
(slots 1, 3, 5, ... counted from 0 at the start; the rate applies within
them), so that a client measuring other users' latency throughout can
compare storm slots with quiet ones that alternate every S seconds
(bench/login-burst.sh, INTERLEAVE). The start time (Unix seconds) is printed
on stderr as `STORM_START t`, before the first login.

Prints one summary line on stdout:
    STORM offered=N ok=N failed=N rate=R/s p50_ms=X p99_ms=Y statuses={...}
and exits 1 if any login did not answer 303. Standard library only; the
certificate is not verified (development certificates), and SNI is the
URL's host (use a host name, or --sni, when the gateway needs one).
"""

import argparse
import http.client
import re
import ssl
import sys
import threading
import time
import urllib.parse

CSRF_RE = re.compile(r'name="csrf" value="([^"]*)"')
COOKIE_NAME = "__Host-sessiongate"


class ResumingConnection(http.client.HTTPSConnection):
    """An HTTPS connection that resumes the TLS session of an earlier one
    (`--resume`): a returning browser's abbreviated handshake instead of a
    full one. The first connection to finish stores its session."""

    saved = None
    reused = 0

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(
            self.sock, server_hostname=self.host, session=ResumingConnection.saved
        )


def one_login(host, port, ctx, args):
    cls = ResumingConnection if args.resume else http.client.HTTPSConnection
    conn = cls(host, port, context=ctx, timeout=args.timeout)
    try:
        ua = {"User-Agent": args.user_agent}
        conn.request("GET", "/.sessiongate/login?rd=/", headers={**ua, "Accept": "text/html"})
        r = conn.getresponse()
        page = r.read().decode("utf-8", "replace")
        if args.resume and conn.sock is not None:
            if conn.sock.session_reused:
                ResumingConnection.reused += 1
            elif ResumingConnection.saved is None:
                ResumingConnection.saved = conn.sock.session
        if r.status != 200:
            return f"get-{r.status}"
        cookie = None
        for k, v in r.getheaders():
            if k.lower() == "set-cookie" and v.startswith(COOKIE_NAME + "="):
                cookie = v.split(";", 1)[0]
        m = CSRF_RE.search(page)
        if cookie is None or m is None:
            return "get-no-cookie-or-csrf"
        csrf = m.group(1).replace("&amp;", "&")
        body = urllib.parse.urlencode(
            {"username": args.user, "password": args.password, "csrf": csrf, "rd": "/"}
        )
        conn.request(
            "POST",
            "/.sessiongate/login",
            body=body,
            headers={**ua, "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
        )
        r = conn.getresponse()
        r.read()
        return str(r.status)
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="https://host:port of the gateway")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--rate", type=float, default=20.0, help="logins started per second (default 20)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to keep starting logins")
    p.add_argument("--user-agent", default="login-storm/1")
    p.add_argument("--sni", default=None, help="TLS server name (default: the URL's host)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("--on-off", type=float, default=0.0, metavar="S",
                   help="start logins only in odd slots of S seconds (default: always)")
    p.add_argument("--resume", action="store_true",
                   help="resume one earlier TLS session on every login connection (abbreviated handshakes)")
    args = p.parse_args()

    u = urllib.parse.urlsplit(args.url)
    if u.scheme != "https":
        sys.exit("--url must be https://")
    host, port = u.hostname, u.port or 443
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if args.sni:
        real_wrap = ctx.wrap_socket
        ctx.wrap_socket = lambda sock, **kw: real_wrap(sock, **{**kw, "server_hostname": args.sni})

    results = []  # (status, seconds)
    lock = threading.Lock()

    def worker():
        t0 = time.monotonic()
        status = one_login(host, port, ctx, args)
        dt = time.monotonic() - t0
        with lock:
            results.append((status, dt))

    threads = []
    start = time.monotonic()
    print(f"STORM_START {time.time():.6f}", file=sys.stderr, flush=True)
    due_times = [i / args.rate for i in range(int(args.rate * args.duration))]
    if args.on_off > 0:
        due_times = [t for t in due_times if int(t // args.on_off) % 2 == 1]
    n = len(due_times)
    for offset in due_times:
        due = start + offset
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=worker, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(args.timeout * 2 + 5)
    elapsed = time.monotonic() - start

    statuses = {}
    for s, _ in results:
        statuses[s] = statuses.get(s, 0) + 1
    ok = statuses.get("303", 0)
    # Seconds in which logins were started (half of them with --on-off).
    active = args.duration / 2 if args.on_off > 0 else args.duration
    lat = sorted(dt for s, dt in results if s == "303")

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0

    print(
        f"STORM offered={n} ok={ok} failed={n - ok} rate={ok / active:.1f}/s "
        f"p50_ms={pct(0.50):.1f} p99_ms={pct(0.99):.1f} statuses={statuses}"
        + (f" resumed={ResumingConnection.reused}" if args.resume else ""),
        flush=True,
    )
    sys.exit(0 if ok == n else 1)


if __name__ == "__main__":
    main()
