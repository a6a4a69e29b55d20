"""The HTTP front: the server, the request guard, the gateway that routes each request, the
control API, AWS-shaped errors."""
