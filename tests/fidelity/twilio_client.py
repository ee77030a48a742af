"""Twilio's official Python library against the Messages API stand-in.

Run by tests/it/twilio_fidelity.rs as
    python twilio_client.py BASE_URL ACCOUNT_SID AUTH_TOKEN
with the pinned `twilio` package installed. It talks to the stand-in exactly as it
talks to api.twilio.com, through an HTTP client that only swaps the host (the
library's documented hook for a custom HTTP client), and fails with a message on
the first answer the library reads differently from Twilio's.
"""

import sys
from datetime import datetime

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

TWILIO = "https://api.twilio.com"


class StandInHttpClient(TwilioHttpClient):
    """Sends what the library sends to api.twilio.com to the stand-in instead."""

    def __init__(self, base_url):
        super().__init__(timeout=10)
        self.base_url = base_url.rstrip("/")
        # The stand-in is local: no proxy from the environment.
        self.session.trust_env = False

    def request(self, method, url, *args, **kwargs):
        if not url.startswith(TWILIO):
            raise AssertionError(f"the library asked for {url}, not api.twilio.com")
        return super().request(method, self.base_url + url[len(TWILIO):], *args, **kwargs)


def refused(create, code, status=400):
    """`create()` must raise Twilio's exception with `code` and `status`."""
    try:
        create()
    except TwilioRestException as error:
        if (error.code, error.status) != (code, status):
            raise AssertionError(
                f"expected Twilio error {code} (HTTP {status}), got {error.code} "
                f"(HTTP {error.status}): {error.msg}"
            ) from error
        return error
    raise AssertionError(f"expected Twilio error {code}, the request was accepted")


def main(base_url, account_sid, auth_token):
    client = Client(account_sid, auth_token, http_client=StandInHttpClient(base_url))
    messages = client.messages

    sent = messages.create(to="+15551230001", from_="+15557770000", body="Hello from Python")
    assert sent.sid.startswith("SM") and len(sent.sid) == 34, sent.sid
    assert sent.account_sid == account_sid, sent.account_sid
    assert sent.status == "queued", sent.status
    assert isinstance(sent.date_created, datetime), sent.date_created
    assert isinstance(sent.date_updated, datetime), sent.date_updated
    assert sent.num_segments == "1", sent.num_segments
    assert sent.num_media == "0", sent.num_media
    assert sent.direction == "outbound-api", sent.direction
    assert sent.api_version == "2010-04-01", sent.api_version
    assert sent.uri == f"/2010-04-01/Accounts/{account_sid}/Messages/{sent.sid}.json", sent.uri
    assert sent.error_code is None, sent.error_code

    long = messages.create(to="+15551230001", from_="+15557770000", body="x" * 161)
    assert long.num_segments == "2", long.num_segments

    fetched = messages(sent.sid).fetch()
    assert fetched.sid == sent.sid, fetched.sid
    assert fetched.body == "Hello from Python", fetched.body
    assert fetched.to == "+15551230001", fetched.to
    assert fetched.date_created == sent.date_created, fetched.date_created
    assert isinstance(fetched.date_sent, datetime), fetched.date_sent

    listed = messages.list(to="+15551230001")
    assert [m.sid for m in listed] == [long.sid, sent.sid], [m.sid for m in listed]

    unknown = refused(lambda: messages("SM" + "f" * 32).fetch(), 20404, 404)
    assert "was not found" in unknown.msg, unknown.msg

    refused(
        lambda: messages.create(to="+15551230001", from_="+15557770000", body="x" * 1601),
        21617,
    )
    refused(
        lambda: messages.create(to="not-a-number", from_="+15557770000", body="hi"),
        21211,
    )
    refused(
        lambda: messages.create(
            to="+15551230001",
            from_="+15557770000",
            media_url=[f"https://example.com/{i}.jpg" for i in range(11)],
        ),
        21623,
    )
    refused(lambda: messages.create(to="+15551230001", body="hi"), 21603)

    # Set up by the test: +15551230099 sent STOP to +15557770000; whatsapp:+15551230002
    # wrote to whatsapp:+14155238886 a moment ago, whatsapp:+15551230003 never did;
    # HX0…01 is an approved template "Your table is booked for {{1}}.".
    stopped = refused(
        lambda: messages.create(to="+15551230099", from_="+15557770000", body="hi"),
        21610,
    )
    assert "unsubscribed" in stopped.msg, stopped.msg
    business = "whatsapp:+14155238886"
    in_session = messages.create(to="whatsapp:+15551230002", from_=business, body="hi")
    assert in_session.status == "queued", in_session.status
    assert messages(in_session.sid).fetch().status == "delivered"
    # Outside the 24-hour window, free text is taken and then fails, as on Twilio.
    silent = messages.create(to="whatsapp:+15551230003", from_=business, body="hi")
    assert silent.status == "queued", silent.status
    failed = messages(silent.sid).fetch()
    assert (failed.status, failed.error_code) == ("failed", 63016), (
        failed.status,
        failed.error_code,
    )
    assert failed.date_sent is None, failed.date_sent
    template = messages.create(
        to="whatsapp:+15551230003",
        from_=business,
        content_sid="HX" + "0" * 31 + "1",
        content_variables='{"1": "7 pm"}',
    )
    started = messages(template.sid).fetch()
    assert started.status == "delivered", started.status
    assert started.body == "Your table is booked for 7 pm.", started.body

    wrong = Client(account_sid, "wrong", http_client=StandInHttpClient(base_url))
    refused(lambda: wrong.messages(sent.sid).fetch(), 20003, 401)
    print("the official twilio library reads the stand-in as Twilio")


if __name__ == "__main__":
    main(*sys.argv[1:4])
