"""The local stack answers many requests at once in one process: each must see its own
event and route arguments (Powertools keeps them in shared state, fine on Lambda)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.api_gateway import Router

from mailfleet_local import powertools_threads


def event(path: str, query: str) -> dict[str, Any]:
    return {"httpMethod": "GET", "path": path, "resource": "/x/{n}",
            "queryStringParameters": {"q": query}, "multiValueQueryStringParameters": {
                "q": [query]}, "headers": {}, "body": None,
            "requestContext": {"requestId": query, "stage": "p", "identity": {}}}


def test_concurrent_requests_see_their_own_event() -> None:
    powertools_threads.install()
    powertools_threads.install()  # idempotent
    app = APIGatewayRestResolver(enable_validation=True)
    router = Router()

    @router.get("/x/<n>")
    def x(n: str) -> dict[str, Any]:
        time.sleep(0.005)  # let the other threads resolve meanwhile
        return {"n": n, "path": router.current_event.path,
                "q": app.current_event.get_query_string_value("q")}

    app.include_router(router)
    wrong: list[Any] = []

    def client(i: int) -> None:
        for k in range(10):
            name = f"{i}-{k}"
            body = json.loads(app.resolve(event(f"/x/{name}", name), None)["body"])
            if body != {"n": name, "path": f"/x/{name}", "q": name}:
                wrong.append(body)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wrong == []
