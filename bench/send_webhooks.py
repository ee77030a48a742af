#!/usr/bin/env python3
"""Sends exactly N webhooks signed as Twilio signs them, from CONCURRENCY senders over
kept-alive connections, and says how many got a reply: the load of
bench/instructions.sh, where only the server's work is counted.

    bench/send_webhooks.py URL CONCURRENCY N [BODY]
"""
import base64
import hashlib
import hmac
import http.client
import itertools
import sys
import threading
import urllib.parse

ACCOUNT_SID = "AC00000000000000000000000000000000"
AUTH_TOKEN = "bench-token"


def signed(url, params):
    # Twilio's X-Twilio-Signature: HMAC-SHA1 of the URL and the parameters sorted by name.
    data = url + "".join(k + v for k, v in sorted(params))
    digest = hmac.new(AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def main():
    url, concurrency, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    body = sys.argv[4] if len(sys.argv) > 4 else "hi"
    parsed = urllib.parse.urlsplit(url)
    sequence = itertools.count()
    lock = threading.Lock()
    answered = [0]

    def sender(worker):
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        while True:
            with lock:
                n = next(sequence)
            if n >= total:
                return
            params = [
                ("MessageSid", "SM%032x" % n),
                ("AccountSid", ACCOUNT_SID),
                ("From", "+1555%07d" % worker),
                ("To", "+15550000000"),
                ("Body", body),
                ("NumMedia", "0"),
            ]
            headers = {
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": signed(url, params),
            }
            connection.request("POST", parsed.path or "/", urllib.parse.urlencode(params), headers)
            response = connection.getresponse()
            text = response.read()
            if response.status == 200 and b"<Message>" in text:
                with lock:
                    answered[0] += 1

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"{answered[0]} of {total} answered", file=sys.stderr)
    if answered[0] != total:
        sys.exit(1)


if __name__ == "__main__":
    main()
