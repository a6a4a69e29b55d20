"""The DynamoDB engine of esjoin's offline LocalStack image: moto's DynamoDB behind one HTTP port.

LocalStack's DynamoDB provider (API, ARNs, DynamoDB Streams, TTL) forwards the data plane to an
engine process it starts itself: normally DynamoDB Local, a Java jar and a JDK downloaded at first
use, which the offline image cannot reach. This engine speaks the same DynamoDB JSON protocol with
the moto release LocalStack itself depends on (moto-ext), so table stream settings, transactions,
conditions and PartiQL come from a maintained implementation. Requests are applied one at a time
(a lock around moto), so a race of conditional writes has exactly one winner, as on DynamoDB.

    python dynamodb_engine.py --port PORT     (started by esjoin_localstack.py, on 127.0.0.1)
"""

from __future__ import annotations

import argparse
import threading

from moto.dynamodb.responses import DynamoHandler
from werkzeug.serving import run_simple
from werkzeug.wrappers import Request, Response

APPLY_ONE_AT_A_TIME = threading.Lock()


@Request.application
def application(request: Request) -> Response:
    with APPLY_ONE_AT_A_TIME:
        status, headers, body = DynamoHandler.dispatch(request, request.url, request.headers)
    return Response(body, status=status, headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_simple(args.host, args.port, application, threaded=True)


if __name__ == "__main__":
    main()
