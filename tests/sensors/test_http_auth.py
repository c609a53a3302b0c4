"""HTTP Authorization headers: the scheme and a Basic user name are recorded, the secret never is."""

from base64 import b64encode

from sensors.protocols.http import parse_request


def _request(auth: str | None) -> bytes:
    head = "GET /hr/salaries HTTP/1.1\r\nHost: hr.dc.gov.example\r\n"
    if auth is not None:
        head += f"Authorization: {auth}\r\n"
    return (head + "\r\n").encode()


def test_basic_credentials_give_scheme_and_user_but_not_password():
    token = b64encode(b"hr-admin:Spring2024!").decode()
    ev, _, _ = parse_request(_request(f"Basic {token}"))
    assert ev["soc.http.auth_scheme"] == "basic" and ev["user.name"] == "hr-admin"
    assert "Spring2024" not in repr(ev) and token not in repr(ev)


def test_other_schemes_and_bad_tokens():
    ev, _, _ = parse_request(_request("Bearer eyJhbGciOi.x.y"))
    assert ev["soc.http.auth_scheme"] == "bearer" and "user.name" not in ev
    ev, _, _ = parse_request(_request("Basic %%%not-base64"))
    assert ev["soc.http.auth_scheme"] == "basic" and "user.name" not in ev
    ev, _, _ = parse_request(_request(None))
    assert "soc.http.auth_scheme" not in ev
