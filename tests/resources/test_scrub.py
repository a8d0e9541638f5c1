"""The key scrubber: an endpoint's key and token-looking strings never survive into recorded error text."""
import httpx2

from resources.llm import CallStats
from resources.scrub import ScrubbingHttpClient, scrub_secrets

KEY = "gsk_live_0123456789abcdef"   # not sk-... shaped: only its value can find it


def test_the_key_bearer_tokens_and_sk_keys_become_stars_and_the_rest_stays():
    text = (f"401 for key {KEY}; header 'authorization': 'Bearer tok.en-9~x'; also sk-proj-AbC123456789 "
            "and Basic dXNlcjpwYXNz")
    assert scrub_secrets(text, [KEY]) == ("401 for key ***; header 'authorization': 'Bearer ***'; also *** "
                                          "and Basic ***")
    ordinary = "risk-free sk-learn model EMPTY (rate limited: retry in 2 s)"
    assert scrub_secrets(ordinary, ["EMPTY", ""]) == ordinary   # the keyless placeholder is no secret


def test_a_long_error_is_scrubbed_before_it_is_cut():
    stats = CallStats()
    stats.add_failure(RuntimeError("x" * 280 + KEY), (KEY,))   # the cut at 300 falls inside the key
    assert stats.failure_examples == ["RuntimeError: " + "x" * 280 + "***"] and stats.failures == 1


def test_error_bodies_are_scrubbed_on_arrival_and_answers_are_not():
    def endpoint(request: httpx2.Request) -> httpx2.Response:
        auth = request.headers["authorization"]
        if request.url.path.endswith("/fail"):
            return httpx2.Response(401, json={"error": {"message": f"bad key in {auth}"}})
        return httpx2.Response(200, json={"echo": auth})   # a model's answer is not ours to rewrite

    with ScrubbingHttpClient([KEY], transport=httpx2.MockTransport(endpoint)) as client:
        headers = {"Authorization": f"Bearer {KEY}"}
        failed = client.get("http://endpoint/v1/fail", headers=headers)
        ok = client.get("http://endpoint/v1/ok", headers=headers)
    assert failed.status_code == 401 and failed.json() == {"error": {"message": "bad key in Bearer ***"}}
    assert ok.json() == {"echo": f"Bearer {KEY}"}
