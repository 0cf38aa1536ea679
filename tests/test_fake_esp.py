"""tools/fake_esp.py, the Postmark stand-in of the deploy drill, answers anymail as Postmark does."""

import json
import threading
from http.server import ThreadingHTTPServer

import pytest
from anymail.exceptions import AnymailAPIError
from django.core.mail import EmailMultiAlternatives, get_connection

from tools.fake_esp import make_handler


@pytest.fixture
def esp(tmp_path, settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(tmp_path, "drill"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "drill", "POSTMARK_API_URL": f"http://127.0.0.1:{server.server_port}/"}
    yield tmp_path
    server.shutdown()
    server.server_close()


def send(**backend_options) -> EmailMultiAlternatives:
    connection = get_connection("anymail.backends.postmark.EmailBackend", **backend_options)
    message = EmailMultiAlternatives("Hello", "text body", "PaidUp <hello@paidup.example>", ["ada@example.com"])
    message.attach_alternative("<p>html body</p>", "text/html")
    message.connection = connection
    message.send()
    return message


def test_anymail_sends_through_it_and_the_email_lands_in_the_folder(esp):
    message = send()
    assert message.anymail_status.status == {"sent"}
    [saved] = esp.glob("*.json")
    data = json.loads(saved.read_text())
    assert (data["To"], data["Subject"], data["TextBody"]) == ("ada@example.com", "Hello", "text body")
    assert data["MessageID"] == message.anymail_status.message_id


def test_a_wrong_server_token_is_refused_as_postmark_does(esp):
    with pytest.raises(AnymailAPIError, match="401"):
        send(server_token="wrong")
    assert list(esp.glob("*.json")) == []
